package network

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
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

// A bridge left to itself takes the lowest MAC of its ports, and changes
// it when that port leaves; pods' ARP entries for the gateway then point
// nowhere. Its address must stay put as pods come and go.
func TestTheBridgeKeepsItsAddressAsPodsComeAndGo(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if testing.Short() {
		t.Skip("changes the host's network")
	}
	b := Bridge{Name: "hftest1", Gateway: &net.IPNet{IP: net.IPv4(10, 252, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Remove() })
	mac := func() string {
		t.Helper()
		link, err := netlink.LinkByName(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		return link.Attrs().HardwareAddr.String()
	}
	want := b.gatewayMAC().String()
	if got := mac(); got != want {
		t.Fatalf("bridge address %s; want %s", got, want)
	}
	var names []string
	for i := range 4 {
		ns := Namespace(fmt.Sprintf("test-mac-%d", i))
		if err := b.AddPod(ns, net.IPv4(10, 252, 0, byte(2+i)).To4()); err != nil {
			t.Fatalf("adding %s: %v", ns, err)
		}
		names = append(names, ns)
		if got := mac(); got != want {
			t.Fatalf("with %d pods the bridge address is %s; want %s", i+1, got, want)
		}
	}
	for _, ns := range names {
		if err := b.RemovePod(ns); err != nil {
			t.Fatalf("removing %s: %v", ns, err)
		}
		if got := mac(); got != want {
			t.Fatalf("after %s left the bridge address is %s; want %s", ns, got, want)
		}
	}
	// A bridge left from a start before this fix gets the address too.
	other, _ := net.ParseMAC("02:00:00:00:00:09")
	link, err := netlink.LinkByName(b.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetHardwareAddr(link, other); err != nil {
		t.Fatal(err)
	}
	if err := b.Ensure(); err != nil {
		t.Fatal(err)
	}
	if got := mac(); got != want {
		t.Errorf("Ensure left the bridge address at %s; want %s", got, want)
	}
}
