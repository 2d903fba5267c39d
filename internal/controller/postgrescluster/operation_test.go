package postgrescluster

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// TestFailoverStep: a failover whose target does not become primary moves
// on to the next eligible replica, and only when that is safe.
func TestFailoverStep(t *testing.T) {
	failing := func() *holdfastv1.PostgresCluster {
		c := healthyCluster(1, "demo-1", "demo-2")
		c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
		c.Status.Operation = promoting(holdfastv1.OperationFailover, "demo-0", "demo-1", now)
		c.Status.Operation.RequiredLSN = "0/3000100"
		return c
	}
	frozen := view{Pod: runningPod("demo-1", "10.0.0.6", "replica")} // running, silent
	for _, tc := range []struct {
		name       string
		views      []view
		at         time.Duration // after the phase started
		leaseQuiet time.Duration
		target     string // "" : unchanged (demo-1)
		says       string // in Waiting or Blocked
	}{
		{name: "within its deadline the target is waited for",
			views: []view{frozen, replicaView("demo-2", "10.0.0.7", "0/3000100")}, at: 5 * time.Second, leaseQuiet: time.Hour},
		{name: "past its deadline, a silent target whose lease lapsed is dropped for the next replica",
			views: []view{frozen, replicaView("demo-2", "10.0.0.7", "0/3000100")}, at: promoteTimeout, leaseQuiet: 6 * time.Second, target: "demo-2"},
		{name: "past its deadline, a target that renews its lease is alive and may take writes: it is not dropped",
			views: []view{frozen, replicaView("demo-2", "10.0.0.7", "0/3000100")}, at: promoteTimeout, leaseQuiet: time.Second, says: "lease was renewed"},
		{name: "a target whose pod is gone is dropped at once",
			views: []view{replicaView("demo-2", "10.0.0.7", "0/3000100")}, at: time.Second, leaseQuiet: 0, target: "demo-2"},
		{name: "a replica with less WAL than the first target had may lack acknowledged writes: blocked",
			views: []view{frozen, replicaView("demo-2", "10.0.0.7", "0/3000000")}, at: promoteTimeout, leaseQuiet: time.Hour, says: "received less WAL than 0/3000100"},
		{name: "the failed primary is never a later target",
			views: []view{frozen, replicaView("demo-0", "10.0.0.5", "0/3000100")}, at: promoteTimeout, leaseQuiet: time.Hour, says: "no healthy replica"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := failing()
			p := decide(c, tc.views, now.Add(tc.at), tc.leaseQuiet, "")
			want := tc.target
			if want == "" {
				want = "demo-1"
			}
			if p.TargetPrimary != want {
				t.Fatalf("target %q, want %s (waiting %q blocked %q)", p.TargetPrimary, want, p.Waiting, p.Blocked)
			}
			if tc.says != "" && !strings.Contains(p.Waiting+p.Blocked, tc.says) {
				t.Errorf("waiting %q blocked %q, want %q", p.Waiting, p.Blocked, tc.says)
			}
			op := p.Operation
			if tc.target == "" {
				if p.Epoch != 2 || len(op.Dropped) != 0 {
					t.Errorf("epoch %d dropped %v: nothing should move", p.Epoch, op.Dropped)
				}
				return
			}
			if p.Epoch != 3 || op.Epoch != 3 || op.To != tc.target || !slices.Equal(op.Dropped, []string{"demo-1"}) ||
				!op.PhaseDeadline.Time.Equal(now.Add(tc.at+promoteTimeout)) || op.RequiredLSN != "0/3000100" {
				t.Errorf("epoch %d operation %+v", p.Epoch, op)
			}
			if d := p.Desired[tc.target]; d.Role != postgres.Primary || d.Epoch != 3 {
				t.Errorf("%s told %+v, want primary at epoch 3", tc.target, d)
			}
			if len(p.Notes) != 1 || p.Notes[0].reason != "FailoverRetargeted" {
				t.Errorf("notes %+v", p.Notes)
			}
		})
	}
}

func TestSwitchoverStep(t *testing.T) {
	c := healthyCluster(0)
	c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = "demo-1", "", 2
	c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-1", now)
	stopped := reportOf("", false)
	stopped.Desired = &instanceapi.Desired{Role: postgres.Replica, Epoch: 2}
	old := view{Pod: runningPod("demo-0", "10.0.0.5", "primary"), Report: stopped}
	stuck := replicaView("demo-1", "10.0.0.6", "0/1")

	if p := decide(c, []view{old, stuck}, now.Add(switchoverTimeout), time.Hour, ""); p.Operation == nil || !strings.Contains(p.Waiting, "has not become primary") {
		t.Errorf("a target that is up is waited for past the deadline: operation %+v waiting %q", p.Operation, p.Waiting)
	}
	p := decide(c, []view{old}, now.Add(switchoverTimeout), time.Hour, "")
	if p.Operation != nil || len(p.History) != 1 || p.History[0].Outcome != holdfastv1.OutcomeFailed || p.CurrentPrimary != "demo-1" {
		t.Fatalf("a target that is gone: operation %+v history %+v current %q", p.Operation, p.History, p.CurrentPrimary)
	}
	// From here the failover rules judge demo-1, the primary it was told to be.
	c.Status.Operation, c.Status.History, c.Status.CurrentPrimary = nil, p.History, "demo-1"
	p = decide(c, []view{old, replicaView("demo-2", "10.0.0.7", "0/1")}, now.Add(switchoverTimeout), time.Hour, "")
	if op := p.Operation; op == nil || op.Kind != holdfastv1.OperationFailover || op.From != "demo-1" {
		t.Errorf("then a failover: operation %+v", op)
	}
}

// rollingCluster is a healthy 3-instance cluster whose StatefulSet is at
// revision "new"; stale names the pods still at "old".
func rollingCluster(primary string, stale ...string) (*holdfastv1.PostgresCluster, []view) {
	c := healthyCluster(1, "demo-1", "demo-2")
	c.Status.TargetPrimary, c.Status.CurrentPrimary = primary, primary
	var views []view
	for i := range 3 {
		name := fmt.Sprintf("demo-%d", i)
		v := replicaView(name, fmt.Sprintf("10.0.0.%d", 5+i), "0/3000000")
		if name == primary {
			r := reportOf(postgres.Primary, true)
			v = view{Pod: runningPod(name, fmt.Sprintf("10.0.0.%d", 5+i), "primary"), Report: r}
		}
		v.Pod.UID = types.UID(name + "-uid")
		v.Pod.Labels[appsv1.ControllerRevisionHashLabelKey] = "new"
		if slices.Contains(stale, name) {
			v.Pod.Labels[appsv1.ControllerRevisionHashLabelKey] = "old"
		}
		views = append(views, v)
	}
	return c, views
}

// restarted is v's successor: a new pod at the current template, Ready
// (by its kubelet) for a while.
func restarted(v view) view {
	pod := v.Pod.DeepCopy()
	pod.UID += "-2"
	pod.Labels[appsv1.ControllerRevisionHashLabelKey] = "new"
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.Time{Time: now.Add(-time.Hour)}}}
	r := *v.Report
	return view{Pod: pod, Report: &r}
}

func TestRollingUpdateStep(t *testing.T) {
	t.Run("replicas go highest ordinal first, then a switchover, then the old primary", func(t *testing.T) {
		c, views := rollingCluster("demo-0", "demo-0", "demo-1", "demo-2")
		p := decide(c, views, now, time.Hour, "new")
		op := p.Operation
		if op == nil || op.Kind != holdfastv1.OperationRollingUpdate || op.Phase != holdfastv1.PhaseRestartingReplica ||
			op.Instance != "demo-2" || op.PodUID != "demo-2-uid" || p.Evict == nil || p.Evict.Name != "demo-2" {
			t.Fatalf("first step: operation %+v evict %v", op, p.Evict)
		}
		c.Status.Operation = op

		// Evicted until the pod goes; then waited for.
		if p := decide(c, views, now.Add(time.Second), time.Hour, "new"); p.Evict == nil || p.Evict.Name != "demo-2" {
			t.Errorf("the pod still there is not evicted again: %v", p.Evict)
		}
		gone := slices.DeleteFunc(slices.Clone(views), func(v view) bool { return v.Pod.Name == "demo-2" })
		if p := decide(c, gone, now.Add(time.Second), time.Hour, "new"); p.Evict != nil || p.Operation.Instance != "demo-2" {
			t.Errorf("while the pod is away: evict %v operation %+v", p.Evict, p.Operation)
		}
		back := restarted(views[2])
		back.Report.Ready = false
		views[2] = back
		if p := decide(c, views, now.Add(2*time.Second), time.Hour, "new"); p.Operation.Instance != "demo-2" || p.Evict != nil {
			t.Errorf("a successor not ready yet moved the update on: %+v", p.Operation)
		}
		views[2].Report.Ready = true
		p = decide(c, views, now.Add(3*time.Second), time.Hour, "new")
		if op := p.Operation; op.Instance != "demo-1" || !slices.Equal(op.Restarted, []string{"demo-2"}) || p.Evict.Name != "demo-1" {
			t.Fatalf("second step: operation %+v", op)
		}
		c.Status.Operation = p.Operation
		views[1] = restarted(views[1])
		p = decide(c, views, now.Add(4*time.Second), time.Hour, "new")
		op = p.Operation
		if op.Phase != holdfastv1.PhasePromoting || op.From != "demo-0" || op.To == "" || p.TargetPrimary != op.To || p.Epoch != 2 || p.Evict != nil {
			t.Fatalf("third step, the switchover: operation %+v target %q epoch %d", op, p.TargetPrimary, p.Epoch)
		}
		if d := p.Desired["demo-0"]; d.Role != postgres.Replica || d.Epoch != 2 {
			t.Errorf("the old primary told %+v, want to step down at epoch 2", d)
		}
		to := op.To
		c.Status.Operation, c.Status.TargetPrimary, c.Status.CurrentPrimary, c.Status.Epoch = op, to, to, 2
		p = decide(c, views, now.Add(5*time.Second), time.Hour, "new")
		if op := p.Operation; op.Phase != holdfastv1.PhaseRestartingReplica || op.Instance != "demo-0" || p.Evict != nil {
			t.Fatalf("fourth step, the old primary, not evicted while its -rw endpoint may linger: operation %+v evict %v", op, p.Evict)
		}
		c.Status.Operation = p.Operation
		if p := decide(c, views, now.Add(5*time.Second+endpointsSettle), time.Hour, "new"); p.Evict == nil || p.Evict.Name != "demo-0" {
			t.Fatalf("the old primary is not evicted %s later: %v", endpointsSettle, p.Evict)
		}
		views[0] = restarted(views[0])
		views[0].Report.Role = postgres.Replica
		p = decide(c, views, now.Add(8*time.Second), time.Hour, "new")
		if p.Operation != nil || len(p.History) != 1 {
			t.Fatalf("done: operation %+v history %+v", p.Operation, p.History)
		}
		if h := p.History[0]; h.Outcome != holdfastv1.OutcomeSucceeded || !slices.Equal(h.Restarted, []string{"demo-2", "demo-1", "demo-0"}) ||
			h.From != "demo-0" || h.To != to || h.Duration != "8s" {
			t.Errorf("history %+v", h)
		}
	})

	t.Run("settings pending a restart roll too, and a restarted instance is not restarted twice", func(t *testing.T) {
		c, views := rollingCluster("demo-0")
		views[1].Report.Postgres.PendingRestart = []string{"shared_buffers"}
		p := decide(c, views, now, time.Hour, "new")
		if op := p.Operation; op == nil || op.Instance != "demo-1" || !strings.Contains(op.Reason, "shared_buffers") {
			t.Fatalf("operation %+v", op)
		}
		c.Status.Operation = p.Operation
		views[1] = restarted(views[1]) // still says pending: it must not loop
		// (A new update for what is still pending starts no sooner than the next look.)
		if p := decide(c, views, now.Add(time.Second), time.Hour, "new"); p.Operation != nil || p.History[0].Outcome != holdfastv1.OutcomeSucceeded {
			t.Errorf("operation %+v history %+v", p.Operation, p.History)
		}
	})

	t.Run("an unready replica goes first; a ready one waits while another is down", func(t *testing.T) {
		c, views := rollingCluster("demo-0", "demo-1", "demo-2")
		views[1].Report.Ready = false
		if p := decide(c, views, now, time.Hour, "new"); p.Operation == nil || p.Operation.Instance != "demo-1" {
			t.Fatalf("operation %+v, want demo-1 (unready) first", p.Operation)
		}
		c, views = rollingCluster("demo-0", "demo-2")
		views[1].Report.Ready = false // current, but down
		if p := decide(c, views, now, time.Hour, "new"); p.Operation != nil {
			t.Errorf("a ready replica restarted while another is down: %+v", p.Operation)
		}
	})

	t.Run("a replica that does not come back halts the update, touching no other pod", func(t *testing.T) {
		c, views := rollingCluster("demo-0", "demo-0", "demo-1", "demo-2")
		p := decide(c, views, now, time.Hour, "new")
		c.Status.Operation = p.Operation
		views[2] = restarted(views[2])
		views[2].Report.Ready = false
		p = decide(c, views, now.Add(replicaRestartTimeout), time.Hour, "new")
		if p.Operation != nil || p.Evict != nil || len(p.History) != 1 || p.History[0].Outcome != holdfastv1.OutcomeFailed ||
			!strings.Contains(p.History[0].Reason, "demo-2 did not come back ready") {
			t.Fatalf("operation %+v evict %v history %+v", p.Operation, p.Evict, p.History)
		}
		c.Status.Operation, c.Status.History = nil, p.History
		if p := decide(c, views, now.Add(replicaRestartTimeout+time.Second), time.Hour, "new"); p.Operation != nil || p.Evict != nil {
			t.Errorf("after the halt another pod is touched: %+v", p.Operation)
		}
		st := computeStatus(c, &appsv1.StatefulSet{Status: appsv1.StatefulSetStatus{UpdateRevision: "new"}}, pods(views), reports(views), nil)
		if d := findCondition(st, holdfastv1.ConditionDegraded); d == nil || d.Reason != ReasonRollingUpdateHalted {
			t.Errorf("degraded %+v, want %s", d, ReasonRollingUpdateHalted)
		}
	})

	t.Run("primaryUpdateMethod Restart restarts the primary in place, and no failover replaces it meanwhile", func(t *testing.T) {
		c, views := rollingCluster("demo-0", "demo-0")
		c.Spec.PrimaryUpdateMethod = holdfastv1.PrimaryUpdateRestart
		p := decide(c, views, now, time.Hour, "new")
		if op := p.Operation; op == nil || op.Phase != holdfastv1.PhaseRestartingPrimary || p.Evict.Name != "demo-0" || p.TargetPrimary != "demo-0" {
			t.Fatalf("operation %+v", op)
		}
		c.Status.Operation = p.Operation
		gone := views[1:]
		if p := decide(c, gone, now.Add(time.Second), time.Hour, "new"); p.TargetPrimary != "demo-0" || !strings.Contains(p.Waiting, "stopped on purpose (RollingUpdate)") {
			t.Errorf("the restarting primary was replaced: target %q waiting %q", p.TargetPrimary, p.Waiting)
		}
		if p := decide(c, gone, now.Add(primaryRestartTimeout), time.Hour, "new"); p.Operation.Kind != holdfastv1.OperationFailover ||
			p.History[0].Outcome != holdfastv1.OutcomeFailed {
			t.Errorf("past the deadline the update halts and a failover replaces the primary: operation %+v history %+v", p.Operation, p.History)
		}
	})

	t.Run("nothing rolls while the primary changes or without a known revision", func(t *testing.T) {
		c, views := rollingCluster("demo-0", "demo-1")
		if p := decide(c, views, now, time.Hour, ""); p.Operation != nil {
			t.Errorf("revision unknown: %+v", p.Operation)
		}
		c.Status.Operation = promoting(holdfastv1.OperationSwitchover, "demo-0", "demo-2", now)
		c.Status.TargetPrimary, c.Status.CurrentPrimary = "demo-2", ""
		if p := decide(c, views, now, time.Hour, "new"); p.Operation.Kind != holdfastv1.OperationSwitchover || p.Evict != nil {
			t.Errorf("during a switchover: %+v", p.Operation)
		}
	})
}

// TestAPodThatNeverStartedTakesTheFixedSpec: a new cluster whose first
// pod cannot start (a wrong image) has no primary, so no rolling update
// runs; a corrected spec still reaches it, by replacing that pod. A pod
// that was ready once, or a primary, is left to the rolling update.
func TestAPodThatNeverStartedTakesTheFixedSpec(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db"},
		Spec: holdfastv1.PostgresClusterSpec{Instances: 3}}
	pod := runningPod("demo-0", "", "")
	pod.UID = "demo-0-uid"
	pod.Labels[appsv1.ControllerRevisionHashLabelKey] = "old"
	views := []view{{Pod: pod}} // no address, no report: its image cannot be pulled

	p := decide(c, views, now, time.Hour, "new")
	if p.Evict == nil || p.Evict.Name != "demo-0" || p.Operation != nil || len(p.History) != 1 ||
		p.History[0].Kind != holdfastv1.OperationRollingUpdate || !strings.Contains(p.History[0].Reason, "never been ready") {
		t.Fatalf("evict %v, operation %+v, history %+v: want demo-0 replaced, on record", p.Evict, p.Operation, p.History)
	}
	if p := decide(c, views, now, time.Hour, "old"); p.Evict != nil {
		t.Errorf("a pod at the current template is replaced: %v", p.Evict.Name)
	}
	if p := decide(c, views, now, time.Hour, ""); p.Evict != nil {
		t.Errorf("replaced with the revision unknown")
	}

	views[0].Report = &instanceapi.Report{BeenReady: true}
	if p := decide(c, views, now, time.Hour, "new"); p.Evict != nil {
		t.Errorf("a pod that has been ready is replaced outside a rolling update")
	}
	views[0].Report = nil
	c.Status.CurrentPrimary = "demo-1"
	if p := decide(c, views, now, time.Hour, "new"); p.Evict != nil && len(p.History) > 0 && strings.Contains(p.History[len(p.History)-1].Reason, "never been ready") {
		t.Errorf("replaced outside a rolling update while the cluster has a primary")
	}
}

func pods(views []view) []corev1.Pod {
	var out []corev1.Pod
	for _, v := range views {
		out = append(out, *v.Pod)
	}
	return out
}

func reports(views []view) map[string]*instanceapi.Report {
	out := map[string]*instanceapi.Report{}
	for _, v := range views {
		out[v.Pod.Name] = v.Report
	}
	return out
}

func findCondition(st holdfastv1.PostgresClusterStatus, typ string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

func TestHistoryIsBounded(t *testing.T) {
	p := plan{}
	for i := range historyLength + 5 {
		p.Operation = &holdfastv1.Operation{Kind: holdfastv1.OperationSwitchover, To: fmt.Sprint(i), StartedAt: metav1.MicroTime{Time: now}}
		p.finish(holdfastv1.OutcomeSucceeded, "", now.Add(time.Second))
	}
	if len(p.History) != historyLength || p.History[0].To != "5" || p.History[historyLength-1].To != fmt.Sprint(historyLength+4) {
		t.Errorf("history of %d, first %q last %q", len(p.History), p.History[0].To, p.History[len(p.History)-1].To)
	}
}

func TestScaleDownHandsThePrimaryOnFirst(t *testing.T) {
	c, views := rollingCluster("demo-2")
	c.Spec.Instances = 2
	views[1].Report.Postgres.ReceivedLSN = "0/3000100"
	if n := podsToKeep(c); n != 3 {
		t.Errorf("the StatefulSet would keep %d pods, want 3 until the primary has moved", n)
	}
	p := decide(c, views, now, time.Hour, "new")
	op := p.Operation
	if op == nil || op.Kind != holdfastv1.OperationSwitchover || op.From != "demo-2" || op.To != "demo-1" || !strings.Contains(op.Reason, "spec.instances is 2") {
		t.Fatalf("operation %+v", op)
	}
	if d := p.Desired["demo-2"]; d.Role != postgres.Replica || d.Epoch != 2 {
		t.Errorf("the primary being removed told %+v, want to step down at epoch 2", d)
	}
	c.Status.Operation, c.Status.TargetPrimary, c.Status.CurrentPrimary = op, "demo-1", ""
	if n := podsToKeep(c); n != 3 {
		t.Errorf("during the switchover the StatefulSet would keep %d pods, want 3", n)
	}
	c.Status.Operation, c.Status.CurrentPrimary = nil, "demo-1"
	if n := podsToKeep(c); n != 2 {
		t.Errorf("after the switchover the StatefulSet keeps %d pods, want 2", n)
	}
}

func TestHibernationStep(t *testing.T) {
	c, views := rollingCluster("demo-1")
	c.Spec.Hibernation = true
	c.Status.SyncStandbys = []string{"demo-0", "demo-2"}
	p := decide(c, views, now, time.Hour, "new")
	op := p.Operation
	if op == nil || op.Kind != holdfastv1.OperationHibernate || op.Phase != holdfastv1.PhasePromoting || op.From != "demo-1" || op.To != "demo-0" {
		t.Fatalf("a primary other than demo-0 is switched over first: %+v", op)
	}
	if n := podsToKeep(c); n != 3 {
		t.Errorf("before the switchover the StatefulSet keeps %d pods", n)
	}
	// The look that sees demo-0 promoted does not end the hibernation.
	promoted := reportOf(postgres.Primary, true)
	promoted.Desired.Epoch = 2
	views[0].Report, views[1].Report = promoted, reportOf(postgres.Replica, true)
	c.Status.Operation, c.Status.TargetPrimary, c.Status.Epoch = op, "demo-0", 2
	if p := decide(c, views, now.Add(time.Second/2), time.Hour, "new"); p.CurrentPrimary != "demo-0" || p.Operation == nil || p.Operation.Phase != holdfastv1.PhasePromoting {
		t.Fatalf("the look that finds demo-0 promoted: current %q operation %+v", p.CurrentPrimary, p.Operation)
	}
	c.Status.CurrentPrimary = "demo-0"
	p = decide(c, views, now.Add(time.Second), time.Hour, "new")
	if p.Operation.Phase != holdfastv1.PhaseStopping {
		t.Fatalf("after the switchover: %+v", p.Operation)
	}
	c.Status.Operation = p.Operation
	if n := podsToKeep(c); n != 0 {
		t.Errorf("while stopping the StatefulSet keeps %d pods, want 0", n)
	}
	// The primary's pod goes last; no failover replaces it.
	if p := decide(c, views[1:], now.Add(2*time.Second), time.Hour, "new"); p.TargetPrimary != "demo-0" || p.Operation.Kind != holdfastv1.OperationHibernate {
		t.Errorf("while stopping: target %q operation %+v", p.TargetPrimary, p.Operation)
	}
	p = decide(c, nil, now.Add(3*time.Second), time.Hour, "new")
	if p.Operation != nil || p.History[0].Kind != holdfastv1.OperationHibernate || p.History[0].Outcome != holdfastv1.OutcomeSucceeded {
		t.Fatalf("all pods gone: operation %+v history %+v", p.Operation, p.History)
	}
	c.Status.Operation, c.Status.History = nil, p.History
	if n := podsToKeep(c); n != 0 {
		t.Errorf("hibernated, the StatefulSet keeps %d pods", n)
	}
	if p := decide(c, nil, now.Add(time.Hour), time.Hour, "new"); p.Operation != nil || p.TargetPrimary != "demo-0" || p.Blocked != "" {
		t.Errorf("hibernated: operation %+v target %q blocked %q", p.Operation, p.TargetPrimary, p.Blocked)
	}
	if st := computeStatus(c, nil, nil, nil, nil); st.Phase != holdfastv1.PhaseHibernated {
		t.Errorf("phase %s, want Hibernated", st.Phase)
	}

	c.Spec.Hibernation = false
	p = decide(c, nil, now.Add(time.Hour), time.Hour, "new")
	if op := p.Operation; op == nil || op.Kind != holdfastv1.OperationWake || op.Phase != holdfastv1.PhaseStarting {
		t.Fatalf("waking: %+v", op)
	}
	c.Status.Operation = p.Operation
	if n := podsToKeep(c); n != 3 {
		t.Errorf("waking, the StatefulSet keeps %d pods, want 3", n)
	}
	starting := view{Pod: runningPod("demo-0", "10.0.0.5", "")}
	if p := decide(c, []view{starting}, now.Add(time.Hour+time.Second), time.Hour, "new"); p.TargetPrimary != "demo-0" || p.Operation.Kind != holdfastv1.OperationWake {
		t.Errorf("while demo-0 starts: target %q operation %+v", p.TargetPrimary, p.Operation)
	}
	back := reportOf(postgres.Primary, true)
	back.Desired.Epoch = 2
	p = decide(c, []view{{Pod: runningPod("demo-0", "10.0.0.5", ""), Report: back}}, now.Add(time.Hour+2*time.Second), time.Hour, "new")
	if p.Operation != nil || p.History[1].Kind != holdfastv1.OperationWake || p.History[1].Outcome != holdfastv1.OutcomeSucceeded || p.CurrentPrimary != "demo-0" {
		t.Errorf("woken: operation %+v history %+v current %q", p.Operation, p.History, p.CurrentPrimary)
	}
}

func TestRestartOfOneInstanceOnRequest(t *testing.T) {
	c, views := rollingCluster("demo-0")
	asked := "demo-1@2026-11-26T01:00:00Z"
	c.Annotations = map[string]string{holdfastv1.AnnotationRestartInstance: asked}
	p := decide(c, views, now, time.Hour, "new")
	op := p.Operation
	if op == nil || op.Instance != "demo-1" || op.Request != asked || p.Evict.Name != "demo-1" {
		t.Fatalf("operation %+v", op)
	}
	c.Status.Operation = op
	views[1] = restarted(views[1])
	p = decide(c, views, now.Add(time.Second), time.Hour, "new")
	if p.Operation != nil || len(p.History) != 1 || p.History[0].Request != asked || !slices.Equal(p.History[0].Restarted, []string{"demo-1"}) {
		t.Fatalf("operation %+v history %+v", p.Operation, p.History)
	}
	// Carried out: the same request asks nothing more, whatever the clocks say.
	c.Status.Operation, c.Status.History = nil, p.History
	if p := decide(c, views, now.Add(time.Hour), time.Hour, "new"); p.Operation != nil {
		t.Errorf("the request was carried out again: %+v", p.Operation)
	}
	// Asking for the primary: a switchover first, then it restarts as a replica.
	c.Annotations[holdfastv1.AnnotationRestartInstance] = "demo-0@again"
	if p := decide(c, views, now.Add(2*time.Hour), time.Hour, "new"); p.Operation == nil || p.Operation.Phase != holdfastv1.PhasePromoting || p.Operation.From != "demo-0" {
		t.Errorf("restarting the primary: %+v", p.Operation)
	}
}

// The step after a restart waits until the new pod has been Ready by its
// kubelet for endpointsSettle: kube-proxy would otherwise hold back the
// -rw change of a switchover that follows at once.
func TestRollingUpdateLetsEndpointsSettle(t *testing.T) {
	c, views := rollingCluster("demo-0", "demo-0", "demo-2")
	p := decide(c, views, now, time.Hour, "new")
	c.Status.Operation = p.Operation
	views[2] = restarted(views[2])
	views[2].Pod.Status.Conditions[0].LastTransitionTime = metav1.Time{Time: now.Add(9 * time.Second)}
	if p := decide(c, views, now.Add(10*time.Second), time.Hour, "new"); p.Operation.Instance != "demo-2" || p.Operation.Phase != holdfastv1.PhaseRestartingReplica {
		t.Errorf("moved on a second after the pod became Ready: %+v", p.Operation)
	}
	if p := decide(c, views, now.Add(11*time.Second), time.Hour, "new"); p.Operation.Phase != holdfastv1.PhasePromoting {
		t.Errorf("did not move on once the pod had been Ready for %s: %+v", endpointsSettle, p.Operation)
	}
}

func TestFenceStep(t *testing.T) {
	c, views := rollingCluster("demo-1")
	c.Annotations = map[string]string{holdfastv1.AnnotationFenceForBackup: "demo-1@b0"}
	if p := decide(c, views, now, time.Hour, "new"); p.Operation != nil || p.Desired["demo-1"].Fenced {
		t.Fatalf("a fence of the primary was started: %+v", p.Operation)
	}
	views[2].Report.Ready = false
	c.Annotations[holdfastv1.AnnotationFenceForBackup] = "demo-0@b1"
	if p := decide(c, views, now, time.Hour, "new"); p.Operation != nil {
		t.Fatalf("a fence started while demo-2 was not ready, which the quorum may need: %+v", p.Operation)
	}
	views[2].Report.Ready = true

	p := decide(c, views, now, time.Hour, "new")
	op := p.Operation
	if op == nil || op.Kind != holdfastv1.OperationFence || op.Phase != holdfastv1.PhaseStopping || op.Instance != "demo-0" || op.Request != "demo-0@b1" {
		t.Fatalf("fence asked for demo-0: %+v", op)
	}
	if d := p.Desired["demo-0"]; d.Role != postgres.Replica || !d.Fenced {
		t.Errorf("demo-0 is told %+v, want a fenced replica", d)
	}
	if p.Desired["demo-1"].Fenced || p.Desired["demo-2"].Fenced {
		t.Errorf("another instance is fenced: %+v", p.Desired)
	}
	c.Status.Operation = op
	// Nothing else starts meanwhile: a restart request waits.
	c.Annotations[holdfastv1.AnnotationRestartInstance] = "demo-2@1"
	if p := decide(c, views, now.Add(time.Second), time.Hour, "new"); p.Operation.Kind != holdfastv1.OperationFence || p.Evict != nil {
		t.Errorf("while fencing: operation %+v evict %v", p.Operation, p.Evict)
	}
	delete(c.Annotations, holdfastv1.AnnotationRestartInstance)

	stopped := *views[0].Report
	stopped.Fenced, stopped.Running, stopped.Ready = true, false, false
	views[0].Report = &stopped
	p = decide(c, views, now.Add(2*time.Second), time.Hour, "new")
	if p.Operation.Phase != holdfastv1.PhaseFenced || !p.Desired["demo-0"].Fenced {
		t.Fatalf("demo-0 stopped: operation %+v, told %+v", p.Operation, p.Desired["demo-0"])
	}
	c.Status.Operation = p.Operation

	// The Backup removes its request: the fence ends, demo-0 runs again.
	delete(c.Annotations, holdfastv1.AnnotationFenceForBackup)
	p = decide(c, views, now.Add(time.Minute), time.Hour, "new")
	if p.Operation != nil || len(p.History) != 1 || p.History[0].Outcome != holdfastv1.OutcomeSucceeded || p.History[0].Request != "demo-0@b1" {
		t.Fatalf("released: operation %+v history %+v", p.Operation, p.History)
	}
	if p.Desired["demo-0"].Fenced {
		t.Errorf("released, demo-0 is still told to stay fenced")
	}
	// A request recorded in the history asks nothing more.
	c.Annotations[holdfastv1.AnnotationFenceForBackup] = "demo-0@b1"
	c.Status.Operation, c.Status.History = nil, p.History
	views[0].Report = reportOf(postgres.Replica, true)
	if p := decide(c, views, now.Add(2*time.Minute), time.Hour, "new"); p.Operation != nil {
		t.Errorf("a request already carried out started again: %+v", p.Operation)
	}

	// A replica that never stops ends the fence Failed at the deadline.
	c.Annotations[holdfastv1.AnnotationFenceForBackup] = "demo-2@b2"
	p = decide(c, views, now.Add(3*time.Minute), time.Hour, "new")
	c.Status.Operation = p.Operation
	if p := decide(c, views, now.Add(3*time.Minute+fenceStopTimeout), time.Hour, "new"); p.Operation != nil || p.History[len(p.History)-1].Outcome != holdfastv1.OutcomeFailed {
		t.Errorf("a replica that did not stop: operation %+v history %+v", p.Operation, p.History)
	}
}

func TestUserFence(t *testing.T) {
	c, views := rollingCluster("demo-1")

	// The primary, or an instance the cluster lacks, is refused on the record.
	for value, why := range map[string]string{"demo-1@1": "demo-1 is the primary", "demo-7@2": "no instance demo-7"} {
		c.Annotations = map[string]string{holdfastv1.AnnotationFence: value}
		p := decide(c, views, now, time.Hour, "new")
		if p.Operation != nil || len(p.History) != 1 || p.History[0].Outcome != holdfastv1.OutcomeFailed ||
			p.History[0].Request != value || !strings.Contains(p.History[0].Reason, why) {
			t.Errorf("fence %s: operation %+v, history %+v; want it recorded Failed saying %q", value, p.Operation, p.History, why)
		}
	}

	// A replica is held fenced past a Backup's limit, until released.
	c.Annotations = map[string]string{holdfastv1.AnnotationFence: "demo-2@3"}
	p := decide(c, views, now, time.Hour, "new")
	if op := p.Operation; op == nil || op.Kind != holdfastv1.OperationFence || op.Instance != "demo-2" || !p.Desired["demo-2"].Fenced {
		t.Fatalf("fence of demo-2: %+v", op)
	}
	c.Status.Operation = p.Operation
	stopped := *views[2].Report
	stopped.Fenced, stopped.Running, stopped.Ready = true, false, false
	views[2].Report = &stopped
	p = decide(c, views, now.Add(time.Second), time.Hour, "new")
	c.Status.Operation = p.Operation
	if op := p.Operation; op == nil || op.Phase != holdfastv1.PhaseFenced || op.PhaseDeadline != nil {
		t.Errorf("a user's fence, held: %+v; want phase Fenced with no deadline", op)
	}
	if p := decide(c, views, now.Add(time.Second+2*fenceHoldTimeout), time.Hour, "new"); p.Operation == nil || p.Operation.Phase != holdfastv1.PhaseFenced {
		t.Errorf("a user's fence ended after %s: %+v %+v", 2*fenceHoldTimeout, p.Operation, p.History)
	}
	delete(c.Annotations, holdfastv1.AnnotationFence)
	if p := decide(c, views, now.Add(time.Hour), time.Hour, "new"); p.Operation != nil || p.History[len(p.History)-1].Outcome != holdfastv1.OutcomeSucceeded {
		t.Errorf("released: operation %+v, history %+v", p.Operation, p.History)
	}
}

func TestFailoverPreemptsAFence(t *testing.T) {
	c, views := rollingCluster("demo-1")
	c.Status.SyncStandbys = []string{"demo-0", "demo-2"}
	c.Annotations = map[string]string{holdfastv1.AnnotationFenceForBackup: "demo-0@b1"}
	p := decide(c, views, now, time.Hour, "new")
	c.Status.Operation = p.Operation
	stopped := *views[0].Report
	stopped.Fenced, stopped.Running, stopped.Ready = true, false, false
	views[0].Report = &stopped
	// The primary's pod is gone; its lease long unrenewed. The fenced
	// replica, stopped, may be needed: the fence gives way.
	p = decide(c, []view{views[0], views[2]}, now.Add(time.Second), time.Hour, "new")
	if p.Operation != nil || p.Blocked == "" {
		t.Fatalf("the primary's pod is gone while demo-0 is stopped: operation %+v blocked %q", p.Operation, p.Blocked)
	}
	if rec := p.History[len(p.History)-1]; rec.Kind != holdfastv1.OperationFence || rec.Outcome != holdfastv1.OutcomePreempted || rec.Request != "demo-0@b1" {
		t.Errorf("the fence's record: %+v", rec)
	}
	if d := p.Desired["demo-0"]; d.Fenced {
		t.Errorf("demo-0 stays fenced after the fence gave way: %+v", d)
	}
	// Running again, it answers; the failover goes ahead, and the fence
	// is not asked again by the same request.
	c.Status.Operation, c.Status.History = nil, p.History
	views[0].Report = reportOf(postgres.Replica, true)
	p = decide(c, []view{views[0], views[2]}, now.Add(2*time.Second), time.Hour, "new")
	if op := p.Operation; op == nil || op.Kind != holdfastv1.OperationFailover || op.From != "demo-1" {
		t.Fatalf("after the fence gave way: operation %+v (waiting %q blocked %q)", op, p.Waiting, p.Blocked)
	}
}
