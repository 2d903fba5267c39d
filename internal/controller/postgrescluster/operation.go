package postgrescluster

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// Every change of roles or pods is an operation, recorded in
// status.operation before anything acts on it; one runs at a time. Each
// kind has a step function (stepFailover, stepSwitchover,
// stepRollingUpdate) of the cluster, the instances and the time, which
// moves its phase on, sets its deadline, and ends it into status.history.
// decide keeps the steady state around whatever the operation says.

// Phase deadlines: what happens past each is part of the kind's step.
const (
	// promoteTimeout: a failover target that has not become primary by
	// then, and whose lease has lapsed, is dropped for the next candidate.
	promoteTimeout = 10 * time.Second
	// switchoverTimeout: a switchover whose target has not become primary
	// by then ends Failed, and the failover rules take over.
	switchoverTimeout = 30 * time.Second
	// replicaRestartTimeout: a replica a rolling update restarted that is
	// not back ready and streaming by then halts the update.
	replicaRestartTimeout = 5 * time.Minute
	// primaryRestartTimeout: how long a primary restarted in place
	// (primaryUpdateMethod Restart) may take before failover may replace it.
	primaryRestartTimeout = time.Minute
)

// historyLength bounds status.history.
const historyLength = 20

// note is an Event an operation's step asks for.
type note struct {
	warning      bool
	reason, what string
	message      string
}

// begin starts an operation of kind in its first phase.
func (p *plan) begin(kind holdfastv1.OperationKind, phase holdfastv1.OperationPhase, started, now time.Time, timeout time.Duration, reason string) *holdfastv1.Operation {
	p.Operation = &holdfastv1.Operation{Kind: kind, Reason: reason, StartedAt: metav1.MicroTime{Time: started}}
	p.enter(phase, now, timeout)
	warning := kind == holdfastv1.OperationFailover
	p.say(warning, string(kind)+"Started", string(kind), reason)
	return p.Operation
}

// enter moves the operation to phase, due to end by now+timeout; a
// timeout of noDeadline sets none.
func (p *plan) enter(phase holdfastv1.OperationPhase, now time.Time, timeout time.Duration) {
	p.Operation.Phase = phase
	p.Operation.PhaseStartedAt = metav1.MicroTime{Time: now}
	p.Operation.PhaseDeadline = nil
	if timeout != noDeadline {
		p.Operation.PhaseDeadline = &metav1.MicroTime{Time: now.Add(timeout)}
	}
}

// noDeadline is the timeout of a phase that waits for as long as it must.
const noDeadline time.Duration = 0

// promote makes to the target primary at a new epoch, as part of the
// operation in progress.
func (p *plan) promote(to string) {
	p.TargetPrimary = to
	p.CurrentPrimary = ""
	p.Epoch++
	p.Operation.To = to
	p.Operation.Epoch = p.Epoch
}

// finish ends the operation into the history.
func (p *plan) finish(outcome holdfastv1.OperationOutcome, why string, now time.Time) {
	op := p.Operation
	if op == nil {
		return
	}
	reason := op.Reason
	if why != "" {
		reason += "; " + why
	}
	rec := holdfastv1.OperationRecord{
		Kind: op.Kind, From: op.From, To: op.To, Restarted: op.Restarted, Request: op.Request, Outcome: outcome, Reason: reason,
		StartedAt: op.StartedAt, FinishedAt: metav1.MicroTime{Time: now},
		Duration: now.Sub(op.StartedAt.Time).Round(time.Millisecond).String(),
	}
	p.finished = true
	p.record(rec)
	p.Operation = nil
	kind := string(op.Kind)
	switch outcome {
	case holdfastv1.OutcomeSucceeded:
		msg := fmt.Sprintf("%s succeeded after %s", kind, rec.Duration)
		if op.To != "" && op.Kind != holdfastv1.OperationRollingUpdate {
			msg = fmt.Sprintf("%s is the primary, %s after %s started", op.To, rec.Duration, kind)
		}
		p.say(false, kind+"Completed", kind, msg)
	case holdfastv1.OutcomePreempted:
		p.say(true, kind+"Preempted", kind, kind+" gave way: "+why)
	default:
		p.say(true, kind+"Failed", kind, kind+" failed: "+why)
	}
}

// record appends rec to the history, which keeps the last historyLength.
func (p *plan) record(rec holdfastv1.OperationRecord) {
	p.ended = append(p.ended, rec)
	p.History = append(p.History, rec)
	if n := len(p.History); n > historyLength {
		p.History = p.History[n-historyLength:]
	}
}

func (p *plan) say(warning bool, reason, what, msg string) {
	p.Notes = append(p.Notes, note{warning: warning, reason: reason, what: what, message: msg})
}

// idle: no operation runs, and none ended in this look: a new one starts
// only once the end of the last is written down. (A failover does not
// wait: it may preempt anything.)
func (p *plan) idle() bool { return p.Operation == nil && !p.finished }

// pastDeadline: the operation's phase has run out of time.
func pastDeadline(op *holdfastv1.Operation, now time.Time) bool {
	return op.PhaseDeadline != nil && !now.Before(op.PhaseDeadline.Time)
}

// handingOver: the operation is moving the primary role from a primary
// that is healthy and must first stop cleanly (a switchover, on its own or
// within a rolling update), rather than from one that failed.
func handingOver(op *holdfastv1.Operation) bool {
	return op != nil && op.Phase == holdfastv1.PhasePromoting && op.Kind != holdfastv1.OperationFailover
}

// changingPrimary: the operation is promoting an instance.
func changingPrimary(op *holdfastv1.Operation) bool {
	return op != nil && op.Phase == holdfastv1.PhasePromoting
}

// failoverMayStart is the one rule of preemption: a failover may replace a
// failed primary whatever else runs, except a primary stopped on purpose:
// one restarted in place, or starting after hibernation, has until its
// phase deadline to come back, and a hibernating cluster has no primary
// to replace.
func failoverMayStart(c *holdfastv1.PostgresCluster, op *holdfastv1.Operation, now time.Time) bool {
	switch {
	case stoppingForHibernation(c):
		return false
	case op == nil:
		return true
	case op.Phase == holdfastv1.PhaseRestartingPrimary, op.Kind == holdfastv1.OperationWake:
		return pastDeadline(op, now)
	}
	return true
}

// findView is the view of the named pod, nil when it does not exist.
func findView(views []view, name string) *view {
	for i := range views {
		if views[i].Pod.Name == name {
			return &views[i]
		}
	}
	return nil
}

// evictable: the pod is the one the operation restarts, not yet on its way out.
func evictable(v *view, op *holdfastv1.Operation) *corev1.Pod {
	if v == nil || string(v.Pod.UID) != op.PodUID || v.Pod.DeletionTimestamp != nil {
		return nil
	}
	return v.Pod
}
