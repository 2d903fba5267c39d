// Package statusreport builds and renders what `holdfast status` shows of a
// cluster: one Report from the cluster, its pods, backups and schedules,
// printed as a terminal view or as JSON/YAML for scripts. Building is pure,
// so the view is tested on fixed objects.
package statusreport

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// Report is a cluster's status as `holdfast status` shows it.
type Report struct {
	Cluster      Summary                        `json:"cluster"`
	Instances    []Instance                     `json:"instances"`
	Replication  Replication                    `json:"replication"`
	Backups      Backups                        `json:"backups"`
	Operation    *holdfastv1.Operation          `json:"operation,omitempty"`
	History      []holdfastv1.OperationRecord   `json:"history,omitempty"`
	Certificates []holdfastv1.CertificateStatus `json:"certificates,omitempty"`
	Conditions   []Condition                    `json:"conditions"`
}

// Summary is the cluster at a glance.
type Summary struct {
	Namespace       string `json:"namespace"`
	Name            string `json:"name"`
	Phase           string `json:"phase"`
	Primary         string `json:"primary,omitempty"`
	TargetPrimary   string `json:"targetPrimary,omitempty"`
	Instances       int32  `json:"instances"`
	Ready           int32  `json:"ready"`
	Timeline        int    `json:"timeline,omitempty"`
	CurrentLSN      string `json:"currentLSN,omitempty"`
	Image           string `json:"image,omitempty"`
	PostgresVersion int32  `json:"postgresVersion"`
	// PositionsAge is how old the WAL positions below are.
	PositionsAge string `json:"positionsAge,omitempty"`
}

// Instance is one instance, from the cluster's status and its pod.
type Instance struct {
	holdfastv1.InstanceStatus `json:",inline"`
	Node                      string `json:"node,omitempty"`
	Restarts                  int32  `json:"restarts"`
	PodPhase                  string `json:"podPhase,omitempty"`
	Sync                      bool   `json:"sync"`
}

// Replication is how commits are made durable.
type Replication struct {
	// Quorum is how many standbys confirm each commit; 0: asynchronous.
	Quorum       int32    `json:"quorum"`
	SyncStandbys []string `json:"syncStandbys,omitempty"`
}

// Backups are the cluster's repository, schedules and last backup of each method.
type Backups struct {
	Repository string       `json:"repository,omitempty"`
	Schedules  []Schedule   `json:"schedules,omitempty"`
	Last       []LastBackup `json:"last,omitempty"`
}

// Schedule is a BackupSchedule of the cluster.
type Schedule struct {
	Name          string `json:"name"`
	Method        string `json:"method"`
	Schedule      string `json:"schedule"`
	Suspended     bool   `json:"suspended,omitempty"`
	LastCompleted string `json:"lastCompleted,omitempty"`
}

// LastBackup is the newest backup of one method and what became of it.
type LastBackup struct {
	Method  string `json:"method"`
	Name    string `json:"name"`
	Phase   string `json:"phase"`
	Stopped string `json:"stopped,omitempty"`
	Age     string `json:"age,omitempty"`
	Message string `json:"message,omitempty"`
}

// Condition is a status condition, with how long it has held.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Since   string `json:"since,omitempty"`
}

// historyShown is how many finished operations the report keeps.
const historyShown = 5

// Build makes the report of c from its pods, backups and schedules (any
// order; others' are ignored) as of now.
func Build(c *holdfastv1.PostgresCluster, pods []corev1.Pod, backups []holdfastv1.Backup, schedules []holdfastv1.BackupSchedule, now time.Time) Report {
	st := c.Status
	r := Report{
		Cluster: Summary{Namespace: c.Namespace, Name: c.Name, Phase: string(st.Phase), Primary: st.CurrentPrimary,
			TargetPrimary: st.TargetPrimary, Instances: c.Spec.Instances, Ready: st.ReadyInstances,
			Image: c.Spec.Image, PostgresVersion: c.Spec.PostgresVersion},
		Operation:    st.Operation,
		Certificates: st.Certificates,
	}
	if st.PositionsObservedAt != nil {
		r.Cluster.PositionsAge = age(now.Sub(st.PositionsObservedAt.Time))
	}
	byName := map[string]*corev1.Pod{}
	for i := range pods {
		byName[pods[i].Name] = &pods[i]
	}
	for _, in := range st.Instances {
		i := Instance{InstanceStatus: in, Sync: slices.Contains(st.SyncStandbys, in.Name)}
		if p := byName[in.Name]; p != nil {
			i.Node, i.PodPhase = p.Spec.NodeName, string(p.Status.Phase)
			for _, cs := range p.Status.ContainerStatuses {
				i.Restarts += cs.RestartCount
			}
		}
		if in.Name == st.CurrentPrimary {
			r.Cluster.Timeline, r.Cluster.CurrentLSN = in.Timeline, in.CurrentLSN
		}
		r.Instances = append(r.Instances, i)
	}
	if c.Spec.Synchronous != nil {
		r.Replication.Quorum = c.Spec.Synchronous.Quorum
	}
	r.Replication.SyncStandbys = st.SyncStandbys

	if b := c.Spec.Backup; b != nil && b.Repository.S3 != nil {
		r.Backups.Repository = "s3://" + b.Repository.S3.Bucket + " at " + b.Repository.S3.Endpoint
	}
	for _, s := range schedules {
		if s.Namespace != c.Namespace || s.Spec.Cluster.Name != c.Name {
			continue
		}
		r.Backups.Schedules = append(r.Backups.Schedules, Schedule{Name: s.Name, Method: string(s.Spec.Method),
			Schedule: s.Spec.Schedule, Suspended: s.Spec.Suspend, LastCompleted: s.Status.LastCompleted})
	}
	sort.Slice(r.Backups.Schedules, func(i, j int) bool { return r.Backups.Schedules[i].Name < r.Backups.Schedules[j].Name })
	newest := map[string]holdfastv1.Backup{}
	for _, b := range backups {
		if b.Namespace != c.Namespace || b.Spec.Cluster.Name != c.Name {
			continue
		}
		m := string(b.Spec.Method)
		if old, ok := newest[m]; !ok || old.CreationTimestamp.Before(&b.CreationTimestamp) {
			newest[m] = b
		}
	}
	for _, m := range slices.Sorted(maps.Keys(newest)) {
		b := newest[m]
		lb := LastBackup{Method: m, Name: b.Name, Phase: string(b.Status.Phase), Message: b.Status.Message}
		if lb.Phase == "" {
			lb.Phase = string(holdfastv1.BackupPending)
		}
		if b.Status.StoppedAt != nil {
			lb.Stopped = b.Status.StoppedAt.UTC().Format(time.RFC3339)
			lb.Age = age(now.Sub(b.Status.StoppedAt.Time))
		}
		r.Backups.Last = append(r.Backups.Last, lb)
	}

	hist := st.History
	if len(hist) > historyShown {
		hist = hist[len(hist)-historyShown:]
	}
	for i := len(hist) - 1; i >= 0; i-- {
		r.History = append(r.History, hist[i])
	}
	for _, cond := range st.Conditions {
		r.Conditions = append(r.Conditions, Condition{Type: cond.Type, Status: string(cond.Status), Reason: cond.Reason,
			Message: cond.Message, Since: age(now.Sub(cond.LastTransitionTime.Time))})
	}
	return r
}

// age says d the way kubectl does: 45s, 3m12s, 5h3m, 2d4h.
func age(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
