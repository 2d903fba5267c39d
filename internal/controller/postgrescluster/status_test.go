package postgrescluster

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

func pod(name string, ready bool, mutate ...func(*corev1.Pod)) corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

func waiting(reason string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: "postgres", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "details"}},
		}}
	}
}

func settled(replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: 2},
		Status: appsv1.StatefulSetStatus{
			ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas,
			CurrentRevision: "r1", UpdateRevision: "r1",
		},
	}
}

func TestComputeStatus(t *testing.T) {
	tests := []struct {
		name        string
		primary     string
		sts         *appsv1.StatefulSet
		pods        []corev1.Pod
		refused     error
		phase       holdfastv1.ClusterPhase
		ready       int32
		conditions  map[string]metav1.ConditionStatus
		messageHint string
	}{
		{"no StatefulSet yet", "", nil, nil, nil, holdfastv1.PhaseCreating, 0,
			map[string]metav1.ConditionStatus{"Ready": "False", "Progressing": "True", "Degraded": "False"}, ""},
		{"first pod coming up", "", settled(1), []corev1.Pod{pod("demo-0", false)}, nil, holdfastv1.PhaseCreating, 0,
			map[string]metav1.ConditionStatus{"Ready": "False", "Progressing": "True", "Degraded": "False"}, ""},
		{"all ready", "demo-0", settled(3), []corev1.Pod{pod("demo-0", true), pod("demo-1", true), pod("demo-2", true)}, nil,
			holdfastv1.PhaseHealthy, 3, map[string]metav1.ConditionStatus{"Ready": "True", "Progressing": "False", "Degraded": "False"}, ""},
		{"bad image", "demo-0", settled(3), []corev1.Pod{pod("demo-0", true), pod("demo-1", false, waiting("ImagePullBackOff")), pod("demo-2", true)}, nil,
			holdfastv1.PhaseDegraded, 2, map[string]metav1.ConditionStatus{"Ready": "False", "Degraded": "True"}, "demo-1: container postgres: ImagePullBackOff details"},
		{"instance lost after it was healthy", "demo-0", settled(3), []corev1.Pod{pod("demo-0", true), pod("demo-1", false), pod("demo-2", true)}, nil,
			holdfastv1.PhaseDegraded, 2, map[string]metav1.ConditionStatus{"Ready": "False", "Progressing": "False", "Degraded": "True"}, "demo-1: not ready"},
		{"scaling up", "demo-0", settled(3), []corev1.Pod{pod("demo-0", true), pod("demo-1", true)}, nil,
			holdfastv1.PhaseUpdating, 2, map[string]metav1.ConditionStatus{"Ready": "False", "Progressing": "True"}, ""},
		{"new template waits for restarts", "demo-0", func() *appsv1.StatefulSet {
			s := settled(3)
			s.Status.UpdateRevision, s.Status.UpdatedReplicas = "r2", 0
			return s
		}(), []corev1.Pod{pod("demo-0", true), pod("demo-1", true), pod("demo-2", true)}, nil,
			holdfastv1.PhaseUpdating, 3, map[string]metav1.ConditionStatus{"Ready": "True", "Progressing": "True"}, ""},
		{"spec refused", "", nil, nil, errors.New(`resources.requests[cpu]: Invalid value: "-1"`),
			holdfastv1.PhaseDegraded, 0, map[string]metav1.ConditionStatus{"Progressing": "False", "Degraded": "True"}, "resources.requests[cpu]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &holdfastv1.PostgresCluster{
				ObjectMeta: metav1.ObjectMeta{Name: "demo", Generation: 4},
				Spec:       holdfastv1.PostgresClusterSpec{Instances: 3},
				Status:     holdfastv1.PostgresClusterStatus{CurrentPrimary: tt.primary},
			}
			st := computeStatus(c, tt.sts, tt.pods, nil, tt.refused)
			if st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
			if st.ReadyInstances != tt.ready {
				t.Errorf("ready %d, want %d", st.ReadyInstances, tt.ready)
			}
			if st.ObservedGeneration != 4 || st.TargetPrimary != "demo-0" || st.CurrentPrimary != tt.primary {
				t.Errorf("observedGeneration %d targetPrimary %q currentPrimary %q", st.ObservedGeneration, st.TargetPrimary, st.CurrentPrimary)
			}
			for typ, want := range tt.conditions {
				cond := meta.FindStatusCondition(st.Conditions, typ)
				if cond == nil || cond.Status != want || cond.ObservedGeneration != 4 {
					t.Errorf("condition %s = %+v, want %s", typ, cond, want)
				}
			}
			if tt.messageHint != "" {
				cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
				if !strings.Contains(cond.Message, tt.messageHint) {
					t.Errorf("Degraded message %q lacks %q", cond.Message, tt.messageHint)
				}
			}
		})
	}
}

func TestConditionTimesSurviveUnchangedStatus(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 1}}
	pods := []corev1.Pod{pod("demo-0", true)}
	c.Status = computeStatus(c, settled(1), pods, nil, nil)
	again := computeStatus(c, settled(1), pods, nil, nil)
	for i := range again.Conditions {
		if !again.Conditions[i].LastTransitionTime.Equal(&c.Status.Conditions[i].LastTransitionTime) {
			t.Errorf("condition %s moved its transition time", again.Conditions[i].Type)
		}
	}
}

func TestStatusCarriesEachInstancesPositions(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 2}}
	pods := []corev1.Pod{*runningPod("demo-0", "10.0.0.5", "primary"), *runningPod("demo-1", "10.0.0.6", "replica")}
	reports := map[string]*instanceapi.Report{
		"demo-0": {Postgres: &postgres.Status{Timeline: 3, CurrentLSN: "0/5000100", PendingRestart: []string{"shared_buffers"}}},
		"demo-1": {Postgres: &postgres.Status{Timeline: 3, InRecovery: true, ReceivedLSN: "0/5000100", ReplayedLSN: "0/5000000", LagBytes: 256}},
	}
	st := computeStatus(c, nil, pods, reports, nil)
	if len(st.Instances) != 2 {
		t.Fatalf("instances %+v", st.Instances)
	}
	p, r := st.Instances[0], st.Instances[1]
	if p.Timeline != 3 || p.CurrentLSN != "0/5000100" || !slices.Equal(p.PendingRestart, []string{"shared_buffers"}) || r.PendingRestart != nil || r.ReceivedLSN != "0/5000100" || r.ReplayedLSN != "0/5000000" || r.LagBytes != 256 {
		t.Errorf("primary %+v replica %+v", p, r)
	}
	// kubectl get -o wide shows the summary.
	c.Status.CurrentPrimary = "demo-0"
	reports["demo-1"].Postgres.Timeline = 2 // a replica still replaying the old timeline
	if st = computeStatus(c, nil, pods, reports, nil); st.Timeline != 3 || st.MaxLagBytes != 256 {
		t.Errorf("summary: timeline %d, largest lag %d; want the primary's 3 and 256", st.Timeline, st.MaxLagBytes)
	}
	// The lag moves with every write; alone it is no reason to write the status.
	moved := *st.DeepCopy()
	moved.MaxLagBytes = 4096
	if !equality.Semantic.DeepEqual(withoutPositions(st), withoutPositions(moved)) {
		t.Error("a change of the largest lag alone counts as a change of status")
	}
}

// A new cluster's replicas clone after the primary reports: that is
// creation, not degradation, until an instance fails or restarts.
func TestCreationIsNotDegraded(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 3},
		Status: holdfastv1.PostgresClusterStatus{CurrentPrimary: "demo-0", Phase: holdfastv1.PhaseCreating}}
	pods := []corev1.Pod{pod("demo-0", true), pod("demo-1", false), pod("demo-2", false)}
	cloning := map[string]*instanceapi.Report{"demo-0": {Started: true}, "demo-1": {Message: "cloning"}, "demo-2": {Message: "cloning"}}
	st := computeStatus(c, settled(3), pods, cloning, nil)
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); st.Phase != holdfastv1.PhaseCreating || d.Status != metav1.ConditionFalse {
		t.Errorf("replicas cloning: phase %s, Degraded %+v; want Creating, not degraded", st.Phase, d)
	}

	failed := map[string]*instanceapi.Report{"demo-0": {Started: true}, "demo-1": {Failing: "role name \"public\" is reserved"}, "demo-2": {Message: "cloning"}}
	st = computeStatus(c, settled(3), pods, failed, nil)
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); st.Phase != holdfastv1.PhaseDegraded || d.Status != metav1.ConditionTrue {
		t.Errorf("an instance with an error: phase %s, Degraded %+v; want Degraded", st.Phase, d)
	}

	restarted := slices.Clone(pods)
	restarted[1].Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "postgres", RestartCount: 1}}
	st = computeStatus(c, settled(3), restarted, cloning, nil)
	if st.Phase != holdfastv1.PhaseDegraded {
		t.Errorf("a restarted container: phase %s, want Degraded", st.Phase)
	}

	// Cloned and running as a replica, catching up before it is first
	// ready: still creation. Ready once and now not: a failure.
	catching := map[string]*instanceapi.Report{"demo-0": {Started: true, BeenReady: true}, "demo-1": {Started: true}, "demo-2": {Started: true}}
	if st = computeStatus(c, settled(3), pods, catching, nil); st.Phase != holdfastv1.PhaseCreating {
		t.Errorf("replicas running, not yet ready: phase %s, want Creating", st.Phase)
	}
	// Ready by its own account, before the kubelet's next probe: not a failure.
	catching["demo-1"] = &instanceapi.Report{Started: true, BeenReady: true, Ready: true}
	if st = computeStatus(c, settled(3), pods, catching, nil); st.Phase != holdfastv1.PhaseCreating {
		t.Errorf("a replica ready, its pod not yet: phase %s, want Creating", st.Phase)
	}
	catching["demo-1"] = &instanceapi.Report{Started: true, BeenReady: true}
	if st = computeStatus(c, settled(3), pods, catching, nil); st.Phase != holdfastv1.PhaseDegraded {
		t.Errorf("a replica ready before, not now: phase %s, want Degraded", st.Phase)
	}

	// The last pod was just made: its claim is binding, or its instance
	// manager has not answered yet. Long unreported, it is a failure.
	fresh := slices.Clone(pods)
	fresh[2].CreationTimestamp = metav1.Now()
	fresh[2].Status = corev1.PodStatus{Phase: corev1.PodPending}
	unreported := map[string]*instanceapi.Report{"demo-0": {Started: true}, "demo-1": {Message: "cloning"}}
	st = computeStatus(c, settled(3), fresh, unreported, nil)
	if st.Phase != holdfastv1.PhaseCreating {
		t.Errorf("a pod made a moment ago, not reporting yet: phase %s, want Creating", st.Phase)
	}
	fresh[2].CreationTimestamp = metav1.NewTime(time.Now().Add(-startGrace - time.Second))
	st = computeStatus(c, settled(3), fresh, unreported, nil)
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); st.Phase != holdfastv1.PhaseDegraded || !strings.Contains(d.Message, "demo-2") {
		t.Errorf("a pod unreported for longer than %s: phase %s, Degraded %+v; want Degraded naming it", startGrace, st.Phase, d)
	}

	healthy := c.DeepCopy()
	healthy.Status.Phase = holdfastv1.PhaseHealthy
	st = computeStatus(healthy, settled(3), pods, cloning, nil)
	if st.Phase != holdfastv1.PhaseUpdating {
		t.Errorf("a healthy cluster's new replicas starting: phase %s, want Updating", st.Phase)
	}
}

func TestDegradedShowsWhatInstancesReport(t *testing.T) {
	const fatal = `FATAL: lock file "/var/run/postgresql/.s.PGSQL.5432.lock" already exists`
	const refused = `invalid value for parameter "max_connections": "lots"`
	const failing = "configuring WAL archiving: reading the repository credentials: open /etc/holdfast/repository/accessKeyId: no such file or directory"
	tests := []struct {
		name    string
		reports map[string]*instanceapi.Report
		reason  string
		message string
	}{
		{"a postgres that fails to start", map[string]*instanceapi.Report{"demo-1": {StartError: fatal}},
			"InstanceCrashLooping", "demo-1: " + fatal},
		{"a converge error that lasts", map[string]*instanceapi.Report{"demo-0": {Failing: failing, Error: failing}},
			"InstanceError", "demo-0: " + failing},
		{"both: the failed start first", map[string]*instanceapi.Report{"demo-0": {Failing: failing}, "demo-1": {StartError: fatal}},
			"InstanceCrashLooping", "demo-1: " + fatal + "; demo-0: " + failing},
		{"settings postgres refuses", map[string]*instanceapi.Report{"demo-0": {InvalidParameters: refused}, "demo-1": {InvalidParameters: refused}},
			ReasonInvalidParameter, "demo-0: " + refused + "; demo-1: " + refused},
		{"a passing error is not trouble yet", map[string]*instanceapi.Report{"demo-0": {Error: failing}},
			"NoFailures", "no instance is failing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 2}}
			pods := []corev1.Pod{pod("demo-0", true), pod("demo-1", true)}
			c.Status = computeStatus(c, settled(2), pods, tt.reports, nil)
			cond := meta.FindStatusCondition(c.Status.Conditions, holdfastv1.ConditionDegraded)
			if cond.Reason != tt.reason || cond.Message != tt.message {
				t.Errorf("Degraded %s %q, want %s %q", cond.Reason, cond.Message, tt.reason, tt.message)
			}
			if degraded := cond.Status == metav1.ConditionTrue; degraded != (c.Status.Phase == holdfastv1.PhaseDegraded) {
				t.Errorf("Degraded %s in phase %s", cond.Status, c.Status.Phase)
			}
			for _, is := range c.Status.Instances {
				if r := tt.reports[is.Name]; r != nil && (r.StartError+r.Failing+r.InvalidParameters) != "" && !strings.Contains(tt.message, is.Message) {
					t.Errorf("instance %s message %q, not what it reported", is.Name, is.Message)
				}
			}
			// The same reports again change nothing: no status write.
			if again := computeStatus(c, settled(2), pods, tt.reports, nil); !equality.Semantic.DeepEqual(again, c.Status) {
				t.Errorf("the same reports changed the status:\n%+v\n%+v", c.Status, again)
			}
		})
	}
}

// Positions alone are written at most every positionsRefresh, and at
// least that often; anything else at once.
func TestPositionsRefreshOnABoundedInterval(t *testing.T) {
	now := time.Now()
	stored := func(observed time.Time) holdfastv1.PostgresClusterStatus {
		st := holdfastv1.PostgresClusterStatus{Phase: holdfastv1.PhaseHealthy,
			Instances: []holdfastv1.InstanceStatus{{Name: "demo-0", CurrentLSN: "0/5000100"}, {Name: "demo-1", ReplayedLSN: "0/5000000", LagBytes: 256}}}
		if !observed.IsZero() {
			st.PositionsObservedAt = &metav1.Time{Time: observed}
		}
		return st
	}
	same := stored(time.Time{})
	moved := *same.DeepCopy()
	moved.Instances[0].CurrentLSN, moved.Instances[1].ReplayedLSN, moved.Instances[1].LagBytes = "0/6000000", "0/5000100", 0
	changed := *same.DeepCopy()
	changed.Phase = holdfastv1.PhaseDegraded
	tests := []struct {
		name     string
		st       holdfastv1.PostgresClusterStatus
		observed time.Time
		want     bool
	}{
		{"nothing moved", same, now.Add(-time.Hour), false},
		{"positions moved, observed a moment ago", moved, now.Add(-time.Second), false},
		{"positions moved, observed long enough ago", moved, now.Add(-positionsRefresh), true},
		{"positions moved, never observed", moved, time.Time{}, true},
		{"something else changed a moment after a write", changed, now.Add(-time.Second), true},
	}
	for _, tt := range tests {
		st := *tt.st.DeepCopy()
		// What computeStatus carries over from the stored status.
		was := stored(tt.observed)
		st.PositionsObservedAt = was.PositionsObservedAt
		if got := statusDue(st, was, now); got != tt.want {
			t.Errorf("%s: due %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLastBackupIsTheLatestCompletedOfTheCluster(t *testing.T) {
	at := func(s int64) *metav1.Time { t := metav1.NewTime(time.Unix(s, 0)); return &t }
	backup := func(name, cluster string, phase holdfastv1.BackupPhase, stopped *metav1.Time) *holdfastv1.Backup {
		b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: name}}
		b.Spec.Cluster.Name = cluster
		b.Status.Phase, b.Status.StoppedAt = phase, stopped
		return b
	}
	scheme := runtime.NewScheme()
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		backup("old", "demo", holdfastv1.BackupCompleted, at(1000)),
		backup("new", "demo", holdfastv1.BackupCompleted, at(2000)),
		backup("failed", "demo", holdfastv1.BackupFailed, at(3000)),
		backup("other", "other", holdfastv1.BackupCompleted, at(4000)),
	).Build()
	r := &Reconciler{Client: cl}
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "demo"}}
	st := holdfastv1.PostgresClusterStatus{LastBackup: at(9000)} // one since deleted
	if err := r.noteLastBackup(t.Context(), c, &st); err != nil {
		t.Fatal(err)
	}
	if st.LastBackup == nil || st.LastBackup.Unix() != 2000 {
		t.Errorf("last backup %v, want the completed one of demo that stopped at 2000", st.LastBackup)
	}
}

// A replica fenced on purpose is down for as long as the fence holds: the
// cluster is not ready, and its operation is progress, not a failure.
func TestAFencedReplicaIsNotAFailure(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 3},
		Status: holdfastv1.PostgresClusterStatus{CurrentPrimary: "demo-0", Phase: holdfastv1.PhaseHealthy,
			Operation: &holdfastv1.Operation{Kind: holdfastv1.OperationFence, Phase: holdfastv1.PhaseFenced, Instance: "demo-1"}}}
	pods := []corev1.Pod{pod("demo-0", true), pod("demo-1", false), pod("demo-2", true)}
	reports := map[string]*instanceapi.Report{"demo-0": {Started: true, BeenReady: true}, "demo-1": {Started: true, BeenReady: true, Fenced: true},
		"demo-2": {Started: true, BeenReady: true}}
	st := computeStatus(c, settled(3), pods, reports, nil)
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); d.Status != metav1.ConditionFalse || st.Phase != holdfastv1.PhaseUpdating {
		t.Errorf("a fenced replica: phase %s, Degraded %+v; want Updating, not degraded", st.Phase, d)
	}
	if msg := st.Instances[1].Message; !strings.Contains(msg, "fenced") {
		t.Errorf("the fenced replica's message %q does not say it is fenced", msg)
	}
	// Another replica down meanwhile is still a failure.
	pods[2] = pod("demo-2", false)
	st = computeStatus(c, settled(3), pods, reports, nil)
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); d.Status != metav1.ConditionTrue || !strings.Contains(d.Message, "demo-2") || strings.Contains(d.Message, "demo-1") {
		t.Errorf("another replica down while one is fenced: Degraded %+v; want it naming demo-2 only", d)
	}
}
