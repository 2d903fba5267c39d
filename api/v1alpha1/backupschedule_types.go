package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupScheduleSpec takes backups of a cluster on a cron schedule and
// prunes the old ones. A Kubernetes CronJob carries the schedule out: each
// run creates a Backup and waits for it, so runs never overlap.
type BackupScheduleSpec struct {
	// Cluster is the PostgresCluster to back up.
	Cluster ClusterReference `json:"cluster"`

	// Schedule is a five-field cron expression (minute hour day-of-month
	// month day-of-week) or a macro such as @daily, as CronJobs take it.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')",message="spec.schedule must be five cron fields (minute hour day-of-month month day-of-week) or one of @yearly, @monthly, @weekly, @daily, @hourly"
	Schedule string `json:"schedule"`

	// TimeZone of the schedule, as a tz database name (Europe/Paris); absent, UTC.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`
	// +optional
	TimeZone *string `json:"timeZone,omitempty"`

	// Method of the backups taken.
	// +kubebuilder:default=logical
	// +optional
	Method BackupMethod `json:"method,omitempty"`

	// Target of the backups taken.
	// +kubebuilder:default=prefer-standby
	// +optional
	Target BackupTarget `json:"target,omitempty"`

	// DeadlineSeconds of each backup taken (see Backup).
	// +kubebuilder:validation:Minimum=30
	// +kubebuilder:validation:Maximum=86400
	// +kubebuilder:default=3600
	// +optional
	DeadlineSeconds int32 `json:"deadlineSeconds,omitempty"`

	// Suspend stops new runs; backups already taken stay.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Retention says which of this schedule's backups to keep; the others
	// are deleted, and with them their files in the repository.
	// +optional
	Retention RetentionSpec `json:"retention,omitempty"`
}

// RetentionSpec prunes a schedule's backups. Failed backups are pruned
// with the rest; the newest completed backup is always kept.
//
// +kubebuilder:validation:XValidation:rule="has(self.keepLast) || has(self.maxAge)",message="spec.retention needs keepLast or maxAge (or both); leave spec.retention out to keep every backup"
type RetentionSpec struct {
	// KeepLast keeps the newest N completed backups.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	KeepLast *int32 `json:"keepLast,omitempty"`

	// MaxAge keeps backups younger than this: 30d, 2w, 36h, 1d12h.
	// +optional
	MaxAge Age `json:"maxAge,omitempty"`
}

// BackupScheduleStatus is what the schedule last did.
type BackupScheduleStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// CronJob is the CronJob carrying the schedule out.
	// +optional
	CronJob string `json:"cronJob,omitempty"`

	// LastBackup is the newest Backup the schedule made, and LastCompleted
	// the newest that completed.
	// +optional
	LastBackup string `json:"lastBackup,omitempty"`
	// +optional
	LastCompleted string `json:"lastCompleted,omitempty"`

	// Pruned counts backups retention has deleted.
	// +optional
	Pruned int64 `json:"pruned,omitempty"`

	// Conditions: Ready (the CronJob is in place) and its reason when not.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BackupSchedule takes a cluster's backups on a schedule, through a CronJob,
// and applies its retention.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=holdfast
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster.name`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Method",type=string,JSONPath=`.spec.method`
// +kubebuilder:printcolumn:name="Last",type=string,JSONPath=`.status.lastBackup`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 40",message="metadata.name must be at most 40 characters so that the CronJob's and its Backups' names fit"
type BackupSchedule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackupScheduleSpec   `json:"spec"`
	Status BackupScheduleStatus `json:"status,omitempty"`
}

// BackupScheduleList is a list of BackupSchedules.
//
// +kubebuilder:object:root=true
type BackupScheduleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackupSchedule `json:"items"`
}
