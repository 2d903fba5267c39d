package api

import (
	"time"

	"holdfast.dev/holdfast/internal/postgres"
)

// Report is the instance's state as its HTTP API tells it.
type Report struct {
	Name string `json:"name"`
	// Changes counts the changes of what a switchover or failover waits
	// for (role, running, readiness, fencing, demotion, the epoch in
	// force). A caller waiting for the next asks for the status with
	// Wait.After set to the count it last saw.
	Changes int64    `json:"changes"`
	Desired *Desired `json:"desired,omitempty"`
	// Role is what postgres is now: primary, replica, or "" when stopped.
	Role    postgres.Role `json:"role,omitempty"`
	Running bool          `json:"running"`
	// PID is the postmaster's process ID while it runs; a change means a restart.
	PID     int  `json:"pid,omitempty"`
	Fenced  bool `json:"fenced"`
	Ready   bool `json:"ready"`
	Started bool `json:"started"`
	// BeenReady: this manager has seen its instance ready. Until then it
	// is coming up for the first time (cloning, restoring, catching up).
	BeenReady bool             `json:"beenReady,omitempty"`
	Postgres  *postgres.Status `json:"postgres,omitempty"`
	// DemotedAtEpoch is the epoch of the order under which this instance
	// last stopped its primary to become a replica: it has taken no write
	// since, whatever it runs now (a standby starting up, a rewind). A
	// switchover promotes the new primary on this, not on a moment of
	// "not running" that may last only milliseconds.
	DemotedAtEpoch int64 `json:"demotedAtEpoch,omitempty"`
	// DemotedAtLSN is where the WAL this instance wrote as primary ends
	// (its shutdown checkpoint) when it stopped under DemotedAtEpoch's
	// order: every write it acknowledged lies before it. A switchover
	// promotes its target only once the target has received this far.
	DemotedAtLSN string `json:"demotedAtLSN,omitempty"`
	// Restarts counts postgres crashes this manager restarted it after.
	Restarts int    `json:"restarts"`
	Message  string `json:"message,omitempty"`
	Error    string `json:"error,omitempty"`
	// StartError is why postgres last exited before it came up (its
	// FATAL line), until it comes up: postgres fails to start, over and over.
	StartError string `json:"startError,omitempty"`
	// InvalidParameters is what postgres said of the settings last
	// ordered, which it refused: the last settings it accepted stay in
	// force. Empty once it accepts them.
	InvalidParameters string `json:"invalidParameters,omitempty"`
	// Failing is the converge error once steps have failed for longer
	// than failingAfter: no longer a passing hitch.
	Failing string `json:"failing,omitempty"`
	// NotStreamingSince is when this replica was first seen running
	// without streaming from its primary; nil while it streams.
	NotStreamingSince *time.Time `json:"notStreamingSince,omitempty"`
	// Rejoin is the last time this replica fell back to the archive or to
	// a fresh clone because its primary no longer had the WAL it needed.
	Rejoin *Rejoin `json:"rejoin,omitempty"`

	// Adopted, when set, says this instance took over the data an earlier
	// incarnation of its cluster left on the volume.
	Adopted *Adoption `json:"adopted,omitempty"`
	// Archiving is a primary's WAL archiving, when the cluster has a repository.
	Archiving *ArchiveReport `json:"archiving,omitempty"`

	// Promise, on a replica, is the promise in force that it gave a
	// primary: it accepts no promotion until it lapses.
	Promise *PromiseReport `json:"promise,omitempty"`
	// Failsafe, on a primary, is the failsafe period under way or the
	// last one: it took writes without renewing its Lease, on promises.
	Failsafe *FailsafeReport `json:"failsafe,omitempty"`
	// Resumed says how this instance, restarted while it was the primary,
	// took the role back without waiting for the operator; nil when the
	// operator confirmed it, or it never was.
	Resumed *Resumption `json:"resumed,omitempty"`
	// Volumes is how full the instance's volumes are, read when the
	// report is made: the operator grows a claim from it, with no
	// Prometheus server in between.
	Volumes []VolumeUsage `json:"volumes,omitempty"`
}

// DataVolume names the data volume (PGDATA and, with it, the WAL) in
// reports and metrics.
const DataVolume = "data"

// VolumeUsage is one volume's filesystem, as statfs sees it from the pod.
type VolumeUsage struct {
	// Name is the volume's label in metrics: data, wal.
	Name          string `json:"name"`
	CapacityBytes int64  `json:"capacityBytes"`
	UsedBytes     int64  `json:"usedBytes"`
	// AvailableBytes is what postgres may still write: blocks reserved
	// for root do not count.
	AvailableBytes int64 `json:"availableBytes"`
}

// UsedPercent is how full the volume is for postgres, as df reports it:
// used over used plus available, rounded up.
func (v VolumeUsage) UsedPercent() int {
	total := v.UsedBytes + v.AvailableBytes
	if total <= 0 {
		return 0
	}
	return int((v.UsedBytes*100 + total - 1) / total)
}

// Resumption is a restarted primary taking its role back on its own.
type Resumption struct {
	At time.Time `json:"at"`
	// On is ResumedOnLease or ResumedOnPromises.
	On string `json:"on"`
}

const (
	// ResumedOnLease: the Lease still named it and its pod, unexpired,
	// and its renewal was taken.
	ResumedOnLease = "lease"
	// ResumedOnPromises: the Lease could not be read, and every replica
	// promised to accept no promotion, as in a failsafe period.
	ResumedOnPromises = "promises"
)

// PromiseReport is a replica's promise to a primary.
type PromiseReport struct {
	Primary string `json:"primary"`
	Epoch   int64  `json:"epoch"`
	// RemainingMillis is how long it still holds, when the report was made.
	RemainingMillis int64 `json:"remainingMillis"`
}

// FailsafeReport is a primary's period without its Lease, on promises.
type FailsafeReport struct {
	Since time.Time `json:"since"`
	// Ended is when it renewed its Lease again or stopped; nil while it lasts.
	Ended *time.Time `json:"ended,omitempty"`
	// Promised names the replicas whose promises it held.
	Promised []string `json:"promised"`
	// Epoch is the primary's epoch during the period.
	Epoch int64 `json:"epoch"`
}

// Rejoin is what a replica did on its own to follow its primary again
// once the primary no longer had the WAL it needed: the operator
// announces each with an Event.
type Rejoin struct {
	At time.Time `json:"at"`
	// How is RejoinArchive or RejoinReclone.
	How string `json:"how"`
	// Segment is the WAL segment the primary no longer had.
	Segment string `json:"segment"`
	Message string `json:"message"`
}

const (
	// RejoinArchive: the replica replays WAL that its restore_command
	// fetches from the cluster's repository.
	RejoinArchive = "archive"
	// RejoinReclone: the replica cloned the primary afresh, its old data
	// directory kept aside.
	RejoinReclone = "reclone"
)

// Adoption says that this instance found, on its volume, the data of an
// earlier incarnation of its cluster (one deleted with its claims kept and
// created again under the same name), and took it as this cluster's data.
type Adoption struct {
	// Incarnation is the cluster's UID that adopted the data; From is the
	// UID of the one that wrote it.
	Incarnation string `json:"incarnation"`
	From        string `json:"from"`
}

// ArchiveReport says whether a primary's WAL reaches its repository. The
// message names no counter or time, so that it changes only when the
// state does: the operator copies it into the cluster's status.
type ArchiveReport struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Wait asks GET StatusPath to hold its answer until the report's Changes
// differs from After, for at most For (MaxStatusWait at most): the
// operator hears of a primary that stopped or took over the moment it
// happens, not at its next look. A zero For answers at once.
type Wait struct {
	After int64
	For   time.Duration
}

// MaxStatusWait bounds how long a status request waits for a change.
const MaxStatusWait = 2 * time.Second

// Query parameters of a status request that waits (see Wait).
const (
	StatusAfterParam = "after"
	StatusWaitParam  = "waitMillis"
)
