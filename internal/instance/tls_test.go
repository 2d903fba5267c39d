package instance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// mountCertificates issues a CA and mounts, as the pod's Secret volumes
// do, the server certificate (for localhost and 127.0.0.1) and the
// replication client certificate every instance of the harness uses.
func (h *harness) mountCertificates() {
	h.t.Helper()
	ca, err := pki.NewCA("cluster-ca")
	if err != nil {
		h.t.Fatal(err)
	}
	h.ca, h.caFile = ca, filepath.Join(h.base, "client-ca.crt")
	if err := os.WriteFile(h.caFile, pki.CertPEM(ca.Cert), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.mountServerCert(ca, nil)
	repl, err := ca.Client(postgres.ReplicationUser)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mountLeaf(resources.TLSReplicationDir, ca, repl)
}

// mountServerCert writes a server certificate where the pod's Secret
// volume puts it, as the kubelet does on a renewal, and gives its serial.
func (h *harness) mountServerCert(ca *pki.CA, keyOf *pki.Leaf) *big.Int {
	h.t.Helper()
	leaf, err := ca.Serving("pg", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		h.t.Fatal(err)
	}
	if keyOf != nil {
		leaf.Key = keyOf.Key // a certificate with another's key: not a pair
	}
	h.mountLeaf(resources.TLSServerDir, ca, leaf)
	return leaf.Cert.SerialNumber
}

func (h *harness) mountLeaf(under string, ca *pki.CA, leaf *pki.Leaf) {
	h.t.Helper()
	mountLeaf(h.t, h.secrets, under, ca, leaf)
}

// mountLeaf writes leaf, its key and ca under secrets/under, as a pod's
// Secret volume holds them.
func mountLeaf(t testing.TB, secrets, under string, ca *pki.CA, leaf *pki.Leaf) {
	t.Helper()
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(secrets, under)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": pki.CertPEM(leaf.Cert), "tls.key": key, "ca.crt": pki.CertPEM(ca.Cert)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// serveAPI serves the API of a manager that runs no postgres, with
// certificates of a new CA mounted for it, and gives a client with the
// operator's certificate and the API's base URL.
func serveAPI(t *testing.T, cfg Config) (*Manager, api.Client, string) {
	t.Helper()
	ca, err := pki.NewCA("cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Serving("pg", nil, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	repl, err := ca.Client(postgres.ReplicationUser)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SecretsDir = filepath.Join(t.TempDir(), "secrets")
	mountLeaf(t, cfg.SecretsDir, resources.TLSServerDir, ca, server)
	mountLeaf(t, cfg.SecretsDir, resources.TLSReplicationDir, ca, repl)
	cfg.StatusAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	m := NewManager(cfg, logr.Discard())
	srv, err := m.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	op, err := ca.Client(api.OperatorClientName)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: api.ClientTLS(tls.Certificate{Certificate: [][]byte{op.Cert.Raw}, PrivateKey: op.Key}, roots)}}
	t.Cleanup(client.CloseIdleConnections)
	return m, api.Client{HTTP: client}, "https://" + srv.API.String()
}

// servedSerial connects with TLS, verifying the server by the CA and the
// address, and gives the serial of the certificate the server presented.
func (h *harness) servedSerial(n *node) (*big.Int, error) {
	ctx, cancel := context.WithTimeout(h.t.Context(), 5*time.Second)
	defer cancel()
	c, err := h.conn(ctx, n)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	var ssl bool
	if err := c.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		return nil, fmt.Errorf("pg_stat_ssl says ssl=%v (%v)", ssl, err)
	}
	conn, ok := c.PgConn().Conn().(*tls.Conn)
	if !ok {
		return nil, errors.New("the connection is not TLS")
	}
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestServerTLSFollowsTheMountedCertificate: postgres serves TLS with the
// certificate mounted from the Secret; a renewed one is served without a
// restart; a mounted pair that is not valid leaves the last good one in
// force.
func TestServerTLSFollowsTheMountedCertificate(t *testing.T) {
	h := newHarness(t)
	ca := h.ca
	first := h.mountServerCert(ca, nil)
	n := h.add("pg-0")
	h.want(n, h.primary(n))
	h.waitFor(time.Minute, "the primary is ready", h.ready(n, "primary"))
	pid := n.mgr.Report().PID
	served := func(want *big.Int) func() error {
		return func() error {
			got, err := h.servedSerial(n)
			if err != nil {
				return err
			}
			if got.Cmp(want) != 0 {
				return fmt.Errorf("serial %x served, want %x", got, want)
			}
			return nil
		}
	}
	h.waitFor(10*time.Second, "the mounted certificate served", served(first))

	renewed := h.mountServerCert(ca, nil)
	h.waitFor(30*time.Second, "the renewed certificate served", served(renewed))
	if got := n.mgr.Report().PID; got != pid {
		t.Errorf("postgres restarted (pid %d, was %d) to serve the renewed certificate", got, pid)
	}

	other, err := ca.Client("other")
	if err != nil {
		t.Fatal(err)
	}
	h.mountServerCert(ca, other)
	// Given a few loops to (wrongly) take it, it must still serve the last good one.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if err := served(renewed)(); err != nil {
			t.Fatalf("after a bad pair was mounted: %v", err)
		}
	}
	h.waitFor(10*time.Second, "the primary still ready", h.ready(n, "primary"))
}

// newNode names a node and its postgres port. Its manager's two servers
// take any free port when first started (start keeps the ports they got for
// a restart): a port found free and bound later can be taken meanwhile by
// any connection of the packages that test beside this one.
func (h *harness) newNode(name string) *node {
	return &node{name: name, port: testutil.FreePort(h.t), dir: filepath.Join(h.base, name),
		statusAddr: "127.0.0.1:0", apiAddr: "127.0.0.1:0"}
}

func (n *node) apiURL() string { return "https://" + n.apiAddr }

// pool holds the harness's CA, which issued the instances' server certificates.
func (h *harness) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(h.ca.Cert)
	return p
}

// apiClient calls instance APIs with a client certificate for cn from
// the harness's CA, as the operator (or a peer) does.
func (h *harness) apiClient(cn string) *http.Client { return h.apiClientOf(h.ca, cn) }

func (h *harness) apiClientOf(ca *pki.CA, cn string) *http.Client {
	h.t.Helper()
	leaf, err := ca.Client(cn)
	if err != nil {
		h.t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}
	cfg := api.ClientTLS(cert, h.pool())
	// Presented even when the server names other CAs, so that the
	// server's own verification is what refuses it.
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
