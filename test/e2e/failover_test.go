package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/proc"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
	"holdfast.dev/holdfast/internal/rig/sandbox/faults"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// TestFailoverInSandbox kills the primary in two ways while a client keeps
// writing through the -rw Service with synchronous replication, and checks
// that the operator promotes a replica, that no acknowledged write is lost,
// that writes never came from two primaries at once, and that the cluster
// heals.
func TestFailoverInSandbox(t *testing.T) {
	e := startSyncCluster(t)

	for _, fault := range []struct {
		name   string
		inject func(t *testing.T, primary string)
	}{
		{"SIGKILL of every process of the primary pod", func(t *testing.T, primary string) {
			n := e.killPod(t, primary)
			t.Logf("killed %d processes of %s", n, primary)
		}},
		{"deletion of the primary pod", func(t *testing.T, primary string) {
			e.mustKubectl("", "-n", ns, "delete", "pod", primary, "--wait=false")
		}},
		// Such an object once blinded the operator to every cluster.
		{"SIGKILL of the primary while another cluster keeps being made undecodable", func(t *testing.T, primary string) {
			e.undecodableNeighbour(t)
			n := e.killPod(t, primary)
			t.Logf("killed %d processes of %s", n, primary)
		}},
	} {
		t.Run(fault.name, func(t *testing.T) {
			old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
			w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
			w.waitAcks(t, 20)
			at := time.Now()
			fault.inject(t, old)
			promoted := e.waitFailover(t, old)
			firstAck := w.firstAckAfter(t, at, promoted, time.Minute)
			t.Logf("%s: %s promoted; first acknowledged write through pg-rw %s after the fault", fault.name, promoted, firstAck.Round(time.Millisecond))
			w.waitAcks(t, 20)
			e.checkAcks(t, promoted, old, w)
			e.waitReady(t, "pg", 3, 4*time.Minute)
			e.wantEvents(t, "FailoverStarted", "FailoverCompleted")
		})
	}

	t.Run("a partitioned primary fences itself before a replica is promoted", func(t *testing.T) {
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		uid := e.mustKubectl("", "-n", ns, "get", "pod", old, "-o", "jsonpath={.metadata.uid}")
		_, postmaster := instanceProcesses(t, uid)
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		at := time.Now()
		heal := partition(t, "hf-"+uid)
		stopped := whenGone(postmaster)
		promoted := e.waitFailover(t, old)
		firstAck := at.Add(w.firstAckAfter(t, at, promoted, time.Minute))
		stoppedBefore(t, stopped, firstAck, promoted)
		t.Logf("partition: %s promoted; first acknowledged write through pg-rw %s after the partition",
			promoted, firstAck.Sub(at).Round(time.Millisecond))
		w.waitAcks(t, 20)
		heal()
		e.checkAcks(t, promoted, old, w)
		// The cut-off primary stopped postgres on its own, unable to renew
		// its lease: its manager at the renew deadline (a fast shutdown,
		// which may hang on WAL senders whose standbys are cut off), its
		// watchdog a second later if that had not finished.
		logs := e.mustKubectl("", "-n", ns, "logs", old)
		if !strings.Contains(logs, "self-fencing") {
			t.Errorf("%s's manager did not fence it; its log:\n%s", old, logs)
		}
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("the primary's instance manager frozen while postgres runs: its watchdog stops postgres before a replica is promoted", func(t *testing.T) {
		// The manager is PID 1 of its container, so killing it ends postgres
		// too, as in any container. Freezing it (SIGSTOP) is the case that
		// matters: it neither renews the lease nor stops postgres, which
		// goes on serving the clients already connected.
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		uid := e.mustKubectl("", "-n", ns, "get", "pod", old, "-o", "jsonpath={.metadata.uid}")
		manager, postmaster := instanceProcesses(t, uid)
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		at := time.Now()
		if err := syscall.Kill(manager, syscall.SIGSTOP); err != nil {
			t.Fatalf("freezing the instance manager: %v", err)
		}
		thawed := false
		thaw := func() {
			if !thawed {
				thawed = true
				_ = syscall.Kill(manager, syscall.SIGCONT)
			}
		}
		t.Cleanup(thaw)
		stopped := whenGone(postmaster)
		promoted := e.waitFailover(t, old)
		firstAck := at.Add(w.firstAckAfter(t, at, promoted, time.Minute))
		gone := stoppedBefore(t, stopped, firstAck, promoted)
		t.Logf("manager frozen: postgres stopped %s after, %s promoted, first write through pg-rw %s after",
			gone.Sub(at).Round(time.Millisecond), promoted, firstAck.Sub(at).Round(time.Millisecond))
		w.waitAcks(t, 20)
		thaw()
		e.checkAcks(t, promoted, old, w)
		if logs := e.mustKubectl("", "-n", ns, "logs", old); !strings.Contains(logs, "has not renewed the primary lease in time") {
			t.Errorf("%s's watchdog did not fence it; its log:\n%s", old, logs)
		}
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("the operator killed in the middle of a failover: its successor completes it", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		leader, operator := e.leadingOperator(t)
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		// A watch, not a poll: the failover lasts a fraction of a second.
		watch := exec.Command(filepath.Join(e.bins, "kubectl"), "--kubeconfig", e.kubeconfig, "-n", ns, "get", "pgc", "pg", "-w",
			"-o", `jsonpath={.status.operation.kind} {.status.operation.from}{"\n"}`)
		out, err := watch.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() })
		midway := make(chan time.Time, 1)
		go func() {
			lines := bufio.NewScanner(out)
			for lines.Scan() {
				// Started (from the old primary), not completed: kill now.
				if f := strings.Fields(lines.Text()); len(f) == 2 && f[0] == "Failover" && f[1] == old {
					if _, err := faults.KillPod(network.NamespacePath(network.Namespace(operator))); err == nil {
						midway <- time.Now()
					}
					return
				}
			}
		}()
		at := time.Now()
		e.killPod(t, old)
		var killed time.Time
		select {
		case killed = <-midway:
		case <-time.After(time.Minute):
			t.Fatal("no failover started within a minute of killing the primary")
		}
		promoted := e.waitFailover(t, old)
		completed := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.history[-1:].finishedAt}")
		done, err := time.Parse(time.RFC3339Nano, completed)
		if err != nil {
			t.Fatalf("completedAt %q: %v", completed, err)
		}
		if done.Before(killed) {
			t.Fatalf("the failover completed (%s) before the operator was killed (%s): the kill missed the middle", done.Format(time.StampMicro), killed.Format(time.StampMicro))
		}
		firstAck := w.firstAckAfter(t, at, promoted, 3*time.Minute)
		successor, err := e.operatorLeader()
		if err != nil || successor == leader {
			t.Errorf("the leader lease is held by %q (%v) after %s was killed: want the standby", successor, err, leader)
		}
		t.Logf("operator %s killed %s into the failover; the standby %s completed it: %s is the primary, first write through pg-rw %s after the fault",
			leader, killed.Sub(at).Round(time.Millisecond), successor, promoted, firstAck.Round(time.Millisecond))
		w.waitAcks(t, 20)
		e.checkAcks(t, promoted, old, w)
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("a replica killed while a switchover runs loses no write", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		var to, victim string
		for _, p := range []string{"pg-0", "pg-1", "pg-2"} {
			switch {
			case p == old:
			case to == "":
				to = p
			default:
				victim = p
			}
		}
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		promote := exec.Command(e.holdfast, "promote", "pg", to, "-n", ns, "--kubeconfig", e.kubeconfig)
		out := &strings.Builder{}
		promote.Stdout, promote.Stderr = out, out
		if err := promote.Start(); err != nil {
			t.Fatal(err)
		}
		e.killPod(t, victim)
		if err := promote.Wait(); err != nil {
			t.Fatalf("holdfast promote with %s killed: %v\n%s", victim, err, out)
		}
		t.Logf("with %s killed: %s", victim, strings.TrimSpace(out.String()))
		w.waitAcks(t, 20)
		e.checkAcks(t, to, old, w)
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("a planned switchover loses no write", func(t *testing.T) {
		e.waitSynchronous(t)
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		to := "pg-1"
		if old == to {
			to = "pg-2"
		}
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		asked := time.Now()
		out, err := exec.Command(e.holdfast, "promote", "pg", to, "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast promote: %v\n%s", err, out)
		}
		t.Logf("holdfast promote: %s", strings.TrimSpace(string(out)))
		if !strings.Contains(string(out), "asked for a switchover of pg from "+old+" to "+to) || !strings.Contains(string(out), "switchover Promoting: ") {
			t.Errorf("holdfast promote did not say what it waited for:\n%s", out)
		}
		w.waitAcks(t, 20)
		t.Logf("switchover: writes unavailable for %s (longest gap between acknowledged writes)", w.History().LongestGap(asked, time.Now()).Round(time.Millisecond))
		e.checkAcks(t, to, old, w)
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.metadata.annotations}"); strings.Contains(got, "switchover-to") {
			t.Errorf("the switchover annotation is still there: %s", got)
		}
		e.waitReady(t, "pg", 3, 4*time.Minute)
		e.wantEvents(t, "SwitchoverStarted", "SwitchoverCompleted")
	})

	t.Run("a switchover to an instance that does not exist is refused", func(t *testing.T) {
		// A refusal returns at once, quoting the operator's Event, well
		// within a timeout that would otherwise end the wait.
		out, err := exec.Command(e.holdfast, "promote", "pg", "pg-9", "-n", ns, "--kubeconfig", e.kubeconfig, "--timeout", "1m").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the operator refused: switchover to pg-9 refused: ") {
			t.Errorf("holdfast promote pg pg-9: %v\n%s", err, out)
		}
	})
}

// startSyncCluster brings up a sandbox with the operator and a 3-instance
// cluster pg with synchronous replication (quorum 1) and the writer's table.
func startSyncCluster(t *testing.T) *sandboxEnv {
	e := startSandbox(t)
	e.installOperator()
	e.createSyncCluster(t)
	return e
}

// createSyncCluster creates cluster pg, three instances with synchronous
// replication, and its table acks, in namespace ns.
func (e *sandboxEnv) createSyncCluster(t *testing.T) {
	e.mustKubectl("", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", ns, "--wait=false") })
	m := strings.Replace(clusterManifest("pg", 3, ""), "  postgresVersion: 15\n", "  postgresVersion: 15\n  synchronous:\n    quorum: 1\n", 1)
	e.mustKubectl(m, "apply", "-f", "-")
	e.waitReady(t, "pg", 3, 6*time.Minute)
	e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE acks (seq bigint PRIMARY KEY, server text, timeline int)")
}

func (e *sandboxEnv) wantEvents(t *testing.T, reasons ...string) {
	t.Helper()
	out := e.mustKubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=pg", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}")
	for _, want := range reasons {
		if !strings.Contains(out, want) {
			t.Errorf("no %s Event: %s", want, out)
		}
	}
}

// partition cuts a pod's network namespace off; the returned func heals it.
func partition(t *testing.T, netns string) func() {
	t.Helper()
	heal, err := faults.Partition(netns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = heal() })
	return func() {
		if err := heal(); err != nil {
			t.Errorf("healing %s: %v", netns, err)
		}
	}
}

// waitFailover waits until the operator has replaced old and the promoted
// instance reports itself primary, and returns it.
// undecodableNeighbour makes a cluster beside pg that, until the test
// ends, is written over and over with a condition time the API server
// admits and the operator's types cannot decode; it returns once the
// operator has said it cannot read it. The cluster waits for a backup that
// does not exist, so it runs no pods.
func (e *sandboxEnv) undecodableNeighbour(t *testing.T) {
	t.Helper()
	e.mustKubectl(clusterManifest("odd", 1, "")+`
  bootstrap:
    restore:
      backup:
        name: no-such-backup`, "apply", "-f", "-")
	bad := `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Odd","message":"written by hand","lastTransitionTime":"2026-12-02t15:58:47z"}]}}`
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_, _ = e.kubectl("", "-n", ns, "patch", "pgc", "odd", "--subresource=status", "--type=merge", "-p", bad)
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_, _ = e.kubectl("", "-n", ns, "delete", "pgc", "odd", "--wait=false")
	})
	poll(t, time.Minute, "an Undecodable Event on odd", func() error {
		out, err := e.kubectl("", "-n", ns, "get", "events", "--field-selector", "involvedObject.name=odd,reason=Undecodable", "-o", "name")
		if err == nil && out == "" {
			err = errorString("none yet")
		}
		return err
	})
}

func (e *sandboxEnv) waitFailover(t *testing.T, old string) string {
	t.Helper()
	var promoted string
	poll(t, 2*time.Minute, "a replica promoted in place of "+old, func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o",
			"jsonpath={.status.history[-1:].kind} {.status.history[-1:].outcome} {.status.history[-1:].from} {.status.history[-1:].to} {.status.currentPrimary}")
		if err != nil {
			return err
		}
		f := strings.Fields(out)
		if len(f) != 5 || f[0] != "Failover" || f[1] != "Succeeded" || f[2] != old || f[4] != f[3] {
			return errorString(out)
		}
		promoted = f[3]
		return nil
	})
	return promoted
}

// waitSynchronous waits until both replicas stream as synchronous standbys,
// so that either may be promoted or switched to.
func (e *sandboxEnv) waitSynchronous(t *testing.T) {
	t.Helper()
	poll(t, 2*time.Minute, "two synchronous standbys", func() error {
		out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.syncStandbys}")
		if err == nil && strings.Count(out, ",") != 1 {
			err = errorString("syncStandbys " + out)
		}
		return err
	})
}

// killPod SIGKILLs every process of the pod: its containers and everything they started.
func (e *sandboxEnv) killPod(t *testing.T, pod string) int {
	t.Helper()
	uid := e.mustKubectl("", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	n, err := faults.KillPod(network.NamespacePath(network.Namespace(uid)))
	if err != nil {
		t.Fatalf("killing %s: %v", pod, err)
	}
	return n
}

// writer keeps writing through a Service, recording every acknowledged write.
type writer struct {
	*loadcheck.Writer
	stop func()
}

func startWriter(t *testing.T, e *sandboxEnv, host string) *writer {
	t.Helper()
	return startWriterOf(t, e, "pg", host)
}

// startWriterOf starts a writer as cluster's app user.
func startWriterOf(t *testing.T, e *sandboxEnv, cluster, host string) *writer {
	t.Helper()
	w := &loadcheck.Writer{Table: "acks", IdentityQuery: loadcheck.InstanceNameQuery, ConnString: fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require",
		host, e.secretValue(ns, cluster+"-app", "username"), e.secretValue(ns, cluster+"-app", "password"))}
	poll(t, time.Minute, "the writer's table", func() error { return w.Setup(context.Background()) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return &writer{Writer: w, stop: stop}
}

func (w *writer) waitAcks(t *testing.T, n int) {
	t.Helper()
	from := len(w.History().Acks)
	poll(t, time.Minute, fmt.Sprintf("%d more acknowledged writes", n), func() error {
		if got := len(w.History().Acks) - from; got < n {
			return errorString(fmt.Sprintf("%d so far", got))
		}
		return nil
	})
}

// firstAckAfter is how long after at the first write was acknowledged by
// the instance named: writes in flight at the fault may still be
// acknowledged by the old primary.
func (w *writer) firstAckAfter(t *testing.T, at time.Time, instance string, timeout time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	a, err := w.WaitAck(ctx, at, func(a loadcheck.Ack) bool { return a.Server == instance })
	if err != nil {
		t.Fatal(err)
	}
	return a.At.Sub(at)
}

// checkAcks proves, from the new primary's table and timeline history,
// that every acknowledged write survived and that no two instances took
// writes at once.
func (e *sandboxEnv) checkAcks(t *testing.T, promoted, old string, w *writer) {
	t.Helper()
	e.checkAcksOf(t, "pg", promoted, old, w)
}

// checkAcksOf checks cluster's acknowledged writes on its primary promoted.
func (e *sandboxEnv) checkAcksOf(t *testing.T, cluster, promoted, old string, w *writer) {
	t.Helper()
	w.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := fmt.Sprintf("host=%s port=5432 dbname=app user=%s password=%s sslmode=require",
		e.podIP(t, promoted), e.secretValue(ns, cluster+"-superuser", "username"), e.secretValue(ns, cluster+"-superuser", "password"))
	var final loadcheck.Final
	poll(t, time.Minute, "the new primary's table", func() (err error) {
		final, err = loadcheck.ReadFinal(ctx, conn, "acks")
		return err
	})
	rep := loadcheck.Check(w.History(), final)
	if !rep.OK() {
		t.Errorf("after %s lost its role to %s: %s", old, promoted, rep)
	}
	t.Logf("checker: %s", rep)
}

// instanceProcesses finds, among a pod's processes, its instance manager
// and the postmaster it started.
func instanceProcesses(t *testing.T, podUID string) (manager, postmaster int) {
	t.Helper()
	procs, err := faults.PodProcesses(network.NamespacePath(network.Namespace(podUID)))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if len(p.Args) > 2 && p.Args[1] == "instance" && p.Args[2] == "run" {
			manager = p.PID
		}
	}
	for _, p := range procs {
		if p.PPID == manager && len(p.Args) > 0 && filepath.Base(p.Args[0]) == "postgres" {
			postmaster = p.PID
		}
	}
	if manager == 0 || postmaster == 0 {
		t.Fatalf("no instance manager and postmaster among %+v", procs)
	}
	return manager, postmaster
}

// whenGone says when the process pid has exited (to within 100 ms).
func whenGone(pid int) <-chan time.Time {
	gone := make(chan time.Time, 1)
	go func() {
		if proc.WaitGone(pid, 2*time.Minute) {
			gone <- time.Now()
		}
	}()
	return gone
}

// stoppedBefore checks that the old primary's postgres had stopped before
// the new primary acknowledged its first write, and says when it stopped.
func stoppedBefore(t *testing.T, stopped <-chan time.Time, firstAck time.Time, promoted string) time.Time {
	t.Helper()
	select {
	case gone := <-stopped:
		if !gone.Before(firstAck) {
			t.Errorf("the old primary's postgres stopped %s after %s took its first write", gone.Sub(firstAck), promoted)
		}
		return gone
	default:
		t.Errorf("the old primary's postgres still ran when %s took its first write", promoted)
		return time.Time{}
	}
}
