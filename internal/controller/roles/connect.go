package roles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/certificates"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/postgres/catalog"
	"holdfast.dev/holdfast/internal/resources"
)

// connectTimeout bounds each connection to the primary.
const connectTimeout = 10 * time.Second

// primary returns a Connector to the databases of the cluster's current
// primary, as the superuser over TLS verified against the cluster's CA by
// the pod's DNS name (verify-full): the superuser's password must reach
// no one else.
func (r *Reconciler) primary(ctx context.Context, c *holdfastv1.PostgresCluster) (catalog.Connector, error) {
	name := c.Status.CurrentPrimary
	if name == "" {
		return nil, &notReadyError{reason: ReasonPrimaryUnavailable, message: "the cluster has no primary yet", transient: true}
	}
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &pod)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &notReadyError{reason: ReasonPrimaryUnavailable, message: "the primary's pod " + name + " is gone", transient: true}
	case err != nil:
		return nil, fmt.Errorf("reading pod %s: %w", name, err)
	}
	if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" || pod.Labels[resources.LabelRole] != string(holdfastv1.RolePrimary) {
		return nil, &notReadyError{reason: ReasonPrimaryUnavailable, transient: true,
			message: "pod " + name + " is not serving as the primary yet"}
	}

	roots, err := r.serverCA(ctx, c)
	if err != nil {
		return nil, err
	}
	user, password, err := r.superuser(ctx, c)
	if err != nil {
		return nil, err
	}
	port := r.Port
	if port == 0 {
		port = postgres.Port
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=verify-full application_name=holdfast-operator",
		pod.Status.PodIP, port))
	if err != nil {
		return nil, fmt.Errorf("building the connection to %s: %w", name, err)
	}
	cfg.User, cfg.Password = user, password
	// Dialled by address, verified by name: the server certificate the
	// operator issues holds each pod's name under the headless Service.
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: podDNSName(c, name), MinVersion: tls.VersionTLS12}
	if spec := c.Spec.Certificates; spec != nil && spec.ServerTLSSecret != "" {
		// The user's certificate need name only the Services: its chain
		// to the user's CA, which the operator checked, is verified.
		cfg.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies the chain
			VerifyConnection: pki.VerifyChain(roots, x509.ExtKeyUsageServerAuth)}
	}
	cfg.Fallbacks = nil
	return func(ctx context.Context, database string) (*pgx.Conn, error) {
		cc := cfg.Copy()
		if database != "" {
			cc.Database = database
		}
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("connecting to database %s on %s: %w", cc.Database, name, err)
		}
		return conn, nil
	}, nil
}

// podDNSName is the instance pod's name under the headless Service, one
// of resources.ServerCertificateNames.
func podDNSName(c *holdfastv1.PostgresCluster, pod string) string {
	return pod + "." + resources.ServiceHeadlessName(c) + "." + c.Namespace + ".svc.cluster.local"
}

// serverCA is the certificate authority the server certificate chains
// to, from the Secret the operator keeps for the pods (the cluster's CA,
// or the user's once checked): not the published ConfigMap, which more
// people may write to, and which could then send the superuser's
// password to a server of their choosing.
func (r *Reconciler) serverCA(ctx context.Context, c *holdfastv1.PostgresCluster) (*x509.CertPool, error) {
	name := resources.SecretServerTLSName(c)
	var s corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s); err != nil {
		return nil, &notReadyError{reason: ReasonCredentialsMissing,
			message: fmt.Sprintf("the server certificate's CA (Secret %s) cannot be read, so the primary cannot be verified: %v", name, err)}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.Data[certificates.KeyCACert]) {
		return nil, &notReadyError{reason: ReasonCredentialsMissing,
			message: fmt.Sprintf("Secret %s holds no certificate in %s", name, certificates.KeyCACert)}
	}
	return roots, nil
}

func (r *Reconciler) superuser(ctx context.Context, c *holdfastv1.PostgresCluster) (user, password string, err error) {
	name := resources.SecretSuperuserName(c)
	var s corev1.Secret
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &s); err != nil {
		return "", "", &notReadyError{reason: ReasonCredentialsMissing,
			message: fmt.Sprintf("the superuser's Secret %s cannot be read: %v", name, err)}
	}
	user, password = string(s.Data[resources.SecretKeyUsername]), string(s.Data[resources.SecretKeyPassword])
	if user == "" || password == "" {
		return "", "", &notReadyError{reason: ReasonCredentialsMissing,
			message: fmt.Sprintf("Secret %s lacks %s or %s", name, resources.SecretKeyUsername, resources.SecretKeyPassword)}
	}
	return user, password, nil
}
