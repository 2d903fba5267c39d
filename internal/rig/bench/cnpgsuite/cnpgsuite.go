// Package cnpgsuite is the CloudNativePG suite of the failover benchmark:
// CloudNativePG's release manifest, as published, in a fresh sandbox
// (internal/rig/cnpg), a 3-instance Cluster with synchronous replication
// to any one standby and every other setting at its default, and the same
// writer and faults as the Holdfast suite (sandboxrun.Inject).
package cnpgsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/bench/sandboxrun"
	"holdfast.dev/holdfast/internal/rig/cnpg"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// Options say what to run.
type Options struct {
	Holdfast string // the holdfast binary (bin/holdfast), which runs the sandbox
	BinDir   string // the pinned Kubernetes binaries
	N        int
	Faults   []bench.Fault
	Log      io.Writer
	Keep     bool
}

// Settings is the configuration measured.
const Settings = "CloudNativePG " + cnpg.Version + " release manifest as published; Cluster: 3 instances, postgresql.synchronous {method: any, number: 1} (dataDurability required, the default), every other setting its default"

const (
	ns      = "bench"
	cluster = "pg"
)

type run struct {
	o  Options
	sb *sandboxrun.Sandbox
	h  cnpg.Harness
}

// Run brings up a sandbox with CloudNativePG, measures every fault o.N
// times and tears it down.
func Run(ctx context.Context, o Options) ([]bench.Result, error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	bins, err := cnpg.Binaries(ctx, ".")
	if err != nil {
		return nil, err
	}
	version, err := os.ReadFile("VERSION")
	if err != nil {
		return nil, err
	}
	sb, err := sandboxrun.Up(ctx, o.Holdfast, o.BinDir)
	if err != nil {
		return nil, err
	}
	defer sb.Down(o.Keep, o.Log)
	r := &run{o: o, sb: sb, h: cnpg.Harness{Binaries: bins, Sandbox: sb.Dir, HoldfastLayout: sb.Images,
		HoldfastVersion: strings.TrimSpace(string(version)),
		Kubectl: func(ctx context.Context, stdin string, args ...string) (string, error) {
			return sb.KubectlIn(ctx, stdin, args...)
		}}}
	if err := bench.Poll(ctx, time.Minute, func() error {
		_, err := sb.Kubectl(ctx, "get", "serviceaccount", "default")
		return err
	}); err != nil {
		return nil, err
	}
	if err := r.h.Install(ctx); err != nil {
		return nil, err
	}
	if _, err := sb.Kubectl(ctx, "create", "namespace", ns); err != nil {
		return nil, err
	}
	if err := r.h.ApplyCluster(ctx, ns, cluster); err != nil {
		return nil, err
	}
	if err := r.WaitHealthy(ctx, 10*time.Minute); err != nil {
		return nil, err
	}

	res := bench.Result{Suite: "cnpg", Config: "defaults", Settings: Settings}
	for _, f := range o.Faults {
		res.Faults = append(res.Faults, bench.FaultResult{Fault: f})
	}
	rw, err := sb.Kubectl(ctx, "-n", ns, "get", "service", cluster+"-rw", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return nil, err
	}
	conn := fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require", rw,
		sb.Secret(ns, cluster+"-app", "username"), sb.Secret(ns, cluster+"-app", "password"))
	w := &loadcheck.Writer{ConnString: conn, Table: "bench"}
	if err := bench.Poll(ctx, time.Minute, func() error { return w.Setup(ctx) }); err != nil {
		return nil, fmt.Errorf("creating the bench table: %w", err)
	}
	inject := func(ctx context.Context, w *loadcheck.Writer, f bench.Fault) (bench.Sample, error) {
		return sb.Inject(ctx, r, w, f, nil)
	}
	// CloudNativePG makes no superuser Secret by default: the final table
	// is read as the app user, through the -rw Service.
	final := func(context.Context) (string, error) { return conn, nil }
	err = sandboxrun.Measure(ctx, w, &res, o.N, o.Log, inject, final)
	return []bench.Result{res}, err
}

// Namespace and the rest make run a sandboxrun.Operator.
func (r *run) Namespace() string { return ns }

func (r *run) OperatorNamespace() string { return cnpg.OperatorNamespace }

func (r *run) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	_, err := r.h.WaitHealthy(ctx, ns, cluster, timeout)
	return err
}

func (r *run) Primary(ctx context.Context) (string, error) {
	st, err := r.h.Status(ctx, ns, cluster)
	if err != nil {
		return "", err
	}
	if st.CurrentPrimary == "" {
		return "", errors.New("the cluster names no primary")
	}
	return st.CurrentPrimary, nil
}

// Claim: CloudNativePG names an instance's data claim as its pod.
func (r *run) Claim(pod string) string { return pod }

func (r *run) Instances(ctx context.Context) ([]string, error) {
	out, err := r.sb.Kubectl(ctx, "-n", ns, "get", "pods", "-l", "cnpg.io/cluster="+cluster+",cnpg.io/podRole=instance", "-o", "jsonpath={.items[*].metadata.name}")
	return strings.Fields(out), err
}

// LeadingOperator is the operator's pod: the release manifest runs one.
func (r *run) LeadingOperator(ctx context.Context) (namespace, pod, uid string, err error) {
	err = bench.Poll(ctx, 3*time.Minute, func() error {
		out, err := r.sb.Kubectl(ctx, "-n", cnpg.OperatorNamespace, "get", "pods", "-l", "app.kubernetes.io/name=cloudnative-pg", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[2] == "True" {
				pod, uid = f[0], f[1]
				return nil
			}
		}
		return errors.New("no ready operator pod: " + out)
	})
	return cnpg.OperatorNamespace, pod, uid, err
}

// Switchover promotes a ready replica as `kubectl cnpg promote` does.
func (r *run) Switchover(ctx context.Context, primary string) error {
	out, err := r.sb.Kubectl(ctx, "-n", ns, "get", "pods", "-l", "cnpg.io/cluster="+cluster+",cnpg.io/instanceRole=replica", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "True" && f[0] != primary {
			return r.h.Promote(ctx, ns, cluster, f[0])
		}
	}
	return fmt.Errorf("no ready replica to promote: %q", out)
}

// ChangeImage switches the Cluster between the two tags of the postgres
// image: a rolling update of the same postgres.
func (r *run) ChangeImage(ctx context.Context) error {
	st, err := r.h.Status(ctx, ns, cluster)
	if err != nil {
		return err
	}
	next := cnpg.PostgresTags[0]
	if st.Image == cnpg.PostgresRepository+":"+next {
		next = cnpg.PostgresTags[1]
	}
	return r.h.SetImage(ctx, ns, cluster, next)
}

// RollingUpdateEnd waits until every instance runs the new image and the
// cluster is healthy again. CloudNativePG keeps no record of when it
// finished, so the end is when this poll (every 0.5 s) first sees it.
func (r *run) RollingUpdateEnd(ctx context.Context, at time.Time) (time.Time, error) {
	var end time.Time
	err := bench.Poll(ctx, 10*time.Minute, func() error {
		st, err := r.h.Status(ctx, ns, cluster)
		if err != nil {
			return err
		}
		spec, err := r.sb.Kubectl(ctx, "-n", ns, "get", "cluster.postgresql.cnpg.io", cluster, "-o", "jsonpath={.spec.imageName}")
		if err != nil {
			return err
		}
		pods, err := r.sb.Kubectl(ctx, "-n", ns, "get", "pods", "-l", "cnpg.io/cluster="+cluster+",cnpg.io/podRole=instance", "-o",
			`jsonpath={range .items[*]}{.spec.containers[0].image}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for img := range strings.SplitSeq(pods, "\n") {
			if img != spec {
				return fmt.Errorf("an instance still runs %s", img)
			}
		}
		if st.Image != spec || !st.Healthy(3) {
			return fmt.Errorf("not done: phase %q, image %s", st.Phase, st.Image)
		}
		end = time.Now()
		return nil
	})
	return end, err
}
