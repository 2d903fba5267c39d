package api

import (
	"errors"
	"fmt"

	"holdfast.dev/holdfast/internal/postgres"
)

// Desired is what the operator wants of this instance. The operator sends
// it whole on every reconcile (level-triggered); the instance converges.
type Desired struct {
	Role postgres.Role `json:"role"`
	// PrimaryHost and PrimaryPort locate the primary a replica follows.
	PrimaryHost string `json:"primaryHost,omitempty"`
	PrimaryPort int    `json:"primaryPort,omitempty"`
	// Replicas are the instances a primary keeps replication slots for.
	Replicas []string `json:"replicas,omitempty"`
	// SyncQuorum, when above zero, makes a primary wait for that many of
	// Replicas to confirm each commit.
	SyncQuorum int `json:"syncQuorum,omitempty"`
	// Lease, for a primary, is the Lease it must hold to take writes.
	Lease *LeaseTerms `json:"lease,omitempty"`
	// ReplicaHosts, for a primary, locates each of Replicas' instance
	// managers (the pod's address): while the primary cannot renew its
	// Lease it keeps taking writes only on promises from every one of
	// them (see Promise). A replica with no address cannot promise.
	ReplicaHosts map[string]string `json:"replicaHosts,omitempty"`
	// Restore, for a new cluster's first primary, fills its empty data
	// directory from a backup instead of leaving it empty.
	Restore *RestoreOrder `json:"restore,omitempty"`
	// Archive, when set, archives WAL to the cluster's repository.
	Archive *ArchiveOrder `json:"archive,omitempty"`
	// Parameters are the user's postgresql.conf settings: a change that
	// postgres can reload takes effect at once; one that needs a restart
	// is reported pending.
	Parameters map[string]string `json:"parameters,omitempty"`
	// Fenced stops postgres until unfenced.
	Fenced bool `json:"fenced,omitempty"`
	// Handover, for a primary told to become a replica, says the primary
	// role is handed over as planned (a switchover) to the instance at
	// PrimaryHost, which streams from this one: it waits, briefly, for
	// that stream before it stops, so that its clean shutdown sends its
	// successor every record. Never in a failover: a replaced primary
	// stops at once.
	Handover bool `json:"handover,omitempty"`
	// Cluster is namespace/name of the cluster the order is for, and
	// Incarnation that cluster's UID.
	Cluster     string `json:"cluster,omitempty"`
	Incarnation string `json:"incarnation,omitempty"`
	// Epoch grows with every change of primary; an instance ignores a
	// Desired older than the last it accepted, so a delayed message from
	// before a failover cannot undo it.
	Epoch int64 `json:"epoch"`
}

// LeaseTerms name a primary's Lease, how long the primary may go without
// renewing it before it stops taking writes, and how long the operator
// waits after its last renewal before it may promote another instance.
type LeaseTerms struct {
	Name                 string `json:"name"`
	RenewDeadlineSeconds int    `json:"renewDeadlineSeconds"`
	DurationSeconds      int    `json:"durationSeconds,omitempty"`
}

// PromiseRequest is a primary's request to a replica, while the primary
// cannot renew its Lease: accept no promotion for HoldMillis from now.
type PromiseRequest struct {
	Primary    string `json:"primary"`
	Epoch      int64  `json:"epoch"`
	HoldMillis int64  `json:"holdMillis"`
}

// Validate says what is wrong with d, if anything.
func (d Desired) Validate() error {
	switch d.Role {
	case postgres.Primary:
	case postgres.Replica:
		if d.PrimaryHost == "" || d.PrimaryPort == 0 {
			return errors.New("a replica needs primaryHost and primaryPort")
		}
	default:
		return fmt.Errorf("role %q: want primary or replica", d.Role)
	}
	if d.SyncQuorum < 0 || d.SyncQuorum > len(d.Replicas) {
		return fmt.Errorf("syncQuorum %d: want 0 to %d (the number of replicas)", d.SyncQuorum, len(d.Replicas))
	}
	return nil
}
