package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// mountMu orders mounting against unmountAll: once the storage controllers
// have stopped and UnmountAll has run, a Provision still under way (the
// provisioner library does not wait for its workers) finds its context
// ended and mounts nothing, so no volume outlives the sandbox mounted.
var mountMu sync.Mutex

// mountPoint is one line of /proc/self/mountinfo.
type mountPoint struct {
	path   string // where it is mounted
	source string // what is mounted: a volume's loop device
}

// mounts lists this process's mounts in the order they were made, which
// puts a mount after those it is mounted on.
func mounts() ([]mountPoint, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	var out []mountPoint
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		before, after, ok := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(before), strings.Fields(after)
		if !ok || len(fields) < 5 || len(tail) < 2 {
			return nil, fmt.Errorf("listing mounts: a line of /proc/self/mountinfo not understood: %q", sc.Text())
		}
		out = append(out, mountPoint{path: unescapeMountinfo(fields[4]), source: unescapeMountinfo(tail[1])})
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space)
// of spaces, tabs, newlines and backslashes in mountinfo's paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// realPath is p as mountinfo names it: absolute, with symbolic links
// resolved as far as p exists.
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	return abs, nil
}

// mountsAt lists the mounts on path itself, or also below it with below.
func mountsAt(path string, below bool) ([]mountPoint, error) {
	real, err := realPath(path)
	if err != nil {
		return nil, err
	}
	all, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []mountPoint
	for _, m := range all {
		if m.path == real || below && strings.HasPrefix(m.path, real+"/") {
			out = append(out, m)
		}
	}
	return out, nil
}

func isMountPoint(path string) (bool, error) {
	ms, err := mountsAt(path, false)
	return len(ms) > 0, err
}

// unmountAll detaches every mount at or below path, the latest first.
// Detaching is lazy: a pod's mount namespace may still hold a bind of a
// volume (the node's launcher copies the host's mounts into each pod), and
// the kernel lets go of the filesystem, and of its loop device, when its
// last user does. The caller holds mountMu.
func unmountAll(path string) error {
	// Mounts stacked on one another come off one by one, so look again
	// until none is left; a bound, since a mount that cannot be undone
	// would have us loop.
	for range 16 {
		ms, err := mountsAt(path, true)
		if err != nil || len(ms) == 0 {
			return err
		}
		for i := len(ms) - 1; i >= 0; i-- {
			err := unix.Unmount(ms[i].path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			// EINVAL: no longer a mount, as when its parent went first.
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmounting %s: %w", ms[i].path, err)
			}
		}
	}
	return fmt.Errorf("%s stays mounted after unmounting it", path)
}

// UnmountAll unmounts every volume mounted under root, each with its loop
// device: when the sandbox stops, and before it removes the volumes folder
// that an earlier sandbox may have left mounted. Removing a folder with a
// filesystem still mounted in it would empty that filesystem and fail.
func UnmountAll(root string) error {
	mountMu.Lock()
	defer mountMu.Unlock()
	return unmountAll(root)
}
