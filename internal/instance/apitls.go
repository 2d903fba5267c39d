package instance

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// mountedCredentials reads, at each use, a certificate and its CA from
// a mounted Secret (tls.crt, tls.key, ca.crt), so that a renewal the
// kubelet writes into the volume takes effect with no restart. A pair
// that is not valid leaves the last good one in force.
type mountedCredentials struct {
	dir string

	mu   sync.Mutex
	cert *tls.Certificate
	ca   *x509.CertPool
}

func (c *mountedCredentials) load() (tls.Certificate, *x509.CertPool, error) {
	cert, ca, err := readMounted(c.dir)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.cert, c.ca = &cert, ca
	}
	if c.cert == nil {
		return tls.Certificate{}, nil, err
	}
	return *c.cert, c.ca, nil
}

func readMounted(dir string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, corev1.TLSCertKey), filepath.Join(dir, corev1.TLSPrivateKeyKey))
	if err != nil {
		return cert, nil, fmt.Errorf("the certificate in %s: %w", dir, err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return cert, nil, fmt.Errorf("the CA in %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return cert, nil, fmt.Errorf("the CA in %s holds no certificate", dir)
	}
	return cert, pool, nil
}

// apiCredentials are the instance API's: it serves the server
// certificate, and takes callers' client certificates issued by the CA
// that issued the replication certificate (the cluster's).
type apiCredentials struct {
	server, client mountedCredentials
}

func newAPICredentials(secretsDir string) *apiCredentials {
	return &apiCredentials{
		server: mountedCredentials{dir: filepath.Join(secretsDir, resources.TLSServerDir)},
		client: mountedCredentials{dir: filepath.Join(secretsDir, resources.TLSReplicationDir)},
	}
}

// APITLS is the instance API's TLS configuration: without a client
// certificate of the cluster's CA, no request reaches the API.
func (m *Manager) APITLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, _, err := m.apiCreds.server.load()
			if err != nil {
				return nil, fmt.Errorf("no server certificate to serve the instance API with: %w", err)
			}
			_, clientCA, err := m.apiCreds.client.load()
			if err != nil {
				return nil, fmt.Errorf("no CA to verify callers with: %w", err)
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{cert},
				ClientCAs:    clientCA,
				ClientAuth:   tls.RequireAndVerifyClientCert,
			}, nil
		},
	}
}

// peerClient is how this instance calls another's API (a primary asking
// its replicas for promises): with the replication certificate, taking
// the server for an instance by the CA the server certificate chains to.
func (m *Manager) peerClient() (*tls.Config, error) {
	cert, _, err := m.apiCreds.client.load()
	if err != nil {
		return nil, err
	}
	_, serverCA, err := m.apiCreds.server.load()
	if err != nil {
		return nil, err
	}
	return api.ClientTLS(cert, serverCA), nil
}

// from serves h only to callers whose verified client certificate names
// one of names.
func from(h http.HandlerFunc, names ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if err := callerIs(req, names); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		h(w, req)
	}
}

func callerIs(req *http.Request, names []string) error {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		return errors.New("a client certificate of the cluster's CA is required")
	}
	if cn := req.TLS.VerifiedChains[0][0].Subject.CommonName; !slices.Contains(names, cn) {
		return fmt.Errorf("a client certificate for %q may not do this", cn)
	}
	return nil
}

// Who may call what: the operator everything, a peer instance (by its
// replication certificate) only for a promise.
var (
	operatorOnly = []string{api.OperatorClientName}
	operatorPeer = []string{api.OperatorClientName, postgres.ReplicationUser}
)

// Servers are the manager's listeners: the probes and the metrics, in
// plain HTTP, and the instance API, over mutual TLS.
type Servers struct {
	Probes, API, Metrics net.Addr
	// Errs receives the error that ended any server.
	Errs      <-chan error
	servers   []*http.Server
	listeners []net.Listener
}

// Listen serves the probes on cfg.StatusAddr, the API on cfg.APIAddr and
// the metrics on cfg.MetricsAddr (when set) until Close.
func (m *Manager) Listen() (*Servers, error) {
	errs := make(chan error, 3)
	s := &Servers{Errs: errs}
	for _, l := range []struct {
		addr    string
		handler http.Handler
		tls     *tls.Config
		into    *net.Addr
	}{
		{m.cfg.StatusAddr, m.ProbeHandler(), nil, &s.Probes},
		{m.cfg.APIAddr, m.APIHandler(), m.APITLS(), &s.API},
		{m.cfg.MetricsAddr, m.MetricsHandler(), nil, &s.Metrics},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listening on %s: %w", l.addr, err)
		}
		*l.into = ln.Addr()
		s.listeners = append(s.listeners, ln)
		srv := &http.Server{Handler: l.handler, TLSConfig: l.tls, ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		if l.tls != nil {
			ln = tls.NewListener(ln, l.tls)
		}
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("serving on %s: %w", l.addr, err)
			}
		}()
	}
	return s, nil
}

// Close stops both servers.
func (s *Servers) Close() {
	for _, srv := range s.servers {
		_ = srv.Close()
	}
	// A server closes only the listeners its Serve has taken up, and Serve
	// runs in a goroutine that may not have started: a manager stopped
	// right after it started kept its ports bound.
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}
