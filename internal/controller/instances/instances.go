// Package instances is how controllers reach a cluster's instance
// managers: over mutual TLS, presenting a client certificate for the
// operator that the cluster's CA issues, and taking the server for an
// instance when its certificate chains to the CA of the cluster's server
// certificate.
package instances

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/resources"
)

// URL is the base URL of the instance API of pod.
func URL(pod *corev1.Pod) string { return instanceapi.URL(pod.Status.PodIP) }

// Dialer calls instance APIs. The operator's client certificate is
// issued in memory, per cluster, and never stored: its key is no one
// else's to read. It is issued again at two thirds of its lifetime, or
// when the cluster's CA or server CA changes.
type Dialer struct {
	Client client.Reader
	// Lifetime of the operator's client certificates.
	Lifetime time.Duration

	mu      sync.Mutex
	clients map[types.UID]*dialed
}

type dialed struct {
	ca, serverCA []byte
	renewAt      time.Time
	api          instanceapi.Client
}

// Status fetches the report of the instance at base, of cluster c, once
// it has changed if w asks to wait.
func (d *Dialer) Status(ctx context.Context, c *holdfastv1.PostgresCluster, base string, w instanceapi.Wait) (instanceapi.Report, error) {
	api, err := d.client(ctx, c)
	if err != nil {
		return instanceapi.Report{}, err
	}
	return api.Status(ctx, base, w)
}

// Desire tells the instance at base, of cluster c, its desired state.
func (d *Dialer) Desire(ctx context.Context, c *holdfastv1.PostgresCluster, base string, desired instanceapi.Desired) error {
	api, err := d.client(ctx, c)
	if err != nil {
		return err
	}
	return api.Desire(ctx, base, desired)
}

// StartBackup orders a backup of the instance at base, of cluster c.
func (d *Dialer) StartBackup(ctx context.Context, c *holdfastv1.PostgresCluster, base string, o instanceapi.BackupOrder) (instanceapi.BackupReport, error) {
	api, err := d.client(ctx, c)
	if err != nil {
		return instanceapi.BackupReport{}, err
	}
	return api.StartBackup(ctx, base, o)
}

// CancelBackup stops backup id on the instance at base, of cluster c.
func (d *Dialer) CancelBackup(ctx context.Context, c *holdfastv1.PostgresCluster, base, id string) error {
	api, err := d.client(ctx, c)
	if err != nil {
		return err
	}
	return api.CancelBackup(ctx, base, id)
}

// client is c's instance API client, issuing the operator's certificate
// when there is none in force.
func (d *Dialer) client(ctx context.Context, c *holdfastv1.PostgresCluster) (instanceapi.Client, error) {
	caPEM, caKey, serverCA, err := d.authorities(ctx, c)
	if err != nil {
		return instanceapi.Client{}, err
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if cur := d.clients[c.UID]; cur != nil && bytes.Equal(cur.ca, caPEM) && bytes.Equal(cur.serverCA, serverCA) && now.Before(cur.renewAt) {
		return cur.api, nil
	}
	ca, err := pki.ParseCA(caPEM, caKey)
	if err != nil {
		return instanceapi.Client{}, fmt.Errorf("the CA of %s/%s cannot issue the operator's certificate: %w", c.Namespace, c.Name, err)
	}
	ca.Validity = d.Lifetime
	leaf, err := ca.Client(instanceapi.OperatorClientName)
	if err != nil {
		return instanceapi.Client{}, fmt.Errorf("issuing the operator's certificate for %s/%s: %w", c.Namespace, c.Name, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(serverCA) {
		return instanceapi.Client{}, fmt.Errorf("the server CA of %s/%s holds no certificate", c.Namespace, c.Name)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	api := instanceapi.Client{HTTP: &http.Client{
		Timeout: 5 * time.Second,
		// The instance API answers on pod IPs, never through a proxy.
		Transport: &http.Transport{Proxy: nil, TLSClientConfig: instanceapi.ClientTLS(cert, roots),
			MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
	}}
	if old := d.clients[c.UID]; old != nil {
		old.api.HTTP.CloseIdleConnections()
	}
	if d.clients == nil {
		d.clients = map[types.UID]*dialed{}
	}
	d.clients[c.UID] = &dialed{ca: caPEM, serverCA: serverCA, renewAt: pki.RenewAt(leaf.Cert), api: api}
	return api, nil
}

// authorities reads c's CA (certificate and key) and the CA its server
// certificate chains to.
func (d *Dialer) authorities(ctx context.Context, c *holdfastv1.PostgresCluster) (caPEM, caKey, serverCA []byte, err error) {
	var ca, server corev1.Secret
	if err := d.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretCAName(c)}, &ca); err != nil {
		return nil, nil, nil, fmt.Errorf("reading the CA that issues the operator's certificate: %w", err)
	}
	if err := d.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretServerTLSName(c)}, &server); err != nil {
		return nil, nil, nil, fmt.Errorf("reading the server certificate's CA: %w", err)
	}
	return ca.Data[resources.SecretKeyCACert], ca.Data[resources.SecretKeyCAKey], server.Data[resources.SecretKeyCACert], nil
}
