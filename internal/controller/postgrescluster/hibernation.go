package postgrescluster

import (
	"fmt"
	"time"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// Hibernation stops every pod and keeps the claims; waking starts them
// again with the same primary. The StatefulSet (OrderedReady) starts
// <name>-0 first and the next pod only once that one is ready, and a
// replica is ready only when it streams from a primary: so the primary
// must be <name>-0 when the cluster stops, or it could never start again.
// Hibernation therefore first switches over to <name>-0 when it is not the
// primary.

const (
	// stopTimeout: hibernation ends Failed if pods remain by then.
	stopTimeout = 5 * time.Minute
	// wakeTimeout: waking ends Failed if the primary is not back by then,
	// and failover may act again.
	wakeTimeout = 5 * time.Minute
)

// hibernated: the cluster is stopped by spec.hibernation, its last
// operation the hibernation that stopped it.
func hibernated(c *holdfastv1.PostgresCluster) bool {
	if !c.Spec.Hibernation || c.Status.Operation != nil {
		return false
	}
	n := len(c.Status.History)
	return n > 0 && c.Status.History[n-1].Kind == holdfastv1.OperationHibernate && c.Status.History[n-1].Outcome == holdfastv1.OutcomeSucceeded
}

// stoppingForHibernation: the StatefulSet is to have no pods.
func stoppingForHibernation(c *holdfastv1.PostgresCluster) bool {
	op := c.Status.Operation
	return hibernated(c) || op != nil && op.Kind == holdfastv1.OperationHibernate && op.Phase == holdfastv1.PhaseStopping
}

// considerHibernation starts hibernating or waking as spec.hibernation says.
func considerHibernation(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	if !p.idle() {
		return
	}
	n := len(c.Status.History)
	lastHibernate := n > 0 && c.Status.History[n-1].Kind == holdfastv1.OperationHibernate
	switch {
	case !c.Spec.Hibernation && lastHibernate:
		p.begin(holdfastv1.OperationWake, holdfastv1.PhaseStarting, now, now, wakeTimeout,
			fmt.Sprintf("spec.hibernation is false: starting the instances again, %s first as the primary", p.TargetPrimary))
	case c.Spec.Hibernation && !hibernated(c) && c.Status.CurrentPrimary != "" && c.Status.CurrentPrimary == p.TargetPrimary:
		first := resources.InstanceName(c, 0)
		if p.TargetPrimary == first {
			p.begin(holdfastv1.OperationHibernate, holdfastv1.PhaseStopping, now, now, stopTimeout,
				fmt.Sprintf("spec.hibernation is true: stopping every instance, %s the primary", first))
			return
		}
		if v := findView(views, first); v == nil || !mayTakeOver(c, v) {
			return // waits until <name>-0 can take over
		}
		op := p.begin(holdfastv1.OperationHibernate, holdfastv1.PhasePromoting, now, now, switchoverTimeout,
			fmt.Sprintf("spec.hibernation is true: switching over from %s to %s, which the StatefulSet starts first, then stopping every instance",
				p.TargetPrimary, first))
		op.From = p.TargetPrimary
		p.promote(first)
	}
}

// stepHibernation moves hibernating or waking on.
func stepHibernation(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	op := p.Operation
	switch op.Phase {
	case holdfastv1.PhasePromoting:
		if c.Status.CurrentPrimary == op.To {
			p.enter(holdfastv1.PhaseStopping, now, stopTimeout)
			return
		}
		if pastDeadline(op, now) {
			abandonHandover(views, now, p, "")
		}
	case holdfastv1.PhaseStopping:
		switch {
		case !c.Spec.Hibernation:
			p.finish(holdfastv1.OutcomeFailed, "spec.hibernation was set back to false", now)
		case len(views) == 0:
			p.finish(holdfastv1.OutcomeSucceeded, "", now)
		case pastDeadline(op, now):
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%d pods remain after %s", len(views), stopTimeout), now)
		}
	case holdfastv1.PhaseStarting:
		v := findView(views, p.TargetPrimary)
		switch {
		case v != nil && instanceReady(v) && v.Report.Role == postgres.Primary && v.Report.Desired != nil && v.Report.Desired.Epoch == p.Epoch:
			p.finish(holdfastv1.OutcomeSucceeded, "", now)
		case pastDeadline(op, now):
			p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s is not back as the primary after %s", p.TargetPrimary, wakeTimeout), now)
		}
	}
}
