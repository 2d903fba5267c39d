package postgrescluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

// A user (holdfast fence) may fence a replica too, with the fence
// annotation: held until they release it.
//
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

// fenceRequest is a fence asked for by one of the two annotations.
type fenceRequest struct {
	instance, request string
	// by is who asked: a Backup's name, or "" for a user.
	by string
}

// fenceAsked parses the fence requests, a Backup's first: the instance to
// stop and the whole request, nil when there is none or nothing more to
// do for it (an operation for it is recorded in status.history, whatever
// its outcome).
func fenceAsked(c *holdfastv1.PostgresCluster) *fenceRequest {
	for _, annotation := range []string{holdfastv1.AnnotationFenceForBackup, holdfastv1.AnnotationFence} {
		value := c.Annotations[annotation]
		name, tag, ok := strings.Cut(value, "@")
		if !ok || name == "" || tag == "" || recorded(c, value) {
			continue
		}
		req := &fenceRequest{instance: name, request: value}
		if annotation == holdfastv1.AnnotationFenceForBackup {
			req.by = tag
		}
		return req
	}
	return nil
}

func recorded(c *holdfastv1.PostgresCluster, request string) bool {
	for _, rec := range c.Status.History {
		if rec.Kind == holdfastv1.OperationFence && rec.Request == request {
			return true
		}
	}
	return false
}

// considerFence starts a fence asked for, once the primary is settled, the
// instance is a ready replica and every other instance is ready (so the
// synchronous quorum is kept). A user's fence that can never run is
// recorded Failed, which tells them why.
func considerFence(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	req := fenceAsked(c)
	if req == nil || !p.idle() || c.Status.CurrentPrimary == "" || c.Status.CurrentPrimary != p.TargetPrimary {
		return
	}
	name := req.instance
	reason := fmt.Sprintf("backup %s snapshots the volume of %s: stopping its postgres", req.by, name)
	if req.by == "" {
		reason = fmt.Sprintf("fence of %s asked for (%s): stopping its postgres until released", name, holdfastv1.AnnotationFence)
	}
	var impossible string
	switch {
	case name == p.TargetPrimary:
		impossible = name + " is the primary: only a replica is fenced (promote another instance first)"
	case !slices.Contains(instanceNames(c), name):
		impossible = fmt.Sprintf("the cluster has no instance %s", name)
	}
	if impossible != "" {
		if req.by == "" {
			op := p.begin(holdfastv1.OperationFence, holdfastv1.PhaseStopping, now, now, fenceStopTimeout, reason)
			op.Instance, op.Request = name, req.request
			p.finish(holdfastv1.OutcomeFailed, impossible, now)
		}
		return
	}
	v := findView(views, name)
	if v == nil || v.Pod.DeletionTimestamp != nil || !instanceReady(v) || unreadyInstance(c, views, name) != "" {
		return
	}
	op := p.begin(holdfastv1.OperationFence, holdfastv1.PhaseStopping, now, now, fenceStopTimeout, reason)
	op.Instance, op.PodUID, op.Request = name, string(v.Pod.UID), req.request
}

func instanceNames(c *holdfastv1.PostgresCluster) []string {
	names := make([]string, c.Spec.Instances)
	for i := range names {
		names[i] = resources.InstanceName(c, i)
	}
	return names
}

// stepFence moves a fence on: it is held until its request goes, and
// ends Failed when the replica does not stop, or stays fenced for a
// Backup longer than any snapshot takes.
func stepFence(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	op := p.Operation
	if c.Annotations[holdfastv1.AnnotationFenceForBackup] != op.Request && c.Annotations[holdfastv1.AnnotationFence] != op.Request {
		p.finish(holdfastv1.OutcomeSucceeded, "released", now)
		return
	}
	// A user's fence holds until they release it.
	hold := fenceHoldTimeout
	if c.Annotations[holdfastv1.AnnotationFence] == op.Request {
		hold = noDeadline
	}
	switch op.Phase {
	case holdfastv1.PhaseStopping:
		if v := findView(views, op.Instance); v != nil && v.Report != nil && v.Report.Fenced && !v.Report.Running {
			p.enter(holdfastv1.PhaseFenced, now, hold)
			return
		}
		if pastDeadline(op, now) {
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s did not stop within %s", op.Instance, fenceStopTimeout), now)
		}
	case holdfastv1.PhaseFenced:
		if pastDeadline(op, now) {
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s was fenced for longer than %s; released", op.Instance, hold), now)
		}
	}
}

// fenced: the operation keeps the named instance's postgres stopped.
func fenced(op *holdfastv1.Operation, name string) bool {
	return op != nil && op.Kind == holdfastv1.OperationFence && op.Instance == name
}
