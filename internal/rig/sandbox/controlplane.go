// Package sandbox runs a Kubernetes control plane on this machine from the
// pinned binaries, under one state folder, as `holdfast sandbox` does. Unlike
// the test control plane (internal/rig/controlplane), it has its own PKI, so
// that pods reach the API server by the `kubernetes` Service and carry real
// service-account tokens, and it keeps running after `up` returns.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/rig/controlplane"
)

// Config says where the sandbox lives and what it listens on.
type Config struct {
	Dir    string // state: pki, etcd data, logs, kubeconfig
	BinDir string // etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, coredns, kubectl
	// APIPort is the API server's port on all addresses; EtcdPort is etcd's
	// client port on loopback (its peer port is the next one).
	APIPort, EtcdPort int
	// AdvertiseIP is the API server's address in the `kubernetes` Service's
	// endpoints; it must not be loopback.
	AdvertiseIP net.IP
	// ServiceCIDR is where Services get their ClusterIPs.
	ServiceCIDR string
	// Images is an OCI image layout (what `make images` prints) whose
	// images `up` pushes to the sandbox's registry.
	Images string
}

// kubernetesServiceIP is the first address of the Service range, which the
// API server gives its own `kubernetes` Service.
func (c Config) kubernetesServiceIP() (net.IP, error) {
	ip, _, err := net.ParseCIDR(c.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", c.ServiceCIDR, err)
	}
	ip = ip.To4()
	if ip == nil {
		return nil, fmt.Errorf("service CIDR %q: IPv4 only", c.ServiceCIDR)
	}
	out := make(net.IP, 4)
	copy(out, ip)
	out[3]++
	return out, nil
}

func (c Config) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir}, parts...)...)
}

// Kubeconfig is the admin kubeconfig's path.
func (c Config) Kubeconfig() string { return c.path("kubeconfig") }

// controlPlane is the running control-plane processes.
type controlPlane struct {
	procs []*controlplane.Process
}

func (cp *controlPlane) stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].Stop()
	}
}

// writePKI makes a new CA and every certificate and kubeconfig the control
// plane needs.
func writePKI(c Config) error {
	dir := c.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA("holdfast-sandbox-ca")
	if err != nil {
		return err
	}
	caKey, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, "ca.crt"), pki.CertPEM(ca.Cert), 0o644),
		os.WriteFile(filepath.Join(dir, "ca.key"), caKey, 0o600),
	); err != nil {
		return fmt.Errorf("writing the CA: %w", err)
	}
	svcIP, err := c.kubernetesServiceIP()
	if err != nil {
		return err
	}
	serving, err := ca.Serving("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), svcIP, c.AdvertiseIP})
	if err != nil {
		return err
	}
	if err := pki.WriteLeaf(dir, "apiserver", serving); err != nil {
		return err
	}
	// The node's API (logs, exec) serves with its own certificate; the API
	// server calls it with a client certificate of its own, as with kubelets.
	nodeServing, err := ca.Serving("system:node:"+NodeName, []string{NodeName, "localhost"},
		[]net.IP{net.ParseIP("127.0.0.1"), c.AdvertiseIP})
	if err != nil {
		return err
	}
	kubeletClient, err := ca.Client("kube-apiserver-kubelet-client", "system:masters")
	if err != nil {
		return err
	}
	if err := errors.Join(pki.WriteLeaf(dir, "node", nodeServing), pki.WriteLeaf(dir, "apiserver-kubelet-client", kubeletClient)); err != nil {
		return err
	}
	// The service-account signing key: the API server signs tokens, the
	// token controller and the API server verify them.
	sa, err := ca.Client("service-accounts")
	if err != nil {
		return err
	}
	saPub, err := pki.PublicKeyPEM(sa.Key.Public())
	if err != nil {
		return err
	}
	saKey, err := pki.KeyPEM(sa.Key)
	if err != nil {
		return err
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, "sa.pub"), saPub, 0o644),
		os.WriteFile(filepath.Join(dir, "sa.key"), saKey, 0o600),
	); err != nil {
		return fmt.Errorf("writing the service-account key: %w", err)
	}
	// Each component signs in as the user the bootstrap RBAC policy expects.
	for file, user := range map[string][2]string{
		"kubeconfig":                             {"holdfast-admin", "system:masters"},
		"pki/kube-controller-manager.kubeconfig": {"system:kube-controller-manager", ""},
		"pki/kube-scheduler.kubeconfig":          {"system:kube-scheduler", ""},
		// The bootstrap policy binds system:kube-proxy to system:node-proxier.
		"pki/kube-proxy.kubeconfig": {"system:kube-proxy", ""},
		// startServices binds this user to the ClusterRole CoreDNS needs.
		"pki/coredns.kubeconfig": {corednsUser, ""},
	} {
		var groups []string
		if user[1] != "" {
			groups = []string{user[1]}
		}
		leaf, err := ca.Client(user[0], groups...)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(c.path(file), c.APIPort, ca, leaf); err != nil {
			return err
		}
	}
	return nil
}

func writeKubeconfig(path string, port int, ca *pki.CA, leaf *pki.Leaf) error {
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{
		Server:                   "https://127.0.0.1:" + strconv.Itoa(port),
		CertificateAuthorityData: pki.CertPEM(ca.Cert),
	}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.CertPEM(leaf.Cert), ClientKeyData: key}
	cfg.Contexts["holdfast-sandbox"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: "user", Namespace: "default"}
	cfg.CurrentContext = "holdfast-sandbox"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// startControlPlane starts etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler, and returns once the API server is healthy.
func startControlPlane(ctx context.Context, c Config, progress func(string)) (*controlPlane, error) {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return nil, err
	}
	cp := &controlPlane{}
	start := func(name string, args ...string) error {
		log, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		p, err := controlplane.StartProcess(name, filepath.Join(c.BinDir, name), args, log)
		if err != nil {
			log.Close()
			return err
		}
		cp.procs = append(cp.procs, p)
		return nil
	}
	fail := func(err error) (*controlPlane, error) {
		cp.stop()
		return nil, err
	}

	progress("starting etcd")
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(c.EtcdPort)
	if err := start("etcd",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:"+strconv.Itoa(c.EtcdPort+1),
		"--initial-advertise-peer-urls=http://127.0.0.1:"+strconv.Itoa(c.EtcdPort+1),
		"--initial-cluster=default=http://127.0.0.1:"+strconv.Itoa(c.EtcdPort+1),
		"--name=default", "--unsafe-no-fsync=true",
	); err != nil {
		return fail(err)
	}

	progress("starting kube-apiserver")
	pk := func(f string) string { return c.path("pki", f) }
	if err := start("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(c.APIPort),
		"--advertise-address="+c.AdvertiseIP.String(),
		"--tls-cert-file="+pk("apiserver.crt"), "--tls-private-key-file="+pk("apiserver.key"),
		"--client-ca-file="+pk("ca.crt"),
		"--kubelet-client-certificate="+pk("apiserver-kubelet-client.crt"), "--kubelet-client-key="+pk("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+pk("ca.crt"), "--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pk("sa.pub"), "--service-account-signing-key-file="+pk("sa.key"),
		"--service-cluster-ip-range="+c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=false",
	); err != nil {
		return fail(err)
	}
	if err := waitHealthy(ctx, c, cp); err != nil {
		return fail(err)
	}

	progress("starting kube-controller-manager and kube-scheduler")
	if err := start("kube-controller-manager", append(controlplane.ComponentFlags(pk("kube-controller-manager.kubeconfig")),
		"--service-account-private-key-file="+pk("sa.key"), "--root-ca-file="+pk("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+pk("ca.crt"), "--cluster-signing-key-file="+pk("ca.key"),
	)...); err != nil {
		return fail(err)
	}
	if err := start("kube-scheduler", controlplane.ComponentFlags(pk("kube-scheduler.kubeconfig"))...); err != nil {
		return fail(err)
	}
	return cp, nil
}

// waitHealthy polls the API server's /readyz until it answers ok.
func waitHealthy(ctx context.Context, c Config, cp *controlPlane) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return err
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: transport, Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		for _, p := range cp.procs {
			select {
			case <-p.Exited():
				return fmt.Errorf("%s exited (%v); see %s", p.Name, p.Err(), c.path("logs", p.Name+".log"))
			default:
			}
		}
		resp, err := hc.Get(cfg.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server is not ready: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
