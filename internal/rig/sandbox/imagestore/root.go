package imagestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxFetches is how many blobs one pull fetches at a time, containerd's
// default.
const maxFetches = 3

// blobJob is one distinct blob of an image on its way into the cache.
type blobJob struct {
	layer    v1.Layer
	digest   v1.Hash
	done     chan struct{} // closed when path, state and err are set
	path     string
	state    blobState
	err      error
	reported bool
}

// assemble gets img's blobs into the cache and unpacks its layers in order
// into a temporary folder that is renamed to the root only when complete, so
// a root on disk is always a whole one. cancel ends the fetches still going
// when unpacking fails. The caller holds the image's lock.
func (s *Store) assemble(ctx context.Context, cancel context.CancelFunc, img v1.Image, digest v1.Hash) (Report, error) {
	var rep Report
	layers, err := img.Layers()
	if err != nil {
		return rep, err
	}
	jobs := make([]*blobJob, len(layers))
	byDigest := map[v1.Hash]*blobJob{}
	var distinct []*blobJob // in order of first use: an image may repeat a layer
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return rep, err
		}
		if byDigest[d] == nil {
			byDigest[d] = &blobJob{layer: l, digest: d, done: make(chan struct{})}
			distinct = append(distinct, byDigest[d])
		}
		jobs[i] = byDigest[d]
	}

	// Blobs are fetched a few at a time in layer order while the layers
	// already on disk are unpacked: the bottom layer, usually the largest,
	// is unpacked while the ones above it download.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before Wait: fetches still going stop
	queue := make(chan *blobJob)
	wg.Go(func() {
		defer close(queue)
		for _, j := range distinct {
			select {
			case queue <- j:
			case <-ctx.Done():
				return
			}
		}
	})
	for range min(maxFetches, len(distinct)) {
		wg.Go(func() {
			for j := range queue {
				j.path, j.state, j.err = s.blob(ctx, j.layer)
				close(j.done)
			}
		})
	}

	roots := filepath.Join(s.Dir, "roots")
	if err := os.MkdirAll(roots, 0o755); err != nil {
		return rep, err
	}
	removeStale(roots, digest)
	tmp, err := os.MkdirTemp(roots, tempPrefix(digest))
	if err != nil {
		return rep, err
	}
	complete := false
	defer func() {
		if !complete {
			os.RemoveAll(tmp)
		}
	}()
	u, err := newUnpacker(tmp)
	if err != nil {
		return rep, err
	}
	defer u.close()

	for i, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		if j.err != nil {
			return rep, j.err
		}
		d := j.digest
		if !j.reported {
			j.reported = true
			switch j.state {
			case blobRefetched:
				rep.Refetched = append(rep.Refetched, d)
				rep.Fetched = append(rep.Fetched, d)
			case blobFetched:
				rep.Fetched = append(rep.Fetched, d)
			}
		}
		if err := u.apply(ctx, j.path, layers[i]); err != nil {
			return rep, fmt.Errorf("unpacking layer %s: %w", d, err)
		}
	}
	if err := u.finish(); err != nil {
		return rep, fmt.Errorf("unpacking: %w", err)
	}
	if err := os.Rename(tmp, s.rootPath(digest)); err != nil {
		return rep, err
	}
	complete = true
	rep.Unpacked = true
	return rep, nil
}
