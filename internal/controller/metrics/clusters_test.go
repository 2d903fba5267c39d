package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func TestClusterSeriesFollowTheObjects(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	notAfter := metav1.NewTime(time.Unix(2_000_000_000, 0))
	up := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "up"}}
	up.Spec.Instances = 3
	up.Status.ReadyInstances = 3
	up.Status.Conditions = []metav1.Condition{{Type: holdfastv1.ConditionPrimaryAvailable, Status: metav1.ConditionTrue}}
	up.Status.Certificates = []holdfastv1.CertificateStatus{{Secret: "up-server-tls", NotAfter: &notAfter}}
	up.Status.Instances = []holdfastv1.InstanceStatus{
		{Name: "up-0", Volume: &holdfastv1.VolumeStatus{UsedPercent: 97, Full: true}},
		{Name: "up-1", Volume: &holdfastv1.VolumeStatus{Resizing: "claim pgdata-up-1 grows from 1Gi to 2Gi (for 3s)"}},
		{Name: "up-2"},
	}
	down := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "down"}}
	down.Spec.Instances = 2
	down.Status.Conditions = []metav1.Condition{{Type: holdfastv1.ConditionPrimaryAvailable, Status: metav1.ConditionFalse}}
	schedule := func(name, cron string, suspend bool) *holdfastv1.BackupSchedule {
		s := &holdfastv1.BackupSchedule{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: name}}
		s.Spec.Cluster.Name, s.Spec.Schedule, s.Spec.Suspend = "up", cron, suspend
		return s
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(up, down,
		schedule("nightly", "0 3 * * *", false),
		schedule("weekdays", "0 3 * * 1-5", false),
		schedule("paused", "*/5 * * * *", true),
	).Build()
	want := `
# HELP holdfast_backup_schedule_interval_seconds The longest gap between two of a BackupSchedule's next runs: a last good backup older than twice this is late.
# TYPE holdfast_backup_schedule_interval_seconds gauge
holdfast_backup_schedule_interval_seconds{cluster="up",namespace="db",schedule="nightly"} 86400
holdfast_backup_schedule_interval_seconds{cluster="up",namespace="db",schedule="weekdays"} 259200
# HELP holdfast_certificate_expiry_timestamp_seconds When each of the cluster's certificates expires (Unix seconds), as its status records.
# TYPE holdfast_certificate_expiry_timestamp_seconds gauge
holdfast_certificate_expiry_timestamp_seconds{cluster="up",namespace="db",secret="up-server-tls"} 2e+09
# HELP holdfast_cluster_instances Instances the cluster's spec asks for.
# TYPE holdfast_cluster_instances gauge
holdfast_cluster_instances{cluster="down",namespace="db"} 2
holdfast_cluster_instances{cluster="up",namespace="db"} 3
# HELP holdfast_cluster_primary_available 1 while the cluster's PrimaryAvailable condition is True.
# TYPE holdfast_cluster_primary_available gauge
holdfast_cluster_primary_available{cluster="down",namespace="db"} 0
holdfast_cluster_primary_available{cluster="up",namespace="db"} 1
# HELP holdfast_cluster_ready_instances Instances ready, as the cluster's status says.
# TYPE holdfast_cluster_ready_instances gauge
holdfast_cluster_ready_instances{cluster="down",namespace="db"} 0
holdfast_cluster_ready_instances{cluster="up",namespace="db"} 3
# HELP holdfast_cluster_volume_full 1 while an instance's data volume is 95% full or more and cannot grow (the cluster is Degraded with reason VolumeFull).
# TYPE holdfast_cluster_volume_full gauge
holdfast_cluster_volume_full{cluster="up",instance="up-0",namespace="db"} 1
holdfast_cluster_volume_full{cluster="up",instance="up-1",namespace="db"} 0
# HELP holdfast_cluster_volume_resizing 1 while an instance's claim asks for more than it has: a resize under way, or stuck.
# TYPE holdfast_cluster_volume_resizing gauge
holdfast_cluster_volume_resizing{cluster="up",instance="up-0",namespace="db"} 0
holdfast_cluster_volume_resizing{cluster="up",instance="up-1",namespace="db"} 1
`
	// A Wednesday: the weekday schedule's next runs include a weekend.
	c := clusters{reader: cl, now: func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.Local) }}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
