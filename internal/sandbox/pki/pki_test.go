package pki

import (
	"crypto/x509"
	"net"
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
