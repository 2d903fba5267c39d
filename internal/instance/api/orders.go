package api

import (
	"time"

	"holdfast.dev/holdfast/internal/backup/pgbackrest"
	"holdfast.dev/holdfast/internal/objectstore"
)

// BackupOrder asks the instance for one backup. The operator sends it again
// until it sees the outcome; the ID makes that safe.
type BackupOrder struct {
	ID       string               `json:"id"`
	Method   string               `json:"method"`
	Location objectstore.Location `json:"location"`
	// Stanza and Type (full, diff, incr) are a pgBackRest backup's.
	Stanza string `json:"stanza,omitempty"`
	Type   string `json:"type,omitempty"`
	// Expire, when set, removes this pgBackRest set instead of taking a backup.
	Expire string `json:"expire,omitempty"`
}

// Backup methods an instance carries out, and the restore of a snapshot
// it takes part in.
const (
	MethodLogical        = "logical"
	MethodVolumeSnapshot = "volumeSnapshot"
)

// Phases of a backup job as the instance reports them.
const (
	JobRunning   = "running"
	JobCompleted = "completed"
	JobFailed    = "failed"
)

// BackupReport is a backup job's state.
type BackupReport struct {
	ID            string     `json:"id"`
	Phase         string     `json:"phase"`
	Error         string     `json:"error,omitempty"`
	StartedAt     time.Time  `json:"startedAt"`
	StoppedAt     *time.Time `json:"stoppedAt,omitempty"`
	SizeBytes     int64      `json:"sizeBytes,omitempty"`
	Databases     []string   `json:"databases,omitempty"`
	ServerVersion int        `json:"serverVersion,omitempty"`
	// A pgBackRest backup's set label, the WAL it needs and the LSNs it spans.
	Label    string `json:"label,omitempty"`
	BeginWAL string `json:"beginWAL,omitempty"`
	EndWAL   string `json:"endWAL,omitempty"`
	BeginLSN string `json:"beginLSN,omitempty"`
	EndLSN   string `json:"endLSN,omitempty"`
	// DatabaseSize is the size of what a physical backup copied (SizeBytes
	// is what it takes in the repository).
	DatabaseSize int64 `json:"databaseSize,omitempty"`
}

// RestoreOrder tells a new cluster's first primary to fill its data
// directory from a backup, reading the repository with the credentials
// mounted in Config.RestoreRepositoryDir.
type RestoreOrder struct {
	Method   string               `json:"method"`
	Location objectstore.Location `json:"location"`
	// Stanza, Set and Target are a pgBackRest restore's: the source
	// cluster's stanza, the backup set's label, and where recovery stops.
	Stanza string            `json:"stanza,omitempty"`
	Set    string            `json:"set,omitempty"`
	Target pgbackrest.Target `json:"target,omitzero"`
}

// ArchiveOrder turns continuous WAL archiving on: the primary pushes every
// WAL segment to the stanza in the cluster's repository (asynchronously,
// through pgBackRest's spool), which physical backups and point-in-time
// recovery need.
type ArchiveOrder struct {
	Stanza   string               `json:"stanza"`
	Location objectstore.Location `json:"location"`
}

// MethodPGBackRest is a pgBackRest physical backup.
const MethodPGBackRest = "pgbackrest"
