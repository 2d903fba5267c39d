package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var (
	backupsDesc = prometheus.NewDesc("holdfast_backups",
		"Backup objects, by cluster, method and phase.",
		[]string{"namespace", "cluster", "method", "phase"}, nil)
	lastBackupDesc = prometheus.NewDesc("holdfast_backup_last_completed_timestamp_seconds",
		"When the cluster's last completed backup of each method stopped (Unix seconds): alert on time() minus it.",
		[]string{"namespace", "cluster", "method"}, nil)
)

// backups reads the Backups at scrape time from the operator's cache, so
// the figures are the objects' own: nothing to keep in step, nothing left
// behind by a deleted backup or cluster.
type backups struct {
	reader client.Reader
}

// NewBackupCollector collects the backup series from reader (the
// manager's cached client).
func NewBackupCollector(reader client.Reader) prometheus.Collector {
	return backups{reader: reader}
}

func (b backups) Describe(ch chan<- *prometheus.Desc) {
	ch <- backupsDesc
	ch <- lastBackupDesc
}

func (b backups) Collect(ch chan<- prometheus.Metric) {
	var list holdfastv1.BackupList
	if err := b.reader.List(context.Background(), &list); err != nil {
		ch <- prometheus.NewInvalidMetric(backupsDesc, err)
		return
	}
	type phaseKey struct{ ns, cluster, method, phase string }
	type clusterKey struct{ ns, cluster, method string }
	counts := map[phaseKey]int{}
	last := map[clusterKey]float64{}
	for _, bk := range list.Items {
		phase := string(bk.Status.Phase)
		if phase == "" {
			phase = string(holdfastv1.BackupPending)
		}
		counts[phaseKey{bk.Namespace, bk.Spec.Cluster.Name, string(bk.Spec.Method), phase}]++
		if bk.Status.Phase == holdfastv1.BackupCompleted && bk.Status.StoppedAt != nil {
			k := clusterKey{bk.Namespace, bk.Spec.Cluster.Name, string(bk.Spec.Method)}
			if t := float64(bk.Status.StoppedAt.Unix()); t > last[k] {
				last[k] = t
			}
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(backupsDesc, prometheus.GaugeValue, float64(n), k.ns, k.cluster, k.method, k.phase)
	}
	for k, t := range last {
		ch <- prometheus.MustNewConstMetric(lastBackupDesc, prometheus.GaugeValue, t, k.ns, k.cluster, k.method)
	}
}
