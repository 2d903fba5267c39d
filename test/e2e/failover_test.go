package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestFailoverInSandbox kills the primary in two ways while a client keeps
// writing through the -rw Service with synchronous replication, and checks
// that the operator promotes a replica, that no acknowledged write is lost,
// that writes never came from two primaries at once, and that the cluster
// heals.
func TestFailoverInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = e.kubectl("", "delete", "namespace", ns, "--wait=false") })
	m := strings.Replace(clusterManifest("pg", 3, ""), "  postgresVersion: 15\n", "  postgresVersion: 15\n  synchronous:\n    quorum: 1\n", 1)
	e.mustKubectl(m, "apply", "-f", "-")
	e.waitReady(t, "pg", 3, 6*time.Minute)
	e.sql(t, e.serviceIP(t, "pg-rw"), "CREATE TABLE acks (seq bigint PRIMARY KEY, server text, timeline int)")

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
	} {
		t.Run(fault.name, func(t *testing.T) {
			old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
			w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
			w.waitAcks(t, 20)
			at := time.Now()
			fault.inject(t, old)
			var promoted string
			poll(t, 2*time.Minute, "a replica promoted", func() error {
				out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.lastFailover.from} {.status.lastFailover.to} {.status.lastFailover.completedAt} {.status.currentPrimary}")
				if err != nil {
					return err
				}
				f := strings.Fields(out)
				if len(f) != 4 || f[0] != old || f[2] == "" || f[3] != f[1] {
					return errorString(out)
				}
				promoted = f[1]
				return nil
			})
			firstAck := w.firstAckAfter(t, at, e.podIP(t, promoted), time.Minute)
			t.Logf("%s: %s promoted; first acknowledged write through pg-rw %s after the fault", fault.name, promoted, firstAck.Round(time.Millisecond))
			w.waitAcks(t, 20)
			acks := w.stop()
			e.checkAcks(t, promoted, old, acks)
			e.waitReady(t, "pg", 3, 4*time.Minute)
			e.wantEvents(t, "FailoverStarted", "FailoverCompleted")
		})
	}

	t.Run("a partitioned primary fences itself before a replica is promoted", func(t *testing.T) {
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		uid := e.mustKubectl("", "-n", ns, "get", "pod", old, "-o", "jsonpath={.metadata.uid}")
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		at := time.Now()
		heal := partition(t, "hf-"+uid)
		var promoted string
		poll(t, 2*time.Minute, "a replica promoted", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.lastFailover.from} {.status.lastFailover.to} {.status.lastFailover.completedAt}")
			if err != nil {
				return err
			}
			f := strings.Fields(out)
			if len(f) != 3 || f[0] != old {
				return errorString(out)
			}
			promoted = f[1]
			return nil
		})
		t.Logf("partition: %s promoted; first acknowledged write through pg-rw %s after the partition",
			promoted, w.firstAckAfter(t, at, e.podIP(t, promoted), time.Minute).Round(time.Millisecond))
		w.waitAcks(t, 20)
		heal()
		acks := w.stop()
		e.checkAcks(t, promoted, old, acks)
		// The cut-off primary stopped postgres on its own, unable to renew its lease.
		logs := e.mustKubectl("", "-n", ns, "logs", old)
		if !strings.Contains(logs, "self-fencing") {
			t.Errorf("%s did not fence itself; its log:\n%s", old, logs)
		}
		e.waitReady(t, "pg", 3, 4*time.Minute)
	})

	t.Run("a planned switchover loses no write", func(t *testing.T) {
		old := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.status.currentPrimary}")
		to := "pg-1"
		if old == to {
			to = "pg-2"
		}
		w := startWriter(t, e, e.serviceIP(t, "pg-rw"))
		w.waitAcks(t, 20)
		out, err := exec.Command(e.holdfast, "promote", "pg", to, "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast promote: %v\n%s", err, out)
		}
		t.Logf("holdfast promote: %s", strings.TrimSpace(string(out)))
		w.waitAcks(t, 20)
		acks := w.stop()
		t.Logf("switchover: writes unavailable for %s (longest gap between acknowledged writes)", longestGap(acks).Round(time.Millisecond))
		e.checkAcks(t, to, old, acks)
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "pg", "-o", "jsonpath={.metadata.annotations}"); strings.Contains(got, "switchover-to") {
			t.Errorf("the switchover annotation is still there: %s", got)
		}
		e.waitReady(t, "pg", 3, 4*time.Minute)
		e.wantEvents(t, "SwitchoverStarted", "SwitchoverCompleted")
	})

	t.Run("a switchover to an instance that does not exist is refused", func(t *testing.T) {
		out, err := exec.Command(e.holdfast, "promote", "pg", "pg-9", "-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "refused") {
			t.Errorf("holdfast promote pg pg-9: %v\n%s", err, out)
		}
	})
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

// sameServer compares inet_server_addr() (which may carry a mask) with an IP.
func sameServer(addr, ip string) bool { return addr == ip || strings.HasPrefix(addr, ip+"/") }

// longestGap is the longest time between two acknowledged writes.
func longestGap(acks []ack) time.Duration {
	sort.Slice(acks, func(i, j int) bool { return acks[i].at.Before(acks[j].at) })
	var gap time.Duration
	for i := 1; i < len(acks); i++ {
		gap = max(gap, acks[i].at.Sub(acks[i-1].at))
	}
	return gap
}

// partition cuts a pod's network namespace off: nothing in or out on its
// eth0 (its loopback keeps working, so it goes on running). The returned
// func heals it.
func partition(t *testing.T, netns string) func() {
	t.Helper()
	rules := [][]string{{"INPUT", "-i", "eth0", "-j", "DROP"}, {"OUTPUT", "-o", "eth0", "-j", "DROP"}}
	for _, r := range rules {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", netns, "iptables", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("partitioning %s: %v\n%s", netns, err, out)
		}
	}
	healed := false
	heal := func() {
		if healed {
			return
		}
		healed = true
		for _, r := range rules {
			if out, err := exec.Command("ip", append([]string{"netns", "exec", netns, "iptables", "-D"}, r...)...).CombinedOutput(); err != nil {
				t.Errorf("healing %s: %v\n%s", netns, err, out)
			}
		}
	}
	t.Cleanup(heal)
	return heal
}

// killPod SIGKILLs every process in the pod's network namespace: its
// containers and everything they started.
func (e *sandboxEnv) killPod(t *testing.T, pod string) int {
	t.Helper()
	uid := e.mustKubectl("", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	var want syscall.Stat_t
	if err := syscall.Stat("/var/run/netns/hf-"+uid, &want); err != nil {
		t.Fatalf("the pod's network namespace: %v", err)
	}
	entries, _ := os.ReadDir("/proc")
	killed := 0
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", en.Name(), "ns/net"), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
	}
	if killed == 0 {
		t.Fatalf("no process of %s found", pod)
	}
	return killed
}

// ack is one acknowledged write: which server took it, on which timeline.
type ack struct {
	seq      int64
	at       time.Time
	server   string
	timeline int
}

// writer inserts one row at a time through a Service, reconnecting on any
// error, and records every acknowledged insert.
type writer struct {
	stopped chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	acks    []ack
}

func startWriter(t *testing.T, e *sandboxEnv, host string) *writer {
	w := &writer{stopped: make(chan struct{}), done: make(chan struct{})}
	seq := time.Now().UnixNano()
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for {
			select {
			case <-w.stopped:
				return
			default:
			}
			if conn == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c, err := e.connect(ctx, host)
				cancel()
				if err != nil {
					select { // pace the reconnects
					case <-w.stopped:
						return
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				conn = c
			}
			seq++
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var a ack
			err := conn.QueryRow(ctx, `INSERT INTO acks VALUES ($1, inet_server_addr()::text, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)
				RETURNING seq, server, timeline`, seq).Scan(&a.seq, &a.server, &a.timeline)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			a.at = time.Now()
			w.mu.Lock()
			w.acks = append(w.acks, a)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *writer) waitAcks(t *testing.T, n int) {
	t.Helper()
	from := w.count()
	poll(t, time.Minute, fmt.Sprintf("%d more acknowledged writes", n), func() error {
		if got := w.count() - from; got < n {
			return errorString(fmt.Sprintf("%d so far", got))
		}
		return nil
	})
}

// firstAckAfter is how long after at the first write was acknowledged by
// server (the new primary): writes in flight at the fault may still be
// acknowledged by the old one.
func (w *writer) firstAckAfter(t *testing.T, at time.Time, server string, timeout time.Duration) time.Duration {
	t.Helper()
	var d time.Duration
	poll(t, timeout, "a write acknowledged by "+server+" after the fault", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range w.acks {
			if a.at.After(at) && sameServer(a.server, server) {
				d = a.at.Sub(at)
				return nil
			}
		}
		return errorString("none yet")
	})
	return d
}

func (w *writer) stop() []ack {
	close(w.stopped)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

// checkAcks proves, from the new primary's table, that every acknowledged
// write survived, and from the acknowledgements that the old primary took
// no write once the new one had.
func (e *sandboxEnv) checkAcks(t *testing.T, promoted, old string, acks []ack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := e.connect(ctx, e.podIP(t, promoted))
	if err != nil {
		t.Fatalf("connecting to the new primary: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT seq FROM acks")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for rows.Next() {
		var s int64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		have[s] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var lost []int64
	for _, a := range acks {
		if !have[a.seq] {
			lost = append(lost, a.seq)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged writes are missing from the new primary (of %d): %v", len(lost), len(acks), lost)
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].at.Before(acks[j].at) })
	newIP := e.podIP(t, promoted)
	seenNew, maxTimeline := false, 0
	for _, a := range acks {
		if sameServer(a.server, newIP) {
			seenNew = true
		} else if seenNew {
			t.Errorf("write %d acknowledged by %s (timeline %d) after the new primary %s had taken writes", a.seq, a.server, a.timeline, promoted)
		}
		if a.timeline < maxTimeline {
			t.Errorf("write %d acknowledged on timeline %d after one on timeline %d", a.seq, a.timeline, maxTimeline)
		}
		maxTimeline = max(maxTimeline, a.timeline)
	}
	if !seenNew {
		t.Errorf("no write acknowledged by the new primary %s", promoted)
	}
	t.Logf("%d acknowledged writes, every one present on the new primary, none taken by another instance once it took writes; timelines up to %d; old primary %s", len(acks), maxTimeline, old)
}
