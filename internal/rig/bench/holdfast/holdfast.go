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
	"holdfast.dev/holdfast/internal/rig/sandbox/faults"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
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
	res := bench.Result{Suite: "holdfast", Config: "defaults", Settings: Settings, Started: time.Now()}
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
	wctx, stopWriter := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()

	var runErr error
rounds:
	for i := 0; i < o.N; i++ {
		for fi, f := range o.Faults {
			s, err := r.inject(ctx, w, f)
			res.Faults[fi].Samples = append(res.Faults[fi].Samples, s)
			fmt.Fprintf(o.Log, "holdfast round %d %s: outage %s gap %s %s\n", i+1, f, s.Outage.Round(time.Millisecond), s.Gap.Round(time.Millisecond), s.Err)
			if err != nil {
				runErr = err
				break rounds
			}
		}
	}
	stopWriter()
	<-done
	res.Ended = time.Now()
	primary, _ := r.kubectl(context.WithoutCancel(ctx), "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
	ip, _ := r.kubectl(context.WithoutCancel(ctx), "-n", ns, "get", "pod", primary, "-o", "jsonpath={.status.podIP}")
	su, supw := r.secret("pg-superuser", "username"), r.secret("pg-superuser", "password")
	conn := fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require", ip, su, supw)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var final loadcheck.Final
	if err := bench.Poll(rctx, time.Minute, func() (err error) { final, err = loadcheck.ReadFinal(rctx, conn, "bench"); return err }); err != nil {
		return []bench.Result{res}, errors.Join(runErr, fmt.Errorf("reading the final table: %w", err))
	}
	res.Check = loadcheck.Check(w.History(), final)
	res.AttributeLost(w.History())
	fmt.Fprintf(o.Log, "holdfast: %s\n", res.Check)
	return []bench.Result{res}, runErr
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
  storage: {size: 1Gi}
  synchronous: {quorum: 1}
  resources: {requests: {memory: 128Mi}}
`
	if _, err := r.sb.KubectlIn(ctx, cluster, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("applying the cluster: %w", err)
	}
	return r.waitHealthy(ctx, 6*time.Minute)
}

// waitHealthy waits for 3 ready instances, a primary, and no change of
// primary in progress.
func (r *run) waitHealthy(ctx context.Context, timeout time.Duration) error {
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

// inject waits for a healthy cluster, does f to the primary, and measures
// until a write is acknowledged by another instance.
func (r *run) inject(ctx context.Context, w *loadcheck.Writer, f bench.Fault) (bench.Sample, error) {
	if err := r.waitHealthy(ctx, 5*time.Minute); err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	var operator, operatorUID string // the leading operator's pod, for OperatorAndPrimaryKill
	if f == bench.OperatorAndPrimaryKill {
		var err error
		if operator, operatorUID, err = r.leadingOperator(ctx); err != nil {
			return bench.Sample{Err: err.Error()}, err
		}
	}
	primary, err := r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
	if err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	ip, err := r.kubectl(ctx, "-n", ns, "get", "pod", primary, "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	uid, err := r.kubectl(ctx, "-n", ns, "get", "pod", primary, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	onPrimary := func(a loadcheck.Ack) bool { return strings.HasPrefix(a.Server, ip+":") || a.Server == ip }
	// The writer must be on the primary before the fault, or the time to a
	// write elsewhere measures nothing.
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := w.WaitAck(octx, time.Now(), onPrimary); err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	s := bench.Sample{At: time.Now()}
	var heal func() error
	switch f {
	case bench.Kill:
		_, err = faults.KillPod(network.NamespacePath(network.Namespace(uid)))
	case bench.OperatorAndPrimaryKill:
		if _, err = faults.KillPod(network.NamespacePath(network.Namespace(operatorUID))); err == nil {
			_, err = faults.KillPod(network.NamespacePath(network.Namespace(uid)))
		}
	case bench.Stop:
		_, err = r.kubectl(ctx, "-n", ns, "delete", "pod", primary, "--wait=false")
	case bench.Partition:
		heal, err = faults.Partition(network.Namespace(uid))
	case bench.RollingUpdate:
		err = r.changeImage(ctx)
	case bench.ControlPlaneOutage:
		var pid int
		if pid, err = faults.FindProcess("kube-apiserver", r.sb.Dir+"/"); err == nil {
			err = bench.Freeze(ctx, pid, w, &s)
		}
		if err == nil {
			err = r.waitHealthy(ctx, 5*time.Minute)
		}
		return s, err
	case bench.Switchover:
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
	default:
		err = fmt.Errorf("unknown fault %q", f)
	}
	if err != nil {
		return s, err
	}
	actx, cancel2 := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel2()
	a, ackErr := w.WaitAck(actx, s.At, func(a loadcheck.Ack) bool { return !onPrimary(a) })
	if ackErr == nil {
		s.Outage = a.At.Sub(s.At)
		s.Gap = w.History().LongestGap(s.At, a.At)
	} else {
		s.Err = ackErr.Error()
	}
	if heal != nil {
		if err := heal(); err != nil {
			return s, err
		}
	}
	if f == bench.Switchover && ackErr == nil {
		s.Steps = r.switchoverSteps(ctx, r.slices, s.At, a.At)
	}
	if f == bench.RollingUpdate && ackErr == nil {
		end, err := r.rollingUpdateEnd(ctx, s.At)
		if err != nil {
			s.Err = err.Error()
			return s, err
		}
		s.Spread(w.History(), end)
	}
	if f == bench.Kill || f == bench.OperatorAndPrimaryKill {
		// Restore, as the Patroni suite restarts a killed member at once:
		// a pod whose container is killed round after round waits out the
		// node's growing restart back-off (up to 5 minutes, as a kubelet's),
		// while a new pod starts at once. The measurement is over by now.
		if _, err := r.kubectl(ctx, "-n", ns, "delete", "pod", primary, "--wait=false"); err != nil {
			return s, err
		}
	}
	if f == bench.OperatorAndPrimaryKill {
		if _, err := r.kubectl(ctx, "-n", operatorNamespace, "delete", "pod", operator, "--wait=false"); err != nil {
			return s, err
		}
	}
	return s, ctx.Err()
}

// operatorNamespace is where config/default installs the operator.
const operatorNamespace = "holdfast-system"

// leadingOperator waits until both operator pods are ready, and names the
// one that holds the leader lease (its holder is <pod>_<random>), with its UID.
func (r *run) leadingOperator(ctx context.Context) (pod, uid string, err error) {
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
	return pod, uid, err
}

// changeImage switches the cluster between two minor versions of its
// image (the sandbox runs the same postgres for both): a rolling update.
func (r *run) changeImage(ctx context.Context) error {
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

// rollingUpdateEnd waits until status.history records the rolling update
// that started after at, and returns when it ended.
func (r *run) rollingUpdateEnd(ctx context.Context, at time.Time) (time.Time, error) {
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
