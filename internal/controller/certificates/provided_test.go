package certificates

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

// TestAUsersServerCertificateIsUsedAsGivenOrNotAtAll: a good certificate
// of the user's is copied, byte for byte, where the pods read it, and the
// CA clients verify it with is published; one whose key does not match,
// or that has expired, or that chains to another CA, is reported and
// never copied: the pods keep the last good one.
func TestAUsersServerCertificateIsUsedAsGivenOrNotAtAll(t *testing.T) {
	ctx := context.Background()
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db", UID: "u1"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 2,
			Certificates: &holdfastv1.CertificatesSpec{ServerTLSSecret: "mine", ServerCASecret: "my-ca"}}}
	k := newKeeper(t, c, time.Hour)
	users, err := pki.NewCA("the user's CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data map[string][]byte) { putSecret(t, k, c.Namespace, name, data) }
	var ensureAt func(time.Time) Issued
	leafData := func(ca *pki.CA, keyOf *pki.Leaf) map[string][]byte {
		t.Helper()
		l, err := ca.Serving("demo-rw", []string{"demo-rw.db.svc.cluster.local"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if keyOf != nil {
			l.Key = keyOf.Key
		}
		key, err := pki.KeyPEM(l.Key)
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{corev1.TLSCertKey: pki.CertPEM(l.Cert), corev1.TLSPrivateKeyKey: key}
	}
	ensure := func() Issued { return ensureAt(time.Now()) }
	ensureAt = func(at time.Time) Issued {
		t.Helper()
		is, err := k.Ensure(ctx, c, at)
		if err != nil {
			t.Fatal(err)
		}
		return bySecret(is)["mine"]
	}

	if is := ensure(); !strings.Contains(is.Problem, "does not exist") {
		t.Errorf("with no Secret: %+v", is)
	}
	put("my-ca", map[string][]byte{KeyCACert: pki.CertPEM(users.Cert)})
	good := leafData(users, nil)
	put("mine", good)
	is := ensure()
	if is.Problem != "" || !is.Provided || is.Reason == "" || !is.RenewAt.IsZero() {
		t.Fatalf("a good certificate: %+v", is)
	}
	mounted := secret(t, k, c, resources.SecretServerTLSName(c))
	if string(mounted.Data[corev1.TLSCertKey]) != string(good[corev1.TLSCertKey]) || string(mounted.Data[corev1.TLSPrivateKeyKey]) != string(good[corev1.TLSPrivateKeyKey]) ||
		string(mounted.Data[KeyCACert]) != string(pki.CertPEM(users.Cert)) {
		t.Error("the pods' Secret does not hold the user's certificate, key and CA as given")
	}
	var cm corev1.ConfigMap
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.ConfigMapCAName(c)}, &cm); err != nil || cm.Data[KeyCACert] != string(pki.CertPEM(users.Cert)) {
		t.Errorf("the CA published for clients is not the user's: %v", err)
	}
	if again := ensure(); again.Reason != "" || again.Problem != "" {
		t.Errorf("an unchanged certificate copied again: %+v", again)
	}

	someone, err := users.Client("someone")
	if err != nil {
		t.Fatal(err)
	}
	shortLived := *users
	shortLived.Validity = time.Minute
	for _, bad := range []struct {
		what string
		data map[string][]byte
		at   time.Time
		want string
	}{
		{"a key that does not match", leafData(users, someone), time.Now(), "does not match"},
		{"an expired certificate", leafData(&shortLived, nil), time.Now().Add(time.Hour), "expired"},
		{"a certificate of another CA", leafData(other, nil), time.Now(), "does not chain"},
	} {
		put("mine", bad.data)
		is := ensureAt(bad.at)
		if !strings.Contains(is.Problem, bad.want) {
			t.Errorf("%s: problem %q, want it to say %q", bad.what, is.Problem, bad.want)
		}
		if now := secret(t, k, c, resources.SecretServerTLSName(c)); string(now.Data[corev1.TLSCertKey]) != string(good[corev1.TLSCertKey]) {
			t.Errorf("%s was copied for the pods", bad.what)
		}
	}
}
