package certificates

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

// TestAUsersClientCAIssuesReplication: with spec.certificates.clientCASecret
// the replication certificate comes from the user's CA, in steps that
// never let a pod present a certificate its peers do not yet trust: the
// new CA is trusted first, the certificate is replaced a settling time
// later, and a CA no longer issuing is dropped a settling time after
// that. The cluster's own CA stays trusted throughout (it issues the
// operator's certificate). A CA that cannot be used leaves the
// certificate in force, with the problem said.
func TestAUsersClientCAIssuesReplication(t *testing.T) {
	ctx := context.Background()
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "u1"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 2, Certificates: &holdfastv1.CertificatesSpec{ClientCASecret: "my-client-ca"}}}
	k := newKeeper(t, c, time.Hour)
	k.Settle = time.Minute
	put := func(name string, data map[string][]byte) { putSecret(t, k, c.Namespace, name, data) }
	t0 := time.Now()
	ensureAt := func(at time.Duration) Issued {
		t.Helper()
		is, err := k.Ensure(ctx, c, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		return bySecret(is)["demo-replication-tls"]
	}
	inForce := func() (*x509.Certificate, []*x509.Certificate) {
		t.Helper()
		s := secret(t, k, c, resources.SecretReplicationTLSName(c))
		leaf, err := pki.ParseLeaf(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			t.Fatal(err)
		}
		var trusted []*x509.Certificate
		for rest := s.Data[KeyCACert]; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			trusted = append(trusted, cert)
		}
		return leaf.Cert, trusted
	}
	names := func(certs []*x509.Certificate) string {
		var n []string
		for _, c := range certs {
			n = append(n, c.Subject.CommonName)
		}
		return strings.Join(n, ",")
	}
	caData := func(ca *pki.CA, certKey, keyKey string) map[string][]byte {
		t.Helper()
		key, err := pki.KeyPEM(ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{certKey: pki.CertPEM(ca.Cert), keyKey: key}
	}

	// A cluster whose client CA is missing still starts, on its own CA's.
	is := ensureAt(0)
	if !strings.Contains(is.Problem, "does not exist") || !strings.Contains(is.Issuer, "demo CA") {
		t.Fatalf("no client CA Secret: %+v", is)
	}
	first, _ := inForce()

	// No key: the operator cannot issue; the certificate in force stays.
	users, err := pki.NewCA("users-client-ca")
	if err != nil {
		t.Fatal(err)
	}
	put("my-client-ca", map[string][]byte{KeyCACert: pki.CertPEM(users.Cert)})
	if is := ensureAt(time.Second); !strings.Contains(is.Problem, "needs the CA's key") || is.Serial != first.SerialNumber.Text(16) {
		t.Errorf("a client CA without its key: %+v", is)
	}

	// CloudNativePG's shape: trusted first, used a settling time later.
	put("my-client-ca", caData(users, KeyCACert, KeyCAKey))
	is = ensureAt(2 * time.Second)
	leaf, trusted := inForce()
	if is.Problem != "" || leaf.SerialNumber.Cmp(first.SerialNumber) != 0 || names(trusted) != "users-client-ca,db/demo CA" {
		t.Fatalf("step 1, trust the new CA beside the old: %+v; trusted %s", is, names(trusted))
	}
	if ensureAt(30 * time.Second); !mustLeaf(inForce).Equal(first) {
		t.Fatal("the certificate was replaced before its new CA had settled")
	}
	is = ensureAt(63 * time.Second)
	leaf, trusted = inForce()
	if leaf.CheckSignatureFrom(users.Cert) != nil || is.Reason != "it was signed by another CA" || is.Issuer != users.Cert.Subject.String() {
		t.Fatalf("step 2, a certificate of the user's CA: %+v", is)
	}
	if names(trusted) != "users-client-ca,db/demo CA" {
		t.Errorf("the cluster's CA (the operator's certificate's) is no longer trusted: %s", names(trusted))
	}
	if again := ensureAt(10 * time.Minute); again.Reason != "" || again.Serial != is.Serial {
		t.Errorf("kept certificate issued again: %+v", again)
	}

	// Another CA of the user's, as cert-manager keeps a CA (tls.crt, tls.key).
	next, err := pki.NewCA("users-next-ca")
	if err != nil {
		t.Fatal(err)
	}
	put("my-client-ca", caData(next, KeyCert, KeyKey))
	ensureAt(11 * time.Minute)
	if _, trusted = inForce(); names(trusted) != "users-next-ca,db/demo CA,users-client-ca" {
		t.Fatalf("step 1 of the second change: trusted %s", names(trusted))
	}
	ensureAt(12*time.Minute + time.Second)
	leaf, trusted = inForce()
	if leaf.CheckSignatureFrom(next.Cert) != nil || names(trusted) != "users-next-ca,db/demo CA,users-client-ca" {
		t.Fatalf("step 2 of the second change: issued by %s, trusted %s", leaf.Issuer.CommonName, names(trusted))
	}
	ensureAt(12*time.Minute + 30*time.Second)
	if _, trusted = inForce(); len(trusted) != 3 {
		t.Fatalf("the old CA was dropped before the new certificate had settled: %s", names(trusted))
	}
	ensureAt(13*time.Minute + 2*time.Second)
	if _, trusted = inForce(); names(trusted) != "users-next-ca,db/demo CA" {
		t.Errorf("step 3, the CA no longer issuing dropped: trusted %s", names(trusted))
	}

	// An expired CA: the problem is said, the certificate in force stays.
	held, _ := inForce()
	if is := ensureAt(2 * 365 * 24 * time.Hour); !strings.Contains(is.Problem, "expired") || is.Serial != held.SerialNumber.Text(16) {
		t.Errorf("an expired client CA: %+v", is)
	}
	if now, _ := inForce(); !now.Equal(held) {
		t.Error("an expired client CA replaced the certificate in force")
	}
}

func mustLeaf(inForce func() (*x509.Certificate, []*x509.Certificate)) *x509.Certificate {
	l, _ := inForce()
	return l
}

// TestAReplicationCertificateNeverOutlivesItsCA: a user's CA that expires
// before the lifetime bounds the certificate issued from it.
func TestAReplicationCertificateNeverOutlivesItsCA(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "u1"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 1, Certificates: &holdfastv1.CertificatesSpec{ClientCASecret: "ca"}}}
	k := newKeeper(t, c, 90*24*time.Hour)
	short, err := pki.NewCAValidFor("short-lived", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.KeyPEM(short.Key)
	if err := k.Client.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "db"},
		Data: map[string][]byte{KeyCACert: pki.CertPEM(short.Cert), KeyCAKey: key}}); err != nil {
		t.Fatal(err)
	}
	is, err := k.Ensure(context.Background(), c, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	repl := bySecret(is)["demo-replication-tls"]
	if repl.Problem != "" || repl.NotAfter.After(short.Cert.NotAfter) || repl.Issuer != short.Cert.Subject.String() {
		t.Errorf("issued from a CA valid until %s: %+v", short.Cert.NotAfter, repl)
	}
}
