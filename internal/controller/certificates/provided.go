package certificates

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

// adoptServer checks the user's server certificate (spec.certificates)
// and, when it is good, copies it as given into the Secret the pods
// mount. A certificate that is not good is never copied: the pods go on
// with the last good one, and the Problem says why.
func (k *Keeper) adoptServer(ctx context.Context, c *holdfastv1.PostgresCluster, spec *holdfastv1.CertificatesSpec, now time.Time) (Issued, error) {
	name := spec.ServerTLSSecret
	problem := func(format string, args ...any) (Issued, error) {
		return Issued{Secret: name, Provided: true, Problem: fmt.Sprintf(format, args...)}, nil
	}
	user, found, err := k.readUsers(ctx, c, name)
	if err != nil || !found {
		if err == nil {
			return problem("Secret %s (spec.certificates.serverTLSSecret) does not exist", name)
		}
		return Issued{}, err
	}
	caPEM, caFrom := user.Data[KeyCACert], name
	if spec.ServerCASecret != "" {
		caSecret, found, err := k.readUsers(ctx, c, spec.ServerCASecret)
		if err != nil {
			return Issued{}, err
		}
		if !found {
			return problem("Secret %s (spec.certificates.serverCASecret) does not exist", spec.ServerCASecret)
		}
		caPEM, caFrom = caSecret.Data[KeyCACert], spec.ServerCASecret
	}
	leaf, err := pki.ParseLeaf(user.Data[KeyCert], user.Data[KeyKey])
	if err != nil {
		return problem("Secret %s: %v", name, err)
	}
	switch {
	case now.After(leaf.Cert.NotAfter):
		return problem("the certificate in Secret %s expired at %s", name, leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.Cert.NotBefore):
		return problem("the certificate in Secret %s is not valid before %s", name, leaf.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return problem("no CA to verify the certificate in Secret %s with: %s holds no %s", name, caFrom, KeyCACert)
	}
	inter := x509.NewCertPool()
	inter.AppendCertsFromPEM(user.Data[KeyCert]) // a chain after the leaf
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return problem("the certificate in Secret %s does not chain to the CA in %s: %v", name, caFrom, err)
	}
	data := map[string][]byte{KeyCert: user.Data[KeyCert], KeyKey: user.Data[KeyKey], KeyCACert: caPEM}
	why, err := k.copyServer(ctx, c, data)
	if err != nil {
		return Issued{}, err
	}
	is := issued(name, leaf.Cert, why)
	is.RenewAt, is.Provided = time.Time{}, true
	return is, nil
}

func (k *Keeper) readUsers(ctx context.Context, c *holdfastv1.PostgresCluster, name string) (*corev1.Secret, bool, error) {
	r := k.Reader
	if r == nil {
		r = k.Client
	}
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	return &s, true, nil
}

// copyServer makes the Secret the pods mount hold data, and says why it
// wrote it, "" when it already did.
func (k *Keeper) copyServer(ctx context.Context, c *holdfastv1.PostgresCluster, data map[string][]byte) (string, error) {
	name := resources.SecretServerTLSName(c)
	var s corev1.Secret
	err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
	switch {
	case apierrors.IsNotFound(err):
		s = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: resources.Labels(c)},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		return "the user's certificate was copied for the pods", k.create(ctx, c, &s)
	case err != nil:
		return "", fmt.Errorf("reading Secret %s: %w", name, err)
	}
	same := true
	for key, v := range data {
		same = same && bytes.Equal(s.Data[key], v)
	}
	if same {
		return "", nil
	}
	s.Data = data
	if err := k.Client.Update(ctx, &s); err != nil {
		return "", fmt.Errorf("copying the user's certificate into Secret %s: %w", name, err)
	}
	return "the user's certificate changed", nil
}
