package postgrescluster

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

func healthyCluster(quorum int32, syncStandbys ...string) *holdfastv1.PostgresCluster {
	c := &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec:       holdfastv1.PostgresClusterSpec{Instances: 3, Failover: holdfastv1.FailoverSpec{UnreachableSeconds: 10, LeaseDurationSeconds: 6, RenewDeadlineSeconds: 4}},
		Status:     holdfastv1.PostgresClusterStatus{TargetPrimary: "demo-0", CurrentPrimary: "demo-0", Epoch: 1, SyncStandbys: syncStandbys},
	}
	if quorum > 0 {
		c.Spec.Synchronous = &holdfastv1.SynchronousSpec{Quorum: quorum}
	}
	return c
}

func runningPod(name, ip, role string) *corev1.Pod {
	p := podAt(name, ip, role)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "postgres", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	return p
}

func replicaView(name, ip, received string) view {
	r := reportOf(postgres.Replica, true)
	r.Postgres.ReceivedLSN, r.Postgres.ReplayedLSN = received, received
	return view{Pod: runningPod(name, ip, "replica"), Report: r}
}

func TestFailover(t *testing.T) {
	t.Run("a primary whose pod is gone is replaced at once by the most advanced replica", func(t *testing.T) {
		p := decide(healthyCluster(0), []view{
			replicaView("demo-1", "10.0.0.6", "0/3000060"),
			replicaView("demo-2", "10.0.0.7", "0/3000100"),
		}, now, time.Hour, "")
		if p.TargetPrimary != "demo-2" || p.Epoch != 2 || p.CurrentPrimary != "" {
			t.Fatalf("target %q epoch %d current %q, want demo-2, 2, none", p.TargetPrimary, p.Epoch, p.CurrentPrimary)
		}
		if d := p.Desired["demo-2"]; d.Role != postgres.Primary || d.Epoch != 2 {
			t.Errorf("demo-2 told %+v, want primary at epoch 2", d)
		}
		if d := p.Desired["demo-1"]; d.Role != postgres.Replica || d.PrimaryHost != "10.0.0.7" || d.Epoch != 2 {
			t.Errorf("demo-1 told %+v, want to follow demo-2 at epoch 2", d)
		}
		f := p.Operation
		if f == nil || f.Kind != holdfastv1.OperationFailover || f.Phase != holdfastv1.PhasePromoting || f.From != "demo-0" || f.To != "demo-2" ||
			!strings.Contains(f.Reason, "pod is gone") || f.RequiredLSN != "0/3000100" || !f.PhaseDeadline.Time.Equal(now.Add(promoteTimeout)) {
			t.Errorf("operation %+v", f)
		}
	})

	t.Run("a primary whose container is not running is replaced at once", func(t *testing.T) {
		dead := runningPod("demo-0", "10.0.0.5", "primary")
		dead.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
		p := decide(healthyCluster(0), []view{{Pod: dead, Report: nil}, replicaView("demo-1", "10.0.0.6", "0/5000000")}, now, time.Hour, "")
		if p.TargetPrimary != "demo-1" {
			t.Fatalf("target %q, want demo-1", p.TargetPrimary)
		}
		if role, ok := p.Roles["demo-0"]; !ok || role != "" {
			t.Errorf("the replaced primary keeps its label (%q, %v)", role, ok)
		}
	})

	t.Run("a silent primary is replaced only after unreachableSeconds", func(t *testing.T) {
		c := healthyCluster(0)
		views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: nil}, replicaView("demo-1", "10.0.0.6", "0/5000000")}
		p := decide(c, views, now, time.Hour, "")
		if p.TargetPrimary != "demo-0" || p.PrimaryFailingSince == nil || !p.PrimaryFailingSince.Time.Equal(now) || p.Waiting == "" {
			t.Fatalf("first look: target %q since %v waiting %q", p.TargetPrimary, p.PrimaryFailingSince, p.Waiting)
		}
		c.Status.PrimaryFailingSince = p.PrimaryFailingSince
		if p := decide(c, views, now.Add(9*time.Second), time.Hour, ""); p.TargetPrimary != "demo-0" {
			t.Fatalf("replaced after 9 s of 10")
		}
		p = decide(c, views, now.Add(10*time.Second), time.Hour, "")
		if p.TargetPrimary != "demo-1" || !p.Operation.StartedAt.Time.Equal(now) {
			t.Fatalf("after 10 s: target %q failover %+v", p.TargetPrimary, p.Operation)
		}
		// The primary answering again before the delay clears the clock.
		c.Status.PrimaryFailingSince = &metav1.Time{Time: now}
		views[0].Report = reportOf(postgres.Primary, true)
		if p := decide(c, views, now.Add(5*time.Second), time.Hour, ""); p.PrimaryFailingSince != nil || p.TargetPrimary != "demo-0" {
			t.Errorf("a recovered primary: since %v target %q", p.PrimaryFailingSince, p.TargetPrimary)
		}
	})

	t.Run("a replica whose receiver restarted on a new timeline is judged by what it replayed", func(t *testing.T) {
		// demo-1's receiver counts from the start of its segment again,
		// but it replayed further than demo-2 received.
		restarted := replicaView("demo-1", "10.0.0.6", "0/5000000")
		restarted.Report.Postgres.ReplayedLSN = "0/502B580"
		p := decide(healthyCluster(0), []view{restarted, replicaView("demo-2", "10.0.0.7", "0/5010000")}, now, time.Hour, "")
		if p.TargetPrimary != "demo-1" {
			t.Fatalf("promoted %q, want demo-1, whose WAL reaches furthest", p.TargetPrimary)
		}
	})

	t.Run("a silent primary's silence counts from its last answer", func(t *testing.T) {
		c := healthyCluster(0)
		lastAnswer := now.Add(-3 * time.Second)
		views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), LastAnswer: lastAnswer}, replicaView("demo-1", "10.0.0.6", "0/5000000")}
		p := decide(c, views, now, time.Hour, "")
		if p.PrimaryFailingSince == nil || !p.PrimaryFailingSince.Time.Equal(lastAnswer) {
			t.Fatalf("failing since %v, want its last answer %v", p.PrimaryFailingSince, lastAnswer)
		}
		c.Status.PrimaryFailingSince = p.PrimaryFailingSince
		if p := decide(c, views, lastAnswer.Add(10*time.Second), time.Hour, ""); p.TargetPrimary != "demo-1" {
			t.Fatalf("10 s after its last answer: target %q, want demo-1", p.TargetPrimary)
		}
		// Its lease still decides: a primary renewing it is never replaced.
		if p := decide(c, views, lastAnswer.Add(10*time.Second), 2*time.Second, ""); p.TargetPrimary != "demo-0" {
			t.Fatalf("replaced while its lease was renewed 2 s ago")
		}
	})

	t.Run("with synchronous replication only a synchronous standby is promoted", func(t *testing.T) {
		c := healthyCluster(1, "demo-1", "demo-2")
		p := decide(c, []view{
			replicaView("demo-1", "10.0.0.6", "0/3000000"),
			replicaView("demo-2", "10.0.0.7", "0/4000000"),
		}, now, time.Hour, "")
		if p.TargetPrimary != "demo-2" {
			t.Fatalf("target %q, want demo-2", p.TargetPrimary)
		}
		c.Status.SyncStandbys = []string{"demo-1"}
		if p := decide(c, []view{replicaView("demo-1", "10.0.0.6", "0/3000000"), replicaView("demo-2", "10.0.0.7", "0/4000000")}, now, time.Hour, ""); p.TargetPrimary != "demo-1" {
			t.Errorf("target %q, want demo-1, the only synchronous standby", p.TargetPrimary)
		}
	})

	t.Run("with too few synchronous standbys answering, failover waits and says why", func(t *testing.T) {
		c := healthyCluster(1, "demo-1", "demo-2")
		c.Spec.Instances = 3
		p := decide(c, []view{replicaView("demo-1", "10.0.0.6", "0/3000000")}, now, time.Hour, "")
		// ANY 1 (demo-1, demo-2): a commit may be on demo-2 alone.
		if p.TargetPrimary != "demo-0" || !strings.Contains(p.Blocked, "synchronous standbys") {
			t.Fatalf("target %q blocked %q", p.TargetPrimary, p.Blocked)
		}
		if p := decide(c, nil, now, time.Hour, ""); !strings.Contains(p.Blocked, "synchronous") {
			t.Errorf("no replica at all: blocked %q", p.Blocked)
		}
	})

	t.Run("the failover completes when the new primary reports at the new epoch", func(t *testing.T) {
		c := healthyCluster(0)
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationFailover, "demo-0", "demo-1", now)
		promoted := reportOf(postgres.Primary, true)
		promoted.Desired.Epoch = 2
		p := decide(c, []view{{Pod: runningPod("demo-1", "10.0.0.6", ""), Report: promoted}, replicaView("demo-2", "10.0.0.7", "0/1")}, now.Add(3*time.Second), time.Hour, "")
		if p.CurrentPrimary != "demo-1" || p.Operation != nil || len(p.History) != 1 {
			t.Fatalf("current %q operation %+v history %+v", p.CurrentPrimary, p.Operation, p.History)
		}
		if h := p.History[0]; h.Kind != holdfastv1.OperationFailover || h.Outcome != holdfastv1.OutcomeSucceeded || h.To != "demo-1" ||
			h.FinishedAt.Sub(now) != 3*time.Second || h.Duration != "3s" {
			t.Errorf("history %+v", h)
		}
		if p.Roles["demo-1"] != holdfastv1.RolePrimary {
			t.Errorf("the new primary is not labelled: %v", p.Roles)
		}
	})

	t.Run("bootstrap is not a failover", func(t *testing.T) {
		c := healthyCluster(0)
		c.Status.CurrentPrimary = ""
		if p := decide(c, []view{replicaView("demo-1", "10.0.0.6", "0/1")}, now, time.Hour, ""); p.TargetPrimary != "demo-0" || p.Operation != nil {
			t.Errorf("target %q operation %+v", p.TargetPrimary, p.Operation)
		}
	})
}

func TestParseLSN(t *testing.T) {
	if parseLSN("16/B374D848") != 0x16<<32|0xB374D848 || parseLSN("") != 0 || parseLSN("x/1") != 0 {
		t.Error("parseLSN")
	}
}

func TestSwitchover(t *testing.T) {
	asked := func(to string) *holdfastv1.PostgresCluster {
		c := healthyCluster(0)
		c.Annotations = map[string]string{holdfastv1.AnnotationSwitchoverTo: to}
		return c
	}
	primaryView := func(epoch int64) view {
		r := reportOf(postgres.Primary, true)
		r.Desired.Epoch = epoch
		return view{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: r}
	}

	t.Run("the old primary is told to step down first; the new one waits for it", func(t *testing.T) {
		// The old primary renewed its lease a moment ago.
		p := decide(asked("demo-1"), []view{primaryView(1), replicaView("demo-1", "10.0.0.6", "0/1"), replicaView("demo-2", "10.0.0.7", "0/1")}, now, 0, "")
		if op := p.Operation; p.TargetPrimary != "demo-1" || p.Epoch != 2 || op == nil || op.Kind != holdfastv1.OperationSwitchover || op.From != "demo-0" || op.Epoch != 2 {
			t.Fatalf("target %q epoch %d operation %+v", p.TargetPrimary, p.Epoch, op)
		}
		if d := p.Desired["demo-0"]; d.Role != postgres.Replica || d.PrimaryHost != "10.0.0.6" || d.Epoch != 2 {
			t.Errorf("old primary told %+v, want to follow demo-1 at epoch 2", d)
		}
		if d, ok := p.Desired["demo-1"]; ok {
			t.Errorf("demo-1 told %+v while the old primary still takes writes", d)
		}
	})

	t.Run("an old primary that never reports stepping down is passed over once the lease lapses", func(t *testing.T) {
		c := asked("demo-1")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
		views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: nil}, replicaView("demo-1", "10.0.0.6", "0/1")}
		if p := decide(c, views, now, 2*time.Second, ""); p.Desired["demo-1"].Role == postgres.Primary {
			t.Errorf("demo-1 promoted while the old primary may still hold its lease")
		}
		if p := decide(c, views, now, 6*time.Second, ""); p.Desired["demo-1"].Role != postgres.Primary {
			t.Errorf("demo-1 not promoted after the lease lapsed: %+v", p.Desired["demo-1"])
		}
	})

	t.Run("once the old primary has stopped at the new epoch, the new one is promoted", func(t *testing.T) {
		c := asked("demo-1")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
		stopped := reportOf("", false)
		stopped.Desired = &instanceapi.Desired{Role: postgres.Replica, Epoch: 2}
		p := decide(c, []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: stopped}, replicaView("demo-1", "10.0.0.6", "0/1")}, now, time.Hour, "")
		if d := p.Desired["demo-1"]; d.Role != postgres.Primary || d.Epoch != 2 {
			t.Fatalf("demo-1 told %+v, want primary at epoch 2", d)
		}
		if p.Roles["demo-0"] != holdfastv1.RolePrimary {
			t.Errorf("the old primary lost its label before the new one could take it: %v", p.Roles)
		}
		// The label moves in the look that finds the new primary promoted.
		promoted := reportOf(postgres.Primary, true)
		promoted.Desired.Epoch = 2
		p = decide(c, []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: stopped}, {Pod: runningPod("demo-1", "10.0.0.6", "replica"), Report: promoted}}, now, time.Hour, "")
		if p.Roles["demo-0"] != "" || p.Roles["demo-1"] != holdfastv1.RolePrimary || p.CurrentPrimary != "demo-1" {
			t.Errorf("after the promotion: roles %v current %q", p.Roles, p.CurrentPrimary)
		}
	})

	t.Run("an old primary that says it demoted at the new epoch counts as stopped while it starts as a standby", func(t *testing.T) {
		c := asked("demo-1")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
		starting := reportOf("", false)
		starting.Running = true // postgres runs, not answering yet: no role
		starting.Desired = &instanceapi.Desired{Role: postgres.Replica, Epoch: 2}
		// The lease was renewed a moment ago: only the report can release the promotion.
		views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: starting}, replicaView("demo-1", "10.0.0.6", "0/1")}
		if p := decide(c, views, now, 0, ""); p.Desired["demo-1"].Role == postgres.Primary {
			t.Errorf("demo-1 promoted while demo-0 runs a postgres of no known role and has not said it demoted")
		}
		starting.DemotedAtEpoch = 2
		if p := decide(c, views, now, 0, ""); p.Desired["demo-1"].Role != postgres.Primary {
			t.Errorf("demo-0 demoted at epoch 2, yet demo-1 is told %+v", p.Desired["demo-1"])
		}
		starting.DemotedAtEpoch = 1 // an earlier switchover's
		if p := decide(c, views, now, 0, ""); p.Desired["demo-1"].Role == postgres.Primary {
			t.Errorf("a demotion at an earlier epoch counted for this one")
		}
	})

	t.Run("a target that has not received all the old primary wrote is not promoted, however long it takes", func(t *testing.T) {
		c := asked("demo-1")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
		stopped := reportOf("", false)
		stopped.Desired = &instanceapi.Desired{Role: postgres.Replica, Epoch: 2}
		stopped.DemotedAtEpoch, stopped.DemotedAtLSN = 2, "0/E00BD38"
		target := replicaView("demo-1", "10.0.0.6", "0/E00BCA0")
		views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: stopped}, target}
		// Long past the lease: the report, not the time, says where the writes end.
		p := decide(c, views, now, time.Hour, "")
		if p.Desired["demo-1"].Role == postgres.Primary {
			t.Fatalf("demo-1 promoted with WAL up to 0/E00BCA0, short of 0/E00BD38 where demo-0 stopped")
		}
		if !strings.Contains(p.Waiting, "0/E00BD38") {
			t.Errorf("the wait is not explained: %q", p.Waiting)
		}
		target.Report.Postgres.ReceivedLSN = "0/E00BD38"
		if p := decide(c, views, now, 0, ""); p.Desired["demo-1"].Role != postgres.Primary {
			t.Errorf("demo-1 has received all demo-0 wrote, yet is told %+v", p.Desired["demo-1"])
		}
		// Promoted, it reports no received position: it stays the primary.
		promoted := reportOf(postgres.Primary, true)
		promoted.Desired.Epoch = 2
		views[1] = view{Pod: runningPod("demo-1", "10.0.0.6", "replica"), Report: promoted}
		if p := decide(c, views, now, 0, ""); p.Desired["demo-1"].Role != postgres.Primary || p.CurrentPrimary != "demo-1" {
			t.Errorf("once promoted, demo-1 is told %+v, current primary %q", p.Desired["demo-1"], p.CurrentPrimary)
		}
	})

	t.Run("the instance being promoted keeps its replica label until it takes the primary one", func(t *testing.T) {
		c := asked("demo-1")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
		stopped := reportOf("", false)
		stopped.Desired = &instanceapi.Desired{Role: postgres.Replica, Epoch: 2}
		promoting := replicaView("demo-1", "10.0.0.6", "0/1")
		promoting.Report.Ready = false // told to be the primary, not promoted yet
		p := decide(c, []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: stopped}, promoting}, now, 0, "")
		if p.Roles["demo-1"] != holdfastv1.RoleReplica || p.Roles["demo-0"] != holdfastv1.RolePrimary {
			t.Errorf("while promoting: roles %v, want demo-1 still replica and demo-0 still primary (one Service change, not two)", p.Roles)
		}
	})

	t.Run("a switchover to an instance that is not a ready replica is refused", func(t *testing.T) {
		lagging := replicaView("demo-1", "10.0.0.6", "0/1")
		lagging.Report.Ready = false
		for name, views := range map[string][]view{
			"demo-1": {primaryView(1), lagging},
			"demo-7": {primaryView(1)},
		} {
			p := decide(asked(name), views, now, time.Hour, "")
			if p.TargetPrimary != "demo-0" || !strings.Contains(p.SwitchoverRefused, name) {
				t.Errorf("switchover to %s: target %q refused %q", name, p.TargetPrimary, p.SwitchoverRefused)
			}
		}
	})
}

func TestSyncQuorumHoldsWhenStandbysFail(t *testing.T) {
	c := healthyCluster(1)
	r := reportOf(postgres.Primary, true)
	r.Desired.SyncQuorum = 1
	// Both standbys are silent: writes must wait for them, not go async.
	p := decide(c, []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: r}, {Pod: runningPod("demo-1", "10.0.0.6", "replica"), Report: nil}}, now, time.Hour, "")
	if d := p.Desired["demo-0"]; d.SyncQuorum != 1 {
		t.Errorf("sync quorum %d with the standbys down, want it kept at 1", d.SyncQuorum)
	}
}

func TestASilentPrimaryWithALiveLeaseIsNotReplaced(t *testing.T) {
	c := healthyCluster(0)
	c.Status.PrimaryFailingSince = &metav1.Time{Time: now}
	views := []view{{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: nil}, replicaView("demo-1", "10.0.0.6", "0/5000000")}
	// The operator cannot reach it, but it still renews its lease: it is
	// cut off from the operator, not from the API server, and may take writes.
	p := decide(c, views, now.Add(time.Minute), 2*time.Second, "")
	if p.TargetPrimary != "demo-0" || !strings.Contains(p.Waiting, "lease") {
		t.Fatalf("target %q waiting %q", p.TargetPrimary, p.Waiting)
	}
	if p := decide(c, views, now.Add(time.Minute), 6*time.Second, ""); p.TargetPrimary != "demo-1" {
		t.Fatalf("lease expired: target %q, want demo-1", p.TargetPrimary)
	}
}

func TestLeaseWatchCountsFromTheOperatorsOwnSightings(t *testing.T) {
	var w leaseWatch
	key := types.NamespacedName{Namespace: "ns", Name: "demo"}
	l := &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("demo-0"), RenewTime: &metav1.MicroTime{Time: now}}}
	if q := w.quietFor(key, l, now); q != 0 {
		t.Errorf("first sighting: quiet %s, want 0", q)
	}
	if q := w.quietFor(key, l, now.Add(3*time.Second)); q != 3*time.Second {
		t.Errorf("unchanged for 3 s: quiet %s", q)
	}
	renewed := l.DeepCopy()
	renewed.Spec.RenewTime = &metav1.MicroTime{Time: now.Add(-time.Hour)} // a skewed clock still counts as a renewal
	if q := w.quietFor(key, renewed, now.Add(4*time.Second)); q != 0 {
		t.Errorf("after a renewal: quiet %s, want 0", q)
	}
}

func TestAnswerLog(t *testing.T) {
	var l answerLog
	if last, silent := l.lookup("a"); !last.IsZero() || silent {
		t.Fatalf("unknown pod: last %v silent %v", last, silent)
	}
	l.record("a", &instanceapi.Report{}, nil, now)
	l.record("a", nil, errors.New("timeout"), now.Add(time.Second))
	if last, silent := l.lookup("a"); !last.Equal(now) || !silent {
		t.Fatalf("after an answer and a silence: last %v silent %v", last, silent)
	}
	l.record("b", &instanceapi.Report{}, nil, now.Add(11*time.Minute))
	if last, _ := l.lookup("a"); !last.IsZero() {
		t.Errorf("a pod not asked for 10 minutes is still remembered")
	}
}

func TestRoleChangeUnderWayIsBounded(t *testing.T) {
	c := healthyCluster(0)
	if roleChangeUnderWay(c, now) {
		t.Fatal("a settled cluster counted as changing")
	}
	c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
	if !roleChangeUnderWay(c, now.Add(time.Second)) {
		t.Error("a switchover started a second ago is not under way")
	}
	if roleChangeUnderWay(c, now.Add(fastPathLimit)) {
		t.Error("a switchover stuck for the whole limit still skips the full reconcile")
	}
	c.Status.Operation = nil
	if roleChangeUnderWay(c, now.Add(2*time.Second)) {
		t.Error("a completed switchover is still under way")
	}
}

// promoting is an operation of kind in its Promoting phase, begun at started.
func promoting(kind holdfastv1.OperationKind, from, to string, started time.Time) *holdfastv1.Operation {
	timeout := promoteTimeout
	if kind != holdfastv1.OperationFailover {
		timeout = switchoverTimeout
	}
	return &holdfastv1.Operation{Kind: kind, Phase: holdfastv1.PhasePromoting, From: from, To: to, Epoch: 2,
		StartedAt: metav1.MicroTime{Time: started}, PhaseStartedAt: metav1.MicroTime{Time: started},
		PhaseDeadline: &metav1.MicroTime{Time: started.Add(timeout)}}
}

// A primary the operator cannot reach may still take writes, without the
// API server, on its replicas' promises: no failover is started while
// they report one, and a target that refuses its order for one is waited
// for, not dropped.
func TestFailoverRespectsFailsafePromises(t *testing.T) {
	promised := func(v view, to string, ms int64) view {
		v.Report.Promise = &instanceapi.PromiseReport{Primary: to, Epoch: 1, RemainingMillis: ms}
		return v
	}
	silent := view{Pod: runningPod("demo-0", "10.0.0.5", "primary")}
	c := healthyCluster(0)
	c.Status.PrimaryFailingSince = &metav1.Time{Time: now.Add(-time.Minute)}
	p := decide(c, []view{silent, promised(replicaView("demo-1", "10.0.0.6", "0/3000060"), "demo-0", 3000),
		replicaView("demo-2", "10.0.0.7", "0/3000100")}, now, time.Hour, "")
	if p.Operation != nil || p.TargetPrimary != "demo-0" || !strings.Contains(p.Waiting, "failsafe promises from demo-1") {
		t.Fatalf("a silent primary holding a promise: operation %+v waiting %q", p.Operation, p.Waiting)
	}
	p = decide(c, []view{silent, promised(replicaView("demo-1", "10.0.0.6", "0/3000060"), "demo-0", 0),
		replicaView("demo-2", "10.0.0.7", "0/3000100")}, now, time.Hour, "")
	if op := p.Operation; op == nil || op.Kind != holdfastv1.OperationFailover || op.To != "demo-2" {
		t.Fatalf("the promise has lapsed: operation %+v waiting %q", op, p.Waiting)
	}

	c = healthyCluster(0)
	c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-2", "", 2
	c.Status.Operation = promoting(holdfastv1.OperationFailover, "demo-0", "demo-2", now)
	target := promised(replicaView("demo-2", "10.0.0.7", "0/3000100"), "demo-0", 2000)
	p = decide(c, []view{replicaView("demo-1", "10.0.0.6", "0/3000100"), target}, now.Add(promoteTimeout), time.Hour, "")
	if p.TargetPrimary != "demo-2" || !strings.Contains(p.Waiting, "promised demo-0") {
		t.Errorf("a target refusing for its promise: target %q waiting %q", p.TargetPrimary, p.Waiting)
	}
	if d := p.Desired["demo-2"]; d.Role != postgres.Primary || d.Epoch != 2 {
		t.Errorf("the order is not sent again: %+v", d)
	}
	if !strings.Contains(p.Operation.Reason, "demo-2 refuses the promotion: it promised demo-0") {
		t.Errorf("the refusal is not in the record: %q", p.Operation.Reason)
	}
	c.Status.Operation = p.Operation
	if again := decide(c, []view{replicaView("demo-1", "10.0.0.6", "0/3000100"), target}, now.Add(promoteTimeout+time.Second), time.Hour, ""); strings.Count(again.Operation.Reason, refusesForPromise) != 1 {
		t.Errorf("the refusal is said more than once: %q", again.Operation.Reason)
	}
}

// TestAPrimaryWhoseContainerCameBackIsNotDead: the pod's status may still
// say its container ended while a new process in it has renewed the lease
// and takes writes again; only a lease renewed no later than a second
// after the container's end (finishedAt is kept to the second) is the old
// process's own.
func TestAPrimaryWhoseContainerCameBackIsNotDead(t *testing.T) {
	ended := now.Truncate(time.Second)
	for _, tc := range []struct {
		name    string
		holds   bool
		renewed time.Time
		want    health
	}{
		{"renewed before its container ended", true, ended.Add(-300 * time.Millisecond), dead},
		{"renewed within the second finishedAt rounds off", true, ended.Add(900 * time.Millisecond), dead},
		{"renewed after that: a new process holds the lease", true, ended.Add(1500 * time.Millisecond), failing},
		{"a lease that names another instance says nothing of this one", false, ended.Add(5 * time.Second), dead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := runningPod("demo-0", "10.0.0.5", "primary")
			pod.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, FinishedAt: metav1.Time{Time: ended}}}
			v := view{Pod: pod, HoldsLease: tc.holds, LeaseRenewed: tc.renewed}
			if h, why := judgePrimary(&v); h != tc.want {
				t.Errorf("judged %v (%s), want %v", h, why, tc.want)
			}
			// The same once the container waits to restart: the end is
			// then its last termination.
			pod.Status.ContainerStatuses[0].LastTerminationState = pod.Status.ContainerStatuses[0].State
			pod.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
			if h, why := judgePrimary(&v); h != tc.want {
				t.Errorf("while it waits to restart: judged %v (%s), want %v", h, why, tc.want)
			}
		})
	}
}

// TestAFailoverIsGivenUpWhenTheOldPrimaryRenewsFirst: a failover whose
// first look could not hand the lease to its target (the old primary,
// restarted, renewed it first) must not hand it over later, while the old
// primary may take writes on it.
func TestAFailoverIsGivenUpWhenTheOldPrimaryRenewsFirst(t *testing.T) {
	begun := func() *holdfastv1.PostgresCluster {
		c := healthyCluster(0)
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationFailover, "demo-0", "demo-1", now)
		return c
	}
	back := view{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true), HoldsLease: true, LeaseRenewed: now}
	p := decide(begun(), []view{back, replicaView("demo-1", "10.0.0.6", "0/3000100")}, now.Add(time.Second), 200*time.Millisecond, "")
	if p.Operation != nil || p.TargetPrimary != "demo-0" || p.CurrentPrimary != "demo-0" {
		t.Fatalf("operation %+v target %q current %q: want the failover given up, demo-0 primary", p.Operation, p.TargetPrimary, p.CurrentPrimary)
	}
	last := p.History[len(p.History)-1]
	if last.Kind != holdfastv1.OperationFailover || last.Outcome != holdfastv1.OutcomeFailed || !strings.Contains(last.Reason, "renewed the primary lease before it was handed to demo-1") {
		t.Errorf("record %+v", last)
	}
	if d := p.Desired["demo-0"]; d.Role != postgres.Primary || d.Epoch != 2 {
		t.Errorf("demo-0 told %+v, want primary at epoch 2", d)
	}
	if d, ok := p.Desired["demo-1"]; ok && d.Role == postgres.Primary {
		t.Errorf("demo-1 still told to promote: %+v", d)
	}

	// Still dead, the old primary does not stop the failover: the lease
	// goes to the target on this look.
	gone := runningPod("demo-0", "10.0.0.5", "primary")
	gone.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, FinishedAt: metav1.Time{Time: now}}}
	p = decide(begun(), []view{{Pod: gone, HoldsLease: true, LeaseRenewed: now.Add(-time.Second)}, replicaView("demo-1", "10.0.0.6", "0/3000100")},
		now.Add(time.Second), time.Second, "")
	if op := p.Operation; op == nil || p.TargetPrimary != "demo-1" {
		t.Errorf("a dead old primary: operation %+v target %q", op, p.TargetPrimary)
	}
}

// The primary is told where its replicas' managers answer, and how long
// a promise must hold, so that it can ask for promises without the operator.
func TestThePrimaryLearnsWhomToAskForPromises(t *testing.T) {
	primary := view{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true)}
	unplaced := view{Pod: runningPod("demo-2", "", "")}
	p := decide(healthyCluster(0), []view{primary, replicaView("demo-1", "10.0.0.6", "0/3000060"), unplaced}, now, 0, "")
	d := p.Desired["demo-0"]
	if len(d.ReplicaHosts) != 1 || d.ReplicaHosts["demo-1"] != "10.0.0.6" || !slices.Equal(d.Replicas, []string{"demo-1", "demo-2"}) {
		t.Errorf("replicas %v at %v: want both required, demo-1 at its address, demo-2 (no address) unreachable", d.Replicas, d.ReplicaHosts)
	}
	if d.Lease == nil || d.Lease.DurationSeconds != 6 || d.Lease.RenewDeadlineSeconds != 4 {
		t.Errorf("lease terms %+v", d.Lease)
	}
}

// A failsafe period the primary reports as ended goes into the history
// once, with the replicas that promised.
func TestFailsafePeriodIsRecordedOnce(t *testing.T) {
	since := now.Add(-time.Minute).Add(1234 * time.Nanosecond)
	ended := since.Add(30 * time.Second)
	primary := view{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true)}
	primary.Report.Failsafe = &instanceapi.FailsafeReport{Since: since, Promised: []string{"demo-1", "demo-2"}, Epoch: 1}
	views := []view{primary, replicaView("demo-1", "10.0.0.6", "0/3000060"), replicaView("demo-2", "10.0.0.7", "0/3000060")}
	c := healthyCluster(0)
	if p := decide(c, views, now, 0, ""); len(p.History) != 0 {
		t.Fatalf("a failsafe period under way was recorded: %+v", p.History)
	}
	primary.Report.Failsafe.Ended = &ended
	p := decide(c, views, now, 0, "")
	if len(p.History) != 1 {
		t.Fatalf("history %+v", p.History)
	}
	rec := p.History[0]
	if rec.Kind != holdfastv1.OperationFailsafe || rec.From != "demo-0" || rec.Duration != "30s" || !slices.Equal(rec.Promised, []string{"demo-1", "demo-2"}) ||
		!strings.Contains(rec.Reason, "promises from demo-1, demo-2") || len(p.Notes) != 1 || p.Notes[0].reason != "FailsafeEnded" {
		t.Errorf("record %+v notes %+v", rec, p.Notes)
	}
	// Stored with microseconds, as status keeps it; the next look sees it.
	rec.StartedAt.Time = rec.StartedAt.Time.Truncate(time.Microsecond)
	c.Status.History = []holdfastv1.OperationRecord{rec}
	if p := decide(c, views, now.Add(time.Second), 0, ""); len(p.History) != 1 {
		t.Errorf("recorded twice: %+v", p.History)
	}
}
