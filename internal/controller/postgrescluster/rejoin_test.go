package postgrescluster

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// A replica that loops on its primary's refusal is ready for an instant
// now and then and its pod may even pass its probe: the cluster must say
// Degraded all the same, with what the replica says of itself.
func TestAReplicaThatDoesNotStreamDegradesTheCluster(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Generation: 1}, Spec: holdfastv1.PostgresClusterSpec{Instances: 3}}
	pods := []corev1.Pod{pod("demo-0", true), pod("demo-1", true), pod("demo-2", true)}
	since := func(ago time.Duration) *time.Time { t := time.Now().Add(-ago); return &t }
	replica := &instanceapi.Desired{Role: postgres.Replica}
	for _, tt := range []struct {
		name     string
		reports  map[string]*instanceapi.Report
		degraded bool
	}{
		{"every replica streams", map[string]*instanceapi.Report{"demo-1": {Desired: replica}, "demo-2": {Desired: replica}}, false},
		{"a replica paused a moment", map[string]*instanceapi.Report{"demo-1": {Desired: replica, NotStreamingSince: since(2 * time.Second)}}, false},
		{"a replica stuck", map[string]*instanceapi.Report{"demo-1": {Desired: replica, NotStreamingSince: since(time.Minute),
			Message: "re-cloning: the primary no longer has WAL segment 000000030000000000000007"}}, true},
		{"an instance being promoted", map[string]*instanceapi.Report{"demo-1": {Desired: &instanceapi.Desired{Role: postgres.Primary}, NotStreamingSince: since(time.Minute)}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := computeStatus(c, settled(3), pods, tt.reports, nil)
			cond := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
			if got := cond.Status == metav1.ConditionTrue; got != tt.degraded {
				t.Fatalf("Degraded %s (%s: %s), want %v", cond.Status, cond.Reason, cond.Message, tt.degraded)
			}
			if !tt.degraded {
				return
			}
			if st.Phase != holdfastv1.PhaseDegraded || cond.Reason != "ReplicaNotStreaming" ||
				!strings.Contains(cond.Message, "demo-1: not streaming from the primary since") ||
				!strings.Contains(cond.Message, "re-cloning: the primary no longer has WAL segment 000000030000000000000007") {
				t.Errorf("phase %s, Degraded %s: %s", st.Phase, cond.Reason, cond.Message)
			}
		})
	}
}

func TestEachRejoinIsAnnouncedOnce(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	r := &Reconciler{Recorder: rec}
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "ns"}}
	at := time.Now()
	reports := map[string]*instanceapi.Report{"demo-1": {Rejoin: &instanceapi.Rejoin{At: at, How: instanceapi.RejoinReclone,
		Message: "re-cloning: the primary no longer has WAL segment 000000030000000000000007"}}}
	for range 3 {
		r.announceRejoins(c, reports)
	}
	reports["demo-1"].Rejoin = &instanceapi.Rejoin{At: at.Add(time.Minute), How: instanceapi.RejoinArchive, Message: "fetching WAL from the repository's archive"}
	r.announceRejoins(c, reports)
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	want := []string{
		"Warning ReplicaRecloned demo-1: re-cloning: the primary no longer has WAL segment 000000030000000000000007",
		"Warning ReplicaReplaysArchivedWAL demo-1: fetching WAL from the repository's archive",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
