package statusreport

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 12, 5, 6, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(-d)) }

func fixture() (*holdfastv1.PostgresCluster, []corev1.Pod, []holdfastv1.Backup, []holdfastv1.BackupSchedule) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "orders"}}
	c.Spec.Instances, c.Spec.PostgresVersion = 3, 15
	c.Spec.Synchronous = &holdfastv1.SynchronousSpec{Quorum: 1}
	c.Spec.Backup = &holdfastv1.BackupConfig{Repository: holdfastv1.RepositorySpec{S3: &holdfastv1.S3Repository{Endpoint: "https://s3.example.com", Bucket: "pg"}}}
	observed := ago(3 * time.Second)
	c.Status = holdfastv1.PostgresClusterStatus{
		Phase: holdfastv1.PhaseDegraded, CurrentPrimary: "orders-1", TargetPrimary: "orders-1", ReadyInstances: 2, Epoch: 3,
		PositionsObservedAt: &observed, SyncStandbys: []string{"orders-0"},
		Instances: []holdfastv1.InstanceStatus{
			{Name: "orders-0", Role: holdfastv1.RoleReplica, Ready: true, Timeline: 2, ReceivedLSN: "0/5000100", ReplayedLSN: "0/5000100", LagBytes: 0,
				Volume: &holdfastv1.VolumeStatus{Claim: "pgdata-orders-0", Size: resource.MustParse("2Gi"), Capacity: ptr.To(resource.MustParse("1Gi")),
					UsedBytes: 900 << 20, AvailableBytes: 100 << 20, UsedPercent: 90, Resizing: "claim pgdata-orders-0 grows from 1Gi to 2Gi (for 4s)"}},
			{Name: "orders-1", Role: holdfastv1.RolePrimary, Ready: true, Timeline: 2, CurrentLSN: "0/5000100",
				Volume: &holdfastv1.VolumeStatus{Claim: "pgdata-orders-1", Size: resource.MustParse("2Gi"), Capacity: ptr.To(resource.MustParse("2Gi")),
					UsedBytes: 2000 << 20, AvailableBytes: 48 << 20, UsedPercent: 98, Full: true}},
			{Name: "orders-2", Role: holdfastv1.RoleReplica, Ready: false, Timeline: 1, ReplayedLSN: "0/3000000", LagBytes: 33554688,
				Message: "streaming stopped", PendingRestart: []string{"shared_buffers"}},
		},
		History: []holdfastv1.OperationRecord{
			{Kind: holdfastv1.OperationFailover, From: "orders-0", To: "orders-1", Outcome: holdfastv1.OutcomeSucceeded, Reason: "primary orders-0 failed: its pod is gone",
				StartedAt: metav1.MicroTime{Time: now.Add(-2 * time.Hour)}, Duration: "1.104s"},
			{Kind: holdfastv1.OperationRollingUpdate, Outcome: holdfastv1.OutcomeFailed, Reason: "the pod template changed; orders-2 did not come back",
				StartedAt: metav1.MicroTime{Time: now.Add(-10 * time.Minute)}, Duration: "5m0s"},
		},
		Conditions: []metav1.Condition{
			{Type: "Ready", Status: metav1.ConditionFalse, Reason: "InstancesNotReady", Message: "2 of 3 instances ready", LastTransitionTime: ago(10 * time.Minute)},
			{Type: "Degraded", Status: metav1.ConditionTrue, Reason: "ReplicaNotStreaming", Message: "orders-2 does not stream from the primary", LastTransitionTime: ago(9 * time.Minute)},
		},
	}
	pod := func(name string, restarts int32) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.PodSpec{NodeName: "node-" + name[len(name)-1:]},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "postgres", RestartCount: restarts}}}}
	}
	stopped := func(d time.Duration) *metav1.Time { t := ago(d); return &t }
	backup := func(name string, created time.Duration, m holdfastv1.BackupMethod, phase holdfastv1.BackupPhase, stop *metav1.Time, msg string) holdfastv1.Backup {
		b := holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, CreationTimestamp: ago(created)}}
		b.Spec.Cluster.Name, b.Spec.Method = "orders", m
		b.Status.Phase, b.Status.StoppedAt, b.Status.Message = phase, stop, msg
		return b
	}
	backups := []holdfastv1.Backup{
		backup("orders-nightly-1", 26*time.Hour, holdfastv1.BackupPGBackRest, holdfastv1.BackupCompleted, stopped(25*time.Hour), ""),
		backup("orders-nightly-2", 2*time.Hour, holdfastv1.BackupPGBackRest, holdfastv1.BackupFailed, stopped(time.Hour+30*time.Minute), "pgbackrest: [039]: HTTP request failed"),
		backup("orders-dump", 50*time.Hour, holdfastv1.BackupLogical, holdfastv1.BackupCompleted, stopped(49*time.Hour), ""),
	}
	other := backup("other", time.Minute, holdfastv1.BackupLogical, holdfastv1.BackupRunning, nil, "")
	other.Spec.Cluster.Name = "another-cluster"
	sched := holdfastv1.BackupSchedule{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "nightly"}}
	sched.Spec.Cluster.Name, sched.Spec.Method, sched.Spec.Schedule = "orders", holdfastv1.BackupPGBackRest, "0 2 * * *"
	sched.Status.LastCompleted = "orders-nightly-1"
	return c, []corev1.Pod{pod("orders-0", 0), pod("orders-1", 2), pod("orders-2", 7)}, append(backups, other), []holdfastv1.BackupSchedule{sched}
}

func build() Report {
	c, pods, backups, schedules := fixture()
	return Build(c, pods, backups, schedules, now)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it after a deliberate change):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestTerminalView(t *testing.T) {
	r := build()
	var plain bytes.Buffer
	if err := Write(&plain, r, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b[") {
		t.Error("the plain view has colour codes")
	}
	golden(t, "status.txt", plain.Bytes())

	var coloured bytes.Buffer
	if err := Write(&coloured, r, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{red + "Degraded" + reset, green + "primary" + reset, red + "Failed" + reset} {
		if !strings.Contains(coloured.String(), want) {
			t.Errorf("the terminal view lacks %q", want)
		}
	}
}

func TestReportFollowsTheObjects(t *testing.T) {
	r := build()
	if r.Cluster.Timeline != 2 || r.Cluster.CurrentLSN != "0/5000100" || r.Cluster.PositionsAge != "3s" {
		t.Errorf("summary %+v: want the primary's timeline and LSN, observed 3s ago", r.Cluster)
	}
	if in := r.Instances[2]; in.Restarts != 7 || in.Node != "node-2" || in.Sync || !r.Instances[0].Sync {
		t.Errorf("instances %+v: restarts and node from the pods, sync from status.syncStandbys", r.Instances)
	}
	if len(r.Backups.Last) != 2 || r.Backups.Last[1].Name != "orders-nightly-2" || r.Backups.Last[1].Phase != "Failed" || r.Backups.Last[0].Age != "2d1h" {
		t.Errorf("last backups %+v: want the newest of each method of this cluster only", r.Backups.Last)
	}
	if len(r.History) != 2 || r.History[0].Kind != holdfastv1.OperationRollingUpdate {
		t.Errorf("history %+v: want newest first", r.History)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Instances[2].LagBytes != 33554688 || back.Instances[2].Name != "orders-2" || back.Cluster.Primary != "orders-1" {
		t.Errorf("JSON round trip lost the instance fields: %s", b)
	}
}
