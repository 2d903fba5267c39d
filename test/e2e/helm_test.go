package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

const (
	helmRelease   = "holdfast"
	operatorNS    = "holdfast-system"
	operatorImage = "ghcr.io/holdfast-dev/holdfast:0.1.0-dev"
	// Another tag of the same image, which the test pushes to the
	// sandbox's registry before it upgrades.
	upgradedImage = "ghcr.io/holdfast-dev/holdfast:e2e-upgrade"
)

// TestHelmInstallUpgradeUninstall installs Holdfast from charts/holdfast with
// the Helm SDK, as `helm install holdfast charts/holdfast -n holdfast-system
// --create-namespace` does, runs the sample cluster under it, upgrades the
// operator to another image tag without disturbing the databases, and
// uninstalls it, which leaves the CRDs, the clusters and their data.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	e := startSandbox(t)
	poll(t, time.Minute, "the default ServiceAccount", func() error {
		_, err := e.kubectl("", "get", "serviceaccount", "default")
		return err
	})
	chrt, err := loader.LoadDir("../../charts/holdfast")
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	cfg := e.helm(t)

	t.Run("helm install runs the operator", func(t *testing.T) {
		began := time.Now()
		install := action.NewInstall(cfg)
		install.ReleaseName = helmRelease
		install.Namespace = operatorNS
		install.CreateNamespace = true
		install.WaitStrategy = kube.StatusWatcherStrategy
		install.Timeout = 3 * time.Minute
		if _, err := install.RunWithContext(t.Context(), chrt, nil); err != nil {
			t.Fatalf("helm install: %v", err)
		}
		e.waitOperatorRollout(t, operatorImage)
		t.Logf("installed and both operator pods ready %s after helm install began", time.Since(began).Round(time.Second))
	})
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	e.mustKubectl("", "create", "namespace", ns)
	t.Run("the sample cluster becomes ready under it", func(t *testing.T) {
		began := time.Now()
		e.mustKubectl("", "apply", "--server-side", "-n", ns, "-k", "../../config/samples")
		e.waitReady(t, "demo", 3, 6*time.Minute)
		t.Logf("3 of 3 instances ready %s after the sample was applied", time.Since(began).Round(time.Second))
	})
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	t.Run("helm upgrade to another image tag rolls the operator, not the databases", func(t *testing.T) {
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.currentPrimary}")
		before := e.databasePods(t, "demo")
		history := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.history}")
		oldHashes := e.operatorTemplateHashes(t)
		uids := e.watchUIDs(t, "demo")

		e.tagImage(operatorImage, "e2e-upgrade")
		began := time.Now()
		upgrade := action.NewUpgrade(cfg)
		upgrade.Namespace = operatorNS
		upgrade.WaitStrategy = kube.StatusWatcherStrategy
		upgrade.Timeout = 3 * time.Minute
		if _, err := upgrade.RunWithContext(t.Context(), helmRelease, chrt, map[string]any{"image": map[string]any{"tag": "e2e-upgrade"}}); err != nil {
			t.Fatalf("helm upgrade: %v", err)
		}
		leader := e.waitOperatorRollout(t, upgradedImage)
		t.Logf("operator rolled to %s, %s leading, %s after helm upgrade began", upgradedImage, leader, time.Since(began).Round(time.Second))
		if now := e.operatorTemplateHashes(t); slices.ContainsFunc(now, func(h string) bool { return slices.Contains(oldHashes, h) }) {
			t.Errorf("operator pods of ReplicaSets %v after the upgrade, %v before: want a new ReplicaSet only", now, oldHashes)
		}

		// The new leader has looked at the cluster once it publishes WAL
		// positions observed after it took the lease: only then could it have
		// decided to touch the pods. Writes keep the positions moving, which
		// is when they are refreshed.
		acquired := e.mustKubectl("", "-n", operatorNS, "get", "lease", "holdfast-operator.holdfast.dev", "-o", "jsonpath={.spec.acquireTime}")
		leadSince, err := time.Parse(time.RFC3339Nano, acquired)
		if err != nil {
			t.Fatalf("leader lease acquireTime %q: %v", acquired, err)
		}
		rw := e.serviceIP(t, "demo-rw")
		e.sqlAs(t, "demo", rw, "CREATE TABLE helm_upgrade (at timestamptz)")
		poll(t, time.Minute, "WAL positions observed by the new leader", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := e.connectTo(ctx, "demo", rw)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "INSERT INTO helm_upgrade VALUES (now())"); err != nil {
				return err
			}
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.positionsObservedAt}")
			if err != nil {
				return err
			}
			at, err := time.Parse(time.RFC3339Nano, out)
			if err != nil {
				return fmt.Errorf("positionsObservedAt %q: %w", out, err)
			}
			if !at.After(leadSince) {
				return errorString("positions observed at " + out + ", the new leader leads since " + acquired)
			}
			return nil
		})

		if replaced := uids.stop(); len(replaced) > 0 {
			t.Errorf("database pods replaced during the operator upgrade: %v", replaced)
		}
		if after := e.databasePods(t, "demo"); after != before {
			t.Errorf("database pods (name uid restarts) changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if now := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.currentPrimary}"); now != primary {
			t.Errorf("primary %s after the upgrade, %s before", now, primary)
		}
		if op := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.operation}"); op != "" {
			t.Errorf("an operation runs after the operator upgrade: %s", op)
		}
		if now := e.mustKubectl("", "-n", ns, "get", "pgc", "demo", "-o", "jsonpath={.status.history}"); now != history {
			t.Errorf("operations ran during the operator upgrade:\nbefore: %s\nafter: %s", history, now)
		}
		e.waitReady(t, "demo", 3, time.Minute)
	})
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	t.Run("helm uninstall removes the operator and keeps CRDs, clusters and claims", func(t *testing.T) {
		claims := e.mustKubectl("", "-n", ns, "get", "pvc", "-o", "jsonpath={.items[*].metadata.name}")
		if len(strings.Fields(claims)) != 3 {
			t.Fatalf("claims before uninstall: %q, want 3", claims)
		}
		uninstall := action.NewUninstall(cfg)
		uninstall.WaitStrategy = kube.StatusWatcherStrategy
		uninstall.Timeout = 2 * time.Minute
		if _, err := uninstall.Run(helmRelease); err != nil {
			t.Fatalf("helm uninstall: %v", err)
		}
		poll(t, time.Minute, "the operator's objects gone", func() error {
			out, err := e.kubectl("", "-n", operatorNS, "get", "deployment,serviceaccount,role,rolebinding,pods", "-l", "app.kubernetes.io/instance="+helmRelease, "-o", "name")
			if err != nil {
				return err
			}
			if cluster, err := e.kubectl("", "get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance="+helmRelease, "-o", "name"); err != nil || cluster != "" {
				return fmt.Errorf("%s %v", cluster, err)
			}
			if out != "" {
				return errorString(out)
			}
			return nil
		})
		if out, err := e.kubectl("", "-n", operatorNS, "get", "secrets", "-l", "owner=helm,name="+helmRelease, "-o", "name"); err != nil || out != "" {
			t.Errorf("the release's records are left: %s %v", out, err)
		}
		for _, crd := range []string{"postgresclusters.holdfast.dev", "backups.holdfast.dev", "backupschedules.holdfast.dev"} {
			if _, err := e.kubectl("", "get", "crd", crd); err != nil {
				t.Errorf("CRD %s gone with the release: %v", crd, err)
			}
		}
		e.mustKubectl("", "-n", ns, "get", "pgc", "demo")
		if after := e.mustKubectl("", "-n", ns, "get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"); after != claims {
			t.Errorf("claims %q after uninstall, %q before", after, claims)
		}
	})
	if t.Failed() {
		e.dumpState(t)
	}
}

// helm is the Helm SDK's configuration for the sandbox, with releases kept
// in Secrets as the helm command keeps them.
func (e *sandboxEnv) helm(t *testing.T) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &e.kubeconfig
	namespace := operatorNS
	flags.Namespace = &namespace
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(t.Output(), nil)))
	if err := cfg.Init(flags, operatorNS, "secret"); err != nil {
		t.Fatalf("helm: %v", err)
	}
	return cfg
}

// waitOperatorRollout waits until the operator Deployment has rolled out
// image to every replica, with no pod of an earlier template left, and one
// of its pods leads; it returns the leader.
func (e *sandboxEnv) waitOperatorRollout(t *testing.T, image string) string {
	t.Helper()
	var leader string
	poll(t, 3*time.Minute, "both operator pods running "+image+", one leading", func() error {
		status, err := e.kubectl("", "-n", operatorNS, "get", "deployment", "holdfast-operator", "-o",
			"jsonpath={.metadata.generation} {.status.observedGeneration} {.status.replicas} {.status.updatedReplicas} {.status.readyReplicas}")
		if err != nil {
			return err
		}
		var gen, observed, replicas, updated, ready int
		if _, err := fmt.Sscan(status, &gen, &observed, &replicas, &updated, &ready); err != nil || gen != observed || replicas != 2 || updated != 2 || ready != 2 {
			return errorString("deployment generation, observed, replicas, updated, ready: " + status)
		}
		pods, err := e.kubectl("", "-n", operatorNS, "get", "pods", "-l", "app.kubernetes.io/name=holdfast-operator", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(pods, "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || f[1] != image || f[2] != "True" {
				return errorString("operator pods:\n" + pods)
			}
			names = append(names, f[0])
		}
		if len(names) != 2 {
			return errorString("operator pods:\n" + pods)
		}
		if leader, err = e.operatorLeader(); err != nil {
			return err
		}
		if !slices.Contains(names, leader) {
			return errorString("the leader " + leader + " is none of " + strings.Join(names, ", "))
		}
		return nil
	})
	return leader
}

// operatorTemplateHashes names the ReplicaSets (by pod-template-hash) the
// operator's pods belong to.
func (e *sandboxEnv) operatorTemplateHashes(t *testing.T) []string {
	t.Helper()
	out := e.mustKubectl("", "-n", operatorNS, "get", "pods", "-l", "app.kubernetes.io/name=holdfast-operator", "-o",
		`jsonpath={range .items[*]}{.metadata.labels.pod-template-hash}{"\n"}{end}`)
	hashes := strings.Fields(out)
	slices.Sort(hashes)
	return slices.Compact(hashes)
}

// databasePods is each of cluster's pods with its UID and its containers'
// restart counts, one a line: equal strings, the same pods never restarted.
func (e *sandboxEnv) databasePods(t *testing.T, cluster string) string {
	t.Helper()
	return e.mustKubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster="+cluster, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {range .status.containerStatuses[*]}{.name}={.restartCount} {end}{"\n"}{end}`)
}
