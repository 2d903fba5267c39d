package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/rig/controlplane"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// The cluster DNS, as pods see it: the nameserver and search domains of
// their /etc/resolv.conf.
const (
	// ClusterDNS is the ClusterIP of Service kube-system/kube-dns. It lies
	// in the default Service range (10.96.0.0/16).
	ClusterDNS = "10.96.0.10"
	// ClusterDomain is the DNS domain of Services and pods.
	ClusterDomain = "cluster.local"
)

// corednsUser is the user of CoreDNS's client certificate.
const corednsUser = "holdfast:coredns"

// servicesManagedBy marks the EndpointSlice that startServices keeps for
// kube-dns (endpointslice.kubernetes.io/managed-by).
const servicesManagedBy = "sandbox.holdfast.dev"

// podCIDR is the pod range: PodBridge's network.
func podCIDR() string {
	return (&net.IPNet{IP: PodBridge.Gateway.IP.Mask(PodBridge.Gateway.Mask), Mask: PodBridge.Gateway.Mask}).String()
}

// startServices runs what makes Services work on the sandbox: kube-proxy for
// ClusterIPs, and CoreDNS on the pod bridge's gateway (PodBridge) as the
// cluster DNS, reached through Service kube-system/kube-dns at ClusterDNS.
// It makes the pod bridge if it is missing. It returns once CoreDNS answers; kube-proxy
// then routes Services within a second, or within 30 seconds while the
// node is not registered (it waits that long for the Node's addresses).
//
// kube-proxy's Stop removes its iptables rules (kube-proxy --cleanup).
func startServices(ctx context.Context, c Config, cs kubernetes.Interface, progress func(string)) ([]*controlplane.Process, error) {
	_, svcNet, err := net.ParseCIDR(c.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", c.ServiceCIDR, err)
	}
	if !svcNet.Contains(net.ParseIP(ClusterDNS)) {
		return nil, fmt.Errorf("the cluster DNS address %s is outside the Service range %s", ClusterDNS, c.ServiceCIDR)
	}
	bridge := PodBridge
	if err := bridge.Ensure(); err != nil {
		return nil, err
	}
	// ClusterIPs exist only in kube-proxy's rules: route the range to the
	// pod bridge, so that the host reaches it without a default route and
	// nothing for it leaves the machine when no rule matches.
	if err := routeServices(svcNet, bridge); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.path("services"), 0o755); err != nil {
		return nil, err
	}
	logFor := func(name string) (*os.File, error) {
		return os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	}

	progress("starting kube-proxy (iptables)")
	proxyLog, err := logFor("kube-proxy")
	if err != nil {
		return nil, err
	}
	// Rules a killed sandbox left behind would route to addresses of the
	// last cluster until kube-proxy has synced.
	cleanupProxy := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kube-proxy"), "--cleanup")
		cmd.Stdout, cmd.Stderr = proxyLog, proxyLog
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(proxyLog, "holdfast: kube-proxy --cleanup: %v\n", err)
		}
		removeEmptyFirewallChain(ctx, proxyLog)
	}
	cleanupProxy()
	conf := c.path("services", "kube-proxy.yaml")
	if err := os.WriteFile(conf, []byte(kubeProxyConfig(c)), 0o644); err != nil {
		proxyLog.Close()
		return nil, err
	}
	proxy, err := controlplane.Supervise("kube-proxy", filepath.Join(c.BinDir, "kube-proxy"), []string{"--config=" + conf}, proxyLog,
		// kube-proxy exits when the Node's addresses change, as when the
		// node registers after it started: start it again, as a DaemonSet.
		controlplane.Restart{Delay: time.Second, Limit: 5, Window: time.Minute, AfterStop: func() {
			cleanupProxy()
			proxyLog.Close()
		}})
	if err != nil {
		proxyLog.Close()
		return nil, err
	}
	procs := []*controlplane.Process{proxy}
	fail := func(err error) ([]*controlplane.Process, error) {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop()
		}
		return nil, err
	}

	progress("starting CoreDNS on " + bridge.Gateway.IP.String() + ":53, Service kube-system/kube-dns at " + ClusterDNS)
	if err := ensureDNSAccess(ctx, cs); err != nil {
		return fail(err)
	}
	corefile := c.path("services", "Corefile")
	if err := os.WriteFile(corefile, []byte(corefileFor(c, bridge.Gateway.IP)), 0o644); err != nil {
		return fail(err)
	}
	dnsLog, err := logFor("coredns")
	if err != nil {
		return fail(err)
	}
	dns, err := controlplane.StartProcess("coredns", filepath.Join(c.BinDir, "coredns"), []string{"-conf", corefile}, dnsLog)
	if err != nil {
		dnsLog.Close()
		return fail(err)
	}
	procs = append(procs, dns)
	go func() { <-dns.Exited(); dnsLog.Close() }()
	if err := ensureDNSService(ctx, cs, bridge.Gateway.IP); err != nil {
		return fail(err)
	}
	if err := waitDNS(ctx, c, dns, bridge.Gateway.IP); err != nil {
		return fail(err)
	}
	return procs, nil
}

// routeServices routes the Service range to the bridge, from the bridge's
// address.
func routeServices(svcNet *net.IPNet, bridge network.Bridge) error {
	link, err := netlink.LinkByName(bridge.Name)
	if err != nil {
		return fmt.Errorf("looking up bridge %s: %w", bridge.Name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: svcNet, Src: bridge.Gateway.IP, Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("routing %s to %s: %w", svcNet, bridge.Name, err)
	}
	return nil
}

// removeEmptyFirewallChain removes the filter chain KUBE-FIREWALL and its
// jumps from INPUT and OUTPUT when it is empty: kube-proxy makes it (a copy
// of the kubelet's) and its cleanup leaves it, as the kubelet's own.
func removeEmptyFirewallChain(ctx context.Context, log io.Writer) {
	const chain = "KUBE-FIREWALL"
	out, err := exec.CommandContext(ctx, "iptables", "-w", "-t", "filter", "-S", chain).Output()
	if err != nil || strings.TrimSpace(string(out)) != "-N "+chain {
		return // absent, or holds rules that are not ours
	}
	for _, args := range [][]string{
		{"-D", "INPUT", "-j", chain},
		{"-D", "OUTPUT", "-j", chain},
		{"-X", chain},
	} {
		cmd := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "filter"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(log, "holdfast: iptables %s: %v %s\n", strings.Join(args, " "), err, out)
		}
	}
}

// kubeProxyConfig is kube-proxy's configuration file (the flags that say
// the same are deprecated in favour of it).
func kubeProxyConfig(c Config) string {
	return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ` + c.path("pki", "kube-proxy.kubeconfig") + `
hostnameOverride: ` + NodeName + `
# The node's address until kube-proxy reads it from the Node.
bindAddress: ` + c.AdvertiseIP.String() + `
# NodePorts on the node's address only (the default is every address).
nodePortAddresses: [primary]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: iptables
detectLocalMode: ClusterCIDR
clusterCIDR: ` + podCIDR() + `
iptables:
  # Pods share one L2 bridge, and bridged traffic may bypass iptables
  # (br_netfilter): without SNAT, a pod that a Service sends a pod on the
  # same bridge to answers it directly, from an address it did not call.
  masqueradeAll: true
  # Leave net.ipv4.conf.all.route_localnet alone: no NodePorts on 127.0.0.1.
  localhostNodePorts: false
# Leave the host's conntrack sysctls as they are.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
}

// corefileFor serves the cluster domain and reverse lookups from the API
// through the kubernetes plugin, on the bridge's gateway only. CoreDNS
// answers REFUSED for every other name: the sandbox forwards nothing.
func corefileFor(c Config, listen net.IP) string {
	zones := ClusterDomain + " in-addr.arpa ip6.arpa"
	return strings.Join(strings.Fields(zones), ":53 ") + `:53 {
	bind ` + listen.String() + `
	errors
	kubernetes ` + zones + ` {
		kubeconfig ` + c.path("pki", "coredns.kubeconfig") + ` holdfast-sandbox
		pods insecure
		ttl 5
	}
	cache 30
	loadbalance
}
`
}

// ensureDNSAccess lets CoreDNS's user read what the kubernetes plugin
// watches.
func ensureDNSAccess(ctx context.Context, cs kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: corednsUser},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: corednsUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: corednsUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: corednsUser}},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRoleBinding %s: %w", binding.Name, err)
	}
	return nil
}

// ensureDNSService makes Service kube-system/kube-dns at ClusterDNS, sent
// to CoreDNS at server:53.
func ensureDNSService(ctx context.Context, cs kubernetes.Interface, server net.IP) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: metav1.NamespaceSystem, Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: ClusterDNS,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53},
			},
		},
	}
	_, err := ensureHostService(ctx, cs, svc, "coredns", server)
	return err
}

// ensureHostService makes svc, which has no selector, and an EndpointSlice
// <name>-<process> that sends each of its ports to its numeric targetPort
// (or its port) on server: the sandbox's own servers run on the host, not
// in pods, so no controller would fill the slice. It returns the Service's
// ClusterIP.
func ensureHostService(ctx context.Context, cs kubernetes.Interface, svc *corev1.Service, process string, server net.IP) (string, error) {
	ns, name := svc.Namespace, svc.Name
	created, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("creating Service %s/%s: %w", ns, name, err)
	}
	var ports []discoveryv1.EndpointPort
	for _, p := range svc.Spec.Ports {
		port, protocol := p.Port, p.Protocol
		if p.TargetPort.IntVal != 0 {
			port = p.TargetPort.IntVal
		}
		if protocol == "" {
			protocol = corev1.ProtocolTCP // the Service's default, which a slice does not get
		}
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(protocol), Port: ptr.To(port)})
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + process, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   servicesManagedBy,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{server.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To(NodeName),
		}},
		Ports: ports,
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating EndpointSlice %s/%s: %w", ns, slice.Name, err)
	}
	return created.Spec.ClusterIP, nil
}

// waitDNS waits until CoreDNS at server answers for the `kubernetes`
// Service, which it does once it has read the API.
func waitDNS(ctx context.Context, c Config, dns *controlplane.Process, server net.IP) error {
	r := dnsResolver(net.JoinHostPort(server.String(), "53"))
	name := "kubernetes.default.svc." + ClusterDomain + "."
	return waitAnswers(ctx, c, dns, "CoreDNS does not answer for "+name, func(ctx context.Context) error {
		_, err := r.LookupHost(ctx, name)
		return err
	})
}

// waitAnswers polls ask, two seconds at most a try, until it succeeds, p
// exits, or a minute has passed: a server the sandbox started answers
// within seconds, or something is wrong that its log (logs/<p.Name>.log)
// tells.
func waitAnswers(ctx context.Context, c Config, p *controlplane.Process, failure string, ask func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	log := c.path("logs", p.Name+".log")
	var last error
	for {
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.Err(), log)
		default:
		}
		askCtx, cancelAsk := context.WithTimeout(ctx, 2*time.Second)
		err := ask(askCtx)
		cancelAsk()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; see %s", failure, errors.Join(last, ctx.Err()), log)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dnsResolver is a resolver that asks only the DNS server at addr
// ("ip:port"), over UDP or TCP as the lookup needs.
func dnsResolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}
