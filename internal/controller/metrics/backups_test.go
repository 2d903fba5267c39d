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

func TestBackupSeriesFollowTheObjects(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	at := func(s int64) *metav1.Time { t := metav1.NewTime(time.Unix(s, 0)); return &t }
	backup := func(name string, method holdfastv1.BackupMethod, phase holdfastv1.BackupPhase, stopped *metav1.Time) *holdfastv1.Backup {
		b := &holdfastv1.Backup{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: name}}
		b.Spec.Cluster.Name, b.Spec.Method = "demo", method
		b.Status.Phase, b.Status.StoppedAt = phase, stopped
		return b
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		backup("a", holdfastv1.BackupLogical, holdfastv1.BackupCompleted, at(1000)),
		backup("b", holdfastv1.BackupLogical, holdfastv1.BackupCompleted, at(3000)),
		backup("c", holdfastv1.BackupLogical, holdfastv1.BackupFailed, at(4000)),
		backup("d", holdfastv1.BackupPGBackRest, "", nil),
	).Build()
	want := `
# HELP holdfast_backup_last_completed_timestamp_seconds When the cluster's last completed backup of each method stopped (Unix seconds): alert on time() minus it.
# TYPE holdfast_backup_last_completed_timestamp_seconds gauge
holdfast_backup_last_completed_timestamp_seconds{cluster="demo",method="logical",namespace="db"} 3000
# HELP holdfast_backups Backup objects, by cluster, method and phase.
# TYPE holdfast_backups gauge
holdfast_backups{cluster="demo",method="logical",namespace="db",phase="Completed"} 2
holdfast_backups{cluster="demo",method="logical",namespace="db",phase="Failed"} 1
holdfast_backups{cluster="demo",method="pgbackrest",namespace="db",phase="Pending"} 1
`
	if err := testutil.CollectAndCompare(NewBackupCollector(cl), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
