package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// NonRoot is the user the operator image runs as, the one distroless calls
// nonroot; config/manager/manager.yaml runs the operator as this uid.
const NonRoot = 65532

// VersionVar is the variable the build stamps with Holdfast's version (it
// also makes the default instance image, ghcr.io/holdfast-dev/holdfast:<version>).
const VersionVar = "holdfast.dev/holdfast/internal/cli.Version"

// BuildBinary builds the static binary of the image, ./cmd/holdfastd (the
// operator and the instance manager, without the sandbox the user's
// holdfast links), from the module at dir into out. -trimpath, no VCS stamp and an empty build ID leave nothing in it that
// depends on the checkout's path or the machine: the same source and Go
// version give the same bytes. The commit goes into the image's labels
// instead of the binary.
func BuildBinary(ctx context.Context, dir, out, version string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X "+VersionVar+"="+version,
		"-o", out, "./cmd/holdfastd")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/holdfastd: %w\n%s", err, b)
	}
	return nil
}

// HoldfastInput is what the operator image is made of.
type HoldfastInput struct {
	Binary   []byte    // the static holdfast binary
	CACerts  []byte    // a CA bundle, e.g. the host's /etc/ssl/certs/ca-certificates.crt
	Version  string    // Holdfast's version: the tag and a label
	Revision string    // the commit: a label
	Time     time.Time // SOURCE_DATE_EPOCH: every timestamp in the image
}

// HoldfastImage makes the operator image: a base layer (CA certificates,
// passwd and group with root and nonroot, /tmp) and a layer with the binary
// at /holdfast, run as nonroot. Two layers so that a new binary leaves the
// base layer's blob as it was.
func HoldfastImage(in HoldfastInput) (v1.Image, error) {
	if len(in.Binary) == 0 || len(in.CACerts) == 0 || in.Version == "" {
		return nil, fmt.Errorf("holdfast image: binary, CA certificates and version are required")
	}
	base, err := FilesLayer(baseFiles(in.CACerts), in.Time)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	bin, err := FilesLayer([]File{{Path: "holdfast", Mode: 0o755, Data: in.Binary}}, in.Time)
	if err != nil {
		return nil, fmt.Errorf("binary layer: %w", err)
	}
	user := fmt.Sprintf("%d:%d", NonRoot, NonRoot)
	return assemble([]layered{
		{base, "holdfast base: CA certificates, passwd, group, /tmp"},
		{bin, "holdfast binary"},
	}, v1.Config{
		User:       user,
		Entrypoint: []string{"/holdfast"},
		// PATH=/ lets `kubectl exec ... holdfast` find the binary by name.
		Env:        []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/",
		Labels: map[string]string{
			LabelVersion:  in.Version,
			LabelRevision: in.Revision,
			LabelSource:   Source,
		},
	}, in.Time)
}

// baseFiles is the minimal root a static Go binary needs: CA certificates to
// reach the API server and object stores, and a passwd entry for its uid
// (some libraries look the user up), with a writable /tmp.
func baseFiles(caCerts []byte) []File {
	passwd := strings.Join([]string{
		"root:x:0:0:root:/root:/sbin/nologin",
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin", NonRoot, NonRoot),
		"",
	}, "\n")
	group := strings.Join([]string{"root:x:0:", fmt.Sprintf("nonroot:x:%d:", NonRoot), ""}, "\n")
	return []File{
		{Path: "etc", Dir: true, Mode: 0o755},
		{Path: "etc/group", Mode: 0o644, Data: []byte(group)},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Path: "etc/ssl", Dir: true, Mode: 0o755},
		{Path: "etc/ssl/certs", Dir: true, Mode: 0o755},
		{Path: "etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: caCerts},
		{Path: "home", Dir: true, Mode: 0o755},
		{Path: "home/nonroot", Dir: true, Mode: 0o700, UID: NonRoot, GID: NonRoot},
		{Path: "root", Dir: true, Mode: 0o700},
		{Path: "tmp", Dir: true, Mode: 0o1777},
	}
}
