package api

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ClientTLS is how a caller reaches instance APIs: presenting cert, and
// taking the server for an instance if its certificate chains to
// serverCA. Instances are dialled at pod addresses, which no
// certificate names: the chain is verified, not a name (libpq's
// verify-ca).
func ClientTLS(cert tls.Certificate, serverCA *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The chain is verified below, without a name to match.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies the chain
		VerifyConnection:   VerifyChain(serverCA, x509.ExtKeyUsageServerAuth),
	}
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
			return fmt.Errorf("the peer's certificate does not chain to the cluster's CA: %w", err)
		}
		return nil
	}
}
