package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BackupMethod is how a backup copies the cluster.
// +kubebuilder:validation:Enum=logical;volumeSnapshot;pgbackrest
type BackupMethod string

// Backup methods.
const (
	// BackupLogical is pg_dump of every database (custom format) and
	// pg_dumpall of the roles, written to the cluster's repository.
	BackupLogical BackupMethod = "logical"
	// BackupVolumeSnapshot is a VolumeSnapshot of one instance's data claim.
	BackupVolumeSnapshot BackupMethod = "volumeSnapshot"
	// BackupPGBackRest is a pgBackRest physical backup, with the WAL
	// archive that makes point-in-time recovery possible.
	BackupPGBackRest BackupMethod = "pgbackrest"
)

// BackupTarget says which instance a backup reads.
// +kubebuilder:validation:Enum=prefer-standby;primary
type BackupTarget string

// Backup targets.
const (
	// TargetPreferStandby reads a ready replica when there is one, so the
	// primary's clients do not share its disk and CPU with the backup.
	TargetPreferStandby BackupTarget = "prefer-standby"
	// TargetPrimary always reads the primary.
	TargetPrimary BackupTarget = "primary"
)

// ClusterReference names a PostgresCluster in the same namespace.
type ClusterReference struct {
	// Name of the PostgresCluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=47
	Name string `json:"name"`
}

// BackupSpec asks for one backup of one cluster. It cannot change: a
// different backup is a new Backup.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a Backup's spec cannot change; create a new Backup"
type BackupSpec struct {
	// Cluster is the PostgresCluster to back up.
	Cluster ClusterReference `json:"cluster"`

	// Method is how the backup is taken.
	// +kubebuilder:default=logical
	// +optional
	Method BackupMethod `json:"method,omitempty"`

	// Target is the instance the backup reads.
	// +kubebuilder:default=prefer-standby
	// +optional
	Target BackupTarget `json:"target,omitempty"`

	// VolumeSnapshot tunes a volumeSnapshot backup.
	// +optional
	VolumeSnapshot *VolumeSnapshotBackupSpec `json:"volumeSnapshot,omitempty"`

	// PGBackRest tunes a pgbackrest backup.
	// +optional
	PGBackRest *PGBackRestBackupSpec `json:"pgbackrest,omitempty"`

	// DeadlineSeconds bounds the backup from its start: one still running
	// then is stopped and marked Failed, so a stuck backup never holds up
	// the next one.
	// +kubebuilder:validation:Minimum=30
	// +kubebuilder:validation:Maximum=86400
	// +kubebuilder:default=3600
	// +optional
	DeadlineSeconds int32 `json:"deadlineSeconds,omitempty"`
}

// VolumeSnapshotBackupSpec says how a volumeSnapshot backup is taken: a
// cold snapshot of a replica stopped for it (a folder copy, or any CSI
// snapshot, of a running server is not consistent without the WAL archive;
// a stopped one is, and the primary never stops).
type VolumeSnapshotBackupSpec struct {
	// ClassName is the VolumeSnapshotClass; absent, the cluster's default.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClassName string `json:"className,omitempty"`
}

// PGBackRestBackupSpec is how much a pgBackRest backup copies.
type PGBackRestBackupSpec struct {
	// Type is full (everything), diff (what changed since the last full)
	// or incr (since the last backup of any type). A diff or incr with no
	// full before it is taken as a full.
	// +kubebuilder:validation:Enum=full;diff;incr
	// +kubebuilder:default=full
	// +optional
	Type string `json:"type,omitempty"`
}

// BackupPhase is where a backup is in its life.
type BackupPhase string

// Backup phases.
const (
	BackupPending   BackupPhase = "Pending"
	BackupRunning   BackupPhase = "Running"
	BackupCompleted BackupPhase = "Completed"
	BackupFailed    BackupPhase = "Failed"
)

// Reasons a backup fails, in status.reason.
const (
	BackupReasonClusterNotFound  = "ClusterNotFound"
	BackupReasonNoRepository     = "NoRepository"
	BackupReasonMethodNotServed  = "MethodNotServed"
	BackupReasonNoInstance       = "NoInstance"
	BackupReasonInstanceRestart  = "InstanceRestarted"
	BackupReasonDeadlineExceeded = "DeadlineExceeded"
	BackupReasonBackupError      = "BackupError"
)

// BackupStatus is what became of the backup.
type BackupStatus struct {
	// Phase is Pending, Running, Completed or Failed.
	// +optional
	Phase BackupPhase `json:"phase,omitempty"`

	// Reason is a one-word cause when the backup failed; Message says more.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`

	// Instance is the pod whose postgres the backup read.
	// +optional
	Instance string `json:"instance,omitempty"`

	// StartedAt and StoppedAt bound the backup.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	StoppedAt *metav1.Time `json:"stoppedAt,omitempty"`

	// SizeBytes is what the backup occupies in the repository.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty"`

	// Repository is where the backup was written, as the cluster's
	// spec.backup.repository said when it started; restores read it from here.
	// +optional
	Repository *RepositorySpec `json:"repository,omitempty"`

	// Path is the backup's folder (object key prefix) in the repository.
	// +optional
	Path string `json:"path,omitempty"`

	// Databases a logical backup holds.
	// +optional
	Databases []string `json:"databases,omitempty"`

	// ServerVersion is the postgres server version (server_version_num) the backup was read from.
	// +optional
	ServerVersion int `json:"serverVersion,omitempty"`

	// VolumeSnapshot is the VolumeSnapshot a volumeSnapshot backup made, in
	// the Backup's namespace; deleting the Backup deletes it.
	// +optional
	VolumeSnapshot string `json:"volumeSnapshot,omitempty"`

	// PGBackRest describes a pgbackrest backup's set.
	// +optional
	PGBackRest *PGBackRestBackupStatus `json:"pgbackrest,omitempty"`
}

// PGBackRestBackupStatus is a pgBackRest backup set: the stanza it is in,
// its label, the WAL it needs to be consistent and the LSNs it spans.
type PGBackRestBackupStatus struct {
	Stanza string `json:"stanza"`
	// +optional
	Label string `json:"label,omitempty"`
	// +optional
	BeginWAL string `json:"beginWAL,omitempty"`
	// +optional
	EndWAL string `json:"endWAL,omitempty"`
	// +optional
	BeginLSN string `json:"beginLSN,omitempty"`
	// +optional
	EndLSN string `json:"endLSN,omitempty"`
	// DatabaseSizeBytes is the size of what the backup copied; status.sizeBytes what it stores.
	// +optional
	DatabaseSizeBytes int64 `json:"databaseSizeBytes,omitempty"`
}

// Backup is one backup of one PostgresCluster. The operator runs it once and
// records the outcome; deleting a Completed Backup removes its files from
// the repository.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=holdfast
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster.name`
// +kubebuilder:printcolumn:name="Method",type=string,JSONPath=`.spec.method`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Instance",type=string,JSONPath=`.status.instance`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.sizeBytes`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Backup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackupSpec   `json:"spec"`
	Status BackupStatus `json:"status,omitempty"`
}

// BackupList is a list of Backups.
//
// +kubebuilder:object:root=true
type BackupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Backup `json:"items"`
}

// Done says whether the backup has reached a final phase.
func (b *Backup) Done() bool {
	return b.Status.Phase == BackupCompleted || b.Status.Phase == BackupFailed
}
