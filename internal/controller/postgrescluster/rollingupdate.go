package postgrescluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// A rolling update restarts, one at a time, every instance whose pod runs
// an older template (a new image, resources, scheduling, a restart request)
// or whose postgres holds settings that wait for a restart. Replicas go
// first, unready ones before ready ones, then the highest ordinal first;
// a ready replica goes only when every other instance is ready. Then the
// primary: by a switchover to the most advanced replica and a restart of
// the old primary as a replica, or in place (spec.primaryUpdateMethod).
// A restart is an eviction, so the PodDisruptionBudget has its say, and
// the StatefulSet (OnDelete) makes the new pod from the current template.

// needsRestart says why the instance must restart, "" when it need not.
// revision is the StatefulSet's current template revision, "" when not
// known yet.
func needsRestart(c *holdfastv1.PostgresCluster, v *view, revision string) string {
	if restartAsked(c) == v.Pod.Name {
		return "a restart was asked for with the " + holdfastv1.AnnotationRestartInstance + " annotation"
	}
	if h := v.Pod.Labels[appsv1.ControllerRevisionHashLabelKey]; revision != "" && h != "" && h != revision {
		return "it runs an older pod template"
	}
	if v.Report != nil && v.Report.Postgres != nil && len(v.Report.Postgres.PendingRestart) > 0 {
		return "settings wait for a restart: " + strings.Join(v.Report.Postgres.PendingRestart, ", ")
	}
	return ""
}

// restartAsked names the instance the restart-instance annotation asks to
// restart, "" when it asks nothing, or nothing more: a rolling update
// recorded carrying the request out. (No clocks are compared: the request
// may come from a machine whose clock is not the operator's.)
func restartAsked(c *holdfastv1.PostgresCluster) string {
	value := c.Annotations[holdfastv1.AnnotationRestartInstance]
	name, _, ok := strings.Cut(value, "@")
	if !ok || name == "" {
		return ""
	}
	for _, rec := range c.Status.History {
		if rec.Kind == holdfastv1.OperationRollingUpdate && rec.Outcome == holdfastv1.OutcomeSucceeded && rec.Request == value {
			return ""
		}
	}
	return name
}

// rollStep is the next thing a rolling update does.
type rollStep struct {
	replica  *view  // restart this replica
	switchTo *view  // hand the primary role to this replica
	primary  *view  // restart the primary in place
	wait     string // nothing can be done now, because of this
	why      string // why the instance restarts
}

func (s rollStep) done() bool {
	return s.replica == nil && s.switchTo == nil && s.primary == nil && s.wait == ""
}

// nextRoll finds the rolling update's next step; restarted are the
// instances it has restarted already, which it does not restart again.
func nextRoll(c *holdfastv1.PostgresCluster, views []view, revision string, restarted []string, primary string) rollStep {
	var stale []*view
	for i := int(c.Spec.Instances) - 1; i >= 0; i-- {
		name := resources.InstanceName(c, i)
		v := findView(views, name)
		if name == primary || v == nil || v.Pod.DeletionTimestamp != nil || slices.Contains(restarted, name) || needsRestart(c, v, revision) == "" {
			continue
		}
		stale = append(stale, v)
	}
	if len(stale) > 0 {
		pick := stale[0]
		for _, v := range stale {
			if !instanceReady(v) {
				// Restarting it costs no availability, and may cure it.
				return rollStep{replica: v, why: needsRestart(c, v, revision)}
			}
		}
		if other := unreadyInstance(c, views, pick.Pod.Name); other != "" {
			return rollStep{wait: fmt.Sprintf("%s is not ready, and a ready replica restarts only while every other instance is", other)}
		}
		return rollStep{replica: pick, why: needsRestart(c, pick, revision)}
	}
	pv := findView(views, primary)
	if pv == nil || slices.Contains(restarted, primary) || needsRestart(c, pv, revision) == "" {
		return rollStep{}
	}
	why := needsRestart(c, pv, revision)
	if c.Spec.PrimaryUpdateMethod == holdfastv1.PrimaryUpdateRestart || c.Spec.Instances == 1 {
		return rollStep{primary: pv, why: why}
	}
	if other := unreadyInstance(c, views, ""); other != "" {
		return rollStep{wait: fmt.Sprintf("%s is not ready, and the primary is switched over only while every instance is", other)}
	}
	cand := switchoverCandidate(c, views, primary)
	if cand == nil {
		return rollStep{wait: "no ready, synchronous replica can take over from the primary"}
	}
	return rollStep{switchTo: cand, why: why + "; switching over to " + cand.Pod.Name + ", the most advanced replica"}
}

// instanceReady: the instance says it is ready (a replica: streaming).
func instanceReady(v *view) bool {
	r := v.Report
	return r != nil && r.Ready && r.Postgres != nil && (r.Role != postgres.Replica || r.NotStreamingSince == nil)
}

// unreadyInstance names an instance other than except that is not ready, "" when all are.
func unreadyInstance(c *holdfastv1.PostgresCluster, views []view, except string) string {
	for i := range int(c.Spec.Instances) {
		name := resources.InstanceName(c, i)
		if name == except {
			continue
		}
		if v := findView(views, name); v == nil || v.Pod.DeletionTimestamp != nil || !instanceReady(v) {
			return name
		}
	}
	return ""
}

// considerReplacingUnstarted replaces, while the cluster has no primary, a
// pod that runs an older template and has never been ready: a new
// cluster whose first pod cannot start (a wrong image, too little
// memory) takes the corrected spec this way, with no rolling update,
// which waits for a primary. It serves nothing, so nothing is lost; its
// claim stays. One pod a look, each a RollingUpdate in the history.
func considerReplacingUnstarted(c *holdfastv1.PostgresCluster, views []view, revision string, now time.Time, p *plan) {
	if !p.idle() || p.CurrentPrimary != "" {
		return
	}
	v := unstarted(c, views, revision)
	if v == nil {
		return
	}
	p.begin(holdfastv1.OperationRollingUpdate, holdfastv1.PhaseRestartingReplica, now, now, replicaRestartTimeout,
		fmt.Sprintf("%s runs an older pod template and has never been ready, and the cluster has no primary: replacing its pod", v.Pod.Name))
	p.Operation.Instance, p.Operation.PodUID = v.Pod.Name, string(v.Pod.UID)
	p.Evict = v.Pod
	p.finish(holdfastv1.OutcomeSucceeded, "", now)
}

// unstarted is a pod, while the cluster has no primary, that runs an
// older template than revision and whose instance has never been ready;
// nil when there is none.
func unstarted(c *holdfastv1.PostgresCluster, views []view, revision string) *view {
	if c.Status.CurrentPrimary != "" || revision == "" {
		return nil
	}
	for i := range views {
		v := &views[i]
		h := v.Pod.Labels[appsv1.ControllerRevisionHashLabelKey]
		if v.Pod.DeletionTimestamp != nil || h == "" || h == revision || podReady(v.Pod) ||
			(v.Report != nil && (v.Report.BeenReady || v.Report.Role == postgres.Primary)) {
			continue
		}
		return v
	}
	return nil
}

// considerRollingUpdate starts a rolling update when no operation runs,
// the primary is settled, some instance needs a restart and the first
// step can be taken now.
func considerRollingUpdate(c *holdfastv1.PostgresCluster, views []view, revision string, now time.Time, p *plan) {
	if !p.idle() || c.Status.CurrentPrimary == "" || c.Status.CurrentPrimary != p.TargetPrimary || p.CurrentPrimary != p.TargetPrimary {
		return
	}
	var why []string
	for i := range int(c.Spec.Instances) {
		if v := findView(views, resources.InstanceName(c, i)); v != nil {
			if r := needsRestart(c, v, revision); r != "" {
				why = append(why, v.Pod.Name+": "+r)
			}
		}
	}
	if len(why) == 0 {
		return
	}
	step := nextRoll(c, views, revision, nil, p.TargetPrimary)
	if step.done() || step.wait != "" {
		return
	}
	op := p.begin(holdfastv1.OperationRollingUpdate, holdfastv1.PhaseRestartingReplica, now, now, replicaRestartTimeout,
		"instances need a restart: "+strings.Join(why, "; "))
	if restartAsked(c) != "" {
		op.Request = c.Annotations[holdfastv1.AnnotationRestartInstance]
	}
	takeRoll(step, now, p)
}

// takeRoll starts step within the rolling update, or ends it.
func takeRoll(step rollStep, now time.Time, p *plan) {
	op := p.Operation
	op.Instance, op.PodUID = "", ""
	switch {
	case step.wait != "":
		p.finish(holdfastv1.OutcomeFailed, "halted: "+step.wait, now)
	case step.replica != nil:
		op.Instance, op.PodUID = step.replica.Pod.Name, string(step.replica.Pod.UID)
		p.enter(holdfastv1.PhaseRestartingReplica, now, replicaRestartTimeout)
		if op.Instance != op.From { // the old primary goes later: stepRollingUpdate
			p.Evict = step.replica.Pod
		}
		p.say(false, "RestartingInstance", "RollingUpdate", fmt.Sprintf("restarting replica %s: %s", op.Instance, step.why))
	case step.primary != nil:
		op.Instance, op.PodUID = step.primary.Pod.Name, string(step.primary.Pod.UID)
		p.enter(holdfastv1.PhaseRestartingPrimary, now, primaryRestartTimeout)
		p.Evict = step.primary.Pod
		p.say(false, "RestartingInstance", "RollingUpdate", fmt.Sprintf("restarting primary %s in place: %s", op.Instance, step.why))
	case step.switchTo != nil:
		op.From = p.TargetPrimary
		p.enter(holdfastv1.PhasePromoting, now, switchoverTimeout)
		p.promote(step.switchTo.Pod.Name)
		p.say(false, "SwitchingOver", "RollingUpdate", fmt.Sprintf("primary %s: %s", op.From, step.why))
	default:
		p.finish(holdfastv1.OutcomeSucceeded, "", now)
	}
}

// stepRollingUpdate moves a rolling update on: it evicts the instance it
// restarts until the pod goes, waits for its successor to be back, then
// takes the next step; past a phase's deadline it halts, touching no other pod.
func stepRollingUpdate(c *holdfastv1.PostgresCluster, views []view, revision string, now time.Time, p *plan) {
	op := p.Operation
	switch op.Phase {
	case holdfastv1.PhasePromoting:
		if c.Status.CurrentPrimary != op.To {
			if pastDeadline(op, now) {
				abandonHandover(views, now, p, "halted: ")
			}
			return
		}
		// The old primary now follows the new one; it restarts as a replica.
		old := findView(views, op.From)
		if old == nil || slices.Contains(op.Restarted, op.From) {
			takeRoll(nextRoll(c, views, revision, op.Restarted, p.TargetPrimary), now, p)
			return
		}
		takeRoll(rollStep{replica: old, why: "it was the primary"}, now, p)
	case holdfastv1.PhaseRestartingReplica, holdfastv1.PhaseRestartingPrimary:
		v := findView(views, op.Instance)
		if pod := evictable(v, op); pod != nil {
			if op.Instance == op.From && now.Sub(op.PhaseStartedAt.Time) < endpointsSettle {
				// The old primary lost its -rw label a moment ago, and
				// kube-proxy drops its address within its sync period:
				// until then a client may still be sent to it, and a pod
				// gone answers nothing, not even a refusal.
				return
			}
			if pastDeadline(op, now) {
				p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("halted: %s could not be evicted (see its PodDisruptionBudget)", op.Instance), now)
				return
			}
			p.Evict = pod
			return
		}
		if !restartedBack(v, op, p.Epoch, now) {
			if pastDeadline(op, now) {
				p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("halted: %s did not come back ready within %s", op.Instance,
					op.PhaseDeadline.Sub(op.PhaseStartedAt.Time)), now)
			}
			return
		}
		op.Restarted = append(op.Restarted, op.Instance)
		takeRoll(nextRoll(c, views, revision, op.Restarted, p.TargetPrimary), now, p)
	}
}

// endpointsSettle is how long a restarted pod must have been Ready (by
// its kubelet) before the next step. Its readiness changes the Services'
// EndpointSlices, and kube-proxy applies a change no sooner than its
// minimum sync period (1 s by default) after the one before: a switchover
// that moved the -rw label within that second would leave clients without
// the new primary for up to a second more. Waiting here costs the update
// time, not writes. (The condition's time is stored in whole seconds, so
// the wait is 1 to 2 s.)
const endpointsSettle = 2 * time.Second

// restartedBack: the restarted instance's new pod is up in its role (a
// replica ready and streaming, a primary taking writes at the epoch), and
// its kubelet has said it is Ready for endpointsSettle.
func restartedBack(v *view, op *holdfastv1.Operation, epoch int64, now time.Time) bool {
	if v == nil || string(v.Pod.UID) == op.PodUID || !instanceReady(v) || !readyFor(v.Pod, endpointsSettle, now) {
		return false
	}
	if op.Phase == holdfastv1.PhaseRestartingPrimary {
		d := v.Report.Desired
		return v.Report.Role == postgres.Primary && d != nil && d.Epoch == epoch
	}
	return v.Report.Role == postgres.Replica
}

// readyFor: the pod's Ready condition has been true for at least d.
func readyFor(pod *corev1.Pod, d time.Duration, now time.Time) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && now.Sub(c.LastTransitionTime.Time) >= d
		}
	}
	return false
}
