package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestOperationsInSandbox changes a running cluster the ways users do,
// with a client writing through -rw and synchronous replication, and
// checks each operation's choreography, its record in status.history and
// that no acknowledged write is lost.
func TestOperationsInSandbox(t *testing.T) {
	e := startSyncCluster(t)
	var kinds []string // the operations the subtests run, in order

	t.Run("an image change rolls the replicas highest first, then switches over, then restarts the old primary", func(t *testing.T) {
		old, epoch, uids, w, began := e.startUpdate(t, `{"spec":{"image":"postgres:15.9"}}`)
		rec := e.waitOperation(t, "RollingUpdate", began, 10*time.Minute)
		kinds = append(kinds, "RollingUpdate")
		w.waitAcks(t, 20)
		t.Logf("image change: %s; longest gap between acknowledged writes %s", rec, w.History().LongestGap(began, time.Now()).Round(time.Millisecond))
		changes := uids.stop()

		var replicas []string
		for _, p := range []string{"pg-2", "pg-1", "pg-0"} {
			if p != old {
				replicas = append(replicas, p)
			}
		}
		want := append(replicas, old)
		if got := rec.field("restarted"); got != strings.Join(want, ",") {
			t.Errorf("the record says it restarted %s, want %s", got, strings.Join(want, ","))
		}
		if !slices.Equal(changes, want) {
			t.Errorf("pods were replaced in the order %v, want each once in the order %v", changes, want)
		}
		now := e.primary(t)
		if rec.field("from") != old || rec.field("to") != now || now == old {
			t.Errorf("the primary moved from %s to %s; the record says %s to %s", old, now, rec.field("from"), rec.field("to"))
		}
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.epoch}"); got != fmt.Sprint(atoi(t, epoch)+1) {
			t.Errorf("epoch %s after the update, was %s: want exactly one change of primary", got, epoch)
		}
		e.wantImage(t, "postgres:15.9")
		e.checkAcks(t, now, old, w)
		e.waitReady(t, "pg", 3, 2*time.Minute)
		e.wantEvents(t, "RollingUpdateStarted", "RestartingInstance", "RollingUpdateCompleted")
	})

	t.Run("a setting that needs a restart is applied by a rolling restart", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.primary(t)
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		began := time.Now()
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"postgresql":{"parameters":{"shared_buffers":"24MB"}}}}`)
		rec := e.waitOperation(t, "RollingUpdate", began, 10*time.Minute)
		kinds = append(kinds, "RollingUpdate")
		if !strings.Contains(rec.field("reason"), "shared_buffers") {
			t.Errorf("the rolling update's reason does not name the setting: %s", rec.field("reason"))
		}
		w.waitAcks(t, 20)
		t.Logf("shared_buffers: %s; longest gap between acknowledged writes %s", rec, w.History().LongestGap(began, time.Now()).Round(time.Millisecond))
		for _, pod := range []string{"pg-0", "pg-1", "pg-2"} {
			if got := e.show(t, pod, "shared_buffers"); got != "24MB" {
				t.Errorf("%s: shared_buffers %s, want 24MB", pod, got)
			}
		}
		if out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.instances[*].pendingRestart}`); out != "" {
			t.Errorf("still pending after the rolling restart: %s", out)
		}
		e.checkAcks(t, e.primary(t), old, w)
		e.waitReady(t, "pg", 3, 2*time.Minute)
	})

	t.Run("holdfast restart rolls every instance", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.primary(t)
		uids := e.watchUIDs(t, "pg")
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		out, err := exec.Command(e.holdfast, "restart", "pg", "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast restart: %v\n%s", err, out)
		}
		kinds = append(kinds, "RollingUpdate")
		t.Logf("holdfast restart: %s", strings.TrimSpace(string(out)))
		if changes := uids.stop(); len(changes) != 3 || changes[2] != old {
			t.Errorf("pods replaced in the order %v: want all three, the old primary %s last", changes, old)
		}
		w.waitAcks(t, 20)
		e.checkAcks(t, e.primary(t), old, w)
		e.waitReady(t, "pg", 3, 2*time.Minute)
	})

	t.Run("holdfast restart with an instance restarts that one only", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.primary(t)
		replica := "pg-0"
		if old == replica {
			replica = "pg-1"
		}
		uids := e.watchUIDs(t, "pg")
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		out, err := exec.Command(e.holdfast, "restart", "pg", replica, "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast restart pg %s: %v\n%s", replica, err, out)
		}
		kinds = append(kinds, "RollingUpdate")
		t.Logf("holdfast restart pg %s: %s", replica, strings.TrimSpace(string(out)))
		if changes := uids.stop(); !slices.Equal(changes, []string{replica}) {
			t.Errorf("pods replaced: %v, want only %s", changes, replica)
		}
		if now := e.primary(t); now != old {
			t.Errorf("the primary moved from %s to %s for a replica's restart", old, now)
		}
		w.waitAcks(t, 20)
		e.checkAcks(t, old, old, w)
		e.waitReady(t, "pg", 3, 2*time.Minute)
	})

	t.Run("primaryUpdateMethod Restart rolls the replicas, then restarts the primary in place", func(t *testing.T) {
		old, epoch, uids, w, began := e.startUpdate(t, `{"spec":{"primaryUpdateMethod":"Restart","image":"postgres:15.10"}}`)
		t.Cleanup(func() {
			e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"primaryUpdateMethod":"Switchover"}}`)
		})
		rec := e.waitOperation(t, "RollingUpdate", began, 10*time.Minute)
		kinds = append(kinds, "RollingUpdate")
		w.waitAcks(t, 20)
		t.Logf("image change with a restart in place: %s; longest gap between acknowledged writes %s", rec, w.History().LongestGap(began, time.Now()).Round(time.Millisecond))
		changes := uids.stop()
		if len(changes) != 3 || changes[2] != old {
			t.Errorf("pods replaced in the order %v: want each once, the primary %s last", changes, old)
		}
		if rec.field("from") != "" || rec.field("to") != "" {
			t.Errorf("the record says the primary went from %s to %s; it stayed on %s", rec.field("from"), rec.field("to"), old)
		}
		if now := e.primary(t); now != old {
			t.Errorf("the primary moved from %s to %s: a restart in place keeps it", old, now)
		}
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.epoch}"); got != epoch {
			t.Errorf("epoch %s after the update, was %s: a restart in place changes no primary", got, epoch)
		}
		e.wantImage(t, "postgres:15.10")
		e.checkAcks(t, old, old, w)
		e.waitReady(t, "pg", 3, 2*time.Minute)
	})

	t.Run("a failover whose first target freezes promotes another replica", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.primary(t)
		managers := map[string]int{}
		for _, p := range []string{"pg-0", "pg-1", "pg-2"} {
			if p != old {
				managers[p], _ = instanceProcesses(t, e.mustKubectl("", "-n", ns, "get", "pod", p, "-o", "jsonpath={.metadata.uid}"))
			}
		}
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		// The writes stop before the fault so that both replicas hold the
		// same WAL: the test is of the retargeting, and the second target
		// must have what the first had (else the operator rightly waits).
		w.stop()
		e.waitReplicasEqual(t, old)

		frozen := make(chan string, 1)
		var thaw sync.Once
		t.Cleanup(func() {
			thaw.Do(func() {
				select {
				case name := <-frozen:
					_ = syscall.Kill(managers[name], syscall.SIGCONT)
				default:
				}
			})
		})
		watch := exec.Command(filepath.Join(e.bins, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "get", "pgc", "pg", "-w",
			"-o", `jsonpath={.status.operation.kind} {.status.operation.to}{"\n"}`)
		stdout, err := watch.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() })
		go func() {
			lines := bufio.NewScanner(stdout)
			for lines.Scan() {
				// The first target chosen: its instance manager freezes, as
				// a node under memory pressure or a hung kernel call would.
				if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "Failover" && managers[f[1]] != 0 {
					if syscall.Kill(managers[f[1]], syscall.SIGSTOP) == nil {
						frozen <- f[1]
					}
					return
				}
			}
		}()
		at := time.Now()
		e.killPod(t, old)
		var first string
		select {
		case first = <-frozen:
			frozen <- first // for the thaw
		case <-time.After(time.Minute):
			t.Fatal("no failover target chosen within a minute of killing the primary")
		}
		promoted := e.waitFailover(t, old)
		took := time.Since(at)
		kinds = append(kinds, "Failover")
		if promoted == first {
			t.Fatalf("%s, frozen, became the primary", first)
		}
		reason := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.history[-1:].reason}")
		if !strings.Contains(reason, "dropped "+first) {
			t.Errorf("the failover's record does not say it dropped %s: %s", first, reason)
		}
		t.Logf("first target %s frozen; %s promoted %s after the primary was killed: %s", first, promoted, took.Round(time.Millisecond), reason)
		e.wantEvents(t, "FailoverRetargeted")
		thaw.Do(func() { _ = syscall.Kill(managers[<-frozen], syscall.SIGCONT) })
		e.checkAcks(t, promoted, old, w)
		w2 := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w2.waitAcks(t, 20)
		e.checkAcks(t, promoted, old, w2)
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("a scale-down that removes the primary switches over first", func(t *testing.T) {
		e.waitSynchronous(t)
		if e.primary(t) != "pg-2" {
			if out, err := exec.Command(e.holdfast, "promote", "pg", "pg-2", "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput(); err != nil {
				t.Fatalf("holdfast promote pg pg-2: %v\n%s", err, out)
			}
			kinds = append(kinds, "Switchover")
		}
		e.waitSynchronous(t)
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		began := time.Now()
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"instances":2}}`)
		rec := e.waitOperation(t, "Switchover", began, 2*time.Minute)
		kinds = append(kinds, "Switchover")
		if !strings.Contains(rec.field("reason"), "spec.instances is 2") || rec.field("from") != "pg-2" {
			t.Errorf("the switchover's record: %s: %s", rec, rec.field("reason"))
		}
		e.waitPods(t, "pg", "pod/pg-0", "pod/pg-1")
		w.waitAcks(t, 20)
		t.Logf("scale-down: %s; longest gap between acknowledged writes %s", rec, w.History().LongestGap(began, time.Now()).Round(time.Millisecond))
		e.checkAcks(t, e.primary(t), "pg-2", w)
		e.waitReady(t, "pg", 2, 2*time.Minute)
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"instances":3}}`)
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("hibernation stops every pod, keeps the claims, and wakes with the same primary and data", func(t *testing.T) {
		e.waitSynchronous(t)
		e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE e2e (id int PRIMARY KEY, note text); INSERT INTO e2e VALUES (1, 'before hibernation')")
		began := time.Now()
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"hibernation":true}}`)
		rec := e.waitOperation(t, "Hibernate", began, 5*time.Minute)
		kinds = append(kinds, "Hibernate")
		primary := e.primary(t)
		t.Logf("hibernate: %s: %s", rec, rec.field("reason"))
		// Done means stopped: no pod is left when the record says so.
		if out := e.mustKubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=pg", "-o", "jsonpath={.items[*].metadata.name}"); out != "" {
			t.Errorf("pods %s remain after the hibernation was recorded as done", out)
		}
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.phase} {.status.readyInstances}"); got != "Hibernated 0" {
			t.Errorf("hibernated cluster: phase and ready %q, want Hibernated 0", got)
		}
		if claims := e.mustKubectl("", "-n", ns, "get", "pvc", "-l", "holdfast.dev/cluster=pg", "-o", "name"); strings.Count(claims, "persistentvolumeclaim/") != 3 {
			t.Errorf("claims while hibernated: %s", claims)
		}

		began = time.Now()
		e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", `{"spec":{"hibernation":false}}`)
		rec = e.waitOperation(t, "Wake", began, 5*time.Minute)
		kinds = append(kinds, "Wake")
		e.waitReady(t, "pg", 3, 5*time.Minute)
		t.Logf("wake: %s; 3 instances ready %s after hibernation was set to false", rec, time.Since(began).Round(time.Millisecond))
		if got := e.primary(t); got != primary {
			t.Errorf("woke with %s as the primary, hibernated with %s", got, primary)
		}
		e.waitRow(t, e.serviceIP(t, "pg-rw"), 1, "before hibernation")
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		e.checkAcks(t, primary, primary, w)
	})

	t.Run("status.history holds every operation, in order", func(t *testing.T) {
		out := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={range .status.history[*]}{.kind}={.outcome}{" "}{end}`)
		var got []string
		for _, f := range strings.Fields(out) {
			kind, outcome, _ := strings.Cut(f, "=")
			if outcome != "Succeeded" {
				t.Errorf("history holds %s", out)
			}
			got = append(got, kind)
		}
		if !slices.Equal(got, kinds) {
			t.Errorf("history %v, want %v", got, kinds)
		}
	})
}

// startUpdate changes cluster pg with patch once its replicas are
// synchronous and a client writes through -rw, and returns the primary and
// epoch before, a watch of the pods replaced, the writer and the time.
func (e *sandboxEnv) startUpdate(t *testing.T, patch string) (old, epoch string, uids *uidWatch, w *writer, began time.Time) {
	t.Helper()
	e.waitSynchronous(t)
	old = e.primary(t)
	epoch = e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.epoch}")
	uids = e.watchUIDs(t, "pg")
	w = startWriter(t, e, e.serviceIP(t, "pg-rw"))
	w.waitAcks(t, 20)
	began = time.Now()
	e.mustKubectl("", "-n", ns, "patch", "pgc", "pg", "--type=merge", "-p", patch)
	return old, epoch, uids, w, began
}

// wantImage checks that every pod of cluster pg runs image.
func (e *sandboxEnv) wantImage(t *testing.T, image string) {
	t.Helper()
	images := e.mustKubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=pg", "-o", `jsonpath={range .items[*]}{.spec.containers[?(@.name=="postgres")].image}{" "}{end}`)
	if n := len(slices.DeleteFunc(strings.Fields(images), func(f string) bool { return f != image })); n != 3 {
		t.Errorf("pods run %s, want %s on all 3", images, image)
	}
}

// primary is the cluster pg's current primary.
func (e *sandboxEnv) primary(t *testing.T) string {
	t.Helper()
	return e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
}

// record is an entry of status.history, by field.
type record map[string]string

func (r record) field(name string) string { return r[name] }

func (r record) String() string {
	return fmt.Sprintf("%s %s in %s, restarted %s, %s -> %s", r["kind"], r["outcome"], r["duration"], r["restarted"], r["from"], r["to"])
}

// waitOperation waits until status.history records an operation of kind
// that started after began, and requires that it succeeded.
func (e *sandboxEnv) waitOperation(t *testing.T, kind string, began time.Time, timeout time.Duration) record {
	t.Helper()
	var rec record
	poll(t, timeout, kind+" recorded in status.history", func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o",
			`jsonpath={range .status.history[*]}{.kind}|{.outcome}|{.startedAt}|{.duration}|{.from}|{.to}|{.restarted}|{.reason}{"\n"}{end}`)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.SplitN(line, "|", 8)
			if len(f) != 8 || f[0] != kind {
				continue
			}
			started, err := time.Parse(time.RFC3339Nano, f[2])
			if err != nil || started.Before(began.Add(-time.Second)) {
				continue
			}
			restarted := strings.NewReplacer(`[`, "", `]`, "", `"`, "").Replace(f[6])
			rec = record{"kind": f[0], "outcome": f[1], "startedAt": f[2], "duration": f[3], "from": f[4], "to": f[5], "restarted": restarted, "reason": f[7]}
		}
		if rec == nil {
			op, _ := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.operation}")
			return errorString("under way: " + op)
		}
		return nil
	})
	if rec["outcome"] != "Succeeded" {
		t.Fatalf("%s ended %s: %s", kind, rec["outcome"], rec["reason"])
	}
	return rec
}

// uidWatch records, a few times a second, which of a cluster's pods were
// replaced by a pod of the same name.
type uidWatch struct {
	done    chan struct{}
	changes chan []string
}

func (e *sandboxEnv) watchUIDs(t *testing.T, cluster string) *uidWatch {
	t.Helper()
	w := &uidWatch{done: make(chan struct{}), changes: make(chan []string, 1)}
	list := func() map[string]string {
		out, err := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster="+cluster, "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}`)
		if err != nil {
			return nil
		}
		uids := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if name, uid, ok := strings.Cut(line, " "); ok {
				uids[name] = uid
			}
		}
		return uids
	}
	seen := list()
	if len(seen) == 0 {
		t.Fatal("no pods to watch")
	}
	go func() {
		var changes []string
		for {
			select {
			case <-w.done:
				w.changes <- changes
				return
			case <-time.After(200 * time.Millisecond):
			}
			for name, uid := range list() {
				if seen[name] != uid {
					seen[name] = uid
					changes = append(changes, name)
				}
			}
		}
	}()
	return w
}

func (w *uidWatch) stop() []string {
	close(w.done)
	return <-w.changes
}

// show reads a setting from pod's postgres.
func (e *sandboxEnv) show(t *testing.T, pod, setting string) string {
	t.Helper()
	var v string
	e.withConn(t, "SHOW "+setting, "pg", e.podIP(t, pod), true, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SHOW "+setting).Scan(&v)
	})
	return v
}

// waitReplicasEqual waits until every replica has received all the WAL
// the primary has written.
func (e *sandboxEnv) waitReplicasEqual(t *testing.T, primary string) {
	t.Helper()
	var written string
	e.withConn(t, "the primary's WAL position", "pg", e.podIP(t, primary), true, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&written)
	})
	for _, p := range []string{"pg-0", "pg-1", "pg-2"} {
		if p == primary {
			continue
		}
		e.withConn(t, p+" has received "+written, "pg", e.podIP(t, p), true, func(ctx context.Context, conn *pgx.Conn) error {
			var behind bool
			if err := conn.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn() < $1::pg_lsn", written).Scan(&behind); err != nil {
				return err
			}
			if behind {
				return errorString("behind " + written)
			}
			return nil
		})
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
