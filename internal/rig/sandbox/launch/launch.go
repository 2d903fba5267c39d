// Package launch starts a container's process the way a container runtime
// would, without one: in the pod's network namespace, in a mount namespace
// of its own whose root is an overlay over the image's unpacked root (or
// this machine's root, for the images the sandbox maps to host programs),
// so nothing the container writes reaches the image or the host, with the
// pod's volumes bound at their mount paths, as the pod's user.
//
// The work happens in a child: the holdfast binary re-executed with a spec
// file (Command), which sets itself up and execs the container's program
// (Exec). Namespaces and chroot must be entered on the thread that execs,
// which a Go parent cannot do for a child.
package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartFailedCode is the launcher's exit code when the container's program
// could not be started at all.
const StartFailedCode = 128

// Mount binds Source (a file or folder on this machine) at Target inside the container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Spec is one container process.
type Spec struct {
	// NetNS is the path of the pod's network namespace; empty keeps the host's.
	NetNS string `json:"netns,omitempty"`
	// Scratch holds the overlay's upper and work folders and the root it
	// assembles; it must be empty or absent, and is the container's alone.
	Scratch string `json:"scratch"`
	// Lower is the overlay's read-only lower layer: an image's unpacked
	// root. Empty means this machine's root.
	Lower  string   `json:"lower,omitempty"`
	Mounts []Mount  `json:"mounts,omitempty"`
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	Dir    string   `json:"dir,omitempty"`
	// Hostname is set in a UTS namespace of the container's own.
	Hostname string `json:"hostname,omitempty"`
	// ReadOnlyRoot makes the root read-only once volumes are in place, as
	// readOnlyRootFilesystem asks; volumes keep their own mode.
	ReadOnlyRoot bool     `json:"readOnlyRoot,omitempty"`
	Argv         []string `json:"argv"`
	Env          []string `json:"env,omitempty"`
}

// Command returns the command that runs spec: self (the holdfast binary)
// with args before the spec file's path. The caller starts it and owns its
// lifetime; the process it becomes is the container's program.
func Command(self string, args []string, spec Spec, specFile string) (*exec.Cmd, error) {
	if len(spec.Argv) == 0 {
		return nil, errors.New("a container needs a command")
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", specFile, err)
	}
	return exec.Command(self, append(args, specFile)...), nil
}

// Exec is the child's side: it reads the spec, enters the namespaces,
// assembles the root and execs the program. It returns only on failure.
func Exec(specFile string) error {
	b, err := os.ReadFile(specFile)
	if err != nil {
		return fmt.Errorf("reading the container spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("parsing %s: %w", specFile, err)
	}
	runtime.LockOSThread() // namespaces, root and credentials belong to this thread until exec

	if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWUTS); err != nil {
		return fmt.Errorf("unsharing the mount and UTS namespaces: %w", err)
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("setting the hostname: %w", err)
		}
	}
	// Nothing mounted from here on propagates back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if s.NetNS != "" {
		fd, err := unix.Open(s.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", s.NetNS, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering %s: %w", s.NetNS, err)
		}
		unix.Close(fd)
	}

	root, err := assembleRoot(s)
	if err != nil {
		return err
	}
	// Images run as users the host has never heard of; programs such as
	// initdb refuse to run as a uid without a name.
	if err := ensureUser(root, s.UID, s.GID); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		// Resolve the target inside the root: /var/run, say, is a link to
		// /run, which read from outside the root is the host's own.
		target, err := inRoot(root, m.Target)
		if err != nil {
			return fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		if err := bind(m.Source, target, m.ReadOnly); err != nil {
			return err
		}
	}
	if s.ReadOnlyRoot {
		if err := unix.Mount("", root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making the root read-only: %w", err)
		}
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot %s: %w", root, err)
	}
	dir := s.Dir
	if dir == "" {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		return fmt.Errorf("working directory %s: %w", dir, err)
	}

	groups := make([]int, len(s.Groups))
	for i, g := range s.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setresgid(int(s.GID), int(s.GID), int(s.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", s.GID, err)
	}
	if err := unix.Setresuid(int(s.UID), int(s.UID), int(s.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", s.UID, err)
	}

	prog, err := lookPath(s.Argv[0], s.Env)
	if err != nil {
		return err
	}
	return syscall.Exec(prog, s.Argv, s.Env)
}

// assembleRoot mounts the overlay root and the kernel's file systems in it.
// The upper layer lives on a tmpfs of its own, so that it does not overlap
// the lower layer as the kernel requires.
func assembleRoot(s Spec) (string, error) {
	if err := os.MkdirAll(s.Scratch, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount("tmpfs", s.Scratch, "tmpfs", 0, "mode=0700"); err != nil {
		return "", fmt.Errorf("mounting the scratch tmpfs: %w", err)
	}
	upper, work, root := filepath.Join(s.Scratch, "upper"), filepath.Join(s.Scratch, "work"), filepath.Join(s.Scratch, "root")
	for _, d := range []string{upper, work, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
	}
	lower := s.Lower
	if lower == "" {
		lower = "/"
	}
	if err := unix.Mount("overlay", root, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		return "", fmt.Errorf("mounting the overlay root: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o555); err != nil {
		return "", fmt.Errorf("making /proc: %w", err)
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mounting /proc: %w", err)
	}
	for _, d := range []string{"/dev", "/sys"} {
		// An image's root may lack the mount points a runtime provides.
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", fmt.Errorf("making %s: %w", d, err)
		}
		if err := unix.Mount(d, filepath.Join(root, d), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("binding %s: %w", d, err)
		}
	}
	return root, nil
}

// bind mounts source at target, creating target as a file or folder to match.
func bind(source, target string, readOnly bool) error {
	st, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("volume source %s: %w", source, err)
	}
	if st.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("making mount point %s: %w", target, err)
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", source, target, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making %s read-only: %w", target, err)
		}
	}
	return nil
}

// inRoot resolves path as if root were /, following symbolic links
// without ever leaving root. Missing components are kept as they are.
func inRoot(root, path string) (string, error) {
	rest := strings.Split(filepath.Clean("/"+path), "/")[1:]
	cur := root
	for hops := 0; len(rest) > 0; {
		name := rest[0]
		rest = rest[1:]
		if name == "" || name == "." {
			continue
		}
		if name == ".." {
			if cur != root {
				cur = filepath.Dir(cur)
			}
			continue
		}
		next := filepath.Join(cur, name)
		st, err := os.Lstat(next)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", errors.New("too many symbolic links")
		}
		link, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(link) {
			cur = root
		}
		rest = append(strings.Split(link, "/"), rest...)
	}
	return cur, nil
}

// ensureUser adds uid to the root's /etc/passwd when it has no entry there,
// as container images do for the users they run as.
func ensureUser(root string, uid, gid uint32) error {
	passwd := filepath.Join(root, "etc/passwd")
	b, err := os.ReadFile(passwd)
	if err != nil {
		return fmt.Errorf("reading the container's /etc/passwd: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) > 2 && f[2] == strconv.FormatUint(uint64(uid), 10) {
			return nil
		}
	}
	entry := fmt.Sprintf("user%d:x:%d:%d:container user:/:/usr/sbin/nologin\n", uid, uid, gid)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		entry = "\n" + entry
	}
	f, err := os.OpenFile(passwd, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("adding uid %d to the container's /etc/passwd: %w", uid, err)
	}
	defer f.Close()
	if _, err := f.WriteString(entry); err != nil {
		return fmt.Errorf("adding uid %d to the container's /etc/passwd: %w", uid, err)
	}
	return nil
}

// lookPath finds name on the container's PATH, inside its root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found on PATH %s", name, path)
}
