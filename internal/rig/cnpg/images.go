package cnpg

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"holdfast.dev/holdfast/internal/images"
	"holdfast.dev/holdfast/internal/rig/sandbox"
)

// Version is the CloudNativePG release the harness runs (hack/cnpg/go.mod).
const Version = "1.30.0"

// OperatorImage is the operator image its release manifest names; its
// pods' bootstrap-controller init container runs the same image.
const OperatorImage = sandbox.CloudNativePGPrefix + "cloudnative-pg:" + Version

// PostgresRepository holds the postgres images Clusters name in imageName.
// Its tags are postgres minor versions, as CloudNativePG's are.
const PostgresRepository = sandbox.CloudNativePGPrefix + "postgresql"

// PostgresTags are the tags the postgres image is pushed under: one image,
// two names, so that a change of imageName between them is a rolling
// update of the same postgres, as in Holdfast's benchmark.
var PostgresTags = []string{"15.9", "15.10"}

// postgresUID is the uid CloudNativePG runs postgres as by default
// (spec.postgresUID), and its images' postgres user.
const postgresUID = 26

// BuildImages makes CloudNativePG's two images:
//   - the operator image: the base layer of Holdfast's operator image (CA
//     certificates, passwd, /tmp) and the manager at /manager, run as
//     nonroot, as its Dockerfile builds it on distroless;
//   - the postgres image: Holdfast's postgres image (Debian's
//     postgresql-15) with its postgres user at uid 26, as CloudNativePG's
//     images have it, so that Clusters keep the default postgresUID.
//
// holdfastLayout is the OCI layout hack/images builds; manager is the
// binary hack/build-cnpg.sh built.
func BuildImages(holdfastLayout, manager, holdfastVersion string) ([]images.Named, error) {
	idx, err := layout.ImageIndexFromPath(holdfastLayout)
	if err != nil {
		return nil, fmt.Errorf("reading Holdfast's images: %w", err)
	}
	byRef, err := layoutImages(idx)
	if err != nil {
		return nil, err
	}
	opRef := sandbox.MirroredPrefix + "holdfast:" + holdfastVersion
	pgRef := sandbox.MirroredPrefix + "holdfast-postgres:15"
	hf, pg := byRef[opRef], byRef[pgRef]
	if hf == nil || pg == nil {
		return nil, fmt.Errorf("the layout %s lacks %s or %s", holdfastLayout, opRef, pgRef)
	}
	op, err := operatorImage(hf, manager)
	if err != nil {
		return nil, fmt.Errorf("CloudNativePG's operator image: %w", err)
	}
	out := []images.Named{{Ref: OperatorImage, Image: op}}
	pgImg, err := postgresImage(pg)
	if err != nil {
		return nil, fmt.Errorf("CloudNativePG's postgres image: %w", err)
	}
	for _, tag := range PostgresTags {
		out = append(out, images.Named{Ref: PostgresRepository + ":" + tag, Image: pgImg})
	}
	return out, nil
}

func layoutImages(idx v1.ImageIndex) (map[string]v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading Holdfast's images: %w", err)
	}
	out := map[string]v1.Image{}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", d.Digest, err)
		}
		out[d.Annotations[images.RefAnnotation]] = img
	}
	return out, nil
}

func operatorImage(holdfast v1.Image, manager string) (v1.Image, error) {
	layers, err := holdfast.Layers()
	if err != nil || len(layers) == 0 {
		return nil, fmt.Errorf("the Holdfast image's layers: %v", err)
	}
	bin, err := os.ReadFile(manager)
	if err != nil {
		return nil, fmt.Errorf("reading the manager: %w", err)
	}
	t := time.Unix(0, 0).UTC()
	// As its Dockerfile lays it out: the operator finds the architectures
	// it can run instances on by the names operator/manager_<arch>.
	mgr, err := images.FilesLayer([]images.File{
		{Path: "operator", Dir: true, Mode: 0o755, UID: images.NonRoot, GID: images.NonRoot},
		{Path: "operator/manager_" + runtime.GOARCH, Mode: 0o755, Data: bin, UID: images.NonRoot, GID: images.NonRoot},
		{Path: "manager", Mode: 0o777, Link: "operator/manager_" + runtime.GOARCH},
	}, t)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(emptyImage(), layers[0], mgr)
	if err != nil {
		return nil, err
	}
	return mutate.Config(img, v1.Config{
		User:       fmt.Sprintf("%d:%d", images.NonRoot, images.NonRoot),
		Entrypoint: []string{"/manager"},
		Env:        []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/",
	})
}

func postgresImage(pg v1.Image) (v1.Image, error) {
	passwd, group, err := accounts(pg)
	if err != nil {
		return nil, err
	}
	if passwd, err = setID(passwd, "postgres", 2, 3); err != nil {
		return nil, fmt.Errorf("/etc/passwd: %w", err)
	}
	if group, err = setID(group, "postgres", 2, -1); err != nil {
		return nil, fmt.Errorf("/etc/group: %w", err)
	}
	t := time.Unix(0, 0).UTC()
	l, err := images.FilesLayer([]images.File{
		{Path: "etc", Dir: true, Mode: 0o755},
		{Path: "etc/group", Mode: 0o644, Data: group},
		{Path: "etc/passwd", Mode: 0o644, Data: passwd},
	}, t)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(pg, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg := cf.Config
	cfg.User = fmt.Sprintf("%d:%d", postgresUID, postgresUID)
	return mutate.Config(img, cfg)
}

// accounts reads /etc/passwd and /etc/group of an image's filesystem.
func accounts(img v1.Image) (passwd, group []byte, err error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for passwd == nil || group == nil {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the postgres image: %w", err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "etc/passwd":
			passwd, err = io.ReadAll(tr)
		case "etc/group":
			group, err = io.ReadAll(tr)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if passwd == nil || group == nil {
		return nil, nil, errors.New("the postgres image has no /etc/passwd or /etc/group")
	}
	return passwd, group, nil
}

// setID sets fields idField and gidField (-1: none) of user's line in a
// passwd or group file to postgresUID.
func setID(file []byte, user string, idField, gidField int) ([]byte, error) {
	lines := strings.Split(string(file), "\n")
	found := false
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) < 3 || f[0] != user {
			continue
		}
		f[idField] = strconv.Itoa(postgresUID)
		if gidField >= 0 && gidField < len(f) {
			f[gidField] = strconv.Itoa(postgresUID)
		}
		lines[i] = strings.Join(f, ":")
		found = true
	}
	if !found {
		return nil, fmt.Errorf("no %s entry", user)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// Push pushes imgs to the registry of the sandbox in folder dir, under
// their own names.
func Push(ctx context.Context, dir string, imgs []images.Named) error {
	reg, err := sandbox.ReadRegistry(dir)
	if err != nil {
		return err
	}
	t, err := reg.Transport()
	if err != nil {
		return err
	}
	for _, n := range imgs {
		target, err := reg.Reference(n.Ref)
		if err != nil {
			return err
		}
		tag, err := name.NewTag(target)
		if err != nil {
			return fmt.Errorf("image %s: %w", n.Ref, err)
		}
		if err := remote.Write(tag, n.Image, remote.WithContext(ctx), remote.WithTransport(t)); err != nil {
			return fmt.Errorf("pushing %s to the sandbox's registry: %w", n.Ref, err)
		}
	}
	return nil
}

// Binaries builds (or finds in the cache) CloudNativePG's manager and
// release manifest with hack/build-cnpg.sh of the module at root, and
// gives their folder.
func Binaries(ctx context.Context, root string) (string, error) {
	out, err := runScript(ctx, root, "hack/build-cnpg.sh")
	if err != nil {
		return "", err
	}
	return filepath.Clean(strings.TrimSpace(out)), nil
}

// emptyImage is an OCI image with no layers, as the Holdfast images are OCI.
func emptyImage() v1.Image {
	return mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
}
