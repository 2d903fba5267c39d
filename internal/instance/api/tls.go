package api

import (
	"crypto/tls"
	"crypto/x509"

	"holdfast.dev/holdfast/internal/pki"
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
		VerifyConnection:   pki.VerifyChain(serverCA, x509.ExtKeyUsageServerAuth),
	}
}
