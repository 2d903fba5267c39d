// Package sandboxrun brings a sandbox up for a benchmark, installs the
// operator in it as `make sandbox` does, and drives it with kubectl.
package sandboxrun

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/imagebuild"
)

// Sandbox is a running sandbox of a benchmark.
type Sandbox struct {
	Holdfast   string // the holdfast binary
	BinDir     string // the pinned Kubernetes binaries
	Dir        string
	Kubeconfig string
	// Images is the OCI layout of Holdfast's images the registry serves.
	Images string
}

// Up starts a sandbox in a new folder.
func Up(ctx context.Context, holdfast, binDir string) (*Sandbox, error) {
	dir, err := os.MkdirTemp("", "holdfast-bench-sandbox-")
	if err != nil {
		return nil, err
	}
	// Pods run as other users and must reach their volumes inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Sandbox{Holdfast: holdfast, BinDir: binDir, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	// The benchmarks run from the module's root (go run ./hack/bench).
	images, err := imagebuild.Layout(ctx, ".")
	if err != nil {
		s.Down(false, io.Discard)
		return nil, err
	}
	s.Images = images
	if out, err := exec.CommandContext(ctx, holdfast, "sandbox", "up", "--dir", dir, "--bin-dir", binDir, "--images", images).CombinedOutput(); err != nil {
		s.Down(false, io.Discard)
		return nil, fmt.Errorf("sandbox up: %v\n%s", err, out)
	}
	return s, nil
}

// Down stops the sandbox; keep leaves its folder (logs, data) in place.
func (s *Sandbox) Down(keep bool, log io.Writer) {
	_ = exec.Command(s.Holdfast, "sandbox", "down", "--dir", s.Dir, "--bin-dir", s.BinDir).Run()
	if keep {
		fmt.Fprintf(log, "the sandbox's logs and data are kept in %s\n", s.Dir)
		return
	}
	os.RemoveAll(s.Dir)
}

// Kubectl runs the pinned kubectl against the sandbox.
func (s *Sandbox) Kubectl(ctx context.Context, args ...string) (string, error) {
	return s.KubectlIn(ctx, "", args...)
}

// KubectlIn runs kubectl with stdin.
func (s *Sandbox) KubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "kubectl"), append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Secret reads one key of a Secret, or "".
func (s *Sandbox) Secret(ns, name, key string) string {
	out, err := s.Kubectl(context.Background(), "-n", ns, "get", "secret", name, "-o", "jsonpath={.data."+key+"}")
	if err != nil {
		return ""
	}
	b, _ := base64.StdEncoding.DecodeString(out)
	return string(b)
}

// InstallOperator applies the operator's manifests (a kustomize folder),
// waits for it to run, and makes namespace ns.
func (s *Sandbox) InstallOperator(ctx context.Context, manifest, ns string) error {
	if err := bench.Poll(ctx, time.Minute, func() error {
		_, err := s.Kubectl(ctx, "get", "serviceaccount", "default")
		return err
	}); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"apply", "--server-side", "-k", manifest},
		{"wait", "--for", "condition=Established", "crd/postgresclusters.holdfast.dev", "--timeout=60s"},
		{"-n", "holdfast-system", "rollout", "status", "deployment/holdfast-operator", "--timeout=5m"},
		{"create", "namespace", ns},
	} {
		if _, err := s.Kubectl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}
