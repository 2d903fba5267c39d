package imagestore

import (
	"archive/tar"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const root0 = 0 // uid and gid of root, for readability

// sample is an image of three layers, one of each compression, that uses
// every kind of entry the unpacker handles.
func sample(t *testing.T) (v1.Image, []v1.Layer) {
	t.Helper()
	base := gzipLayer(t, tarOf(t,
		dir("./", 0o755, root0, root0),
		dir("etc/", 0o755, root0, root0),
		file("etc/motd", 0o644, root0, root0, "old motd\n"),
		dir("app/", 0o750, 999, 999),
		file("app/hello.txt", 0o640, 999, 999, "hello\n"),
		// No entry for app/bin/: parents a layer leaves out are made.
		file("app/bin/su", 0o4755, root0, root0, "#!/bin/true\n"),
		symlink("app/link", "hello.txt", 999, 999),
		hardlink("app/hard", "app/hello.txt"),
		dir("tmp/", 0o1777, root0, root0),
		file("gone.txt", 0o644, root0, root0, "bye\n"),
		dir("opaque/", 0o755, root0, root0),
		file("opaque/old.txt", 0o644, root0, root0, "old\n"),
		dir("opaque/sub/", 0o755, root0, root0),
		file("opaque/sub/deep.txt", 0o644, root0, root0, "deep\n"),
		&tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3},
		&tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600},
	))
	top := zstdLayer(t, tarOf(t,
		whiteout(".wh.gone.txt"),
		dir("opaque/", 0o700, 999, 999),
		// Before the opaque whiteout: the layer's own entries stay.
		file("opaque/new.txt", 0o644, root0, root0, "new\n"),
		whiteout("opaque/.wh..wh..opq"),
		file("etc/motd", 0o644, root0, root0, "new motd\n"),
	))
	plain := plainLayer(tarOf(t,
		dir("app/shared/", 0o2775, 999, 999),
		file("etc/hostname", 0o644, root0, root0, "sandbox\n"),
	))
	layers := []v1.Layer{base, top, plain}
	return image(t, layers...), layers
}

// checkRoot asserts that root holds sample's layers applied in order.
func checkRoot(t *testing.T, root string) {
	t.Helper()
	at := func(p string) string { return filepath.Join(root, p) }
	for p, want := range map[string]string{
		"etc/motd":       "new motd\n",
		"etc/hostname":   "sandbox\n",
		"app/hello.txt":  "hello\n",
		"app/bin/su":     "#!/bin/true\n",
		"opaque/new.txt": "new\n",
	} {
		if got := readFile(t, at(p)); got != want {
			t.Errorf("%s holds %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"gone.txt", "opaque/old.txt", "opaque/sub", "dev/null", "dev/fifo", "opaque/.wh..wh..opq", ".wh.gone.txt"} {
		mustNotExist(t, at(p))
	}

	modes := map[string]os.FileMode{
		".":             os.ModeDir | 0o755,
		"app":           os.ModeDir | 0o750,
		"app/hello.txt": 0o640,
		"app/bin":       os.ModeDir | 0o755,
		"app/bin/su":    os.ModeSetuid | 0o755,
		"tmp":           os.ModeDir | os.ModeSticky | 0o777,
		"app/shared":    os.ModeDir | os.ModeSetgid | 0o775,
		"opaque":        os.ModeDir | 0o700,
	}
	for p, want := range modes {
		if got := lstat(t, at(p)).Mode(); got != want {
			t.Errorf("%s has mode %v, want %v", p, got, want)
		}
	}

	if target, err := os.Readlink(at("app/link")); err != nil || target != "hello.txt" {
		t.Errorf("app/link points to %q (%v), want hello.txt", target, err)
	}
	if !os.SameFile(lstat(t, at("app/hello.txt")), lstat(t, at("app/hard"))) {
		t.Error("app/hard is not a hard link of app/hello.txt")
	}
	// Folder times are set after their contents are written.
	for _, p := range []string{"app", "app/hello.txt", "opaque"} {
		if got := lstat(t, at(p)).ModTime(); !got.Equal(mtime) {
			t.Errorf("%s modified %v, want %v", p, got, mtime)
		}
	}

	if os.Geteuid() != 0 {
		t.Log("not root: owners not checked")
		return
	}
	for p, want := range map[string][2]int{
		"app":           {999, 999},
		"app/hello.txt": {999, 999},
		"app/link":      {999, 999},
		"app/bin/su":    {0, 0},
		"app/shared":    {999, 999},
		"opaque":        {999, 999},
	} {
		if uid, gid := owner(lstat(t, at(p))); uid != want[0] || gid != want[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, uid, gid, want[0], want[1])
		}
	}
}

func TestPullByTag(t *testing.T) {
	reg := newRegistry(t, nil)
	img, layers := sample(t)
	digest := reg.push(t, "example/app:1", img)
	s := reg.store(t)
	ref := reg.host + "/example/app:1"

	got, rep, err := s.Pull(context.Background(), ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digest || got.ID != reg.host+"/example/app@"+digest.String() || got.Ref != ref {
		t.Errorf("pulled %+v, want digest %s and ID %s", got, digest, reg.host+"/example/app@"+digest.String())
	}
	if want := filepath.Join(s.Dir, "roots", digest.Hex); got.Root != want {
		t.Errorf("root %s, want %s", got.Root, want)
	}
	checkRoot(t, got.Root)

	cfg := got.Config
	if !slices.Equal(cfg.Entrypoint, []string{"/app/bin/su"}) || !slices.Equal(cfg.Cmd, []string{"-c", "true"}) ||
		cfg.User != "999:999" || !slices.Equal(cfg.Env, []string{"PATH=/app/bin", "GREETING=hello"}) || cfg.WorkingDir != "/app" {
		t.Errorf("config %+v is not the image's", cfg)
	}

	var want []v1.Hash
	for _, l := range layers {
		want = append(want, digestOf(t, l))
	}
	if !slices.Equal(rep.Fetched, want) || len(rep.Refetched) != 0 || !rep.Unpacked {
		t.Errorf("report %+v, want all of %v fetched and unpacked", rep, want)
	}
	// The blobs are cached as fetched: gzip, zstd and a plain tar.
	magic := [][]byte{{0x1f, 0x8b}, {0x28, 0xb5, 0x2f, 0xfd}, []byte("app/shared/")}
	for i, d := range want {
		if b := readFile(t, s.blobPath(d)); !bytes.HasPrefix([]byte(b), magic[i]) {
			t.Errorf("blob %d starts %q, want %q", i, b[:min(len(b), 8)], magic[i])
		}
	}
	// Nothing temporary is left behind.
	for _, d := range []string{filepath.Join(s.Dir, "roots"), filepath.Join(s.Dir, "blobs", "sha256")} {
		if tmp, _ := filepath.Glob(filepath.Join(d, ".tmp-*")); len(tmp) != 0 {
			t.Errorf("left behind: %v", tmp)
		}
	}
}

func TestPullThroughMirror(t *testing.T) {
	reg := newRegistry(t, nil)
	img, _ := sample(t)
	digest := reg.push(t, "example/app:1", img)
	s := reg.store(t)
	s.Mirrors = map[string]string{
		"ghcr.io/example/": reg.host + "/example/",
		// Shorter, so not used for ghcr.io/example/.
		"ghcr.io/": "unused.invalid/",
	}

	got, _, err := s.Pull(context.Background(), "ghcr.io/example/app:1", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ghcr.io/example/app@" + digest.String(); got.ID != want {
		t.Errorf("ID %s, want %s", got.ID, want)
	}
	checkRoot(t, got.Root)

	// Docker Hub's short names match prefixes, and show in IDs, in full.
	reg.push(t, "library/postgres:15", img)
	hub := &Store{Dir: t.TempDir(), Transport: reg.transport, Mirrors: map[string]string{"docker.io/library/": reg.host + "/library/"}}
	got, _, err = hub.Pull(context.Background(), "postgres:15", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "docker.io/library/postgres@" + digest.String(); got.ID != want {
		t.Errorf("ID %s, want %s", got.ID, want)
	}

	for ref, want := range map[string]bool{
		"ghcr.io/example/app:1":                  true,
		"ghcr.io/example/app@" + digest.String(): true,
		reg.host + "/other/thing:2":              true, // the mirror's own registry
		"docker.io/library/nginx:1":              false,
		"nginx:1":                                false,
		"not a reference":                        false,
	} {
		if got := s.Serves(ref); got != want {
			t.Errorf("Serves(%q) = %v, want %v", ref, got, want)
		}
	}
}

func TestPullMissingImage(t *testing.T) {
	reg := newRegistry(t, nil)
	img, _ := sample(t)
	reg.push(t, "example/app:1", img)
	s := reg.store(t)
	s.Mirrors = map[string]string{"ghcr.io/example/": reg.host + "/example/"}

	for ref, code := range map[string]string{
		"ghcr.io/example/app:nope":                              "MANIFEST_UNKNOWN", // a tag the repository lacks
		"ghcr.io/example/other:1":                               "NAME_UNKNOWN",     // a repository the registry lacks
		"ghcr.io/example/app@sha256:" + strings.Repeat("0", 64): "MANIFEST_UNKNOWN",
	} {
		_, _, err := s.Pull(context.Background(), ref, false)
		if err == nil {
			t.Errorf("pulled %s, which the registry does not have", ref)
			continue
		}
		prefix := "pulling " + ref + " from " + reg.host + strings.TrimPrefix(ref, "ghcr.io") + ": "
		if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), code) {
			t.Errorf("error %q, want it to start %q and carry the registry's %s", err, prefix, code)
		}
	}
}

func TestPullRefetchesDamagedBlob(t *testing.T) {
	reg := newRegistry(t, nil)
	img, layers := sample(t)
	reg.push(t, "example/app:1", img)
	s := reg.store(t)
	ref := reg.host + "/example/app:1"
	if _, _, err := s.Pull(context.Background(), ref, false); err != nil {
		t.Fatal(err)
	}

	damaged := digestOf(t, layers[0])
	blob := s.blobPath(damaged)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(s.Dir, "roots")); err != nil {
		t.Fatal(err)
	}

	got, rep, err := s.Pull(context.Background(), ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Refetched, []v1.Hash{damaged}) || !slices.Equal(rep.Fetched, []v1.Hash{damaged}) || !rep.Unpacked {
		t.Errorf("report %+v, want only %s refetched, and unpacked", rep, damaged)
	}
	if ok, err := hashes(blob, damaged); !ok || err != nil {
		t.Errorf("cached blob does not hash to its name again (%v)", err)
	}
	checkRoot(t, got.Root)
}

func TestPullRejectsCorruptDownload(t *testing.T) {
	img, layers := sample(t)
	bad := digestOf(t, layers[0])
	reg := newRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+bad.String()) {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			body[len(body)/2] ^= 0xff
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	})
	reg.push(t, "example/app:1", img)
	s := reg.store(t)

	_, _, err := s.Pull(context.Background(), reg.host+"/example/app:1", true)
	if err == nil || !strings.Contains(err.Error(), bad.String()) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("pull of a corrupt layer: error %v, want one naming %s and its checksum", err, bad)
	}
	mustNotExist(t, s.blobPath(bad))
	for _, d := range []string{filepath.Join(s.Dir, "roots"), filepath.Join(s.Dir, "blobs", "sha256")} {
		if tmp, _ := filepath.Glob(filepath.Join(d, ".tmp-*")); len(tmp) != 0 {
			t.Errorf("left behind: %v", tmp)
		}
	}
	d, _ := img.Digest()
	mustNotExist(t, s.rootPath(d))
}

func TestPullRemovesStaleTemporaries(t *testing.T) {
	reg := newRegistry(t, nil)
	img, layers := sample(t)
	digest := reg.push(t, "example/app:1", img)
	s := reg.store(t)
	// What a pull killed halfway leaves.
	staleBlob := filepath.Join(s.Dir, "blobs", "sha256", tempPrefix(digestOf(t, layers[0]))+"123")
	staleRoot := filepath.Join(s.Dir, "roots", tempPrefix(digest)+"456")
	for _, d := range []string{filepath.Dir(staleBlob), filepath.Join(staleRoot, "etc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(staleBlob, []byte("half a layer"), 0o644); err != nil {
		t.Fatal(err)
	}

	if _, _, err := s.Pull(context.Background(), reg.host+"/example/app:1", false); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, staleBlob)
	mustNotExist(t, staleRoot)
}

func TestPullPolicy(t *testing.T) {
	reg := newRegistry(t, nil)
	first, _ := sample(t)
	d1 := reg.push(t, "example/app:1", first)
	s := reg.store(t)
	ref := reg.host + "/example/app:1"
	if _, _, err := s.Pull(context.Background(), ref, false); err != nil {
		t.Fatal(err)
	}

	before := reg.requests.Load()
	got, rep, err := s.Pull(context.Background(), ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.requests.Load() - before; n != 0 {
		t.Errorf("IfNotPresent pull of a present image sent %d requests, want none", n)
	}
	if got.Digest != d1 || len(rep.Fetched) != 0 || rep.Unpacked {
		t.Errorf("second pull: digest %s, report %+v; want %s reused", got.Digest, rep, d1)
	}

	second := image(t, gzipLayer(t, tarOf(t, file("v2", 0o644, root0, root0, "2\n"))))
	d2 := reg.push(t, "example/app:1", second)
	if got, _, err := s.Pull(context.Background(), ref, false); err != nil || got.Digest != d1 {
		t.Errorf("IfNotPresent after a re-push: digest %s (%v), want the known %s", got.Digest, err, d1)
	}
	got, rep, err = s.Pull(context.Background(), ref, true)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != d2 || !rep.Unpacked || readFile(t, filepath.Join(got.Root, "v2")) != "2\n" {
		t.Errorf("Always after a re-push: digest %s, report %+v; want %s unpacked", got.Digest, rep, d2)
	}
}

func TestPullKeepsWritesInsideRoot(t *testing.T) {
	reg := newRegistry(t, nil)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Enough ".." to reach "/" from any root, then on to outside.
	up := strings.Repeat("../", 64) + strings.TrimPrefix(outside, "/")

	img := image(t,
		gzipLayer(t, tarOf(t,
			file("../escape", 0o644, root0, root0, "dotdot\n"),
			file("/abs", 0o644, root0, root0, "abs\n"),
			symlink("out", outside, root0, root0),
			file("out/pwned", 0o644, root0, root0, "through absolute link\n"),
			symlink("up", up, root0, root0),
			file("up/pwned-up", 0o644, root0, root0, "through relative link\n"),
		)),
		gzipLayer(t, tarOf(t,
			whiteout("out/.wh.secret"),
			whiteout("up/.wh.secret"),
		)),
	)
	reg.push(t, "example/evil:1", img)
	s := reg.store(t)

	got, _, err := s.Pull(context.Background(), reg.host+"/example/evil:1", true)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing landed outside the root...
	mustNotExist(t, filepath.Join(s.Dir, "roots", "escape"))
	mustNotExist(t, filepath.Join(outside, "pwned"))
	mustNotExist(t, filepath.Join(outside, "pwned-up"))
	if readFile(t, secret) != "secret\n" {
		t.Error("a whiteout through a link removed a file outside the root")
	}
	// ...it landed where the container sees those paths.
	for p, want := range map[string]string{
		"escape":                           "dotdot\n",
		"abs":                              "abs\n",
		filepath.Join(outside, "pwned"):    "through absolute link\n",
		filepath.Join(outside, "pwned-up"): "through relative link\n",
	} {
		if got := readFile(t, filepath.Join(got.Root, p)); got != want {
			t.Errorf("%s holds %q, want %q", p, got, want)
		}
	}

	// A hard link can only name a file in the root: outside's secret is
	// not one, whichever way it is named.
	for i, target := range []string{secret, "out/secret", "../../../../../../../../../../../../.." + secret} {
		img := image(t, gzipLayer(t, tarOf(t,
			symlink("out", outside, root0, root0),
			hardlink("stolen", target),
		)))
		ref := reg.host + "/example/link:" + string(rune('a'+i))
		reg.push(t, "example/link:"+string(rune('a'+i)), img)
		if _, _, err := s.Pull(context.Background(), ref, true); err == nil {
			t.Errorf("hard link to %s: pull succeeded, want it refused", target)
		}
		if n := lstat(t, secret).Sys().(*syscall.Stat_t).Nlink; n != 1 {
			t.Errorf("hard link to %s: the secret has %d links, want 1", target, n)
		}
	}
}

func TestPullConcurrent(t *testing.T) {
	reg := newRegistry(t, nil)
	img, layers := sample(t)
	reg.push(t, "example/app:1", img)
	s := reg.store(t)
	ref := reg.host + "/example/app:1"

	const n = 4
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		images  [n]Image
		reports [n]Report
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			<-start
			images[i], reports[i], errs[i] = s.Pull(context.Background(), ref, true)
		})
	}
	close(start)
	wg.Wait()

	unpacked, fetched := 0, 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("pull %d: %v", i, errs[i])
		}
		if images[i].Root != images[0].Root || images[i].Digest != images[0].Digest {
			t.Errorf("pull %d got %s at %s, pull 0 %s at %s", i, images[i].Digest, images[i].Root, images[0].Digest, images[0].Root)
		}
		if reports[i].Unpacked {
			unpacked++
		}
		fetched += len(reports[i].Fetched)
	}
	if unpacked != 1 || fetched != len(layers) {
		t.Errorf("%d pulls unpacked and %d layers fetched in all, want 1 and %d", unpacked, fetched, len(layers))
	}
	checkRoot(t, images[0].Root)
}

// An index resolves to this machine's platform; the ID names the index, as
// containerd's does.
func TestPullIndex(t *testing.T) {
	reg := newRegistry(t, nil)
	native, _ := sample(t)
	foreign := image(t, gzipLayer(t, tarOf(t, file("foreign", 0o644, root0, root0, "not for us\n"))))
	other := "s390x"
	if runtime.GOARCH == other {
		other = "arm64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: foreign, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: native, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	tag, err := name.NewTag(reg.host + "/example/multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx, remote.WithTransport(reg.srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	nativeDigest, _ := native.Digest()
	s := reg.store(t)

	got, _, err := s.Pull(context.Background(), tag.String(), false)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != nativeDigest || got.ID != reg.host+"/example/multi@"+idxDigest.String() {
		t.Errorf("pulled digest %s ID %s, want digest %s and ID naming index %s", got.Digest, got.ID, nativeDigest, idxDigest)
	}
	checkRoot(t, got.Root)
}
