package postgrescluster

import (
	"fmt"
	"strings"
	"time"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

// A Backup that snapshots a replica's volume asks the cluster, with the
// fence-for-backup annotation, for that replica's postgres to be stopped:
// a cold copy of a stopped server's volume is consistent by itself. The
// fence is an operation like any other: it starts only when none runs and
// every other instance is ready, stops the replica (Stopping), holds it
// stopped (Fenced) until the request goes, and never stops the primary.
// A failover may preempt it; the Backup reads the preemption in
// status.history and fails rather than keep a snapshot of a running server.

const (
	// fenceStopTimeout: a fenced replica whose postgres has not stopped by
	// then ends the fence Failed.
	fenceStopTimeout = time.Minute
	// fenceHoldTimeout bounds how long a replica stays fenced: longer
	// than any snapshot should take, so that a Backup controller gone
	// astray cannot keep a replica down for good.
	fenceHoldTimeout = 6 * time.Hour
)

// fenceAsked parses the fence request: the instance to stop and the whole
// request, "" when there is none or nothing more to do for it (an
// operation for it is recorded in status.history, whatever its outcome).
func fenceAsked(c *holdfastv1.PostgresCluster) (instance, request string) {
	value := c.Annotations[holdfastv1.AnnotationFenceForBackup]
	name, backup, ok := strings.Cut(value, "@")
	if !ok || name == "" || backup == "" {
		return "", ""
	}
	for _, rec := range c.Status.History {
		if rec.Kind == holdfastv1.OperationFence && rec.Request == value {
			return "", ""
		}
	}
	return name, value
}

// considerFence starts a fence asked for, once the primary is settled, the
// instance is a ready replica and every other instance is ready (so the
// synchronous quorum is kept).
func considerFence(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	name, request := fenceAsked(c)
	if name == "" || !p.idle() || c.Status.CurrentPrimary == "" || c.Status.CurrentPrimary != p.TargetPrimary ||
		name == p.TargetPrimary || resources.Ordinal(name) >= int(c.Spec.Instances) {
		return
	}
	v := findView(views, name)
	if v == nil || v.Pod.DeletionTimestamp != nil || !instanceReady(v) || unreadyInstance(c, views, name) != "" {
		return
	}
	_, backup, _ := strings.Cut(request, "@")
	op := p.begin(holdfastv1.OperationFence, holdfastv1.PhaseStopping, now, now, fenceStopTimeout,
		fmt.Sprintf("backup %s snapshots the volume of %s: stopping its postgres", backup, name))
	op.Instance, op.PodUID, op.Request = name, string(v.Pod.UID), request
}

// stepFence moves a fence on: it is held until its request goes, and
// ends Failed when the replica does not stop or stays fenced too long.
func stepFence(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	op := p.Operation
	if c.Annotations[holdfastv1.AnnotationFenceForBackup] != op.Request {
		p.finish(holdfastv1.OutcomeSucceeded, "released", now)
		return
	}
	switch op.Phase {
	case holdfastv1.PhaseStopping:
		if v := findView(views, op.Instance); v != nil && v.Report != nil && v.Report.Fenced && !v.Report.Running {
			p.enter(holdfastv1.PhaseFenced, now, fenceHoldTimeout)
			return
		}
		if pastDeadline(op, now) {
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s did not stop within %s", op.Instance, fenceStopTimeout), now)
		}
	case holdfastv1.PhaseFenced:
		if pastDeadline(op, now) {
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s was fenced for longer than %s; released", op.Instance, fenceHoldTimeout), now)
		}
	}
}

// fenced: the operation keeps the named instance's postgres stopped.
func fenced(op *holdfastv1.Operation, name string) bool {
	return op != nil && op.Kind == holdfastv1.OperationFence && op.Instance == name
}
