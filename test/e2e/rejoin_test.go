package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/postgres"
)

// replicaWhoseWALIsGoneRejoins is issue 14's steps, through the CRD: a
// cluster scaled from 3 to 1 keeps its claims; the primary then recycles
// the WAL the absent replicas would need; scaled back to 3, they must
// clone the primary afresh (the cluster has no repository to fetch the WAL
// from), come back ready with every row, and say so with an Event.
func (e *sandboxEnv) replicaWhoseWALIsGoneRejoins(t *testing.T) {
	const cluster = "x-scale"
	rw := func() string { return e.serviceIP(t, cluster+"-rw") }
	e.mustKubectl(clusterManifest(cluster, 3, ""), "apply", "-f", "-")
	t.Cleanup(func() {
		_, _ = e.kubectl("", "-n", ns, "delete", "pgc", cluster, "--wait=true", "--timeout=2m")
		for i := range 3 {
			_, _ = e.kubectl("", "-n", ns, "delete", "pvc", fmt.Sprintf("pgdata-%s-%d", cluster, i), "--wait=false")
		}
	})
	e.waitReady(t, cluster, 3, 6*time.Minute)
	e.sqlAs(t, cluster, rw(), "CREATE TABLE e2e (id int PRIMARY KEY, note text); INSERT INTO e2e VALUES (1, 'before scale-down')")
	for _, pod := range []string{cluster + "-1", cluster + "-2"} {
		e.waitRowAs(t, cluster, e.podIP(t, pod), 1, "before scale-down")
	}

	e.mustKubectl("", "-n", ns, "patch", "pgc", cluster, "--type=merge", "-p", `{"spec":{"instances":1}}`)
	e.waitPods(t, cluster, "pod/"+cluster+"-0")
	e.waitReady(t, cluster, 1, 3*time.Minute)
	// The replicas stopped at or before this position.
	var stoppedAt string
	e.superQuery(t, cluster, rw(), `SELECT pg_current_wal_lsn()::text`, &stoppedAt)

	// wal_keep_size keeps 256MB (16 segments): switch well past that.
	e.withConn(t, "writing and switching WAL", cluster, rw(), true, func(ctx context.Context, conn *pgx.Conn) error {
		for i := 2; i <= 41; i++ {
			if _, err := conn.Exec(ctx, `INSERT INTO e2e VALUES ($1, 'while scaled down') ON CONFLICT DO NOTHING`, i); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
				return err
			}
		}
		return nil
	})
	var need string
	e.withConn(t, "the primary removes the WAL the replicas need", cluster, rw(), true, func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
			return err
		}
		oldest, segSize, err := postgres.OldestWAL(ctx, conn)
		if err != nil {
			return err
		}
		pos, err := postgres.ParseLSN(stoppedAt)
		if err != nil {
			return err
		}
		seg := postgres.WALSegment(pos, segSize)
		need = postgres.WALFileName(1, seg, segSize)
		if seg >= oldest {
			return fmt.Errorf("the primary still holds %s", need)
		}
		return nil
	})
	t.Logf("the primary no longer holds %s, where the replicas stopped (%s)", need, stoppedAt)

	began := time.Now()
	e.mustKubectl("", "-n", ns, "patch", "pgc", cluster, "--type=merge", "-p", `{"spec":{"instances":3}}`)
	e.waitReady(t, cluster, 3, 6*time.Minute)
	t.Logf("3 of 3 ready and Healthy %s after scaling back up", time.Since(began).Round(time.Second))
	for _, pod := range []string{cluster + "-1", cluster + "-2"} {
		e.waitRowAs(t, cluster, e.podIP(t, pod), 41, "while scaled down")
		e.waitRowAs(t, cluster, e.podIP(t, pod), 1, "before scale-down")
	}
	events := e.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name="+cluster,
		"-o", `jsonpath={range .items[*]}{.reason} {.message}{"\n"}{end}`)
	for _, pod := range []string{cluster + "-1", cluster + "-2"} {
		want := "ReplicaRecloned " + pod + ": re-cloning: the primary no longer has WAL segment "
		if !strings.Contains(events, want) {
			t.Errorf("no Event %q…; the cluster's Events:\n%s", want, events)
		}
	}
}

// waitPods waits until the cluster's pods are exactly want (kubectl's -o name, in order).
func (e *sandboxEnv) waitPods(t *testing.T, cluster string, want ...string) {
	t.Helper()
	poll(t, 3*time.Minute, cluster+"'s pods "+strings.Join(want, " "), func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster="+cluster, "-o", "name")
		if err != nil {
			return err
		}
		if out != strings.Join(want, "\n") {
			return errorString(out)
		}
		return nil
	})
}
