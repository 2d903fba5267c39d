package instance

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// tlsFiles are where the manager keeps the certificates in force: postgres
// and libpq want a key private to the user that reads it, which a
// Secret volume shared by the pod's users cannot give.
type tlsFiles struct {
	dir string
}

func (m *Manager) tls() tlsFiles { return tlsFiles{dir: filepath.Join(m.cfg.RunDir, "tls")} }

// server is the certificate postgres serves and the CA a client
// certificate must chain to: the one that issued replication's.
func (f tlsFiles) server() *postgres.TLSFiles {
	return &postgres.TLSFiles{Cert: filepath.Join(f.dir, "server.crt"), Key: filepath.Join(f.dir, "server.key"), CA: filepath.Join(f.dir, "client-ca.crt")}
}

// replication is the client certificate replication, pg_basebackup and
// pg_rewind present, and the CA they verify the primary's server with.
func (f tlsFiles) replication() (cert, key, serverCA string) {
	return filepath.Join(f.dir, "replication.crt"), filepath.Join(f.dir, "replication.key"), filepath.Join(f.dir, "server-ca.crt")
}

// mountedPair is a certificate, its key and a CA as a Secret volume
// holds them (tls.crt, tls.key, ca.crt), and where the manager copies them.
type mountedPair struct {
	src               string
	cert, key, caCopy string
	what              string
}

// serverTLS copies the certificates the operator issued (mounted from
// their Secrets, which the kubelet refreshes when they are renewed) to
// where postgres and libpq read them, and says where postgres finds its
// own. A mounted pair that is not valid is not copied: postgres goes on
// with the last good one, since it would not start, or reload, on a bad
// one. Nil when there has never been a good server pair: postgres then
// serves no TCP client at all, since pg_hba admits only TLS. The bytes
// returned are the files in force, part of the configuration's digest,
// so that a renewal is copied and reloaded.
func (m *Manager) serverTLS() (*postgres.TLSFiles, []byte) {
	f := m.tls()
	server := f.server()
	replCert, replKey, serverCA := f.replication()
	pairs := []mountedPair{
		{src: resources.TLSServerDir, cert: server.Cert, key: server.Key, caCopy: serverCA, what: "server certificate"},
		{src: resources.TLSReplicationDir, cert: replCert, key: replKey, caCopy: server.CA, what: "replication certificate"},
	}
	var inForce [][]byte
	for i, p := range pairs {
		files, ok := m.copyPair(f.dir, p)
		if !ok && i == 0 {
			return nil, nil
		}
		inForce = append(inForce, files...)
	}
	return server, bytes.Join(inForce, nil)
}

// copyPair copies p's pair and CA when they are valid and new, and gives
// the files in force, with false when there are none.
func (m *Manager) copyPair(dir string, p mountedPair) ([][]byte, bool) {
	read := func(a, b, c string) (crt, key, ca []byte, err error) {
		crt, err1 := os.ReadFile(a)
		key, err2 := os.ReadFile(b)
		ca, err3 := os.ReadFile(c)
		return crt, key, ca, errors.Join(err1, err2, err3)
	}
	src := filepath.Join(m.cfg.SecretsDir, p.src)
	crt, key, ca, err := read(filepath.Join(src, corev1.TLSCertKey), filepath.Join(src, corev1.TLSPrivateKeyKey), filepath.Join(src, "ca.crt"))
	if err == nil {
		if _, perr := tls.X509KeyPair(crt, key); perr != nil {
			m.log.Info("the mounted "+p.what+" is not a valid pair; the last good one stays in force", "error", perr.Error())
			err = perr
		}
	}
	oldCrt, oldKey, oldCA, oldErr := read(p.cert, p.key, p.caCopy)
	switch {
	case err != nil && oldErr != nil:
		return nil, false
	case err != nil:
		return [][]byte{oldCrt, oldKey, oldCA}, true
	case oldErr == nil && bytes.Equal(crt, oldCrt) && bytes.Equal(key, oldKey) && bytes.Equal(ca, oldCA):
		return [][]byte{crt, key, ca}, true
	}
	if err := m.ensureDir(dir, 0o700); err != nil {
		m.log.Error(err, "copying the "+p.what)
		return nil, false
	}
	// The CA first and the key last: a reader that sees the new key sees
	// the certificate it belongs to.
	for _, f := range []struct {
		path string
		data []byte
	}{{p.caCopy, ca}, {p.cert, crt}, {p.key, key}} {
		if err := m.writeFile(f.path, f.data, 0o600); err != nil {
			m.log.Error(err, "copying the "+p.what)
			return nil, false
		}
	}
	return [][]byte{crt, key, ca}, true
}
