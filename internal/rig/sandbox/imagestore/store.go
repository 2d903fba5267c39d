// Package imagestore pulls container images by digest from a registry and
// keeps their verified layers and unpacked roots on disk, as a container
// runtime's image store does. The sandbox node runs a pod's containers as
// local processes; an image's unpacked root is the read-only lower layer of
// a container's overlay root.
package imagestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Store pulls images into Dir. Its zero value with Dir set is ready to use;
// a Store must not be copied after its first use.
type Store struct {
	// Dir holds blobs/sha256/<hex> (compressed layers, as fetched) and
	// roots/<hex>/ (an image's unpacked root, hex of the image manifest digest).
	Dir string
	// Transport reaches the registries (it trusts the sandbox CA). nil means
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Mirrors maps a repository prefix as pods name it to the prefix to pull
	// it from, as containerd's registry mirrors do:
	// "ghcr.io/holdfast-dev/" -> "10.244.0.1:5000/holdfast-dev/". The longest
	// matching prefix wins. Docker Hub is spelled docker.io in prefixes, and
	// names without a registry are matched in their full form
	// (postgres:15 as docker.io/library/postgres:15).
	Mirrors map[string]string

	mu sync.Mutex
	// pulled is the last image each ref (as the pod names it) resolved to:
	// imagePullPolicy IfNotPresent's answer without asking the registry.
	pulled map[string]Image
	locks  map[string]*keyLock
}

// Image is a pulled image.
type Image struct {
	Ref string // as the pod names it
	// ID is what a pod's status.containerStatuses[].imageID shows: the
	// repository as the pod names it (no tag) + "@" + the digest the ref
	// resolved to, e.g. "ghcr.io/holdfast-dev/holdfast-postgres@sha256:...".
	// For a multi-platform image that is the index's digest, as containerd
	// reports it; Digest is then the platform's image manifest.
	ID     string
	Digest v1.Hash   // the image manifest's digest
	Root   string    // the unpacked root folder; callers must never write into it
	Config v1.Config // the image config's config: Entrypoint, Cmd, Env, User, WorkingDir
}

// Report says what a Pull did, for events and tests.
type Report struct {
	// Fetched are the layers fetched from the registry, Refetched ones included.
	Fetched []v1.Hash
	// Refetched are cached layers whose content did not match their digest,
	// removed and fetched again.
	Refetched []v1.Hash
	// Unpacked says the root was assembled by this call (false: reused).
	Unpacked bool
}

// Serves reports whether ref is pulled from a registry this store knows: a
// Mirrors prefix matches it, or its registry host is the host of a Mirrors
// target.
func (s *Store) Serves(ref string) bool {
	r, err := name.ParseReference(ref)
	if err != nil {
		return false
	}
	full := canonical(r)
	for prefix, target := range s.Mirrors {
		host, _, _ := strings.Cut(target, "/")
		if strings.HasPrefix(full, prefix) || host == r.Context().RegistryStr() {
			return true
		}
	}
	return false
}

// Pull resolves ref (a tag or a digest reference) and returns the image with
// its unpacked root. always=false (imagePullPolicy IfNotPresent) reuses a
// tag's last resolved digest when its root is on disk, without asking the
// registry; always=true asks the registry every time.
//
// Errors begin "pulling <ref> from <where it was pulled from>: " and keep the
// registry's answer (e.g. "MANIFEST_UNKNOWN: Unknown manifest").
func (s *Store) Pull(ctx context.Context, ref string, always bool) (Image, Report, error) {
	if s.Dir == "" {
		// Not the current folder, by accident.
		return Image{}, Report{}, fmt.Errorf("pulling %s: the image store has no folder", ref)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, Report{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	src, err := s.source(r)
	if err != nil {
		return Image{}, Report{}, fmt.Errorf("pulling %s: mirror: %w", ref, err)
	}
	if !always {
		if img, ok := s.known(ref); ok {
			return img, Report{}, nil
		}
	}
	img, rep, err := s.pull(ctx, ref, r, src)
	if err != nil {
		return Image{}, rep, fmt.Errorf("pulling %s from %s: %w", ref, src, err)
	}
	s.mu.Lock()
	if s.pulled == nil {
		s.pulled = map[string]Image{}
	}
	s.pulled[ref] = img
	s.mu.Unlock()
	img.Config = *img.Config.DeepCopy() // the cached copy stays the caller's to change
	return img, rep, nil
}

func (s *Store) pull(ctx context.Context, ref string, r, src name.Reference) (Image, Report, error) {
	// Cancelled when the pull ends, so layer fetches still running after a
	// failed unpack stop instead of outliving the call.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	desc, err := remote.Get(src,
		remote.WithContext(ctx),
		remote.WithTransport(s.transport()),
		// The container runs as a process on this machine, so its binaries
		// must be built for it.
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		return Image{}, Report{}, err
	}
	rimg, err := desc.Image()
	if err != nil {
		return Image{}, Report{}, err
	}
	digest, err := rimg.Digest()
	if err != nil {
		return Image{}, Report{}, err
	}
	cf, err := rimg.ConfigFile()
	if err != nil {
		return Image{}, Report{}, fmt.Errorf("image config: %w", err)
	}
	img := Image{
		Ref:    ref,
		ID:     repository(r) + "@" + desc.Digest.String(),
		Digest: digest,
		Root:   s.rootPath(digest),
		Config: cf.Config,
	}

	// Pods starting together pull the same image together: the first
	// assembles the root, the others wait for it and reuse it.
	unlock, err := s.lock(ctx, "root "+digest.String())
	if err != nil {
		return Image{}, Report{}, err
	}
	defer unlock()
	switch _, err := os.Stat(img.Root); {
	case err == nil:
		return img, Report{}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return Image{}, Report{}, err
	}
	rep, err := s.assemble(ctx, cancel, rimg, digest)
	return img, rep, err
}

// known returns the image ref last resolved to if its root is still on disk.
func (s *Store) known(ref string) (Image, bool) {
	s.mu.Lock()
	img, ok := s.pulled[ref]
	s.mu.Unlock()
	if !ok {
		return Image{}, false
	}
	if _, err := os.Stat(img.Root); err != nil {
		return Image{}, false
	}
	img.Config = *img.Config.DeepCopy()
	return img, true
}

// source is where ref is pulled from: ref with its longest Mirrors prefix
// replaced, or ref itself.
func (s *Store) source(r name.Reference) (name.Reference, error) {
	full := canonical(r)
	best, found := "", false
	for prefix := range s.Mirrors {
		if strings.HasPrefix(full, prefix) && (!found || len(prefix) > len(best)) {
			best, found = prefix, true
		}
	}
	if !found {
		return r, nil
	}
	return name.ParseReference(s.Mirrors[best] + strings.TrimPrefix(full, best))
}

// repository names r's repository the way kubelet and containerd show it:
// Docker Hub as docker.io, not go-containerregistry's index.docker.io.
func repository(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.Context().RepositoryStr()
}

// canonical is r in full: registry, repository and tag or digest.
func canonical(r name.Reference) string {
	if _, ok := r.(name.Digest); ok {
		return repository(r) + "@" + r.Identifier()
	}
	return repository(r) + ":" + r.Identifier()
}

func (s *Store) transport() http.RoundTripper {
	if s.Transport == nil {
		return http.DefaultTransport
	}
	return s.Transport
}

func (s *Store) rootPath(h v1.Hash) string {
	return filepath.Join(s.Dir, "roots", h.Hex)
}

type keyLock struct {
	ch   chan struct{} // holds a token while the lock is held
	refs int           // holders and waiters; the lock is dropped from the map at 0
}

// lock takes the lock named key, giving up when ctx ends. It serialises work
// on one image or blob while letting different ones go in parallel.
func (s *Store) lock(ctx context.Context, key string) (unlock func(), err error) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*keyLock{}
	}
	l := s.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		s.locks[key] = l
	}
	l.refs++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.locks, key)
		}
		s.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
