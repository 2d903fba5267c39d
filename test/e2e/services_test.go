package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/sandbox"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// TestSandboxServices checks what makes Services work in the sandbox:
// kube-proxy routes ClusterIPs from the host and from pods on the bridge
// (to another pod and back to the caller itself), CoreDNS answers for the
// cluster domain at the kube-dns ClusterIP and on the bridge's gateway, and
// `down` leaves neither processes nor kube-proxy's rules behind.
func TestSandboxServices(t *testing.T) {
	e := startSandbox(t)
	host, err := sandbox.DefaultAdvertiseIP()
	if err != nil {
		t.Fatal(err)
	}
	const svcNS = "e2e-services"
	e.mustKubectl("", "create", "namespace", svcNS)

	// A TCP echo on the host, behind a Service without a selector.
	hostEcho, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostEcho.Close() })
	go serveEcho(hostEcho)
	hostIP := e.manualService(svcNS, "host-echo", host.String(), hostEcho.Addr().(*net.TCPAddr).Port)

	t.Run("the host reaches a ClusterIP", func(t *testing.T) {
		poll(t, 2*time.Minute, "an echo through "+hostIP+":80", func() error {
			_, err := echoVia(hostIP+":80", "from the host", nil)
			return err
		})
	})

	t.Run("cluster DNS from the host", func(t *testing.T) {
		name := "host-echo." + svcNS + ".svc." + sandbox.ClusterDomain + "."
		for _, server := range []string{sandbox.ClusterDNS, sandbox.PodBridge.Gateway.IP.String()} {
			for _, proto := range []string{"udp", "tcp"} {
				addr := net.JoinHostPort(server, "53")
				r := resolverVia(addr, proto, nil)
				poll(t, time.Minute, name+" at "+addr+"/"+proto, func() error {
					return lookupIs(r, name, hostIP)
				})
			}
		}
		// Nothing is forwarded: other names fail at once rather than hang.
		r := resolverVia(net.JoinHostPort(sandbox.ClusterDNS, "53"), "udp", nil)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		start := time.Now()
		if addrs, err := r.LookupHost(ctx, "example.com."); err == nil {
			t.Errorf("example.com resolved to %v; the sandbox forwards nothing", addrs)
		} else if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a name outside the cluster took %s to fail: %v", d, err)
		}
		if err := lookupIs(r, "missing."+svcNS+".svc."+sandbox.ClusterDomain+".", ""); err == nil ||
			!strings.Contains(err.Error(), "no such host") {
			t.Errorf("a missing Service: %v, want no such host", err)
		}
	})

	t.Run("pods reach a pod on the same bridge through a ClusterIP, and themselves", func(t *testing.T) {
		bridge := sandbox.PodBridge
		a, b := network.Namespace("e2e-svc-a"), network.Namespace("e2e-svc-b")
		// Far from the node's addresses, which start at 10.244.0.2.
		ips := map[string]net.IP{a: net.IPv4(10, 244, 255, 201).To4(), b: net.IPv4(10, 244, 255, 202).To4()}
		for ns, ip := range ips {
			if err := bridge.AddPod(ns, ip); err != nil {
				t.Fatalf("adding pod network %s: %v", ns, err)
			}
			t.Cleanup(func() {
				if err := bridge.RemovePod(ns); err != nil {
					t.Errorf("removing %s: %v", ns, err)
				}
			})
		}
		var podEcho net.Listener
		if err := network.InNamespace(b, func() (err error) {
			podEcho, err = net.Listen("tcp", "0.0.0.0:9000")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { podEcho.Close() })
		go serveEcho(podEcho)
		podIP := e.manualService(svcNS, "pod-echo", ips[b].String(), 9000)

		for _, from := range []string{a, b} {
			poll(t, time.Minute, "an echo from "+from+" through "+podIP+":80", func() error {
				client, err := echoVia(podIP+":80", "from "+from, &from)
				if err != nil {
					return err
				}
				// masqueradeAll: the pod behind the Service sees the bridge's
				// gateway, so its answer goes back through the host's NAT
				// even where bridged traffic skips iptables.
				if client != bridge.Gateway.IP.String() {
					return fmt.Errorf("the pod behind the Service saw client %s, want the gateway %s", client, bridge.Gateway.IP)
				}
				return nil
			})
		}

		name := "pod-echo." + svcNS + ".svc." + sandbox.ClusterDomain + "."
		for _, proto := range []string{"udp", "tcp"} {
			r := resolverVia(net.JoinHostPort(sandbox.ClusterDNS, "53"), proto, &a)
			poll(t, time.Minute, name+" from "+a+" over "+proto, func() error { return lookupIs(r, name, podIP) })
		}
	})

	if out, err := e.sandbox("down"); err != nil || !strings.Contains(out, "has stopped") {
		t.Fatalf("sandbox down: %v\n%s", err, out)
	}
	if left := processesMentioning(e.dir); len(left) > 0 {
		t.Errorf("processes left after down: %v", left)
	}
	if out, err := exec.Command("iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES").CombinedOutput(); err == nil {
		t.Errorf("kube-proxy's rules are left after down:\n%s", out)
	}
	if out, err := exec.Command("iptables", "-w", "-t", "filter", "-S", "KUBE-FIREWALL").CombinedOutput(); err == nil {
		t.Errorf("kube-proxy's KUBE-FIREWALL chain is left after down:\n%s", out)
	}
}

// manualService makes a Service without a selector and an EndpointSlice that
// sends its port 80 to ip:port, and returns its ClusterIP.
func (e *sandboxEnv) manualService(ns, name, ip string, port int) string {
	e.t.Helper()
	p := strconv.Itoa(port)
	e.mustKubectl(`{"apiVersion":"v1","kind":"List","items":[
		{"apiVersion":"v1","kind":"Service","metadata":{"name":"`+name+`","namespace":"`+ns+`"},
		 "spec":{"ports":[{"name":"echo","protocol":"TCP","port":80,"targetPort":`+p+`}]}},
		{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
		 "metadata":{"name":"`+name+`-manual","namespace":"`+ns+`","labels":{
			"kubernetes.io/service-name":"`+name+`","endpointslice.kubernetes.io/managed-by":"e2e.holdfast.dev"}},
		 "addressType":"IPv4",
		 "endpoints":[{"addresses":["`+ip+`"],"conditions":{"ready":true}}],
		 "ports":[{"name":"echo","protocol":"TCP","port":`+p+`}]}]}`, "apply", "-f", "-")
	return e.mustKubectl("", "-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
}

// serveEcho answers each line with the line and the client's address.
func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			client, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", strings.TrimSpace(line), client)
		}()
	}
}

// echoVia sends msg to an echo server at addr, from the network namespace
// ns if given, and returns the client address the server saw.
func echoVia(addr, msg string, ns *string) (string, error) {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}
	var err error
	if ns != nil {
		err = network.InNamespace(*ns, dial)
	} else {
		err = dial()
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the echo: %w", err)
	}
	line = strings.TrimSpace(line)
	i := strings.LastIndex(line, " ")
	if i < 0 || line[:i] != msg {
		return "", fmt.Errorf("echo %q, want %q", line, msg)
	}
	return line[i+1:], nil
}

// resolverVia asks only the DNS server at addr, over network ("udp" or
// "tcp"), from the network namespace ns if given.
func resolverVia(addr, proto string, ns *string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var c net.Conn
		dial := func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, proto, addr)
			return err
		}
		var err error
		if ns != nil {
			err = network.InNamespace(*ns, dial)
		} else {
			err = dial()
		}
		return c, err
	}}
}

// lookupIs resolves name and checks that it has exactly the address want.
func lookupIs(r *net.Resolver, name, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	if err != nil {
		return err
	}
	if len(addrs) != 1 || addrs[0] != want {
		return fmt.Errorf("%s resolves to %v, want %s", name, addrs, want)
	}
	return nil
}
