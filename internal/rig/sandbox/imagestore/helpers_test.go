package imagestore

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mtime is every test entry's modification time.
var mtime = time.Unix(1_700_000_000, 0)

// testRegistry is an in-process registry over TLS.
type testRegistry struct {
	srv  *httptest.Server
	host string // host:port, as image references name it
	// requests counts what reached the registry through transport.
	requests  atomic.Int64
	transport http.RoundTripper
}

// newRegistry starts a registry; wrap, if not nil, sits in front of it.
func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	// Quiet: connections cut when a test ends are no news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r := &testRegistry{srv: srv, host: strings.TrimPrefix(srv.URL, "https://")}
	inner := srv.Client().Transport
	r.transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		r.requests.Add(1)
		return inner.RoundTrip(req)
	})
	return r
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// push writes img to ref (relative to the registry's host) and returns its digest.
func (r *testRegistry) push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	tag, err := name.NewTag(r.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithTransport(r.srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// store is a Store in a fresh folder that reaches r.
func (r *testRegistry) store(t *testing.T) *Store {
	return &Store{Dir: t.TempDir(), Transport: r.transport}
}

// image is an OCI image of layers whose config names an entrypoint, a user
// and an environment.
func image(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{
		Entrypoint: []string{"/app/bin/su"},
		Cmd:        []string{"-c", "true"},
		User:       "999:999",
		Env:        []string{"PATH=/app/bin", "GREETING=hello"},
		WorkingDir: "/app",
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func gzipLayer(t *testing.T, stream []byte) v1.Layer {
	return openerLayer(t, stream, tarball.WithMediaType(types.OCILayer))
}

func zstdLayer(t *testing.T, stream []byte) v1.Layer {
	return openerLayer(t, stream, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
}

// plainLayer is an uncompressed layer: its blob is the tar stream itself.
func plainLayer(stream []byte) v1.Layer {
	return static.NewLayer(stream, types.OCIUncompressedLayer)
}

func openerLayer(t *testing.T, b []byte, opts ...tarball.LayerOption) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tarOf writes a tar stream of entries: headers, each followed by its
// content as a string, or file()'s pairs of both.
func tarOf(t *testing.T, entries ...any) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var flat []any
	for _, e := range entries {
		if pair, ok := e.([]any); ok {
			flat = append(flat, pair...)
		} else {
			flat = append(flat, e)
		}
	}
	for _, e := range flat {
		var err error
		switch e := e.(type) {
		case *tar.Header:
			if e.ModTime.IsZero() {
				e.ModTime = mtime
			}
			err = tw.WriteHeader(e)
		case string:
			_, err = tw.Write([]byte(e))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func file(name string, mode int64, uid, gid int, body string) []any {
	return []any{&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid, Size: int64(len(body))}, body}
}

func dir(name string, mode int64, uid, gid int) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: gid}
}

func symlink(name, target string, uid, gid int) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, Uid: uid, Gid: gid}
}

func hardlink(name, target string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}
}

func whiteout(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lstat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func owner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (Lstat: %v), want it absent", path, err)
	}
}

func digestOf(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
