package pki

import (
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
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
