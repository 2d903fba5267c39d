package images

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// RefAnnotation names an image in an OCI layout's index (what
// `skopeo copy oci:<dir>:<ref>` and `crane push --index` look for).
const RefAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes the images, in order, as a fresh OCI image layout at
// dir. It writes next to dir and renames, so that dir is either absent or
// complete: a layout found there can be reused as it is.
func WriteLayout(dir string, imgs []Named) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("layout parent: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("layout temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("starting layout: %w", err)
	}
	for _, n := range imgs {
		if err := p.AppendImage(n.Image, layout.WithAnnotations(map[string]string{RefAnnotation: n.Ref})); err != nil {
			return fmt.Errorf("writing %s: %w", n.Ref, err)
		}
	}
	// MkdirTemp made it 0700; a layout is for anyone to read.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("layout permissions: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("placing layout: %w", err)
	}
	return nil
}

// CacheDir is where images are built and kept:
// ${HOLDFAST_CACHE:-${XDG_CACHE_HOME:-~/.cache}/holdfast}/images, beside
// the control-plane binaries hack/build-k8s.sh keeps in .../holdfast/bin.
func CacheDir() string {
	if c := os.Getenv("HOLDFAST_CACHE"); c != "" {
		return filepath.Join(c, "images")
	}
	if c := os.Getenv("XDG_CACHE_HOME"); c != "" {
		return filepath.Join(c, "holdfast", "images")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "holdfast", "images")
	}
	return filepath.Join(home, ".cache", "holdfast", "images")
}
