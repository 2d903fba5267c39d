package certificates

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

func newKeeper(t *testing.T, c *holdfastv1.PostgresCluster, lifetime time.Duration) *Keeper {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return &Keeper{Client: fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).Build(), Lifetime: lifetime}
}

func secret(t *testing.T, k *Keeper, c *holdfastv1.PostgresCluster, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := k.Client.Get(context.Background(), client.ObjectKey{Namespace: c.Namespace, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// putSecret creates or replaces a Secret of the user's.
func putSecret(t *testing.T, k *Keeper, ns, name string, data map[string][]byte) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if err := k.Client.Create(context.Background(), s); err != nil {
		if err := k.Client.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
}

func bySecret(is []Issued) map[string]Issued {
	m := map[string]Issued{}
	for _, i := range is {
		m[i.Secret] = i
	}
	return m
}

// TestKeeperIssuesRenewsAndReissues drives one cluster's certificates
// through their life on a clock of its own: issued once, kept while
// current, renewed at two thirds of their lifetime by the same CA, and
// the server's issued again when the cluster gains an instance.
func TestKeeperIssuesRenewsAndReissues(t *testing.T) {
	ctx := context.Background()
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "u1"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 2}}
	k := newKeeper(t, c, 2*time.Minute)
	now := time.Now()
	first, err := k.Ensure(ctx, c, now)
	if err != nil {
		t.Fatal(err)
	}
	got := bySecret(first)
	server, repl := got[resources.SecretServerTLSName(c)], got[resources.SecretReplicationTLSName(c)]
	if server.Reason != "it did not exist" || repl.Reason != "it did not exist" {
		t.Fatalf("first issue: %+v", first)
	}

	caSecret := secret(t, k, c, resources.SecretCAName(c))
	ca, err := pki.ParseCA(caSecret.Data[KeyCACert], caSecret.Data[KeyCAKey])
	if err != nil {
		t.Fatal(err)
	}
	if owner := metav1.GetControllerOf(caSecret); owner == nil || owner.UID != c.UID {
		t.Errorf("the CA Secret is not owned by the cluster: %v", owner)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	s := secret(t, k, c, resources.SecretServerTLSName(c))
	if s.Type != corev1.SecretTypeTLS || string(s.Data[KeyCACert]) != string(pki.CertPEM(ca.Cert)) {
		t.Errorf("server Secret: type %s, ca.crt the CA's: %v", s.Type, string(s.Data[KeyCACert]) == string(pki.CertPEM(ca.Cert)))
	}
	pair, err := tls.X509KeyPair(s.Data[KeyCert], s.Data[KeyKey])
	if err != nil {
		t.Fatalf("the server Secret is not a key pair: %v", err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	for _, name := range []string{"demo-rw.db.svc.cluster.local", "demo-ro", "demo-1.demo-headless.db.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("the server certificate for %s: %v", name, err)
		}
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > 2*time.Minute+15*time.Second {
		t.Errorf("a 2-minute certificate lives %s", life)
	}
	rs := secret(t, k, c, resources.SecretReplicationTLSName(c))
	rcert, err := pki.ParseCertificate(rs.Data[KeyCert])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rcert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || rcert.Subject.CommonName != postgres.ReplicationUser {
		t.Errorf("replication client certificate %q: %v", rcert.Subject.CommonName, err)
	}
	cm := &corev1.ConfigMap{}
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: "db", Name: resources.ConfigMapCAName(c)}, cm); err != nil || cm.Data[KeyCACert] != string(pki.CertPEM(ca.Cert)) || len(cm.Data) != 1 {
		t.Errorf("the published CA: %v %v", cm.Data, err)
	}

	// Current: kept as they are.
	again, err := k.Ensure(ctx, c, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range again {
		if is.Reason != "" || is.Serial != got[is.Secret].Serial {
			t.Errorf("%s issued again while current: %+v", is.Secret, is)
		}
	}

	// Due: renewed, by the same CA.
	renewed, err := k.Ensure(ctx, c, server.RenewAt)
	if err != nil {
		t.Fatal(err)
	}
	r := bySecret(renewed)[resources.SecretServerTLSName(c)]
	if r.Serial == server.Serial || !strings.Contains(r.Reason, "due for renewal") {
		t.Errorf("at its renewal time the server certificate: %+v", r)
	}
	if !caSecret.CreationTimestamp.Equal(&secret(t, k, c, resources.SecretCAName(c)).CreationTimestamp) ||
		string(secret(t, k, c, resources.SecretCAName(c)).Data[KeyCACert]) != string(caSecret.Data[KeyCACert]) {
		t.Error("the CA changed with a renewal")
	}

	// A third instance: the server certificate, renewed a moment ago and
	// not due, lacks its name. (Looked at half a minute after the start:
	// certificates keep their times to the second, so the renewed one is
	// due no sooner than the first one was.)
	c.Spec.Instances = 3
	grown, err := k.Ensure(ctx, c, now.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if g := bySecret(grown)[resources.SecretServerTLSName(c)]; !strings.Contains(g.Reason, "demo-2.demo-headless") {
		t.Errorf("after a scale-up: %+v", g)
	}
}

// TestADamagedCAIsNeverReplaced: every certificate and client trusts the
// CA, so a CA Secret that cannot be read stops the keeper with an error
// rather than being made again.
func TestADamagedCAIsNeverReplaced(t *testing.T) {
	ctx := context.Background()
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "u1"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 1}}
	k := newKeeper(t, c, 0)
	if _, err := k.Ensure(ctx, c, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := secret(t, k, c, resources.SecretCAName(c))
	s.Data[KeyCAKey] = []byte("damaged")
	if err := k.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Ensure(ctx, c, time.Now()); err == nil || !strings.Contains(err.Error(), "cannot be used") {
		t.Errorf("a damaged CA: %v", err)
	}
	if string(secret(t, k, c, resources.SecretCAName(c)).Data[KeyCAKey]) != "damaged" {
		t.Error("the damaged CA Secret was rewritten")
	}
}
