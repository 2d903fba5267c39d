package certificates

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// clientCA is the CA that issues the replication certificate, and the
// CAs a client certificate may chain to (the replication Secret's
// ca.crt, which postgres and the instance API verify callers with): the
// cluster's own, or the user's (spec.certificates.clientCASecret) with
// the cluster's beside it, since the cluster's CA issues the operator's
// certificate for the instance API. A problem says why the user's CA
// cannot be used.
func (k *Keeper) clientCA(ctx context.Context, c *holdfastv1.PostgresCluster, cluster *pki.CA, now time.Time) (signer *pki.CA, trust []byte, problem string, err error) {
	clusterPEM := pki.CertPEM(cluster.Cert)
	spec := c.Spec.Certificates
	if spec == nil || spec.ClientCASecret == "" {
		return cluster, clusterPEM, "", nil
	}
	name := spec.ClientCASecret
	s, found, err := k.readUsers(ctx, c, name)
	if err != nil {
		return nil, nil, "", err
	}
	if !found {
		return nil, nil, fmt.Sprintf("Secret %s (spec.certificates.clientCASecret) does not exist", name), nil
	}
	// CloudNativePG's shape first, then a cert-manager CA Certificate's.
	certPEM, keyPEM, keys := s.Data[KeyCACert], s.Data[KeyCAKey], KeyCACert+" and "+KeyCAKey
	if len(keyPEM) == 0 {
		certPEM, keyPEM, keys = s.Data[KeyCert], s.Data[KeyKey], KeyCert+" and "+KeyKey
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, nil, fmt.Sprintf("Secret %s (spec.certificates.clientCASecret) holds neither %s and %s nor %s and %s: the operator needs the CA's key to issue the replication certificate",
			name, KeyCACert, KeyCAKey, KeyCert, KeyKey), nil
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	switch {
	case err != nil:
		return nil, nil, fmt.Sprintf("the client CA in Secret %s (%s): %v", name, keys, err), nil
	case ca.Cert.KeyUsage != 0 && ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, nil, fmt.Sprintf("the client CA in Secret %s may not sign certificates (its key usage lacks cert sign)", name), nil
	case now.After(ca.Cert.NotAfter):
		return nil, nil, fmt.Sprintf("the client CA in Secret %s expired at %s", name, ca.Cert.NotAfter.UTC().Format(time.RFC3339)), nil
	case now.Before(ca.Cert.NotBefore):
		return nil, nil, fmt.Sprintf("the client CA in Secret %s is not valid before %s", name, ca.Cert.NotBefore.UTC().Format(time.RFC3339)), nil
	}
	return ca, bundle(pki.CertPEM(ca.Cert), clusterPEM), "", nil
}

// bundle joins PEM bundles, each certificate once, in the order given.
func bundle(pems ...[]byte) []byte {
	var out []byte
	seen := map[string]bool{}
	for _, rest := range pems {
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" || seen[string(b.Bytes)] {
				continue
			}
			seen[string(b.Bytes)] = true
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
	return out
}

// holds says whether the PEM bundle trust holds cert.
func holds(trust []byte, cert *x509.Certificate) bool {
	for rest := trust; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" && string(b.Bytes) == string(cert.Raw) {
			return true
		}
	}
}

// ensureReplication keeps replication's client certificate issued by the
// client CA. When the user's CA cannot be used, the certificate in force
// stays, with the problem; a cluster that has none yet gets one of its
// own CA's, so that it can start.
func (k *Keeper) ensureReplication(ctx context.Context, c *holdfastv1.PostgresCluster, cluster *pki.CA, now time.Time) (Issued, error) {
	name := resources.SecretReplicationTLSName(c)
	signer, trust, problem, err := k.clientCA(ctx, c, cluster, now)
	if err != nil {
		return Issued{}, err
	}
	if problem != "" {
		var s corev1.Secret
		err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
		if err != nil && !apierrors.IsNotFound(err) {
			return Issued{}, fmt.Errorf("reading Secret %s: %w", name, err)
		}
		var is Issued
		if leaf, perr := pki.ParseLeaf(s.Data[KeyCert], s.Data[KeyKey]); err == nil && perr == nil {
			is = issued(name, leaf.Cert, "")
		} else if is, err = k.ensureReplication(ctx, withoutClientCA(c), cluster, now); err != nil {
			return Issued{}, err
		}
		is.Problem = problem
		return is, nil
	}
	// A certificate never outlives the CA that signed it.
	issuer := &pki.CA{Cert: signer.Cert, Key: signer.Key, Validity: min(cluster.Validity, signer.Cert.NotAfter.Sub(now))}
	return k.ensureLeaf(ctx, c, name, issuer, trust, nil, now, func() (*pki.Leaf, error) {
		return issuer.Client(postgres.ReplicationUser)
	})
}

func withoutClientCA(c *holdfastv1.PostgresCluster) *holdfastv1.PostgresCluster {
	c = c.DeepCopy()
	c.Spec.Certificates.ClientCASecret = ""
	return c
}
