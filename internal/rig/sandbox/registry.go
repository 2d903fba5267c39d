package sandbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"holdfast.dev/holdfast/internal/pki"
)

// The sandbox's image registry: go-containerregistry's registry, served by
// the sandbox process on the pod bridge's gateway over HTTPS with a
// certificate from the sandbox CA. `up --images` pushes an OCI layout's
// images to it; the node pulls from it, as a mirror of the mirrored
// prefixes.
const (
	registryPort = 5000
	// MirroredPrefix is the repository prefix Holdfast's images are
	// published under; the node pulls it from the sandbox's registry, as
	// containerd does from a configured mirror.
	MirroredPrefix = "ghcr.io/holdfast-dev/"
	// CloudNativePGPrefix is where CloudNativePG publishes its images. The
	// rig builds them from CloudNativePG's module and pushes them under
	// their own names (internal/rig/cnpg), so that its release manifest
	// runs as published.
	CloudNativePGPrefix = "ghcr.io/cloudnative-pg/"
)

// mirroredPrefixes are the prefixes the node pulls from the registry; each
// lives in the registry under its path after ghcr.io/.
var mirroredPrefixes = []string{MirroredPrefix, CloudNativePGPrefix}

// RegistryInfo is how programs on the host reach the sandbox's registry.
// `up` writes it as JSON to <dir>/registry/endpoint.json.
type RegistryInfo struct {
	// Host is <pod bridge gateway>:5000.
	Host string `json:"host"`
	// CACert is the sandbox CA (PEM), which signed the registry's certificate.
	CACert string `json:"caCert"`
}

func registryInfoFile(dir string) string { return filepath.Join(dir, "registry", "endpoint.json") }

// ReadRegistry reads the registry's RegistryInfo from the sandbox folder dir.
func ReadRegistry(dir string) (RegistryInfo, error) {
	var info RegistryInfo
	err := readJSON(registryInfoFile(dir), "registry endpoint", &info)
	return info, err
}

// Transport trusts only the sandbox CA.
func (i RegistryInfo) Transport() (http.RoundTripper, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(i.CACert)) {
		return nil, errors.New("the registry's CA certificate does not parse")
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

// Mirrors maps each mirrored prefix to where it lives in the registry.
func (i RegistryInfo) Mirrors() map[string]string {
	m := map[string]string{}
	for _, p := range mirroredPrefixes {
		m[p] = i.Host + "/" + strings.TrimPrefix(p, "ghcr.io/")
	}
	return m
}

// Reference is where ref (named under a mirrored prefix) lives in the registry.
func (i RegistryInfo) Reference(ref string) (string, error) {
	for prefix, mirror := range i.Mirrors() {
		if rest, ok := strings.CutPrefix(ref, prefix); ok {
			return mirror + rest, nil
		}
	}
	return "", fmt.Errorf("image %s is not under %s, which the sandbox's registry mirrors", ref, strings.Join(mirroredPrefixes, " or "))
}

// startRegistry serves the registry on the pod bridge's gateway, with
// blobs under <dir>/registry/blobs, and pushes the images of the OCI
// layout c.Images (each under the name its index gives). It returns once
// the images are in; stop ends the server.
func startRegistry(ctx context.Context, c Config, progress func(string)) (info RegistryInfo, stop func(), err error) {
	gateway := PodBridge.Gateway.IP
	info.Host = net.JoinHostPort(gateway.String(), strconv.Itoa(registryPort))
	progress("starting the image registry on " + info.Host)
	blobs := c.path("registry", "blobs")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return info, nil, fmt.Errorf("making the registry's folder: %w", err)
	}
	ca, err := pki.LoadCA(c.path("pki"))
	if err != nil {
		return info, nil, err
	}
	serving, err := ca.Serving("registry", []string{"registry." + s3Namespace + ".svc." + ClusterDomain}, []net.IP{gateway, net.ParseIP("127.0.0.1")})
	if err != nil {
		return info, nil, err
	}
	if err := pki.WriteLeaf(c.path("pki"), "registry", serving); err != nil {
		return info, nil, fmt.Errorf("writing the registry's certificate: %w", err)
	}
	info.CACert = string(pki.CertPEM(ca.Cert))
	cert, err := tls.LoadX509KeyPair(c.path("pki", "registry.crt"), c.path("pki", "registry.key"))
	if err != nil {
		return info, nil, fmt.Errorf("loading the registry's certificate: %w", err)
	}

	handler := blobStore{dir: blobs}
	if c.Images != "" {
		// The layout's blobs are served where they are: pushing its images
		// then uploads manifests only.
		handler.readOnly = filepath.Join(c.Images, "blobs")
	}
	logFile, err := os.OpenFile(c.path("logs", "registry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return info, nil, err
	}
	ln, err := net.Listen("tcp", info.Host)
	if err != nil {
		logFile.Close()
		return info, nil, fmt.Errorf("the registry's port: %w", err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.WithBlobHandler(handler), registry.Logger(log.New(logFile, "", log.LstdFlags))),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logFile, "", log.LstdFlags),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		logFile.Close()
	}
	if c.Images == "" {
		progress("no --images: the registry stays empty, and pods naming " + MirroredPrefix + "* images will not pull")
	} else {
		progress("pushing the images of " + c.Images)
		if err := pushLayout(ctx, info, c.Images); err != nil {
			stop()
			return info, nil, err
		}
	}
	if err := writeJSON(registryInfoFile(c.Dir), info); err != nil {
		stop()
		return info, nil, err
	}
	return info, stop, nil
}

// pushLayout pushes every image of an OCI layout to the registry, under the
// name its index gives it (org.opencontainers.image.ref.name).
func pushLayout(ctx context.Context, info RegistryInfo, dir string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("reading the image layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading the image layout %s: %w", dir, err)
	}
	t, err := info.Transport()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		ref := d.Annotations["org.opencontainers.image.ref.name"]
		target, err := info.Reference(ref)
		if err != nil {
			return fmt.Errorf("image %s in %s: %w", d.Digest, dir, err)
		}
		tag, err := name.NewTag(target)
		if err != nil {
			return fmt.Errorf("image %s in %s: %w", ref, dir, err)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("image %s in %s: %w", ref, dir, err)
		}
		if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithTransport(t)); err != nil {
			return fmt.Errorf("pushing %s to %s: %w", ref, target, err)
		}
	}
	return nil
}

// blobStore keeps pushed blobs in dir and serves, besides, those of an OCI
// layout's blob folder (readOnly). Sizes come from the files: the registry
// verifies a blob's digest as it is pushed, and the layout's were written
// by the image build, so hashing each on every request would only cost.
type blobStore struct {
	dir, readOnly string
}

func (b blobStore) path(h v1.Hash) (string, error) {
	for _, d := range []string{b.readOnly, b.dir} {
		if d == "" {
			continue
		}
		p := filepath.Join(d, h.Algorithm, h.Hex)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", registry.ErrNotFound
}

func (b blobStore) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	p, err := b.path(h)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (b blobStore) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	p, err := b.path(h)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (b blobStore) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	dir := filepath.Join(b.dir, h.Algorithm)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The registry's verifying reader fails here on a digest mismatch.
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, h.Hex))
}

// readJSON reads what `up` wrote to path with writeJSON; what names it in errors.
func readJSON(path, what string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the sandbox's %s (is the sandbox up?): %w", what, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// writeJSON writes v to path, readable by its owner only.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
