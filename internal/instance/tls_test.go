package instance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

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
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		h.t.Fatal(err)
	}
	dir := filepath.Join(h.secrets, resources.TLSServerDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		h.t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": pki.CertPEM(leaf.Cert), "tls.key": key, "ca.crt": pki.CertPEM(ca.Cert)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	return leaf.Cert.SerialNumber
}

// servedSerial connects with TLS, verifying the server by the CA and the
// address, and gives the serial of the certificate the server presented.
func (h *harness) servedSerial(n *node, ca *pki.CA) (*big.Int, error) {
	caFile := filepath.Join(h.base, "client-ca.crt")
	if err := os.WriteFile(caFile, pki.CertPEM(ca.Cert), 0o600); err != nil {
		return nil, err
	}
	pw, _ := os.ReadFile(filepath.Join(h.secrets, "app", "password"))
	ctx, cancel := context.WithTimeout(h.t.Context(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=app sslmode=verify-full sslrootcert=%s connect_timeout=3",
		n.port, pw, caFile))
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
	ca, err := pki.NewCA("cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	first := h.mountServerCert(ca, nil)
	n := h.add("pg-0")
	h.want(n, h.primary(n))
	h.waitFor(time.Minute, "the primary is ready", h.ready(n, "primary"))
	pid := n.mgr.Report().PID
	served := func(want *big.Int) func() error {
		return func() error {
			got, err := h.servedSerial(n, ca)
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
