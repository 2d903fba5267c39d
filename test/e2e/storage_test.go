package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

const pgbench = "/usr/lib/postgresql/15/bin/pgbench"

// TestAutoGrowInSandbox applies docs/storage.md's cluster (1Gi claims,
// autoGrow at 80 % up to 3Gi) and fills it with pgbench beside the
// acknowledged-write checker: every claim grows, step by step, before a
// write fails, stops at 3Gi, and the cluster then says its volumes are
// full, with no acknowledged write lost.
func TestAutoGrowInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	e.mustKubectl(testutil.DocBlock(t, "../../docs/storage.md", "autogrow"), "apply", "-n", ns, "-f", "-")
	e.waitReady(t, "grow", 2, 6*time.Minute)
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}
	const gi = 1 << 30

	t.Run("df in a pod shows its claim's size, and the status its usage", func(t *testing.T) {
		if size := e.dfSize(t, "grow-0"); size > gi || size < gi*85/100 {
			t.Errorf("df in grow-0 says its data volume holds %d bytes; want its claim's 1Gi, less the filesystem's own", size)
		}
		poll(t, time.Minute, "grow-0's volume in status", func() error {
			v := e.mustKubectl("", "-n", ns, "get", "pgc", "grow", "-o", "jsonpath={.status.instances[0].volume.claim} {.status.instances[0].volume.capacity} {.status.instances[0].volume.usedBytes}")
			if f := strings.Fields(v); len(f) != 3 || f[0] != "pgdata-grow-0" || f[1] != "1Gi" || f[2] == "0" {
				return fmt.Errorf("status.instances[0].volume: %q", v)
			}
			return nil
		})
	})

	rw := e.serviceIP(t, "grow-rw")
	// Stored as is: pgbench's rows must take the space they say.
	e.sqlAs(t, "grow", rw, `CREATE TABLE fill (id int, pad text); ALTER TABLE fill ALTER COLUMN pad SET STORAGE PLAIN`)
	w := startWriterOf(t, e, "grow", rw)
	w.waitAcks(t, 10)

	t.Run("under pgbench every claim grows to the maximum before a write fails", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "fill.sql")
		if err := os.WriteFile(script, []byte("INSERT INTO fill SELECT g, repeat('x', 1000) FROM generate_series(1, 1000) g;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// About 13 MB a second: each step of growth has seconds to land.
		cmd := exec.CommandContext(ctx, pgbench, "-n", "-c", "2", "-R", "12", "-T", "900", "-f", script,
			"-h", rw, "-U", e.secretValue(ns, "grow-app", "username"), "app")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+e.secretValue(ns, "grow-app", "password"), "PGSSLMODE=require")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		poll(t, 10*time.Minute, "both claims grown to 3Gi", func() error {
			select {
			case err := <-exited:
				t.Fatalf("pgbench stopped before the claims reached their maximum (%s): %v\n%s", e.claimSizes(t), err, out.String())
			default:
			}
			if sizes := e.claimSizes(t); sizes != "pgdata-grow-0=3Gi pgdata-grow-1=3Gi" {
				return fmt.Errorf("claims %s", sizes)
			}
			return nil
		})
		cancel()
		<-exited
		steps := e.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=grow,reason=Resized",
			"-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`)
		if n := strings.Count(steps, "pgdata-grow-0 grows"); n < 4 {
			t.Errorf("grow-0's claim grew %d times; 1Gi to 3Gi by 25%% takes 5 steps:\n%s", n, steps)
		}
		if !strings.Contains(steps, "autoGrow grows it at 80%") {
			t.Errorf("no Resized Event says autoGrow grew a claim:\n%s", steps)
		}
		if size := e.dfSize(t, "grow-0"); size < 3*gi*85/100 {
			t.Errorf("df in grow-0 says %d bytes after the claim grew to 3Gi", size)
		}
	})

	t.Run("at its maximum, a volume 95% full makes the cluster Degraded, with an Event and a metric", func(t *testing.T) {
		// 8 MB at a time, far less than the 5 % left at 95 %, until either
		// instance's own series say 95.5 % (the replica's volume, holding the
		// same rows, may be the fuller): the cluster must say so before
		// postgres runs out of room.
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "grow", "-o", "jsonpath={.status.currentPrimary}")
		fullest := func() float64 {
			most := 0.0
			for _, pod := range []string{"grow-0", "grow-1"} {
				m := e.instanceMetrics(t, pod)
				used, _ := m.Value("holdfast_volume_used_bytes", "volume", "data")
				free, _ := m.Value("holdfast_volume_free_bytes", "volume", "data")
				most = max(most, used/(used+free))
			}
			return most
		}
		for range 400 {
			if fullest() >= 0.955 {
				break
			}
			e.sqlAs(t, "grow", rw, `INSERT INTO fill SELECT g, repeat('x', 1000) FROM generate_series(1, 7000) g`)
		}
		poll(t, time.Minute, "Degraded with reason VolumeFull", func() error {
			if c := e.clusterCondition(t, "grow", "Degraded"); !strings.HasPrefix(c, "True VolumeFull: ") {
				return fmt.Errorf("Degraded %q, volumes %s", c, e.mustKubectl("", "-n", ns, "get", "pgc", "grow", "-o", "jsonpath={.status.instances[*].volume}"))
			}
			return nil
		})
		if out := e.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=grow,reason=VolumeFull", "-o", "name"); out == "" {
			t.Error("no VolumeFull Event")
		}
		poll(t, time.Minute, "holdfast_cluster_volume_full 1", func() error {
			m, err := e.operatorMetrics()
			if err != nil {
				return err
			}
			for _, pod := range []string{"grow-0", "grow-1"} {
				if v, ok := m.Value("holdfast_cluster_volume_full", "namespace", ns, "cluster", "grow", "instance", pod); ok && v == 1 {
					return nil
				}
			}
			return fmt.Errorf("holdfast_cluster_volume_full is 1 for neither instance")
		})
		e.checkAcksOf(t, "grow", primary, primary, w)
	})
}

// dfSize is the size df gives the data volume inside pod.
func (e *sandboxEnv) dfSize(t *testing.T, pod string) int64 {
	t.Helper()
	out := e.mustKubectl("", "-n", ns, "exec", pod, "-c", resources.ContainerPostgres, "--", "df", "-B1", "--output=size", resources.DataMountPath)
	f := strings.Fields(out)
	size, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatalf("df in %s: %q", pod, out)
	}
	return size
}

// claimSizes gives the cluster's claims with their capacities, in order.
func (e *sandboxEnv) claimSizes(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(e.mustKubectl("", "-n", ns, "get", "pvc", "-l", "holdfast.dev/cluster=grow", "--sort-by=.metadata.name",
		"-o", `jsonpath={range .items[*]}{.metadata.name}={.status.capacity.storage} {end}`))
}
