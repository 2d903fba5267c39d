// Command images builds Holdfast's OCI images without a container engine
// into an OCI image layout in the build cache, and prints the layout's path
// and each image's reference and digest (`make images`):
//
//	ghcr.io/holdfast-dev/holdfast:<VERSION>   the operator (and instance manager) binary
//	ghcr.io/holdfast-dev/holdfast-postgres:15 Debian's postgresql-15 and pgbackrest
//
// The layout lives in ${HOLDFAST_CACHE:-~/.cache/holdfast}/images/<key>/oci,
// the key a hash of every input, so a second run with the same inputs only
// prints it. See docs/images.md.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"holdfast.dev/holdfast/internal/images"
)

const registry = "ghcr.io/holdfast-dev/"

// postgresEpoch is the postgres image's SOURCE_DATE_EPOCH: 2025-05-20, the
// Debian snapshot this machine's sources name. It is fixed, not the commit's
// time, because the rootfs depends on the mirror, not on Holdfast's source:
// a new commit reuses the cached rootfs. Raise it to take a newer mirror.
const postgresEpoch = 1747699200

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", ".", "the Holdfast module to build")
	cache := flag.String("cache", images.CacheDir(), "where the layouts and the rootfs tars are kept")
	pgMajor := flag.Int("postgres", 15, "PostgreSQL major version of the postgres image")
	suite := flag.String("suite", "bookworm", "Debian suite of the postgres image")
	quiet := flag.Bool("q", false, "print only the layout's path (for scripts: holdfast sandbox up --images)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	version, err := os.ReadFile(filepath.Join(*root, "VERSION"))
	if err != nil {
		return fmt.Errorf("reading the version: %w", err)
	}
	in := images.HoldfastInput{Version: strings.TrimSpace(string(version))}
	if in.Revision, err = git(*root, "rev-parse", "HEAD"); err != nil {
		return err
	}
	// The operator image's timestamps are the commit's: the same commit
	// builds the same image.
	ct, err := git(*root, "log", "-1", "--format=%ct")
	if err != nil {
		return err
	}
	sec, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return fmt.Errorf("commit time %q: %w", ct, err)
	}
	in.Time = time.Unix(sec, 0).UTC()

	tmp, err := os.MkdirTemp("", "holdfast-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "holdfast")
	if err := images.BuildBinary(ctx, *root, bin, in.Version); err != nil {
		return err
	}
	if in.Binary, err = os.ReadFile(bin); err != nil {
		return err
	}
	if in.CACerts, err = os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		return fmt.Errorf("CA certificates for the operator image: %w", err)
	}

	sources, err := images.HostSources("/")
	if err != nil {
		return err
	}
	spec := images.RootfsSpec{Major: *pgMajor, Suite: *suite, Sources: sources, Time: time.Unix(postgresEpoch, 0).UTC()}
	start := time.Now()
	rootfs, built, err := images.CachedRootfs(ctx, spec, filepath.Join(*cache, "rootfs"))
	if err != nil {
		return err
	}
	if built {
		fmt.Fprintf(os.Stderr, "built the postgres rootfs in %s: %s\n", time.Since(start).Round(time.Second), rootfs)
	}

	dir := filepath.Join(*cache, layoutKey(in, rootfs), "oci")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); os.IsNotExist(err) {
		hf, err := images.HoldfastImage(in)
		if err != nil {
			return err
		}
		pg, err := images.PostgresImage(rootfs, *pgMajor, spec.Time)
		if err != nil {
			return err
		}
		if err := images.WriteLayout(dir, []images.Named{
			{Ref: holdfastRef(in.Version), Image: hf},
			{Ref: fmt.Sprintf("%sholdfast-postgres:%d", registry, *pgMajor), Image: pg},
		}); err != nil {
			return err
		}
	}
	if *quiet {
		fmt.Println(dir)
		return nil
	}
	return report(dir)
}

// holdfastRef is the operator image's name; config/manager/manager.yaml
// names the same (main_test.go checks).
func holdfastRef(version string) string { return registry + "holdfast:" + version }

// layoutKey hashes the layout's inputs: the binary, the CA bundle, the
// labels, the epoch and the rootfs (named by its own key). Bump "layout 1"
// when the images' recipe changes.
func layoutKey(in images.HoldfastInput, rootfs string) string {
	h := sha256.New()
	fmt.Fprintf(h, "layout 1\nversion %s\nrevision %s\nepoch %d\nrootfs %s\n", in.Version, in.Revision, in.Time.Unix(), filepath.Base(rootfs))
	h.Write(in.Binary)
	h.Write(in.CACerts)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// report prints the layout and each image in it, as `make images` shows.
func report(dir string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("reading layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading layout %s: %w", dir, err)
	}
	fmt.Printf("OCI layout: %s\n", dir)
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("image %s: %w", d.Digest, err)
		}
		layers, err := img.Layers()
		if err != nil {
			return fmt.Errorf("image %s: %w", d.Digest, err)
		}
		var size int64
		for _, l := range layers {
			s, err := l.Size()
			if err != nil {
				return fmt.Errorf("image %s: %w", d.Digest, err)
			}
			size += s
		}
		fmt.Printf("  %s@%s (%.1f MB compressed)\n", d.Annotations[images.RefAnnotation], d.Digest, float64(size)/1e6)
	}
	return nil
}

func git(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
