// Package holdfast is the Holdfast suite of the failover benchmark: a
// 3-instance PostgresCluster with synchronous replication, run by the
// operator installed in a fresh sandbox exactly as `make sandbox` installs
// it, with a client writing through the -rw Service while faults hit the
// primary.
package holdfast

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/bench/sandboxrun"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// Options say what to run.
type Options struct {
	Holdfast string // the holdfast binary (bin/holdfast)
	BinDir   string // the pinned Kubernetes binaries
	Manifest string // kustomize folder of the operator (config/default)
	N        int
	Faults   []bench.Fault
	Log      io.Writer
	// Keep leaves the sandbox's folder (logs, data) in place, stopped.
	Keep bool
}

// Settings is the configuration measured: Holdfast's defaults.
const Settings = "failover.unreachableSeconds=6 leaseDurationSeconds=6 renewDeadlineSeconds=4 (the defaults); synchronous quorum 1"

const ns = "bench"

type run struct {
	o      Options
	sb     *sandboxrun.Sandbox
	slices *sliceWatch
}

// Run brings up a sandbox, measures every fault o.N times and tears it down.
func Run(ctx context.Context, o Options) ([]bench.Result, error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	sb, err := sandboxrun.Up(ctx, o.Holdfast, o.BinDir)
	if err != nil {
		return nil, err
	}
	defer sb.Down(o.Keep, o.Log)
	r := &run{o: o, sb: sb}
	if err := r.install(ctx); err != nil {
		return nil, err
	}
	res := bench.Result{Suite: "holdfast", Config: "defaults", Settings: Settings}
	for _, f := range o.Faults {
		res.Faults = append(res.Faults, bench.FaultResult{Fault: f})
	}

	user, password := r.secret("pg-app", "username"), r.secret("pg-app", "password")
	rw, err := r.kubectl(ctx, "-n", ns, "get", "service", "pg-rw", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return nil, err
	}
	w := &loadcheck.Writer{ConnString: fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require", rw, user, password), Table: "bench"}
	if err := bench.Poll(ctx, time.Minute, func() error { return w.Setup(ctx) }); err != nil {
		return nil, fmt.Errorf("creating the bench table: %w", err)
	}
	r.slices, err = r.watchSlices(ctx)
	if err != nil {
		return nil, err
	}
	defer r.slices.stop()
	// The final table is read on the primary as the superuser, who also
	// reads the timeline's history.
	final := func(ctx context.Context) (string, error) {
		primary, err := r.Primary(ctx)
		if err != nil {
			return "", err
		}
		ip, err := r.kubectl(ctx, "-n", ns, "get", "pod", primary, "-o", "jsonpath={.status.podIP}")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require", ip, r.secret("pg-superuser", "username"), r.secret("pg-superuser", "password")), nil
	}
	err = sandboxrun.Measure(ctx, w, &res, o.N, o.Log, r.inject, final)
	return []bench.Result{res}, err
}

// install applies the operator's manifests and a 3-instance cluster with
// synchronous replication, and waits for it.
func (r *run) install(ctx context.Context) error {
	if err := r.sb.InstallOperator(ctx, r.o.Manifest, ns); err != nil {
		return err
	}
	cluster := `apiVersion: holdfast.dev/v1alpha1
kind: PostgresCluster
metadata: {name: pg, namespace: ` + ns + `}
spec:
  instances: 3
  postgresVersion: 15
  storage: {size: 4Gi}
  synchronous: {quorum: 1}
  resources: {requests: {memory: 128Mi}}
`
	if _, err := r.sb.KubectlIn(ctx, cluster, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("applying the cluster: %w", err)
	}
	return r.WaitHealthy(ctx, 6*time.Minute)
}

// WaitHealthy waits for 3 ready instances, a primary, and no change of
// primary in progress.
func (r *run) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	return bench.Poll(ctx, timeout, func() error {
		out, err := r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o",
			`jsonpath={.status.readyInstances} {.status.phase} {.status.conditions[?(@.type=="PrimaryAvailable")].status} {.status.syncStandbys}`)
		if err != nil {
			return err
		}
		// Both replicas streaming as synchronous standbys: either may be
		// promoted, and a switchover to either is allowed.
		if f := strings.Fields(out); len(f) < 4 || f[0] != "3" || f[1] != "Healthy" || f[2] != "True" || strings.Count(f[3], ",") != 1 {
			return errors.New("not healthy: " + out)
		}
		return nil
	})
}

// inject does f to the primary and measures it (sandboxrun.Inject),
// breaking a switchover's time down into its steps.
func (r *run) inject(ctx context.Context, w *loadcheck.Writer, f bench.Fault) (bench.Sample, error) {
	return r.sb.Inject(ctx, r, w, f, func(s *bench.Sample, a loadcheck.Ack) {
		if f == bench.Switchover {
			s.Steps = r.switchoverSteps(ctx, r.slices, s.At, a.At)
		}
	})
}

// Namespace, WaitHealthy, Primary, LeadingOperator, Switchover,
// ChangeImage and RollingUpdateEnd make run a sandboxrun.Operator.
func (r *run) Namespace() string { return ns }

func (r *run) OperatorNamespace() string { return operatorNamespace }

func (r *run) Primary(ctx context.Context) (string, error) {
	return r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
}

func (r *run) Claim(pod string) string { return "pgdata-" + pod }

func (r *run) Instances(ctx context.Context) ([]string, error) {
	out, err := r.kubectl(ctx, "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=pg,role", "-o", "jsonpath={.items[*].metadata.name}")
	return strings.Fields(out), err
}

// Switchover runs `holdfast promote` to another instance, in the
// background: the measurement is of the writes.
func (r *run) Switchover(ctx context.Context, primary string) error {
	to := "pg-1"
	if primary == to {
		to = "pg-2"
	}
	go func() {
		out, err := exec.CommandContext(ctx, r.o.Holdfast, "promote", "pg", to, "-n", ns, "--kubeconfig", r.sb.Kubeconfig).CombinedOutput()
		if err != nil {
			fmt.Fprintf(r.o.Log, "holdfast promote: %v: %s\n", err, out)
		}
	}()
	return nil
}

// operatorNamespace is where config/default installs the operator.
const operatorNamespace = "holdfast-system"

// LeadingOperator waits until both operator pods are ready, and names the
// one that holds the leader lease (its holder is <pod>_<random>), with its UID.
func (r *run) LeadingOperator(ctx context.Context) (namespace, pod, uid string, err error) {
	err = bench.Poll(ctx, 3*time.Minute, func() error {
		ready, err := r.kubectl(ctx, "-n", operatorNamespace, "get", "pods", "-o",
			`jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}`)
		if err != nil {
			return err
		}
		if ready != "TrueTrue" {
			return errors.New("operator pods ready: " + ready)
		}
		holder, err := r.kubectl(ctx, "-n", operatorNamespace, "get", "lease", "holdfast-operator.holdfast.dev", "-o", "jsonpath={.spec.holderIdentity}")
		if err != nil {
			return err
		}
		pod, _, _ = strings.Cut(holder, "_")
		uid, err = r.kubectl(ctx, "-n", operatorNamespace, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
		return err
	})
	return operatorNamespace, pod, uid, err
}

// ChangeImage switches the cluster between two minor versions of its
// image (the sandbox runs the same postgres for both): a rolling update.
func (r *run) ChangeImage(ctx context.Context) error {
	image, err := r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.spec.image}")
	if err != nil {
		return err
	}
	next := "postgres:15.9"
	if image == next {
		next = "postgres:15.10"
	}
	_, err = r.kubectl(ctx, "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"image":%q}}`, next))
	return err
}

// RollingUpdateEnd waits until status.history records the rolling update
// that started after at, and returns when it ended.
func (r *run) RollingUpdateEnd(ctx context.Context, at time.Time) (time.Time, error) {
	var end time.Time
	err := bench.Poll(ctx, 10*time.Minute, func() error {
		out, err := r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o",
			`jsonpath={range .status.history[*]}{.kind}|{.outcome}|{.startedAt}|{.finishedAt}|{.reason}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(out, "\n") {
			f := strings.SplitN(line, "|", 5)
			if len(f) != 5 || f[0] != "RollingUpdate" {
				continue
			}
			started, err1 := time.Parse(time.RFC3339Nano, f[2])
			finished, err2 := time.Parse(time.RFC3339Nano, f[3])
			if err1 != nil || err2 != nil || started.Before(at.Add(-time.Second)) {
				continue
			}
			if f[1] != "Succeeded" {
				return bench.Permanent(fmt.Errorf("the rolling update ended %s: %s", f[1], f[4]))
			}
			end = finished
			return nil
		}
		return errors.New("the rolling update has not ended yet")
	})
	return end, err
}

func (r *run) kubectl(ctx context.Context, args ...string) (string, error) {
	return r.sb.Kubectl(ctx, args...)
}

func (r *run) secret(name, key string) string { return r.sb.Secret(ns, name, key) }
