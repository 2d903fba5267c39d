package launch

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// The test binary is its own launcher: re-executed with this variable set,
// it becomes the container, as the holdfast binary does in the sandbox.
const launcherEnv = "HOLDFAST_TEST_LAUNCHER"

func TestMain(m *testing.M) {
	if os.Getenv(launcherEnv) == "1" {
		err := Exec(os.Args[len(os.Args)-1])
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(127)
	}
	os.Exit(m.Run())
}

func TestContainerSeesItsPodNotTheHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("namespaces and chroot need root")
	}
	if testing.Short() {
		t.Skip("changes the host's network")
	}
	for _, p := range []string{"/etc/holdfast", "/etc/launch-leak-test"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists on this host already; the test would prove nothing", p)
		}
	}
	// A bridge and subnet no other package's test uses: go test runs
	// packages in parallel, and network_test.go has hftest0 and hftest1.
	b := network.Bridge{Name: "hftest2", Gateway: &net.IPNet{IP: net.IPv4(10, 253, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Remove() })
	ns := network.Namespace("launch-test")
	if err := b.AddPod(ns, net.IPv4(10, 253, 0, 2).To4()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.RemovePod(ns) })

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	token := filepath.Join(dir, "token")
	must(t, os.Mkdir(data, 0o755))
	must(t, os.Chown(data, 65534, 65534))
	must(t, os.WriteFile(filepath.Join(data, "hello"), []byte("hello\n"), 0o644))
	must(t, os.WriteFile(token, []byte("tok\n"), 0o644))

	spec := Spec{
		NetNS:   network.NamespacePath(ns),
		Scratch: filepath.Join(dir, "scratch"),
		Mounts: []Mount{
			{Source: data, Target: "/data"},
			{Source: token, Target: "/etc/holdfast/secrets/instance/token", ReadOnly: true},
		},
		UID: 65534, GID: 65534,
		Dir: "/data",
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Argv: []string{"sh", "-c", `id -u; id -g; pwd; cat hello; cat /etc/holdfast/secrets/instance/token
ip -4 -o addr show eth0
echo written > /data/written
(echo changed > /etc/holdfast/secrets/instance/token) 2>/dev/null || echo token-read-only`},
	}
	out := run(t, spec, filepath.Join(dir, "spec.json"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"65534", "65534", "/data", "hello", "tok"}
	if len(lines) < 7 || strings.Join(lines[:5], ",") != strings.Join(want, ",") {
		t.Fatalf("container said:\n%s\nwant it to start with %q", out, want)
	}
	if !strings.Contains(lines[5], "10.253.0.2") {
		t.Errorf("eth0 in the container: %q, want the pod's address", lines[5])
	}
	// Root in a container can write to /etc, and the write stays in the
	// container's overlay.
	asRoot := spec
	asRoot.UID, asRoot.GID, asRoot.Scratch = 0, 0, filepath.Join(dir, "scratch-root")
	asRoot.Argv = []string{"sh", "-c", "touch /etc/launch-leak-test && echo touched"}
	if out := run(t, asRoot, filepath.Join(dir, "spec-root.json")); strings.TrimSpace(out) != "touched" {
		t.Errorf("root in the container could not write its own /etc: %q", out)
	}
	if _, err := os.Stat("/etc/launch-leak-test"); err == nil {
		os.Remove("/etc/launch-leak-test")
		t.Errorf("a file the container made in /etc reached the host")
	}
	if _, err := os.Stat("/etc/holdfast"); err == nil {
		t.Errorf("a mount point inside the container was made on the host")
	}
	if lines[len(lines)-1] != "token-read-only" {
		t.Errorf("a read-only volume was writable: %q", lines[len(lines)-1])
	}
	if b, err := os.ReadFile(filepath.Join(data, "written")); err != nil || string(b) != "written\n" {
		t.Errorf("a write to a volume did not reach it: %q %v", b, err)
	}
	if b, _ := os.ReadFile(token); string(b) != "tok\n" {
		t.Errorf("the read-only volume changed: %q", b)
	}
}

// run starts spec through the test binary acting as the launcher.
func run(t *testing.T, spec Spec, specFile string) string {
	t.Helper()
	cmd, err := Command(os.Args[0], nil, spec, specFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), launcherEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("container: %v\n%s", err, out)
	}
	return string(out)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestContainerHasItsHostnameUserAndReadOnlyRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("namespaces and chroot need root")
	}
	if _, err := user.LookupId("4242"); err == nil {
		t.Skip("uid 4242 exists on this host; the test would prove nothing")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	must(t, os.Mkdir(data, 0o755))
	must(t, os.Chown(data, 4242, 4242))
	host, _ := os.Hostname()
	spec := Spec{
		Scratch: filepath.Join(dir, "scratch"),
		Mounts:  []Mount{{Source: data, Target: "/data"}},
		UID:     4242, GID: 4242,
		Hostname: "pod-a", ReadOnlyRoot: true,
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Argv: []string{"sh", "-c", `hostname; whoami
awk '$2=="/" {split($4, o, ","); print "root-" o[1]}' /proc/mounts
echo ok > /data/y && echo volume-writable`},
	}
	out := run(t, spec, filepath.Join(dir, "spec.json"))
	want := "pod-a\nuser4242\nroot-ro\nvolume-writable"
	if strings.TrimSpace(out) != want {
		t.Fatalf("container said:\n%s\nwant:\n%s", out, want)
	}
	if now, _ := os.Hostname(); now != host {
		t.Errorf("the host's name changed from %q to %q", host, now)
	}
}

func TestInRootFollowsLinksWithoutLeavingTheRoot(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "run"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "var"), 0o755))
	must(t, os.Symlink("/run", filepath.Join(root, "var/run")))
	must(t, os.Symlink("../../..", filepath.Join(root, "run/up")))
	for in, want := range map[string]string{
		"/var/run/secrets/token": "/run/secrets/token",
		"/run/up/etc":            "/etc",
		"/var/../../x":           "/x",
		"/new/dir":               "/new/dir",
	} {
		got, err := inRoot(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("inRoot(%q) = %q, %v; want %q", in, got, err, filepath.Join(root, want))
		}
	}
}
