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

// serverTLS copies the server certificate the operator issued (mounted
// from its Secret, which the kubelet refreshes when it is renewed) to
// where postgres reads it, the key private to this user as postgres
// requires, and says where. A mounted pair that is not valid is not
// copied: postgres goes on with the last good one, since it would not
// start, or reload, on a bad one. Nil when there has never been a good
// pair: postgres then serves without TLS. The bytes returned are the
// files in force, part of the configuration's digest, so that a renewal
// is copied and reloaded.
func (m *Manager) serverTLS() (*postgres.TLSFiles, []byte) {
	src := filepath.Join(m.cfg.SecretsDir, resources.TLSServerDir)
	dst := filepath.Join(m.cfg.RunDir, "tls")
	files := &postgres.TLSFiles{Cert: filepath.Join(dst, "server.crt"), Key: filepath.Join(dst, "server.key"), CA: filepath.Join(dst, "ca.crt")}
	read := func(dir, a, b, c string) (crt, key, ca []byte, err error) {
		crt, err1 := os.ReadFile(filepath.Join(dir, a))
		key, err2 := os.ReadFile(filepath.Join(dir, b))
		ca, err3 := os.ReadFile(filepath.Join(dir, c))
		return crt, key, ca, errors.Join(err1, err2, err3)
	}
	crt, key, ca, err := read(src, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, "ca.crt")
	if err == nil {
		if _, perr := tls.X509KeyPair(crt, key); perr != nil {
			m.log.Info("the mounted server certificate is not a valid pair; postgres keeps the last good one", "error", perr.Error())
			err = perr
		}
	}
	oldCrt, oldKey, oldCA, oldErr := read(dst, "server.crt", "server.key", "ca.crt")
	switch {
	case err != nil && oldErr != nil:
		return nil, nil
	case err != nil:
		return files, bytes.Join([][]byte{oldCrt, oldKey, oldCA}, nil)
	case oldErr == nil && bytes.Equal(crt, oldCrt) && bytes.Equal(key, oldKey) && bytes.Equal(ca, oldCA):
		return files, bytes.Join([][]byte{crt, key, ca}, nil)
	}
	if err := m.ensureDir(dst, 0o700); err != nil {
		m.log.Error(err, "copying the server certificate")
		return nil, nil
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{files.CA, ca}, {files.Cert, crt}, {files.Key, key}} {
		if err := m.writeFile(f.path, f.data, 0o600); err != nil {
			m.log.Error(err, "copying the server certificate")
			return nil, nil
		}
	}
	return files, bytes.Join([][]byte{crt, key, ca}, nil)
}
