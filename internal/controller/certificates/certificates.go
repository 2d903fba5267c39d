// Package certificates keeps each cluster's TLS certificates: a CA of its
// own, a server certificate that holds every name a client may dial
// (resources.ServerCertificateNames), and the client certificate
// replication authenticates with. They live in Secrets shaped as
// cert-manager's (tls.crt, tls.key, ca.crt), and each is issued again at
// two thirds of its lifetime (pki.Reissue), or when the cluster gains a
// name it lacks. The CA's certificate is published in a ConfigMap for
// clients.
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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

// Keys of the Secrets and the ConfigMap, as cert-manager names them.
const (
	KeyCert   = corev1.TLSCertKey       // tls.crt
	KeyKey    = corev1.TLSPrivateKeyKey // tls.key
	KeyCACert = resources.SecretKeyCACert
	KeyCAKey  = resources.SecretKeyCAKey
)

// DefaultLifetime is how long the certificates issued are valid, unless
// the operator is told otherwise.
const DefaultLifetime = 90 * 24 * time.Hour

// caValidity is the CA's: renewing a CA means trusting two for a while,
// which is not built; ten years outlasts any cluster's certificates.
const caValidity = 10 * 365 * 24 * time.Hour

// Keeper issues and renews certificates.
type Keeper struct {
	Client client.Client
	// Reader reads the user's Secrets (spec.certificates), which the
	// operator's cache does not hold; nil reads through Client.
	Reader client.Reader
	// Lifetime of the server and client certificates; zero is
	// DefaultLifetime.
	Lifetime time.Duration
	// Settle is how long each step of a change of CA waits for every pod
	// to see the last; zero is settle's default.
	Settle time.Duration
}

// Issued is a certificate in force.
type Issued struct {
	Secret   string
	Serial   string
	Issuer   string
	NotAfter time.Time
	RenewAt  time.Time
	// Reason is why it was issued on this call; "" when it was kept.
	Reason string
	// Provided: the user's Secret, used as given; it is never renewed here.
	Provided bool
	// Problem says why the user's Secret is not used; the last good
	// certificate stays in force.
	Problem string
}

// Ensure makes c's CA, server and replication certificates exist and be
// current at now, and says which are in force. A CA Secret that cannot
// be read is an error, never replaced: every certificate and client that
// trusts it would stop working.
func (k *Keeper) Ensure(ctx context.Context, c *holdfastv1.PostgresCluster, now time.Time) ([]Issued, error) {
	ca, err := k.ensureCA(ctx, c)
	if err != nil {
		return nil, err
	}
	lifetime := k.lifetime()
	signer := &pki.CA{Cert: ca.Cert, Key: ca.Key, Validity: lifetime}
	clusterTrust := pki.CertPEM(ca.Cert)
	names := resources.ServerCertificateNames(c)
	var server Issued
	if spec := c.Spec.Certificates; spec != nil && spec.ServerTLSSecret != "" {
		server, err = k.adoptServer(ctx, c, spec, now)
	} else {
		server, err = k.ensureLeaf(ctx, c, resources.SecretServerTLSName(c), signer, clusterTrust, names, now, func() (*pki.Leaf, error) {
			return signer.Serving(resources.ServiceRWName(c), names, nil)
		})
	}
	if err != nil {
		return nil, err
	}
	repl, err := k.ensureReplication(ctx, c, signer, now)
	if err != nil {
		return nil, err
	}
	if err := k.publishServerCA(ctx, c); err != nil {
		return nil, err
	}
	return []Issued{server, repl}, nil
}

func (k *Keeper) ensureCA(ctx context.Context, c *holdfastv1.PostgresCluster) (*pki.CA, error) {
	var s corev1.Secret
	err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretCAName(c)}, &s)
	if err == nil {
		ca, err := pki.ParseCA(s.Data[KeyCACert], s.Data[KeyCAKey])
		if err != nil {
			return nil, fmt.Errorf("the CA in Secret %s cannot be used: %w", s.Name, err)
		}
		return ca, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading Secret %s: %w", resources.SecretCAName(c), err)
	}
	ca, err := pki.NewCAValidFor(c.Namespace+"/"+c.Name+" CA", caValidity)
	if err != nil {
		return nil, err
	}
	key, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	s = corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: resources.SecretCAName(c), Namespace: c.Namespace, Labels: resources.Labels(c)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{KeyCACert: pki.CertPEM(ca.Cert), KeyCAKey: key},
	}
	if err := k.create(ctx, c, &s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Made by a look that ran at the same time: the next look reads it.
			return nil, fmt.Errorf("the CA Secret %s was created meanwhile: %w", s.Name, err)
		}
		return nil, err
	}
	return ca, nil
}

// publishServerCA writes the CA that clients verify the server with (the
// one in the server certificate's Secret: the cluster's own, or the
// user's), and nothing else, where clients may read it.
func (k *Keeper) publishServerCA(ctx context.Context, c *holdfastv1.PostgresCluster) error {
	var server corev1.Secret
	err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretServerTLSName(c)}, &server)
	if apierrors.IsNotFound(err) {
		return nil // a user's certificate not yet good enough to copy
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s: %w", resources.SecretServerTLSName(c), err)
	}
	want := string(server.Data[KeyCACert])
	var cm corev1.ConfigMap
	err = k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.ConfigMapCAName(c)}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: resources.ConfigMapCAName(c), Namespace: c.Namespace, Labels: resources.Labels(c)},
			Data:       map[string]string{KeyCACert: want},
		}
		return k.create(ctx, c, &cm)
	case err != nil:
		return fmt.Errorf("reading ConfigMap %s: %w", resources.ConfigMapCAName(c), err)
	case cm.Data[KeyCACert] == want:
		return nil
	}
	cm.Data = map[string]string{KeyCACert: want}
	if err := k.Client.Update(ctx, &cm); err != nil {
		return fmt.Errorf("publishing the CA in ConfigMap %s: %w", cm.Name, err)
	}
	return nil
}

// ensureLeaf keeps the certificate in Secret name current: issued by
// signer, holding names, not yet due, and its ca.crt the CAs in trust.
//
// A change of CA goes in steps, each given time to reach every pod (the
// kubelet refreshes Secret volumes lazily): first the new CA is trusted
// beside the old, then a certificate of the new CA replaces the old one,
// then the CAs no longer issuing are dropped. So no pod ever presents a
// certificate that its peers do not yet trust. A certificate that is due
// or damaged is replaced at once, still trusting its old CA for a while.
func (k *Keeper) ensureLeaf(ctx context.Context, c *holdfastv1.PostgresCluster, name string, signer *pki.CA, trust []byte, names []string, now time.Time,
	issue func() (*pki.Leaf, error)) (Issued, error) {
	var s corev1.Secret
	err := k.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s)
	found := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return Issued{}, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	why := "it did not exist"
	var inTrust []byte
	if found {
		inTrust = s.Data[KeyCACert]
		settled := !now.Before(changedAt(&s).Add(k.settle()))
		leaf, perr := pki.ParseLeaf(s.Data[KeyCert], s.Data[KeyKey])
		switch {
		case perr != nil:
			// The operator's own Secret, damaged: issue it again.
			why = "it could not be read: " + perr.Error()
		case leaf.Cert.CheckSignatureFrom(signer.Cert) == nil:
			if why = pki.Reissue(leaf.Cert, signer.Cert, names, now); why != "" {
				break
			}
			if bytes.Equal(inTrust, trust) || !settled {
				return issued(name, leaf.Cert, ""), nil
			}
			// Every pod presents a certificate of signer by now.
			if err := k.writeTrust(ctx, &s, trust, now); err != nil {
				return Issued{}, err
			}
			return issued(name, leaf.Cert, ""), nil
		default: // another CA signed it
			why = pki.Reissue(leaf.Cert, signer.Cert, names, now)
			if pki.MissingName(leaf.Cert, names) != "" || !now.Before(pki.RenewAt(leaf.Cert)) {
				break // wanted at once
			}
			if !holds(inTrust, signer.Cert) {
				if err := k.writeTrust(ctx, &s, bundle(trust, inTrust), now); err != nil {
					return Issued{}, err
				}
				return issued(name, leaf.Cert, ""), nil
			}
			if !settled {
				return issued(name, leaf.Cert, ""), nil
			}
		}
	}
	leaf, err := issue()
	if err != nil {
		return Issued{}, err
	}
	key, err := pki.KeyPEM(leaf.Key)
	if err != nil {
		return Issued{}, err
	}
	// The old certificate's CA stays trusted until every pod has the new one.
	newTrust := bundle(trust, inTrust)
	data := map[string][]byte{KeyCert: pki.CertPEM(leaf.Cert), KeyKey: key, KeyCACert: newTrust}
	markChanged(&s, now)
	if found {
		// Conditional on the version read: a look that ran at the same
		// time and renewed it first wins, and this one retries.
		s.Data = data
		if err := k.Client.Update(ctx, &s); err != nil {
			return Issued{}, fmt.Errorf("renewing the certificate in Secret %s: %w", name, err)
		}
	} else {
		s = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: resources.Labels(c)},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		markChanged(&s, now)
		if err := k.create(ctx, c, &s); err != nil {
			return Issued{}, err
		}
	}
	return issued(name, leaf.Cert, why), nil
}

// annotationChanged is when the operator last changed a certificate
// Secret (its certificate or the CAs it trusts), so that the next step of
// a change of CA waits until every pod has seen the last.
const annotationChanged = "holdfast.dev/changed-at"

func changedAt(s *corev1.Secret) time.Time {
	t, err := time.Parse(time.RFC3339, s.Annotations[annotationChanged])
	if err != nil {
		return time.Time{} // never recorded: long settled
	}
	return t
}

func markChanged(s *corev1.Secret, now time.Time) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[annotationChanged] = now.UTC().Format(time.RFC3339)
}

func (k *Keeper) writeTrust(ctx context.Context, s *corev1.Secret, trust []byte, now time.Time) error {
	s.Data[KeyCACert] = trust
	markChanged(s, now)
	if err := k.Client.Update(ctx, s); err != nil {
		return fmt.Errorf("changing the CAs trusted in Secret %s: %w", s.Name, err)
	}
	return nil
}

// settle is how long a change of the CAs trusted is given to reach every
// pod before the next step: two minutes, a kubelet's refresh of a Secret
// volume and its cache's, or a tenth of a short lifetime, which must
// leave time to renew.
func (k *Keeper) settle() time.Duration {
	if k.Settle > 0 {
		return k.Settle
	}
	return min(2*time.Minute, k.lifetime()/10)
}

func (k *Keeper) lifetime() time.Duration {
	if k.Lifetime <= 0 {
		return DefaultLifetime
	}
	return k.Lifetime
}

func issued(secret string, cert *x509.Certificate, reason string) Issued {
	return Issued{Secret: secret, Serial: cert.SerialNumber.Text(16), Issuer: cert.Issuer.String(), NotAfter: cert.NotAfter, RenewAt: pki.RenewAt(cert), Reason: reason}
}

func (k *Keeper) create(ctx context.Context, c *holdfastv1.PostgresCluster, obj client.Object) error {
	if err := controllerutil.SetControllerReference(c, obj, k.Client.Scheme()); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", obj.GetName(), err)
	}
	if err := k.Client.Create(ctx, obj); err != nil {
		return fmt.Errorf("creating %s: %w", obj.GetName(), err)
	}
	return nil
}
