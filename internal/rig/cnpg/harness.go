package cnpg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"holdfast.dev/holdfast/internal/rig/bench"
)

// Kubectl runs kubectl against the sandbox, with stdin when it is not "".
type Kubectl func(ctx context.Context, stdin string, args ...string) (string, error)

// Harness installs and drives CloudNativePG in one sandbox.
type Harness struct {
	// Binaries is the folder hack/build-cnpg.sh printed: the manager and
	// the release manifest.
	Binaries string
	// Sandbox is the sandbox's folder (its registry's endpoint is there).
	Sandbox string
	// HoldfastLayout and HoldfastVersion name Holdfast's built images, which
	// CloudNativePG's are made from.
	HoldfastLayout, HoldfastVersion string
	Kubectl                         Kubectl
}

// OperatorNamespace is where the release manifest installs the operator.
const OperatorNamespace = "cnpg-system"

// Manifest is the release manifest, as published.
func (h Harness) Manifest() string {
	return filepath.Join(h.Binaries, "cnpg-"+Version+".yaml")
}

// Install builds and pushes the images, applies the release manifest
// exactly as published, with the command CloudNativePG's docs give, and
// waits until its operator runs and its admission webhooks answer.
func (h Harness) Install(ctx context.Context) error {
	imgs, err := BuildImages(h.HoldfastLayout, filepath.Join(h.Binaries, "manager"), h.HoldfastVersion)
	if err != nil {
		return err
	}
	if err := Push(ctx, h.Sandbox, imgs); err != nil {
		return err
	}
	manifest, err := os.ReadFile(h.Manifest())
	if err != nil {
		return fmt.Errorf("reading CloudNativePG's release manifest: %w", err)
	}
	if _, err := h.Kubectl(ctx, string(manifest), "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("applying CloudNativePG's release manifest: %w", err)
	}
	if _, err := h.Kubectl(ctx, "", "-n", OperatorNamespace, "rollout", "status", "deployment/cnpg-controller-manager", "--timeout=5m"); err != nil {
		return fmt.Errorf("CloudNativePG's operator: %w", err)
	}
	return nil
}

// ClusterManifest is a Cluster of 3 instances on the postgres image tag,
// with synchronous replication to any 1 of the standbys, the closest to
// Holdfast's synchronous quorum 1; every other setting is its default.
func ClusterManifest(ns, name, tag string) string {
	return fmt.Sprintf(`apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: %s, namespace: %s}
spec:
  instances: 3
  imageName: %s:%s
  storage: {size: 4Gi}
  postgresql:
    synchronous: {method: any, number: 1}
`, name, ns, PostgresRepository, tag)
}

// ApplyCluster applies ClusterManifest, retrying while the admission
// webhooks do not answer yet (the operator makes their certificate as it
// starts).
func (h Harness) ApplyCluster(ctx context.Context, ns, name string) error {
	manifest := ClusterManifest(ns, name, PostgresTags[0])
	return bench.Poll(ctx, 3*time.Minute, func() error {
		_, err := h.Kubectl(ctx, manifest, "apply", "-f", "-")
		return err
	})
}

// Status is what the harness reads of a Cluster.
type Status struct {
	Phase, CurrentPrimary, TargetPrimary string
	ReadyInstances                       int
	Image                                string
}

// Status reads the Cluster's status.
func (h Harness) Status(ctx context.Context, ns, name string) (Status, error) {
	out, err := h.Kubectl(ctx, "", "-n", ns, "get", "cluster.postgresql.cnpg.io", name, "-o",
		`jsonpath={.status.phase}|{.status.currentPrimary}|{.status.targetPrimary}|{.status.readyInstances}|{.status.image}`)
	if err != nil {
		return Status{}, err
	}
	f := strings.Split(out, "|")
	if len(f) != 5 {
		return Status{}, fmt.Errorf("cluster status %q", out)
	}
	s := Status{Phase: f[0], CurrentPrimary: f[1], TargetPrimary: f[2], Image: f[4]}
	_, _ = fmt.Sscan(f[3], &s.ReadyInstances)
	return s, nil
}

// Healthy: the phase CloudNativePG calls healthy, with every instance
// ready and the primary it wants in place.
func (s Status) Healthy(instances int) bool {
	return s.Phase == "Cluster in healthy state" && s.ReadyInstances == instances && s.CurrentPrimary != "" && s.CurrentPrimary == s.TargetPrimary
}

// WaitHealthy waits until the Cluster is Healthy with 3 instances.
func (h Harness) WaitHealthy(ctx context.Context, ns, name string, timeout time.Duration) (Status, error) {
	var s Status
	err := bench.Poll(ctx, timeout, func() (err error) {
		if s, err = h.Status(ctx, ns, name); err != nil {
			return err
		}
		if !s.Healthy(3) {
			return fmt.Errorf("cluster %s not healthy: phase %q, %d ready, primary %q, target %q", name, s.Phase, s.ReadyInstances, s.CurrentPrimary, s.TargetPrimary)
		}
		return nil
	})
	return s, err
}

// Promote asks for a switchover to instance as `kubectl cnpg promote`
// does: it sets the status's target primary, with its timestamp, and the
// Switchover phase, under an optimistic lock (the resourceVersion read).
func (h Harness) Promote(ctx context.Context, ns, name, instance string) error {
	rv, err := h.Kubectl(ctx, "", "-n", ns, "get", "cluster.postgresql.cnpg.io", name, "-o", "jsonpath={.metadata.resourceVersion}")
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"status":{"targetPrimary":%q,"targetPrimaryTimestamp":%q,"phase":"Switchover in progress","phaseReason":"Switching over to %s"}}`,
		rv, instance, time.Now().Format(metav1.RFC3339Micro), instance)
	_, err = h.Kubectl(ctx, "", "-n", ns, "patch", "cluster.postgresql.cnpg.io", name, "--subresource=status", "--type=merge", "-p", patch)
	return err
}

// SetImage changes the Cluster's postgres image tag: a rolling update.
func (h Harness) SetImage(ctx context.Context, ns, name, tag string) error {
	_, err := h.Kubectl(ctx, "", "-n", ns, "patch", "cluster.postgresql.cnpg.io", name, "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"imageName":"%s:%s"}}`, PostgresRepository, tag))
	return err
}

func runScript(ctx context.Context, root, script string) (string, error) {
	// A relative path is taken from cmd.Dir.
	cmd := exec.CommandContext(ctx, "./"+script)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("%s: %w\n%s", script, err, ee.Stderr)
		}
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return string(out), nil
}
