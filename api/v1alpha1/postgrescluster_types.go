package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PostgresClusterSpec is the cluster the user wants. Fields that cannot change
// after creation say so, and the API server refuses the change at admission.
//
// +kubebuilder:validation:XValidation:rule="!has(self.synchronous) || self.synchronous.quorum < self.instances",message="spec.synchronous.quorum must be less than spec.instances: a quorum of N needs N standbys besides the primary"
// +kubebuilder:validation:XValidation:rule="!has(self.roles) || self.roles.all(r, r.name != self.?bootstrap.?initdb.?owner.orValue('app'))",message="spec.roles cannot declare the bootstrap owner (spec.bootstrap.initdb.owner), which Holdfast keeps with its password in the <cluster>-app Secret",messageExpression="'spec.roles cannot declare ' + self.bootstrap.initdb.owner + ': it is the bootstrap owner (spec.bootstrap.initdb.owner), which Holdfast keeps with its password in the <cluster>-app Secret'"
// +kubebuilder:validation:XValidation:rule="!has(self.databases) || self.databases.all(d, d.name != self.?bootstrap.?initdb.?database.orValue('app'))",message="spec.databases cannot declare the bootstrap database (spec.bootstrap.initdb.database), which Holdfast keeps",messageExpression="'spec.databases cannot declare ' + self.bootstrap.initdb.database + ': it is the bootstrap database (spec.bootstrap.initdb.database), which Holdfast keeps'"
// +kubebuilder:validation:XValidation:rule="!has(self.databases) || self.databases.all(d, d.ensure == 'absent' || !has(d.owner) || d.owner == 'postgres' || d.owner == self.?bootstrap.?initdb.?owner.orValue('app') || (has(self.roles) && self.roles.exists(r, r.name == d.owner && r.ensure == 'present')))",message="spec.databases: a database's owner must be a role of spec.roles with ensure: present, the bootstrap owner, or postgres"
type PostgresClusterSpec struct {
	// Instances is how many postgres instances run: one primary, the rest streaming replicas.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	// +kubebuilder:default=1
	Instances int32 `json:"instances"`

	// PostgresVersion is the PostgreSQL major version. It cannot change in
	// place: a major upgrade is a restore into a new cluster.
	// +kubebuilder:validation:Minimum=14
	// +kubebuilder:validation:Maximum=17
	// +kubebuilder:default=15
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.postgresVersion cannot change: a major version upgrade is a restore into a new cluster"
	PostgresVersion int32 `json:"postgresVersion"`

	// Image overrides the postgres container image. It must run
	// PostgresVersion's server, and pgBackRest for physical backups; by
	// default it is Holdfast's image of that version,
	// ghcr.io/holdfast-dev/holdfast-postgres:<postgresVersion>, which has both
	// and runs as uid 999.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Storage is the data volume every instance claims.
	Storage StorageSpec `json:"storage"`

	// Resources of the postgres container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// PostgreSQL configures the server.
	// +optional
	PostgreSQL PostgreSQLSpec `json:"postgresql,omitempty"`

	// Synchronous turns synchronous replication on. Absent, replication is asynchronous.
	// +optional
	Synchronous *SynchronousSpec `json:"synchronous,omitempty"`

	// Certificates brings the cluster's own certificates instead of the
	// ones the operator issues. Absent, the operator issues them all.
	// +optional
	Certificates *CertificatesSpec `json:"certificates,omitempty"`

	// Bootstrap says how the first primary gets its data. It cannot change after creation.
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.bootstrap cannot change after the cluster is created"
	// +optional
	Bootstrap BootstrapSpec `json:"bootstrap,omitempty"`

	// Scheduling places instance pods on nodes.
	// +optional
	Scheduling SchedulingSpec `json:"scheduling,omitempty"`

	// Backup says where the cluster's backups go.
	// +optional
	Backup *BackupConfig `json:"backup,omitempty"`

	// Failover says when the operator replaces a failed primary.
	// +kubebuilder:default={unreachableSeconds: 6, leaseDurationSeconds: 6, renewDeadlineSeconds: 4}
	// +optional
	Failover FailoverSpec `json:"failover,omitempty"`

	// Hibernation stops every instance and keeps the claims: true stops
	// the cluster (after a switchover to <name>-0, which the StatefulSet
	// starts first), false brings it back with the same primary and data.
	// +optional
	Hibernation bool `json:"hibernation,omitempty"`

	// PrimaryUpdateMethod says how a rolling update restarts the primary,
	// once every replica runs the new pod template: Switchover (the
	// default) hands the primary role to the most advanced replica first,
	// so writes pause for one switchover; Restart restarts the primary in
	// place, so writes pause until it is back.
	// +kubebuilder:validation:Enum=Switchover;Restart
	// +kubebuilder:default=Switchover
	// +optional
	PrimaryUpdateMethod PrimaryUpdateMethod `json:"primaryUpdateMethod,omitempty"`

	// Roles are kept on the primary as declared (docs/roles.md). Roles not
	// named here are never touched.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Roles []RoleSpec `json:"roles,omitempty"`

	// Databases are kept on the primary as declared (docs/roles.md).
	// Databases not named here are never touched.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Databases []DatabaseSpec `json:"databases,omitempty"`
}

// PrimaryUpdateMethod is how a rolling update restarts the primary.
type PrimaryUpdateMethod string

const (
	PrimaryUpdateSwitchover PrimaryUpdateMethod = "Switchover"
	PrimaryUpdateRestart    PrimaryUpdateMethod = "Restart"
)

// FailoverSpec tunes automated failover. A primary whose pod is gone or
// whose container is not running is replaced at once: its processes are
// gone. One that is merely silent may be alive and cut off, so the operator
// waits until its lease on the primary role has expired: by then it has
// stopped taking writes on its own (it stops postgres when it cannot renew
// the lease within renewDeadlineSeconds).
//
// +kubebuilder:validation:XValidation:rule="self.renewDeadlineSeconds + 2 <= self.leaseDurationSeconds",message="spec.failover.renewDeadlineSeconds must be at least 2 seconds shorter than leaseDurationSeconds: a primary must have stopped taking writes before its lease expires and a replica is promoted"
// +kubebuilder:validation:XValidation:rule="self.unreachableSeconds >= self.leaseDurationSeconds",message="spec.failover.unreachableSeconds must be at least leaseDurationSeconds"
type FailoverSpec struct {
	// UnreachableSeconds is how long the primary's instance manager may go
	// unanswered, or its postgres stay down, before a replica is promoted.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=6
	// +optional
	UnreachableSeconds int32 `json:"unreachableSeconds,omitempty"`

	// LeaseDurationSeconds is how long the primary's hold on its role (a
	// coordination.k8s.io Lease it renews every second) lasts unrenewed.
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=600
	// +kubebuilder:default=6
	// +optional
	LeaseDurationSeconds int32 `json:"leaseDurationSeconds,omitempty"`

	// RenewDeadlineSeconds is how long the primary keeps taking writes
	// without renewing its lease before it stops postgres.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=598
	// +kubebuilder:default=4
	// +optional
	RenewDeadlineSeconds int32 `json:"renewDeadlineSeconds,omitempty"`
}

// CertificateStatus is a certificate of the cluster's.
type CertificateStatus struct {
	// Secret holds it: the operator's, or the user's (spec.certificates).
	Secret string `json:"secret"`
	// Serial is its serial number, in hexadecimal.
	// +optional
	Serial string `json:"serial,omitempty"`
	// Issuer is the subject of the CA that signed it.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// NotAfter is when it expires.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	NotAfter *metav1.Time `json:"notAfter,omitempty"`
	// RenewAt is when the operator issues it again (two thirds of its
	// lifetime); absent for the user's, which the user renews.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	RenewAt *metav1.Time `json:"renewAt,omitempty"`
	// Problem says why the user's certificate in Secret is not used: the
	// last good one stays in force, and the cluster is Degraded with
	// reason InvalidCertificate.
	// +optional
	Problem string `json:"problem,omitempty"`
}

// CertificatesSpec names Secrets of the user's (cert-manager writes them
// in this shape) that the cluster uses as given.
type CertificatesSpec struct {
	// ServerTLSSecret is a kubernetes.io/tls Secret (tls.crt, tls.key and,
	// unless ServerCASecret is set, ca.crt) that postgres and the instance
	// API serve. Its names must include those clients dial (the -rw
	// Service's, say). It is checked before use: a key that does not
	// match, or a certificate expired or not chaining to its CA, leaves
	// the cluster serving the last good one, Degraded with reason
	// InvalidCertificate.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerTLSSecret string `json:"serverTLSSecret,omitempty"`

	// ServerCASecret holds (ca.crt) the CA that issued the server
	// certificate, which clients verify the server with.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerCASecret string `json:"serverCASecret,omitempty"`

	// ClientCASecret holds the CA that issues the cluster's client
	// certificates and that postgres verifies client certificates with:
	// ca.crt and ca.key, or a cert-manager CA Certificate's Secret
	// (tls.crt and tls.key of a CA). The operator issues replication's
	// certificate (CN streaming_replica) from it and renews it; the
	// cluster's own CA stays trusted beside it, since it issues the
	// operator's certificate for the instance API. A CA that cannot be
	// used leaves the last good replication certificate in force,
	// Degraded with reason InvalidCertificate.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClientCASecret string `json:"clientCASecret,omitempty"`
}

// StorageSpec is the PersistentVolumeClaim each instance gets.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoGrow) || quantity(string(self.autoGrow.maxSize)).compareTo(quantity(string(self.size))) >= 0",message="spec.storage.autoGrow.maxSize must be at least spec.storage.size"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="spec.storage.storageClassName cannot change: existing claims keep the class they were created with"
// +kubebuilder:validation:XValidation:rule="quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0",message="spec.storage.size cannot shrink: volumes can only grow"
type StorageSpec struct {
	// Size of each instance's data volume; it may grow, never shrink.
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('64Mi')) >= 0",message="spec.storage.size must be at least 64Mi"
	Size resource.Quantity `json:"size"`

	// StorageClassName of the claims; absent, the cluster's default class. It cannot change.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// AutoGrow grows each instance's claim as its volume fills, from the
	// usage the instance reports; absent, claims grow only with size.
	// +optional
	AutoGrow *AutoGrowSpec `json:"autoGrow,omitempty"`

	// RetentionPolicy says whether claims outlive the cluster and scale-downs.
	// Claims are kept unless this says Delete.
	// +kubebuilder:default={}
	// +optional
	RetentionPolicy ClaimRetentionPolicy `json:"retentionPolicy,omitempty"`
}

// AutoGrowSpec says when and how far claims grow. A claim grows once its
// volume is ThresholdPercent full, by Step, up to MaxSize; every claim of
// the cluster then grows to the largest, since each replica holds what
// the primary holds. A volume 95% full that cannot grow makes the cluster
// Degraded.
type AutoGrowSpec struct {
	// ThresholdPercent is how full a volume is when its claim grows.
	// +kubebuilder:validation:Minimum=50
	// +kubebuilder:validation:Maximum=95
	// +kubebuilder:default=80
	// +optional
	ThresholdPercent int32 `json:"thresholdPercent,omitempty"`

	// Step is how much a claim grows each time: a quantity (512Mi, 2Gi)
	// or a percentage of its size (25%).
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^[1-9][0-9]{0,2}%$') || (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))",message="spec.storage.autoGrow.step must be a positive quantity (2Gi) or a percentage (25%)"
	// +kubebuilder:default="25%"
	// +optional
	Step string `json:"step,omitempty"`

	// MaxSize is the most a claim grows to.
	MaxSize resource.Quantity `json:"maxSize"`
}

// ClaimRetention is what happens to an instance's claim when its pod is no longer wanted.
// +kubebuilder:validation:Enum=Retain;Delete
type ClaimRetention string

const (
	// ClaimRetain keeps the claim and its data.
	ClaimRetain ClaimRetention = "Retain"
	// ClaimDelete deletes the claim; the volume follows its StorageClass's reclaim policy.
	ClaimDelete ClaimRetention = "Delete"
)

// ClaimRetentionPolicy mirrors the StatefulSet's persistentVolumeClaimRetentionPolicy.
type ClaimRetentionPolicy struct {
	// WhenDeleted applies when the cluster is deleted.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted ClaimRetention `json:"whenDeleted,omitempty"`

	// WhenScaled applies to the instances removed by lowering spec.instances.
	// +kubebuilder:default=Retain
	// +optional
	WhenScaled ClaimRetention `json:"whenScaled,omitempty"`
}

// PostgreSQLSpec configures the postgres server.
type PostgreSQLSpec struct {
	// Parameters are postgresql.conf settings. Settings Holdfast manages itself
	// (paths, listening, replication, archiving, recovery) are refused.
	// +kubebuilder:validation:MaxProperties=256
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^[a-z][a-z0-9_.]*$'))",message="spec.postgresql.parameters: names must be lower case letters, digits, _ and ."
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['archive_command', 'archive_library', 'archive_mode', 'cluster_name', 'config_file', 'data_directory', 'external_pid_file', 'hba_file', 'hot_standby', 'ident_file', 'include', 'include_dir', 'include_if_exists', 'listen_addresses', 'port', 'primary_conninfo', 'primary_slot_name', 'promote_trigger_file', 'recovery_target', 'recovery_target_action', 'recovery_target_inclusive', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_timeline', 'recovery_target_xid', 'restore_command', 'ssl', 'ssl_ca_file', 'ssl_cert_file', 'ssl_key_file', 'synchronous_standby_names', 'unix_socket_directories', 'wal_level', 'wal_log_hints']))",messageExpression="'spec.postgresql.parameters: ' + self.filter(k, k in ['archive_command', 'archive_library', 'archive_mode', 'cluster_name', 'config_file', 'data_directory', 'external_pid_file', 'hba_file', 'hot_standby', 'ident_file', 'include', 'include_dir', 'include_if_exists', 'listen_addresses', 'port', 'primary_conninfo', 'primary_slot_name', 'promote_trigger_file', 'recovery_target', 'recovery_target_action', 'recovery_target_inclusive', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_timeline', 'recovery_target_xid', 'restore_command', 'ssl', 'ssl_ca_file', 'ssl_cert_file', 'ssl_key_file', 'synchronous_standby_names', 'unix_socket_directories', 'wal_level', 'wal_log_hints'])[0] + ' is managed by Holdfast and cannot be set: ' + {'archive_command': 'Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)', 'archive_library': 'Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)', 'archive_mode': 'Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)', 'cluster_name': 'Holdfast places the server files and sockets itself', 'config_file': 'Holdfast places the server files and sockets itself', 'data_directory': 'Holdfast places the server files and sockets itself', 'external_pid_file': 'Holdfast places the server files and sockets itself', 'hba_file': 'Holdfast places the server files and sockets itself', 'hot_standby': 'Holdfast sets up streaming replication, rewind and promotion itself', 'ident_file': 'Holdfast places the server files and sockets itself', 'include': 'settings come only from spec.postgresql.parameters, not from files', 'include_dir': 'settings come only from spec.postgresql.parameters, not from files', 'include_if_exists': 'settings come only from spec.postgresql.parameters, not from files', 'listen_addresses': 'instances listen on port 5432 on every address; reach them through the cluster Services', 'port': 'instances listen on port 5432 on every address; reach them through the cluster Services', 'primary_conninfo': 'Holdfast sets up streaming replication, rewind and promotion itself', 'primary_slot_name': 'Holdfast sets up streaming replication, rewind and promotion itself', 'promote_trigger_file': 'Holdfast sets up streaming replication, rewind and promotion itself', 'recovery_target': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_action': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_inclusive': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_lsn': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_name': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_time': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_timeline': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'recovery_target_xid': 'to recover to a point in time, restore into a new cluster with spec.bootstrap.restore.target', 'restore_command': 'Holdfast archives and restores WAL itself (with pgBackRest when spec.backup.repository is set)', 'ssl': 'Holdfast will configure TLS and its certificates itself', 'ssl_ca_file': 'Holdfast will configure TLS and its certificates itself', 'ssl_cert_file': 'Holdfast will configure TLS and its certificates itself', 'ssl_key_file': 'Holdfast will configure TLS and its certificates itself', 'synchronous_standby_names': 'use spec.synchronous for synchronous replication', 'unix_socket_directories': 'Holdfast places the server files and sockets itself', 'wal_level': 'Holdfast sets up streaming replication, rewind and promotion itself', 'wal_log_hints': 'Holdfast sets up streaming replication, rewind and promotion itself'}[self.filter(k, k in ['archive_command', 'archive_library', 'archive_mode', 'cluster_name', 'config_file', 'data_directory', 'external_pid_file', 'hba_file', 'hot_standby', 'ident_file', 'include', 'include_dir', 'include_if_exists', 'listen_addresses', 'port', 'primary_conninfo', 'primary_slot_name', 'promote_trigger_file', 'recovery_target', 'recovery_target_action', 'recovery_target_inclusive', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_timeline', 'recovery_target_xid', 'restore_command', 'ssl', 'ssl_ca_file', 'ssl_cert_file', 'ssl_key_file', 'synchronous_standby_names', 'unix_socket_directories', 'wal_level', 'wal_log_hints'])[0]]"
	// +optional
	Parameters map[string]ParameterValue `json:"parameters,omitempty"`
}

// ParameterValue is one setting's value as postgresql.conf would hold it.
// +kubebuilder:validation:MaxLength=4096
type ParameterValue string

// SynchronousSpec asks for quorum commit: a commit is acknowledged once
// Quorum standbys have it (synchronous_standby_names = ANY Quorum (...)).
// Writes wait while fewer than Quorum standbys are connected.
type SynchronousSpec struct {
	// Quorum is how many standbys must confirm each commit.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8
	Quorum int32 `json:"quorum"`
}

// BootstrapSpec says how a new cluster gets its first data.
type BootstrapSpec struct {
	// InitDB creates an empty cluster with one application database. With
	// Restore, it names the application database and owner whose
	// credentials the new cluster's <cluster>-app Secret holds.
	// +kubebuilder:default={}
	// +optional
	InitDB InitDBSpec `json:"initdb,omitempty"`

	// Restore fills the new cluster from a backup. The cluster gets its own
	// credentials; the backup's roles come without their passwords.
	// +optional
	Restore *RestoreSpec `json:"restore,omitempty"`
}

// RestoreSpec names the backup a new cluster starts from.
//
// +kubebuilder:validation:XValidation:rule="has(self.backup)",message="spec.bootstrap.restore needs backup (the name of a Backup in the cluster's namespace)"
type RestoreSpec struct {
	// Backup is a Completed Backup in the cluster's namespace.
	// +optional
	Backup *BackupReference `json:"backup,omitempty"`

	// Target stops recovery at a point in time after the backup, for
	// pgbackrest backups (their WAL archive replays up to it). Absent, a
	// pgbackrest restore replays all the WAL archived.
	// +optional
	Target *RecoveryTarget `json:"target,omitempty"`
}

// RecoveryTarget is where a point-in-time recovery stops: just after the
// last transaction committed at or before Time, or at LSN.
//
// +kubebuilder:validation:XValidation:rule="has(self.time) != has(self.lsn)",message="spec.bootstrap.restore.target needs time or lsn, not both"
type RecoveryTarget struct {
	// Time, RFC 3339 with or without fractional seconds
	// (2026-11-26T10:00:00Z, 2026-11-26T10:00:00.123456+01:00).
	// +optional
	Time Timestamp `json:"time,omitempty"`

	// LSN, as postgres writes it (0/5000138).
	// +kubebuilder:validation:Pattern=`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`
	// +optional
	LSN string `json:"lsn,omitempty"`
}

// BackupReference names a Backup in the same namespace.
type BackupReference struct {
	// Name of the Backup.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// BackupConfig is where a cluster's backups go.
type BackupConfig struct {
	// Repository stores logical dumps (and, later, pgBackRest's files).
	Repository RepositorySpec `json:"repository"`
}

// RepositorySpec is a backup repository; S3 is the one kind so far.
//
// +kubebuilder:validation:XValidation:rule="has(self.s3)",message="a backup repository needs s3"
type RepositorySpec struct {
	// S3 is a bucket of an S3-compatible object store.
	// +optional
	S3 *S3Repository `json:"s3,omitempty"`
}

// S3Repository is a folder of a bucket of an S3-compatible object store,
// reached over HTTPS with path-style requests signed with Signature V4.
type S3Repository struct {
	// Endpoint is the store's URL, https://host[:port].
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$`
	Endpoint string `json:"endpoint"`

	// Bucket holds the backups.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9][a-z0-9.-]*[a-z0-9]$`
	Bucket string `json:"bucket"`

	// Region signs the requests.
	// +kubebuilder:default=us-east-1
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Region string `json:"region,omitempty"`

	// Path is the folder inside the bucket; each cluster writes under
	// <path>/<namespace>/<cluster>/.
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)?$`
	// +optional
	Path string `json:"path,omitempty"`

	// CredentialsSecret names a Secret in the cluster's namespace with keys
	// accessKeyId and secretAccessKey, and ca.crt when the store's
	// certificate is not signed by a public authority.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	CredentialsSecret string `json:"credentialsSecret"`
}

// InitDBSpec names the application database and its owner that initdb creates.
type InitDBSpec struct {
	// Database is the application database.
	// +kubebuilder:default=app
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['postgres', 'template0', 'template1'])",message="spec.bootstrap.initdb.database cannot be postgres, template0 or template1: those databases belong to the server"
	// +optional
	Database string `json:"database,omitempty"`

	// Owner is the role that owns Database; its password is in the <cluster>-app Secret.
	// +kubebuilder:default=app
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]*$`
	// +kubebuilder:validation:XValidation:rule="!(self in ['postgres', 'streaming_replica', 'public', 'none', 'current_user', 'current_role', 'session_user']) && !self.startsWith('pg_')",messageExpression="'spec.bootstrap.initdb.owner cannot be ' + self + ': postgres, streaming_replica and names starting with pg_ belong to the server and to Holdfast, and public, none, current_user, current_role and session_user are reserved words for roles'"
	// +optional
	Owner string `json:"owner,omitempty"`
}

// SchedulingSpec places instance pods on nodes.
type SchedulingSpec struct {
	// NodeSelector restricts instances to nodes with these labels.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Affinity of instance pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// Tolerations of instance pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// TopologySpreadConstraints replace the default, which spreads a cluster's
	// instances over nodes (kubernetes.io/hostname, maxSkew 1, ScheduleAnyway).
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClassName of instance pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// AnnotationSwitchoverTo on a PostgresCluster asks for a planned
// switchover to the instance it names (`holdfast promote` sets it). The
// operator removes it once the switchover is done or refused.
const AnnotationSwitchoverTo = "holdfast.dev/switchover-to"

// AnnotationRestartedAt on a PostgresCluster asks for a rolling restart of
// every instance whenever its value changes, as kubectl rollout restart
// does for a Deployment: it is copied into the pod template, and a changed
// template rolls. holdfast restart sets it to the current time.
const AnnotationRestartedAt = "holdfast.dev/restartedAt"

// AnnotationRestartInstance on a PostgresCluster asks for a restart of one
// instance: its value is "<instance>@<anything new>" (holdfast restart
// CLUSTER INSTANCE writes the time). The instance restarts once (the
// primary after a switchover, unless spec.primaryUpdateMethod is Restart);
// the rolling update that does it records the value in status.history, and
// a value recorded there asks nothing more.
const AnnotationRestartInstance = "holdfast.dev/restart-instance"

// AnnotationFenceForBackup on a PostgresCluster asks for a replica to be
// stopped while a Backup snapshots its volume: its value is
// "<instance>@<backup>". The Backup controller sets and removes it; the
// cluster's controller runs a Fence operation for it when no other runs,
// and never stops the primary. A request recorded in status.history asks
// nothing more.
const AnnotationFenceForBackup = "holdfast.dev/fence-for-backup"

// AnnotationFence on a PostgresCluster asks for a replica's postgres to be
// stopped, its pod and claim kept, until the annotation goes (`holdfast
// fence` sets and removes it): to inspect its data directory, or keep a
// suspect instance out of service. Its value is "<instance>@<request>",
// the request any word unique to this fence (`holdfast fence` writes the
// time). A Fence operation holds it, started when no other runs; a fence
// of the primary, or of an instance the cluster does not have, is recorded
// Failed at once. A request recorded in status.history asks nothing more.
const AnnotationFence = "holdfast.dev/fence"

// ClusterPhase is a one-word summary of the cluster; conditions carry the detail.
type ClusterPhase string

// Phases a cluster reports.
const (
	PhaseCreating ClusterPhase = "Creating"
	PhaseHealthy  ClusterPhase = "Healthy"
	PhaseDegraded ClusterPhase = "Degraded"
	PhaseUpdating ClusterPhase = "Updating"
	// PhaseHibernated: spec.hibernation stopped every instance; the claims remain.
	PhaseHibernated ClusterPhase = "Hibernated"
)

// Condition types a cluster reports.
const (
	ConditionReady       = "Ready"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
	// ConditionPrimaryAvailable: a primary takes writes; when False, the
	// reason says whether it is failing, being replaced, or cannot be.
	ConditionPrimaryAvailable = "PrimaryAvailable"
	// ConditionAdoptedExistingData: the cluster found, on its kept claims,
	// the data of an earlier cluster of its name, and took it as its own.
	ConditionAdoptedExistingData = "AdoptedExistingData"
	// ConditionContinuousArchiving: the primary's WAL reaches the
	// repository; absent without spec.backup.
	ConditionContinuousArchiving = "ContinuousArchiving"
)

// InstanceRole is what an instance is in its cluster.
type InstanceRole string

// Roles an instance can have.
const (
	RolePrimary InstanceRole = "primary"
	RoleReplica InstanceRole = "replica"
	RoleUnknown InstanceRole = "unknown"
)

// InstanceStatus is one instance as last seen.
type InstanceStatus struct {
	// Name of the instance's pod.
	Name string `json:"name"`
	// Role of the instance.
	Role InstanceRole `json:"role"`
	// Ready is whether the pod passes its readiness probe.
	Ready bool `json:"ready"`
	// Timeline is the instance's postgres timeline, as it last reported.
	// +optional
	Timeline int `json:"timeline,omitempty"`
	// Message says why an instance is not ready, when known.
	// +optional
	Message string `json:"message,omitempty"`
	// CurrentLSN is a primary's write position; ReceivedLSN and ReplayedLSN
	// a replica's, as last reported.
	// +optional
	CurrentLSN string `json:"currentLSN,omitempty"`
	// +optional
	ReceivedLSN string `json:"receivedLSN,omitempty"`
	// +optional
	ReplayedLSN string `json:"replayedLSN,omitempty"`
	// LagBytes is how far a replica's replay trails the primary.
	// +optional
	LagBytes int64 `json:"lagBytes,omitempty"`
	// PendingRestart names the settings the instance holds in its
	// configuration but applies only once postgres restarts.
	// +optional
	// +listType=atomic
	PendingRestart []string `json:"pendingRestart,omitempty"`
	// Volume is the instance's data volume: its claim and how full it is.
	// +optional
	Volume *VolumeStatus `json:"volume,omitempty"`
}

// Instance is the named instance's status, nil when the status has none.
func (s *PostgresClusterStatus) Instance(name string) *InstanceStatus {
	for i := range s.Instances {
		if s.Instances[i].Name == name {
			return &s.Instances[i]
		}
	}
	return nil
}

// VolumeStatus is an instance's data volume.
type VolumeStatus struct {
	// Claim is the PersistentVolumeClaim's name.
	Claim string `json:"claim"`
	// Size is what the claim asks for; Capacity what it has. They differ
	// while it grows.
	Size resource.Quantity `json:"size"`
	// +optional
	Capacity *resource.Quantity `json:"capacity,omitempty"`
	// UsedBytes and AvailableBytes are the filesystem's, as the instance
	// last reported them (AvailableBytes is what postgres may still write).
	// +optional
	UsedBytes int64 `json:"usedBytes,omitempty"`
	// +optional
	AvailableBytes int64 `json:"availableBytes,omitempty"`
	// UsedPercent is how full the volume is, as df says.
	// +optional
	UsedPercent int32 `json:"usedPercent,omitempty"`
	// Resizing says how the claim's growth goes while it lasts, and why
	// it is stuck when it is.
	// +optional
	Resizing string `json:"resizing,omitempty"`
	// Full is true at 95% or more with no room to grow.
	// +optional
	Full bool `json:"full,omitempty"`
}

// OperationKind names what an operation does.
// +kubebuilder:validation:Enum=Failover;Switchover;RollingUpdate;Hibernate;Wake;Fence;Failsafe
type OperationKind string

const (
	// OperationFailover replaces a failed primary with the most advanced replica.
	OperationFailover OperationKind = "Failover"
	// OperationSwitchover hands the primary role to a chosen replica after
	// the primary has stopped cleanly.
	OperationSwitchover OperationKind = "Switchover"
	// OperationRollingUpdate restarts every instance that runs an older
	// pod template or holds settings pending a restart: replicas first,
	// then the primary (after a switchover, unless spec.primaryUpdateMethod
	// is Restart).
	OperationRollingUpdate OperationKind = "RollingUpdate"
	// OperationHibernate stops every instance, keeping the claims.
	OperationHibernate OperationKind = "Hibernate"
	// OperationWake brings a hibernated cluster back with its primary.
	OperationWake OperationKind = "Wake"
	// OperationFence stops one replica's postgres, keeping its pod, while
	// a Backup snapshots its volume.
	OperationFence OperationKind = "Fence"
	// OperationFailsafe is recorded, never run: a period in which the
	// primary took writes without renewing its Lease (the API server did
	// not answer), on promises from every replica. Its times are the
	// primary's clock.
	OperationFailsafe OperationKind = "Failsafe"
)

// OperationPhase is the step an operation is at.
type OperationPhase string

const (
	// PhasePromoting: the target is being promoted (Failover, Switchover,
	// and a rolling update's switchover).
	PhasePromoting OperationPhase = "Promoting"
	// PhaseRestartingReplica: a rolling update waits for a restarted
	// replica to come back ready and streaming.
	PhaseRestartingReplica OperationPhase = "RestartingReplica"
	// PhaseRestartingPrimary: a rolling update waits for the primary it
	// restarted in place.
	PhaseRestartingPrimary OperationPhase = "RestartingPrimary"
	// PhaseStopping: hibernation waits for every pod to stop; a fence for
	// its replica's postgres to stop.
	PhaseStopping OperationPhase = "Stopping"
	// PhaseFenced: the fenced replica's postgres is stopped, and stays so
	// until the request goes.
	PhaseFenced OperationPhase = "Fenced"
	// PhaseStarting: waking waits for the primary to take writes again.
	PhaseStarting OperationPhase = "Starting"
)

// OperationOutcome is how an operation ended.
type OperationOutcome string

const (
	OutcomeSucceeded OperationOutcome = "Succeeded"
	// OutcomeFailed: a phase passed its deadline and the operation stopped there.
	OutcomeFailed OperationOutcome = "Failed"
	// OutcomePreempted: a failover took over.
	OutcomePreempted OperationOutcome = "Preempted"
)

// Operation is one change of roles or pods under way.
type Operation struct {
	Kind  OperationKind  `json:"kind"`
	Phase OperationPhase `json:"phase"`
	// From is the primary being replaced; To the instance being promoted.
	// +optional
	From string `json:"from,omitempty"`
	// +optional
	To string `json:"to,omitempty"`
	// Instance is the instance the phase works on: the one a rolling
	// update restarts.
	// +optional
	Instance string `json:"instance,omitempty"`
	// PodUID is the UID of the pod restarted, so that its successor is told apart.
	// +optional
	PodUID string `json:"podUID,omitempty"`
	// Epoch is the cluster's epoch the operation set.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`
	// Reason says why it started, and what it did since.
	Reason string `json:"reason"`
	// StartedAt is when the operation started (for a failover, when the
	// primary was first found failing); PhaseStartedAt when its phase did;
	// PhaseDeadline when the phase is abandoned or moves on (none for a
	// fence the user asked for, held until they release it).
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	StartedAt metav1.MicroTime `json:"startedAt"`
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	PhaseStartedAt metav1.MicroTime `json:"phaseStartedAt"`
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	PhaseDeadline *metav1.MicroTime `json:"phaseDeadline,omitempty"`
	// Dropped are promotion targets given up on at their deadline.
	// +optional
	// +listType=atomic
	Dropped []string `json:"dropped,omitempty"`
	// RequiredLSN is how much WAL any later target of a failover must have
	// received: the first target's position when it was chosen, which
	// holds every acknowledged commit.
	// +optional
	RequiredLSN string `json:"requiredLSN,omitempty"`
	// Restarted lists the instances a rolling update has restarted.
	// +optional
	// +listType=atomic
	Restarted []string `json:"restarted,omitempty"`
	// Request is the holdfast.dev/restart-instance annotation's value a
	// rolling update carries out, so that it is carried out once.
	// +optional
	Request string `json:"request,omitempty"`
}

// OperationRecord is an operation that finished.
type OperationRecord struct {
	Kind OperationKind `json:"kind"`
	// +optional
	From string `json:"from,omitempty"`
	// +optional
	To string `json:"to,omitempty"`
	// +optional
	// +listType=atomic
	Restarted []string `json:"restarted,omitempty"`
	// +optional
	Request string `json:"request,omitempty"`
	// Promised names, for a Failsafe, the replicas whose promises the
	// primary held.
	// +optional
	// +listType=atomic
	Promised []string         `json:"promised,omitempty"`
	Outcome  OperationOutcome `json:"outcome"`
	Reason   string           `json:"reason"`
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	StartedAt metav1.MicroTime `json:"startedAt"`
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	FinishedAt metav1.MicroTime `json:"finishedAt"`
	// Duration is FinishedAt - StartedAt, as Go prints durations (1.234s).
	Duration string `json:"duration"`
}

// PostgresClusterStatus is the cluster as the operator last saw it.
type PostgresClusterStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase summarises the conditions.
	// +optional
	Phase ClusterPhase `json:"phase,omitempty"`

	// Conditions: Ready, Progressing, Degraded, and the others named by the
	// Condition constants.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// CurrentPrimary is the instance that has reported it is the primary.
	// +optional
	CurrentPrimary string `json:"currentPrimary,omitempty"`

	// TargetPrimary is the instance the operator wants as primary; it differs
	// from CurrentPrimary during a failover or switchover.
	// +optional
	TargetPrimary string `json:"targetPrimary,omitempty"`

	// Epoch grows with every change of primary. Instances refuse orders of
	// an older epoch, so a delayed order cannot undo a failover.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`

	// ReadyInstances counts instances passing their readiness probe. It is
	// written even when zero, so that kubectl's Ready column shows 0.
	// +optional
	ReadyInstances int32 `json:"readyInstances"`

	// Timeline is the current primary's postgres timeline: it grows with
	// every promotion.
	// +optional
	Timeline int `json:"timeline,omitempty"`

	// MaxLagBytes is the largest replay lag of the replicas, as refreshed
	// with their WAL positions.
	// +optional
	MaxLagBytes int64 `json:"maxLagBytes,omitempty"`

	// LastBackup is when the cluster's last completed Backup, of any
	// method, stopped.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	LastBackup *metav1.Time `json:"lastBackup,omitempty"`

	// PrimaryFailingSince is when the operator first found the primary
	// unreachable or down; it clears when the primary answers again.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	PrimaryFailingSince *metav1.Time `json:"primaryFailingSince,omitempty"`

	// Certificates are the server and replication certificates in force:
	// when each expires and when the operator renews it. A user's server
	// certificate that is not used says why (Problem).
	// +listType=map
	// +listMapKey=secret
	// +optional
	Certificates []CertificateStatus `json:"certificates,omitempty"`

	// PositionsObservedAt is when the instances' WAL positions and lag in
	// Instances were observed; they are refreshed at least every 10 s
	// while they move.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`
	// +kubebuilder:validation:Type=string
	// +optional
	PositionsObservedAt *metav1.Time `json:"positionsObservedAt,omitempty"`

	// SyncStandbys are the standbys the primary last reported as
	// synchronous: with synchronous replication, only they may be promoted.
	// +optional
	SyncStandbys []string `json:"syncStandbys,omitempty"`

	// Operation is the change of roles or pods under way, if any. Only one
	// runs at a time, and each of its transitions is written here before
	// anything acts on it.
	// +optional
	Operation *Operation `json:"operation,omitempty"`

	// History lists the last 20 operations that finished, oldest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	History []OperationRecord `json:"history,omitempty"`

	// Instances lists every instance pod.
	// +listType=map
	// +listMapKey=name
	// +optional
	Instances []InstanceStatus `json:"instances,omitempty"`

	// Roles says, for each role of spec.roles, whether it is as declared.
	// The roles controller writes Roles, UnmanagedRoles, Databases and the
	// RolesReconciled and DatabasesReconciled conditions.
	// +listType=map
	// +listMapKey=name
	// +optional
	Roles []RoleStatus `json:"roles,omitempty"`

	// UnmanagedRoles are the roles on the primary that spec.roles does not
	// name and Holdfast does not keep itself: Holdfast leaves them alone.
	// The first 256 by name, so that a server with thousands of roles
	// does not swell the status.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +optional
	UnmanagedRoles []string `json:"unmanagedRoles,omitempty"`

	// Databases says, for each database of spec.databases, whether it is
	// as declared.
	// +listType=map
	// +listMapKey=name
	// +optional
	Databases []DatabaseStatus `json:"databases,omitempty"`
}

// PostgresCluster is a PostgreSQL cluster: one primary and streaming replicas
// on a StatefulSet, with Services that follow the primary.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pgc,categories=holdfast
// +kubebuilder:printcolumn:name="Instances",type=integer,JSONPath=`.spec.instances`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyInstances`
// +kubebuilder:printcolumn:name="Primary",type=string,JSONPath=`.status.currentPrimary`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Operation",type=string,JSONPath=`.status.operation.kind`
// +kubebuilder:printcolumn:name="Timeline",type=integer,JSONPath=`.status.timeline`,priority=1
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.maxLagBytes`,description="largest replica replay lag, bytes",priority=1
// +kubebuilder:printcolumn:name="Last Backup",type=date,JSONPath=`.status.lastBackup`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must start with a letter and hold only lower case letters, digits and -, because Service names derive from it"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 47",message="metadata.name must be at most 47 characters so that instance and Service names fit"
type PostgresCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PostgresClusterSpec   `json:"spec,omitempty"`
	Status PostgresClusterStatus `json:"status,omitempty"`
}

// PostgresClusterList is a list of PostgresClusters.
//
// +kubebuilder:object:root=true
type PostgresClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PostgresCluster `json:"items"`
}
