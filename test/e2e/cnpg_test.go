package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/cnpg"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// TestCloudNativePGInSandbox keeps the benchmark's CloudNativePG harness
// from rotting: it installs CloudNativePG's release manifest as published,
// with its images built from its pinned module, sees its admission webhook
// answer through the sandbox's Services, brings up the 3-instance Cluster
// the benchmark measures, and kills its primary once while a client writes
// through its -rw Service.
func TestCloudNativePGInSandbox(t *testing.T) {
	e := startSandbox(t)
	ctx := t.Context()
	bins, err := cnpg.Binaries(ctx, "../..")
	if err != nil {
		t.Fatal(err)
	}
	version, err := os.ReadFile("../../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	h := cnpg.Harness{Binaries: bins, Sandbox: e.dir, HoldfastLayout: e.images, HoldfastVersion: strings.TrimSpace(string(version)),
		Kubectl: func(_ context.Context, stdin string, args ...string) (string, error) {
			out, err := e.kubectl(stdin, args...)
			if err != nil {
				return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
			}
			return out, nil
		}}
	poll(t, time.Minute, "the default ServiceAccount", func() error {
		_, err := e.kubectl("", "get", "serviceaccount", "default")
		return err
	})
	if err := h.Install(ctx); err != nil {
		t.Fatal(err)
	}
	e.mustKubectl("", "create", "namespace", ns)

	t.Run("its validating webhook answers", func(t *testing.T) {
		// Only its webhook checks this; the CRD's schema admits it.
		bad := strings.Replace(cnpg.ClusterManifest(ns, "refused", cnpg.PostgresTags[0]), "number: 1", "number: 3", 1)
		poll(t, 3*time.Minute, "the webhook's refusal", func() error {
			out, err := e.kubectl(bad, "apply", "--dry-run=server", "-f", "-")
			if err == nil {
				return errorString("a synchronous number of 3 with 3 instances was admitted")
			}
			if !strings.Contains(out, "Invalid synchronous configuration") {
				return errorString("not the webhook's refusal: " + out)
			}
			return nil
		})
	})

	if err := h.ApplyCluster(ctx, ns, "pg"); err != nil {
		t.Fatal(err)
	}
	st, err := h.WaitHealthy(ctx, ns, "pg", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CloudNativePG %s: cluster pg healthy, primary %s, image %s", cnpg.Version, st.CurrentPrimary, st.Image)
	if want := cnpg.PostgresRepository + ":" + cnpg.PostgresTags[0]; st.Image != want {
		t.Errorf("cluster image %q, want %q", st.Image, want)
	}
	sync := e.mustKubectl("", "-n", ns, "get", "cluster.postgresql.cnpg.io", "pg", "-o", "jsonpath={.status.instancesStatus.healthy}")
	t.Logf("healthy instances: %s", sync)

	t.Run("SIGKILL of the primary: a replica takes over, no acknowledged write lost", func(t *testing.T) {
		w := &loadcheck.Writer{Table: "acks", ConnString: fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require",
			e.serviceIP(t, "pg-rw"), e.secretValue(ns, "pg-app", "username"), e.secretValue(ns, "pg-app", "password"))}
		poll(t, time.Minute, "the writer's table", func() error { return w.Setup(ctx) })
		wctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(wctx); close(done) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		old := st.CurrentPrimary
		oldIP := e.podIP(t, old)
		onOld := func(a loadcheck.Ack) bool { return strings.HasPrefix(a.Server, oldIP+":") }
		actx, acancel := context.WithTimeout(ctx, time.Minute)
		defer acancel()
		if _, err := w.WaitAck(actx, time.Now(), onOld); err != nil {
			t.Fatalf("no write acknowledged by the primary %s: %v", old, err)
		}
		at := time.Now()
		t.Logf("killed %d processes of %s", e.killPod(t, old), old)
		// CloudNativePG notices a dead primary through its probes and the
		// instance manager's status port: minutes at worst.
		bctx, bcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer bcancel()
		a, err := w.WaitAck(bctx, at, func(a loadcheck.Ack) bool { return !onOld(a) })
		if err != nil {
			t.Fatalf("no write acknowledged by another instance after the kill: %v", err)
		}
		t.Logf("first write acknowledged by %s %.2fs after the kill", a.Server, a.At.Sub(at).Seconds())
		st, err := h.WaitHealthy(ctx, ns, "pg", 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.CurrentPrimary == old {
			t.Errorf("primary still %s after its kill", old)
		}
		stop()
		var final loadcheck.Final
		poll(t, time.Minute, "the table on the new primary", func() (err error) {
			final, err = loadcheck.ReadFinal(ctx, w.ConnString, "acks")
			return err
		})
		if rep := loadcheck.Check(w.History(), final); !rep.OK() {
			t.Errorf("after %s lost its role to %s: %s", old, st.CurrentPrimary, rep)
		} else {
			t.Logf("checker: %s", rep)
		}
	})
}
