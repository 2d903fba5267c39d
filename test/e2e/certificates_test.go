package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/pki"
)

// TestCertificatesInSandbox runs a cluster whose operator issues
// certificates valid for two minutes, under a writer with synchronous
// replication: the certificates are renewed twice, each renewal is served
// to new clients with no restart, no acknowledged write is lost and no
// write waits longer than a second. Then the cluster is given the user's
// own server certificate, used as given, and a malformed one, reported
// InvalidCertificate while the good one stays in force.
func TestCertificatesInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.operatorArgs(t, "--certificate-lifetime=2m")
	e.createSyncCluster(t)
	primary := e.primary(t)

	t.Run("two renewals under a writer, served with no restart, no write lost or held up", func(t *testing.T) {
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		began := time.Now()
		pids := e.postmasters(t)
		serial := e.secretSerial(t, "pg-server-tls")
		for renewal := 1; renewal <= 2; renewal++ {
			prev := serial
			poll(t, 4*time.Minute, fmt.Sprintf("renewal %d of the server certificate", renewal), func() error {
				if serial = e.secretSerial(t, "pg-server-tls"); serial.Cmp(prev) == 0 {
					return errorString("serial " + prev.Text(16) + " still")
				}
				return nil
			})
			poll(t, time.Minute, fmt.Sprintf("renewal %d (serial %s) served through pg-rw", renewal, serial.Text(16)), func() error {
				served, err := e.servedThroughRW(t.Context(), e.publishedCA(t))
				if err == nil && served.SerialNumber.Cmp(serial) != 0 {
					err = errorString("served " + served.SerialNumber.Text(16))
				}
				return err
			})
			t.Logf("renewal %d: serial %s served %s after the writer started", renewal, serial.Text(16), time.Since(began).Round(time.Second))
		}
		w.waitAcks(t, 20)
		gap := w.History().LongestGap(began, time.Now())
		if gap > time.Second {
			t.Errorf("a write waited %s during the renewals, want at most 1s", gap)
		}
		t.Logf("longest write gap across two renewals: %s", gap.Round(time.Millisecond))
		if now := e.postmasters(t); fmt.Sprint(now) != fmt.Sprint(pids) {
			t.Errorf("postgres restarted to serve the renewed certificates: postmasters %v, were %v", now, pids)
		}
		e.checkAcks(t, primary, primary, w)
		out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={range .status.certificates[*]}{.secret} {.serial} {.notAfter} {.renewAt}{"\n"}{end}`)
		if !strings.Contains(out, "pg-server-tls "+serial.Text(16)) || !strings.Contains(out, "pg-replication-tls ") {
			t.Errorf("status.certificates does not show the certificates in force: %s", out)
		}
	})

	t.Run("the user's client CA issues replication's certificate; standbys authenticate with it", func(t *testing.T) {
		users, err := pki.NewCA("pg-users-client-ca")
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.KeyPEM(users.Key)
		if err != nil {
			t.Fatal(err)
		}
		e.mustKubectl("", "-n", ns, "create", "secret", "generic", "pg-client-ca",
			"--from-file=ca.crt="+e.writeFile(t, "client-ca.crt", pki.CertPEM(users.Cert)), "--from-file=ca.key="+e.writeFile(t, "client-ca.key", key))
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"certificates":{"clientCASecret":"pg-client-ca"}}}`)
		issuer := users.Cert.Subject.String()
		poll(t, 2*time.Minute, "the replication certificate issued by the user's client CA", func() error {
			out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.certificates[?(@.secret=="pg-replication-tls")].issuer}`)
			if out != issuer {
				return errorString("issuer " + out)
			}
			return nil
		})
		// Standbys present the certificate they have when they connect:
		// make them connect again, and see the user's CA's in pg_stat_ssl.
		primary := e.primary(t)
		e.withConn(t, "both standbys streaming again with a certificate of the user's client CA", "pg", e.podIP(t, primary), true, func(ctx context.Context, conn *pgx.Conn) error {
			var byUsers, all int
			if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=streaming_replica' AND s.issuer_dn = '/CN=pg-users-client-ca'), count(*)
				FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'`).Scan(&byUsers, &all); err != nil {
				return err
			}
			if byUsers != 2 {
				_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(r.pid) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.issuer_dn IS DISTINCT FROM '/CN=pg-users-client-ca'`)
				return fmt.Errorf("%d of %d streaming standbys authenticated by the user's CA, want 2 (the others told to reconnect: %v)", byUsers, all, err)
			}
			return nil
		})
		// The operator's certificate is still the cluster CA's, and a
		// switchover needs it at every instance, and the old primary to
		// follow with the user's certificate.
		to := "pg-1"
		if primary == to {
			to = "pg-2"
		}
		if out, err := exec.Command(e.holdfast, "promote", "pg", to, "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput(); err != nil {
			t.Fatalf("holdfast promote %s with the user's client CA: %v\n%s", to, err, out)
		}
		e.withConn(t, "the old primary "+primary+" streaming from "+to+" with the user's certificate", "pg", e.podIP(t, to), true, func(ctx context.Context, conn *pgx.Conn) error {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
				WHERE r.application_name = $1 AND r.state = 'streaming' AND s.issuer_dn = '/CN=pg-users-client-ca'`, primary).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return errorString("not yet")
			}
			return nil
		})
		e.waitReady(t, "pg", 3, 2*time.Minute)
	})

	t.Run("the user's server certificate is used as given; a malformed one is refused and reported", func(t *testing.T) {
		users, err := pki.NewCA("the user's CA")
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := users.Serving("pg-rw", []string{"pg-rw." + ns + ".svc.cluster.local", "pg-rw." + ns, "pg-rw"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.KeyPEM(leaf.Key)
		if err != nil {
			t.Fatal(err)
		}
		e.mustKubectl("", "-n", ns, "create", "secret", "generic", "pg-my-ca", "--from-literal=ca.crt="+string(pki.CertPEM(users.Cert)))
		e.mustKubectl("", "-n", ns, "create", "secret", "tls", "pg-mine", "--cert="+e.writeFile(t, "mine.crt", pki.CertPEM(leaf.Cert)), "--key="+e.writeFile(t, "mine.key", key))
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"certificates":{"serverTLSSecret":"pg-mine","serverCASecret":"pg-my-ca"}}}`)
		roots := x509.NewCertPool()
		roots.AddCert(users.Cert)
		poll(t, 2*time.Minute, "the user's certificate served through pg-rw", func() error {
			served, err := e.servedThroughRW(t.Context(), roots)
			if err == nil && served.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
				err = errorString("served " + served.SerialNumber.Text(16))
			}
			return err
		})
		if got := e.publishedCA(t); !got.Equal(roots) {
			t.Error("ConfigMap pg-ca does not publish the user's CA")
		}

		other, err := users.Client("someone")
		if err != nil {
			t.Fatal(err)
		}
		wrongKey, err := pki.KeyPEM(other.Key)
		if err != nil {
			t.Fatal(err)
		}
		e.mustKubectl("", "-n", ns, "patch", "secret", "pg-mine", "--type=merge", "-p",
			`{"data":{"tls.key":"`+base64.StdEncoding.EncodeToString(wrongKey)+`"}}`)
		poll(t, time.Minute, "Degraded with reason InvalidCertificate", func() error {
			out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.phase} {.status.conditions[?(@.type=="Degraded")].reason}`)
			if out != "Degraded InvalidCertificate" {
				return errorString(out)
			}
			return nil
		})
		e.wantEvents(t, "InvalidCertificate")
		served, err := e.servedThroughRW(t.Context(), roots)
		if err != nil || served.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Errorf("after a malformed certificate, the cluster does not serve the last good one: %v", err)
		}

		// An expired one, with its own key: refused in the same way.
		// X.509 keeps times to the second, so a nanosecond's validity
		// has ended by the time it is signed.
		brief := *users
		brief.Validity = time.Nanosecond
		expired, err := brief.Serving("pg-rw", []string{"pg-rw." + ns + ".svc.cluster.local"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		expiredKey, err := pki.KeyPEM(expired.Key)
		if err != nil {
			t.Fatal(err)
		}
		e.mustKubectl("", "-n", ns, "patch", "secret", "pg-mine", "--type=merge", "-p",
			`{"data":{"tls.crt":"`+base64.StdEncoding.EncodeToString(pki.CertPEM(expired.Cert))+`","tls.key":"`+base64.StdEncoding.EncodeToString(expiredKey)+`"}}`)
		poll(t, time.Minute, "status.certificates saying the user's certificate expired", func() error {
			out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.phase} {.status.conditions[?(@.type=="Degraded")].reason} {.status.certificates[?(@.secret=="pg-mine")].problem}`)
			if !strings.HasPrefix(out, "Degraded InvalidCertificate ") || !strings.Contains(out, "expired") {
				return errorString(out)
			}
			return nil
		})
		served, err = e.servedThroughRW(t.Context(), roots)
		if err != nil || served.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Errorf("after an expired certificate, the cluster does not serve the last good one: %v", err)
		}
	})
}

// writeFile writes data to a file of the test's sandbox folder, and gives its path.
func (e *sandboxEnv) writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(e.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// postmasters are the PIDs of the cluster's postmasters, by pod.
func (e *sandboxEnv) postmasters(t *testing.T) map[string]int {
	t.Helper()
	pids := map[string]int{}
	for _, pod := range []string{"pg-0", "pg-1", "pg-2"} {
		_, pids[pod] = instanceProcesses(t, e.mustKubectl("", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}"))
	}
	return pids
}

// operatorArgs adds args to the operator's command line and waits for
// both of its pods to run them.
func (e *sandboxEnv) operatorArgs(t *testing.T, args ...string) {
	t.Helper()
	var ops []string
	for _, a := range args {
		ops = append(ops, `{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"`+a+`"}`)
	}
	e.mustKubectl("", "-n", "holdfast-system", "patch", "deployment", "holdfast-operator", "--type=json", "-p", "["+strings.Join(ops, ",")+"]")
	e.mustKubectl("", "-n", "holdfast-system", "rollout", "status", "deployment/holdfast-operator", "--timeout=3m")
}

// secretSerial is the serial of the certificate in a Secret's tls.crt.
func (e *sandboxEnv) secretSerial(t *testing.T, secret string) *big.Int {
	t.Helper()
	pem, err := base64.StdEncoding.DecodeString(e.mustKubectl("", "-n", ns, "get", "secret", secret, "-o", `jsonpath={.data.tls\.crt}`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertificate(pem)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// publishedCA is the CA the cluster publishes for clients.
func (e *sandboxEnv) publishedCA(t *testing.T) *x509.CertPool {
	t.Helper()
	ca := e.mustKubectl("", "-n", ns, "get", "configmap", "pg-ca", "-o", `jsonpath={.data.ca\.crt}`)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(ca)) {
		t.Fatalf("ConfigMap pg-ca holds no certificate: %q", ca)
	}
	return roots
}

// servedThroughRW connects as the app user through pg-rw with
// verify-full, by the Service's DNS name and roots (the host dials its
// address), and gives the certificate the server presented.
func (e *sandboxEnv) servedThroughRW(ctx context.Context, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require connect_timeout=5",
		e.serviceIP(e.t, "pg-rw"), e.secretValue(ns, "pg-app", "username"), e.secretValue(ns, "pg-app", "password")))
	if err != nil {
		return nil, err
	}
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "pg-rw." + ns + ".svc.cluster.local", MinVersion: tls.VersionTLS12}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var ssl bool
	if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		return nil, fmt.Errorf("pg_stat_ssl: ssl=%v %v", ssl, err)
	}
	return conn.PgConn().Conn().(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}
