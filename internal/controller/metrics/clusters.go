package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var (
	instancesDesc = prometheus.NewDesc("holdfast_cluster_instances",
		"Instances the cluster's spec asks for.", []string{"namespace", "cluster"}, nil)
	readyDesc = prometheus.NewDesc("holdfast_cluster_ready_instances",
		"Instances ready, as the cluster's status says.", []string{"namespace", "cluster"}, nil)
	primaryDesc = prometheus.NewDesc("holdfast_cluster_primary_available",
		"1 while the cluster's PrimaryAvailable condition is True.", []string{"namespace", "cluster"}, nil)
	certificateDesc = prometheus.NewDesc("holdfast_certificate_expiry_timestamp_seconds",
		"When each of the cluster's certificates expires (Unix seconds), as its status records.", []string{"namespace", "cluster", "secret"}, nil)
	volumeFullDesc = prometheus.NewDesc("holdfast_cluster_volume_full",
		"1 while an instance's data volume is 95% full or more and cannot grow (the cluster is Degraded with reason VolumeFull).", []string{"namespace", "cluster", "instance"}, nil)
	volumeResizingDesc = prometheus.NewDesc("holdfast_cluster_volume_resizing",
		"1 while an instance's claim asks for more than it has: a resize under way, or stuck.", []string{"namespace", "cluster", "instance"}, nil)
	intervalDesc = prometheus.NewDesc("holdfast_backup_schedule_interval_seconds",
		"The longest gap between two of a BackupSchedule's next runs: a last good backup older than twice this is late.",
		[]string{"namespace", "cluster", "schedule"}, nil)
)

// clusters reads the PostgresClusters and BackupSchedules at scrape time,
// from the operator's cache.
type clusters struct {
	reader client.Reader
	now    func() time.Time
}

// NewClusterCollector collects the clusters' and schedules' series from
// reader (the manager's cached client).
func NewClusterCollector(reader client.Reader) prometheus.Collector {
	return clusters{reader: reader, now: time.Now}
}

func (c clusters) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{instancesDesc, readyDesc, primaryDesc, certificateDesc, volumeFullDesc, volumeResizingDesc, intervalDesc} {
		ch <- d
	}
}

func (c clusters) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var list holdfastv1.PostgresClusterList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(instancesDesc, err)
		return
	}
	for _, pc := range list.Items {
		gauge(instancesDesc, float64(pc.Spec.Instances), pc.Namespace, pc.Name)
		gauge(readyDesc, float64(pc.Status.ReadyInstances), pc.Namespace, pc.Name)
		primary := 0.0
		if meta.IsStatusConditionTrue(pc.Status.Conditions, holdfastv1.ConditionPrimaryAvailable) {
			primary = 1
		}
		gauge(primaryDesc, primary, pc.Namespace, pc.Name)
		for _, is := range pc.Status.Instances {
			if v := is.Volume; v != nil {
				gauge(volumeFullDesc, b2f(v.Full), pc.Namespace, pc.Name, is.Name)
				gauge(volumeResizingDesc, b2f(v.Resizing != ""), pc.Namespace, pc.Name, is.Name)
			}
		}
		for _, cs := range pc.Status.Certificates {
			if cs.NotAfter != nil {
				gauge(certificateDesc, float64(cs.NotAfter.Unix()), pc.Namespace, pc.Name, cs.Secret)
			}
		}
	}
	var schedules holdfastv1.BackupScheduleList
	if err := c.reader.List(ctx, &schedules); err != nil {
		ch <- prometheus.NewInvalidMetric(intervalDesc, err)
		return
	}
	for _, s := range schedules.Items {
		if s.Spec.Suspend {
			continue
		}
		if gap, ok := longestGap(s.Spec.Schedule, c.now()); ok {
			gauge(intervalDesc, gap.Seconds(), s.Namespace, s.Spec.Cluster.Name, s.Name)
		}
	}
}

// longestGap is the longest time between two of the next runs of a
// five-field cron schedule, as the CronJob controller reads it: "0 3 * * 1-5"
// runs daily but leaves a weekend gap.
func longestGap(schedule string, now time.Time) (time.Duration, bool) {
	sched, err := cron.ParseStandard(schedule)
	if err != nil {
		return 0, false
	}
	var gap time.Duration
	at := sched.Next(now)
	for range 16 {
		next := sched.Next(at)
		if next.IsZero() {
			break
		}
		gap = max(gap, next.Sub(at))
		at = next
	}
	return gap, gap > 0
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
