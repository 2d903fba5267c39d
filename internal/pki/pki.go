// Package pki makes certificate authorities and the certificates and keys
// they sign: the sandbox's control plane (the API server's serving
// certificate, client certificates for the components and the admin, the
// service-account signing key), and the rules for when a certificate must
// be issued again.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// validity is the default: long enough for any sandbox, which is rebuilt
// on every `up`.
const validity = 365 * 24 * time.Hour

// CA signs certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Validity is how long the certificates it signs are valid; zero is
	// a year.
	Validity time.Duration
}

// NewCA makes a self-signed certificate authority valid for a year.
func NewCA(name string) (*CA, error) { return NewCAValidFor(name, validity) }

// backdate is how far before now a certificate starts to be valid, so
// that a clock a little behind the signer's accepts it: an hour, or a
// tenth of a short validity.
func backdate(validity time.Duration) time.Duration { return min(time.Hour, validity/10) }

// NewCAValidFor makes a self-signed certificate authority valid for validity.
func NewCAValidFor(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-backdate(validity)),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Leaf is a certificate and its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Serving makes a server certificate for the given names and addresses.
func (ca *CA) Serving(cn string, dnsNames []string, ips []net.IP) (*Leaf, error) {
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// Client makes a client certificate; Kubernetes reads the user from the
// common name and the groups from the organisations.
func (ca *CA) Client(user string, groups ...string) (*Leaf, error) {
	return ca.sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *CA) sign(tmpl *x509.Certificate) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key for %s: %w", tmpl.Subject.CommonName, err)
	}
	v := ca.Validity
	if v <= 0 {
		v = validity
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-backdate(v))
	tmpl.NotAfter = time.Now().Add(v)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the kernel's randomness is gone
	}
	return n
}

// CertPEM encodes a certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS #8.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PublicKeyPEM encodes a public key, as the API server reads service-account keys.
func PublicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// LoadCA reads a CA kept in dir as ca.crt (CertPEM) and ca.key (KeyPEM),
// as the sandbox keeps it: certificates made after the control plane's,
// whose names depend on objects in the API, are signed by the same CA.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("reading the CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA in %s: %w", dir, err)
	}
	return ca, nil
}

// ParseCA reads a CA from its certificate and key in PEM; the key must
// be the certificate's.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	l, err := ParseLeaf(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !l.Cert.IsCA {
		return nil, errors.New("the certificate is not a CA's")
	}
	return &CA{Cert: l.Cert, Key: l.Key}, nil
}

// ParseLeaf reads a certificate and its key in PEM, as kept in a TLS
// Secret (tls.crt, tls.key); the key must be the certificate's.
func ParseLeaf(certPEM, keyPEM []byte) (*Leaf, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	signer, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, errors.New("the key does not match the certificate")
	}
	return &Leaf{Cert: cert, Key: signer}, nil
}

// parseKey reads a private key in any of the encodings a TLS Secret
// holds: PKCS #8, or, as cert-manager writes by default, PKCS #1 for RSA
// and SEC 1 for ECDSA.
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("the key is not PEM")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the key (%s): %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	return signer, nil
}

// ParseCertificate reads the first certificate of a PEM bundle.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("the certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate: %w", err)
	}
	return cert, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// RenewAt is when a certificate is issued again: at two thirds of its
// lifetime, so that a renewal that fails has a third of it to be retried.
func RenewAt(c *x509.Certificate) time.Time {
	return c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore) / 3)
}

// Reissue says why cert must be issued again by ca to hold dnsNames at
// now, "" when it need not: it is due (RenewAt), was signed by another
// CA, or lacks one of the names.
func Reissue(cert, ca *x509.Certificate, dnsNames []string, now time.Time) string {
	switch {
	case !now.Before(RenewAt(cert)):
		return fmt.Sprintf("it is due for renewal since %s (valid until %s)", RenewAt(cert).UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	case cert.CheckSignatureFrom(ca) != nil:
		return "it was signed by another CA"
	}
	if n := MissingName(cert, dnsNames); n != "" {
		return fmt.Sprintf("it does not hold the name %s", n)
	}
	return ""
}

// MissingName is the first of dnsNames cert does not hold, "" when it
// holds them all.
func MissingName(cert *x509.Certificate, dnsNames []string) string {
	for _, n := range dnsNames {
		if cert.VerifyHostname(n) != nil {
			return n
		}
	}
	return ""
}

// WriteLeaf writes name.crt and name.key into dir; keys are private to the owner.
func WriteLeaf(dir, name string, l *Leaf) error {
	key, err := KeyPEM(l.Key)
	if err != nil {
		return fmt.Errorf("encoding the %s key: %w", name, err)
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, name+".crt"), CertPEM(l.Cert), 0o644),
		os.WriteFile(filepath.Join(dir, name+".key"), key, 0o600),
	)
}

// VerifyChain verifies that the peer's certificate chains to roots for
// usage.
func VerifyChain(roots *x509.CertPool, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("the peer's certificate does not chain to the CA: %w", err)
		}
		return nil
	}
}
