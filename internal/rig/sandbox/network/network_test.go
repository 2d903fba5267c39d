package network

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestPodsReachEachOtherAndTheHost(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if testing.Short() {
		t.Skip("changes the host's network")
	}
	b := Bridge{Name: "hftest0", Gateway: &net.IPNet{IP: net.IPv4(10, 251, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Remove() })
	if err := b.Ensure(); err != nil {
		t.Fatalf("a second Ensure: %v", err)
	}

	pods := map[string]net.IP{Namespace("test-a"): net.IPv4(10, 251, 0, 2).To4(), Namespace("test-b"): net.IPv4(10, 251, 0, 3).To4()}
	for ns, ip := range pods {
		if err := b.AddPod(ns, ip); err != nil {
			t.Fatalf("adding %s: %v", ns, err)
		}
		t.Cleanup(func() {
			if err := b.RemovePod(ns); err != nil {
				t.Errorf("removing %s: %v", ns, err)
			}
			if _, err := os.Stat(NamespacePath(ns)); err == nil {
				t.Errorf("namespace %s left behind", ns)
			}
		})
	}

	// A server inside pod a, on its own address.
	var l net.Listener
	if err := InNamespace(Namespace("test-a"), func() (err error) {
		l, err = net.Listen("tcp", "0.0.0.0:7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "hello from a")
			c.Close()
		}
	}()

	read := func(dial func() (net.Conn, error)) (string, error) {
		c, err := dial()
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	// The first connections after a bridge port comes up can fail while
	// the port settles; poll briefly. (The node must likewise wait for a
	// pod's port to forward before it reports the pod ready.)
	dialA := func() (net.Conn, error) { return net.DialTimeout("tcp", "10.251.0.2:7000", time.Second) }
	poll := func(what string, attempt func() (string, error)) {
		t.Helper()
		var got string
		var err error
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if got, err = attempt(); err == nil {
				break
			}
		}
		if err != nil || got != "hello from a" {
			t.Fatalf("%s: %q, %v", what, got, err)
		}
	}
	poll("host to pod a", func() (string, error) { return read(dialA) })
	poll("pod b to pod a", func() (got string, err error) {
		err = InNamespace(Namespace("test-b"), func() error {
			got, err = read(dialA)
			return err
		})
		return got, err
	})
	// Inside pod a, loopback is the pod's own: its server answers there.
	if err := InNamespace(Namespace("test-a"), func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:7000", time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	}); err != nil {
		t.Errorf("pod a to its own loopback: %v", err)
	}
}
