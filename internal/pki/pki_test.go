package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCertificatesChainToTheCA(t *testing.T) {
	ca, err := NewCA("sandbox-ca")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	srv, err := ca.Serving("kube-apiserver", []string{"kubernetes.default.svc"}, []net.IP{net.ParseIP("10.96.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kubernetes.default.svc", "10.96.0.1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Errorf("serving certificate verified for a name it does not hold")
	}

	admin, err := ca.Client("admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if admin.Cert.Subject.CommonName != "admin" || admin.Cert.Subject.Organization[0] != "system:masters" {
		t.Errorf("subject %v", admin.Cert.Subject)
	}
	if _, err := admin.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("a client certificate verified for serving")
	}

	other, _ := NewCA("other")
	foreign := x509.NewCertPool()
	foreign.AddCert(other.Cert)
	if _, err := admin.Cert.Verify(x509.VerifyOptions{Roots: foreign, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Errorf("certificate verified against another CA")
	}
}

func TestLoadCAReadsWhatWasWritten(t *testing.T) {
	ca, err := NewCA("sandbox-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, err := KeyPEM(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, "ca.crt"), CertPEM(ca.Cert), 0o644),
		os.WriteFile(filepath.Join(dir, "ca.key"), key, 0o600),
	); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("the loaded certificate differs")
	}
	// A leaf signed with the loaded key chains to the original CA.
	leaf, err := loaded.Serving("s3", []string{"s3.example"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "s3.example"}); err != nil {
		t.Errorf("a leaf of the loaded CA: %v", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil {
		t.Error("a CA with a broken key loaded")
	}
}

// TestReissue: a certificate is issued again at two thirds of its
// lifetime, when another CA signed it, or when it lacks a name.
func TestReissue(t *testing.T) {
	ca, err := NewCAValidFor("cluster-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca.Validity = 3 * time.Minute
	leaf, err := ca.Serving("demo-rw", []string{"demo-rw", "demo-rw.db.svc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	issued := time.Now()
	life := leaf.Cert.NotAfter.Sub(leaf.Cert.NotBefore)
	if life < 3*time.Minute || life > 3*time.Minute+20*time.Second {
		t.Fatalf("a 3-minute certificate is valid for %s: it starts at most a tenth of its validity early", life)
	}
	if at := RenewAt(leaf.Cert); at.Before(issued.Add(time.Minute)) || at.After(issued.Add(2*time.Minute)) {
		t.Errorf("renewed at %s, %s after issue; want at two thirds of its lifetime", at, at.Sub(issued))
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ca    *CA
		names []string
		at    time.Time
		why   string
	}{
		{"fresh, holding its names", ca, []string{"demo-rw.db.svc"}, issued, ""},
		{"due", ca, nil, RenewAt(leaf.Cert), "due for renewal"},
		{"past its end", ca, nil, leaf.Cert.NotAfter.Add(time.Second), "due for renewal"},
		{"signed by another CA", other, nil, issued, "another CA"},
		{"lacking a name the cluster now has", ca, []string{"demo-ro"}, issued, "does not hold the name demo-ro"},
	} {
		if why := Reissue(leaf.Cert, tc.ca.Cert, tc.names, tc.at); (why == "") != (tc.why == "") || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %q, want %q", tc.name, why, tc.why)
		}
	}
}

// TestParseLeafChecksTheKey: a key that is not the certificate's is
// refused, as is a CA that is not one.
func TestParseLeafChecksTheKey(t *testing.T) {
	ca, err := NewCA("cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.Client("streaming_replica")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Client("streaming_replica")
	if err != nil {
		t.Fatal(err)
	}
	aKey, _ := KeyPEM(a.Key)
	bKey, _ := KeyPEM(b.Key)
	if l, err := ParseLeaf(CertPEM(a.Cert), aKey); err != nil || l.Cert.SerialNumber.Cmp(a.Cert.SerialNumber) != 0 {
		t.Fatalf("its own key: %v", err)
	}
	if _, err := ParseLeaf(CertPEM(a.Cert), bKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("another certificate's key: %v", err)
	}
	if _, err := ParseLeaf([]byte("not pem"), aKey); err == nil {
		t.Error("a certificate that is not PEM was read")
	}
	if _, err := ParseCA(CertPEM(a.Cert), aKey); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf read as a CA: %v", err)
	}
	caKey, _ := KeyPEM(ca.Key)
	if got, err := ParseCA(CertPEM(ca.Cert), caKey); err != nil || !got.Cert.Equal(ca.Cert) {
		t.Errorf("the CA: %v", err)
	}
}

// TestParseLeafReadsCertManagersKeys: cert-manager writes tls.key as
// PKCS #1 for RSA and SEC 1 for ECDSA unless told otherwise, so a user's
// certificate in either encoding must be read, not refused as malformed.
func TestParseLeafReadsCertManagersKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		name   string
		signer crypto.Signer
		pem    []byte
	}{
		{"RSA, PKCS #1", rsaKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
		{"ECDSA, SEC 1", ecKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "user-ca"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.signer.Public(), k.signer)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		ca, err := ParseCA(CertPEM(cert), k.pem)
		if err != nil {
			t.Errorf("%s: %v", k.name, err)
			continue
		}
		// It signs, too: the operator issues from a user's CA read this way.
		leaf, err := ca.Client("streaming_replica")
		if err != nil || leaf.Cert.CheckSignatureFrom(cert) != nil {
			t.Errorf("%s: a certificate signed with the parsed key: %v", k.name, err)
		}
	}
	some, err := NewCA("some")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseLeaf(CertPEM(some.Cert), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("junk")})); err == nil || !strings.Contains(err.Error(), "RSA PRIVATE KEY") {
		t.Errorf("junk read as a key: %v", err)
	}
}
