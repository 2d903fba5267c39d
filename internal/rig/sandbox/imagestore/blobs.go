package imagestore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobPath is where a blob is cached: blobs/<algorithm>/<hex>, as in an OCI
// image layout. Digests from manifests are validated hex, so the name cannot
// leave the folder.
func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.Dir, "blobs", h.Algorithm, h.Hex)
}

type blobState int

const (
	blobCached    blobState = iota // on disk, hashed and matching its digest
	blobFetched                    // fetched from the registry
	blobRefetched                  // on disk but damaged: removed and fetched again
)

// blob makes sure l's compressed blob is in the cache with the content its
// digest names and returns its path. A cached blob is hashed before it is
// used: a disk error or a stray write must not end up in a root.
func (s *Store) blob(ctx context.Context, l v1.Layer) (string, blobState, error) {
	d, err := l.Digest()
	if err != nil {
		return "", 0, err
	}
	path := s.blobPath(d)
	// Images sharing a layer fetch it once.
	unlock, err := s.lock(ctx, "blob "+d.String())
	if err != nil {
		return "", 0, err
	}
	defer unlock()

	state := blobFetched
	switch ok, err := hashes(path, d); {
	case ok:
		return path, blobCached, nil
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", 0, fmt.Errorf("checking cached layer %s: %w", d, err)
	default:
		if err := os.Remove(path); err != nil {
			return "", 0, fmt.Errorf("removing damaged layer %s: %w", d, err)
		}
		state = blobRefetched
	}
	if err := fetch(l, path, d); err != nil {
		return "", 0, fmt.Errorf("fetching layer %s: %w", d, err)
	}
	return path, state, nil
}

// hashes reports whether the file at path has digest d.
func hashes(path string, d v1.Hash) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h, err := v1.Hasher(d.Algorithm)
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == d.Hex, nil
}

// fetch writes l's compressed blob to path. The registry's reader checks the
// size and digest as it streams and fails at the end on a mismatch, so the
// temporary file becomes the blob only when every byte was right.
func fetch(l v1.Layer, path string, d v1.Hash) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	removeStale(dir, d)
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, tempPrefix(d)+"*")
	if err != nil {
		return err
	}
	// No fsync: a blob cut short by a crash fails its hash next time and is
	// fetched again.
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// tempPrefix starts the names of the temporary files and folders that
// become d's blob or root, so ones left by a crash can be found.
func tempPrefix(d v1.Hash) string {
	return ".tmp-" + d.Hex + "-"
}

// removeStale removes what a crashed fetch or unpack of d left in dir. The
// caller holds d's lock, so nothing else in this process is writing them.
func removeStale(dir string, d v1.Hash) {
	stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix(d)+"*"))
	for _, p := range stale {
		os.RemoveAll(p)
	}
}

// cachedLayer is a verified blob in the cache. partial.CompressedToLayer
// gives it Uncompressed, which tells gzip, zstd and plain tar apart by their
// first bytes. (tarball.LayerFromFile would read the whole blob twice more
// to compute its digest and diff ID, which we know or do not need.)
type cachedLayer struct {
	path      string
	digest    v1.Hash
	mediaType types.MediaType
}

func (c cachedLayer) Digest() (v1.Hash, error)            { return c.digest, nil }
func (c cachedLayer) Compressed() (io.ReadCloser, error)  { return os.Open(c.path) }
func (c cachedLayer) MediaType() (types.MediaType, error) { return c.mediaType, nil }

func (c cachedLayer) Size() (int64, error) {
	fi, err := os.Stat(c.path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// uncompressed opens the cached blob at path as a tar stream.
func uncompressed(path string, l v1.Layer) (io.ReadCloser, error) {
	d, err := l.Digest()
	if err != nil {
		return nil, err
	}
	mt, err := l.MediaType()
	if err != nil {
		return nil, err
	}
	cl, err := partial.CompressedToLayer(cachedLayer{path: path, digest: d, mediaType: mt})
	if err != nil {
		return nil, err
	}
	return cl.Uncompressed()
}
