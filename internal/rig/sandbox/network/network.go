// Package network gives each sandbox pod its own network namespace, joined
// to a bridge on a private range that exists only inside this machine: the
// host reaches every pod, pods reach each other and the host, and nothing
// leaves the machine.
package network

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Bridge is the sandbox's pod network.
type Bridge struct {
	// Name of the bridge device.
	Name string
	// Gateway is the bridge's own address; its mask is the pod range's.
	Gateway *net.IPNet
}

// Ensure creates the bridge if missing, gives it the gateway address and
// brings it up. Idempotent.
func (b Bridge) Ensure() error {
	link, err := netlink.LinkByName(b.Name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return fmt.Errorf("looking up bridge %s: %w", b.Name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("creating bridge %s: %w", b.Name, err)
		}
		if link, err = netlink.LinkByName(b.Name); err != nil {
			return err
		}
	}
	// A bridge with no address of its own takes the lowest of its ports':
	// the port that held it leaving (a pod deleted) changes it, and every
	// pod's ARP entry for the gateway then points at a MAC that is gone.
	// Their traffic to the host (the API server, DNS, the object store)
	// vanishes until the entry expires, some 30 to 45 s. A set address
	// never follows the ports.
	if mac := b.gatewayMAC(); !bytes.Equal(link.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("setting the address of bridge %s: %w", b.Name, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: b.Gateway}); err != nil {
		return fmt.Errorf("addressing bridge %s: %w", b.Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing bridge %s up: %w", b.Name, err)
	}
	// Pod-to-pod traffic through Service addresses is routed by this host.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enabling IP forwarding: %w", err)
	}
	return nil
}

// gatewayMAC is the bridge's own address: locally administered, and
// derived from the gateway's IP so that every start gives the same one.
func (b Bridge) gatewayMAC() net.HardwareAddr {
	ip := b.Gateway.IP.To4()
	return net.HardwareAddr{0x02, 0x68, ip[0], ip[1], ip[2], ip[3]}
}

// Remove deletes the bridge.
func (b Bridge) Remove() error {
	link, err := netlink.LinkByName(b.Name)
	if err != nil {
		return nil // already gone
	}
	return netlink.LinkDel(link)
}

// Namespace names the network namespace of a pod by its UID, so that a
// pod recreated under the same name gets a fresh one.
func Namespace(podUID string) string { return namespacePrefix + podUID }

const namespacePrefix = "hf-"

var podUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// NamespacePath is where `ip netns` and nsenter find a namespace.
func NamespacePath(ns string) string { return filepath.Join("/var/run/netns", ns) }

// hostVeth names the host end of a pod's veth: device names are at most 15 bytes.
func hostVeth(ns string) string {
	sum := sha256.Sum256([]byte(ns))
	return "hfv" + hex.EncodeToString(sum[:])[:11]
}

// AddPod makes the namespace ns with eth0 at ip, a default route through the
// bridge and loopback up. The bridge port has hairpin on, so a pod reaches
// itself through a Service.
func (b Bridge) AddPod(ns string, ip net.IP) error {
	br, err := netlink.LinkByName(b.Name)
	if err != nil {
		return fmt.Errorf("looking up bridge %s: %w", b.Name, err)
	}
	// Creating a namespace moves the calling thread into it: do it on a
	// locked thread and move back.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("reading this thread's namespace: %w", err)
	}
	defer orig.Close()
	handle, err := netns.NewNamed(ns)
	if err != nil {
		return fmt.Errorf("creating network namespace %s: %w", ns, err)
	}
	defer handle.Close()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("returning to the host namespace: %w", err)
	}

	host := hostVeth(ns)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index}, PeerName: host + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", host, err)
	}
	peer, err := netlink.LinkByName(host + "p")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsFd(peer, int(handle)); err != nil {
		return fmt.Errorf("moving the veth into %s: %w", ns, err)
	}
	hostLink, err := netlink.LinkByName(host)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetHairpin(hostLink, true); err != nil {
		return fmt.Errorf("hairpin on %s: %w", host, err)
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("bringing %s up: %w", host, err)
	}

	in, err := netlink.NewHandleAt(handle)
	if err != nil {
		return fmt.Errorf("opening %s: %w", ns, err)
	}
	defer in.Close()
	eth, err := in.LinkByName(host + "p")
	if err != nil {
		return err
	}
	if err := in.LinkSetName(eth, "eth0"); err != nil {
		return fmt.Errorf("naming eth0 in %s: %w", ns, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: b.Gateway.Mask}}
	if err := in.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("addressing eth0 in %s: %w", ns, err)
	}
	if err := in.LinkSetUp(eth); err != nil {
		return err
	}
	lo, err := in.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := in.LinkSetUp(lo); err != nil {
		return err
	}
	if err := in.RouteAdd(&netlink.Route{Gw: b.Gateway.IP, LinkIndex: eth.Attrs().Index}); err != nil {
		return fmt.Errorf("default route in %s: %w", ns, err)
	}
	return nil
}

// RemovePod deletes a pod's namespace and the host end of its veth.
func (b Bridge) RemovePod(ns string) error {
	var errs []error
	if link, err := netlink.LinkByName(hostVeth(ns)); err == nil {
		errs = append(errs, netlink.LinkDel(link))
	}
	if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
	}
	return errors.Join(errs...)
}

// InNamespace runs f on a thread inside ns. Sockets f opens stay in ns
// after it returns.
func InNamespace(ns string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("entering namespace %s: %w", ns, err)
	}
	defer func() { _ = netns.Set(orig) }()
	return f()
}

// RemoveAll deletes every pod namespace this package made and the bridge,
// and says how many namespaces there were.
func RemoveAll(b Bridge) (int, error) {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	var errs []error
	n := 0
	for _, e := range entries {
		// Pod UIDs only: tests make namespaces of their own with the prefix.
		if ns := e.Name(); strings.HasPrefix(ns, namespacePrefix) && podUID.MatchString(strings.TrimPrefix(ns, namespacePrefix)) {
			n++
			errs = append(errs, b.RemovePod(ns))
		}
	}
	errs = append(errs, b.Remove())
	return n, errors.Join(errs...)
}
