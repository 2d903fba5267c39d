package postgrescluster

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// health is the operator's judgement of the primary.
type health int

const (
	healthy health = iota
	// failing: silent or down, but its processes may still live, so it
	// may still take writes: wait spec.failover.unreachableSeconds.
	failing
	// dead: its processes are gone (pod gone, container not running), so it
	// can take no write: replace it at once.
	dead
)

// judgePrimary says how the primary is and why.
func judgePrimary(v *view) (health, string) {
	if v == nil {
		return dead, "its pod is gone"
	}
	pod := v.Pod
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return dead, "its pod has " + strings.ToLower(string(pod.Status.Phase))
	}
	if cs := containerStatus(pod, resources.ContainerPostgres); cs != nil && cs.State.Running == nil {
		why := "its postgres container is not running"
		switch {
		case cs.State.Terminated != nil:
			why += fmt.Sprintf(" (exited %d, %s)", cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		case cs.State.Waiting != nil:
			why += " (" + cs.State.Waiting.Reason + ")"
		}
		if ended := containerEnded(cs); !ended.IsZero() && v.HoldsLease && v.LeaseRenewed.After(ended.Add(time.Second)) {
			// A status that lags: a new process renewed the lease after
			// this one ended, so it may take writes again. The API keeps
			// finishedAt to the second, and the instance manager renews
			// no sooner than a second after it starts (resumeAfterStart),
			// so the last renewal of the process that ended is never
			// taken for one of its successor.
			return failing, fmt.Sprintf("%s, yet it renewed the primary lease at %s, after its container ended at %s: it is coming back",
				why, v.LeaseRenewed.UTC().Format(time.StampMilli), ended.UTC().Format(time.Stamp))
		}
		return dead, why
	}
	if pod.DeletionTimestamp != nil {
		return failing, "its pod is being deleted"
	}
	switch r := v.Report; {
	case r == nil:
		return failing, "its instance manager does not answer"
	case !r.Running && !r.Fenced:
		why := "its postgres is not running"
		if r.Error != "" {
			why += ": " + r.Error
		}
		return failing, why
	}
	return healthy, ""
}

// containerEnded is when the container's last process ended, by the
// node's clock, which the instance manager in it renews the lease by too;
// zero when no process of it has ended.
func containerEnded(cs *corev1.ContainerStatus) time.Time {
	if t := cs.State.Terminated; t != nil {
		return t.FinishedAt.Time
	}
	if t := cs.LastTerminationState.Terminated; t != nil {
		return t.FinishedAt.Time
	}
	return time.Time{}
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// chooseCandidate picks the replica to promote: a healthy streaming-capable
// replica with the most WAL received (then replayed), other than those
// excluded. With synchronous replication only a standby that was
// synchronous qualifies, and enough of them must answer that one of them
// surely holds every acknowledged commit. When required is set (a later
// target of the same failover), that proof was made when the first target
// was chosen, and required is the WAL it had: a replica that has received
// as much holds every acknowledged commit too, synchronous or not.
func chooseCandidate(c *holdfastv1.PostgresCluster, views []view, exclude []string, required uint64) (*view, string) {
	quorum := 0
	if c.Spec.Synchronous != nil && required == 0 {
		quorum = int(c.Spec.Synchronous.Quorum)
	}
	var best *view
	answering, behind := 0, 0
	for i := range views {
		v := &views[i]
		name := v.Pod.Name
		if slices.Contains(exclude, name) || resources.Ordinal(name) >= int(c.Spec.Instances) || v.Pod.DeletionTimestamp != nil {
			continue
		}
		if h, _ := judgePrimary(v); h != healthy {
			continue
		}
		r := v.Report
		if r.Role != postgres.Replica || r.Postgres == nil || r.Fenced {
			continue
		}
		if quorum > 0 && !slices.Contains(c.Status.SyncStandbys, name) {
			continue
		}
		if required > 0 && walPosition(r.Postgres) < required {
			behind++
			continue
		}
		answering++
		if best == nil || moreAdvanced(r.Postgres, best.Report.Postgres) {
			best = v
		}
	}
	if quorum > 0 {
		// A commit was acknowledged by quorum of the synchronous standbys:
		// seeing all but quorum-1 of them guarantees one holds it.
		need := len(c.Status.SyncStandbys) - quorum + 1
		if answering < need {
			return nil, fmt.Sprintf("only %d of the synchronous standbys %v answer and %d are needed to be sure no acknowledged write is lost",
				answering, c.Status.SyncStandbys, need)
		}
	}
	if best == nil && behind > 0 {
		return nil, fmt.Sprintf("%d replicas answer but have received less WAL than %s, which the first target had and which holds every acknowledged write",
			behind, formatLSN(required))
	}
	if best == nil {
		return nil, "no healthy replica to promote"
	}
	return best, fmt.Sprintf("the most advanced replica (received %s, replayed %s)", best.Report.Postgres.ReceivedLSN, best.Report.Postgres.ReplayedLSN)
}

// formatLSN writes a WAL position as postgres does.
func formatLSN(pos uint64) string { return fmt.Sprintf("%X/%X", pos>>32, uint32(pos)) }

func moreAdvanced(a, b *postgres.Status) bool {
	if x, y := walPosition(a), walPosition(b); x != y {
		return x > y
	}
	return parseLSN(a.ReplayedLSN) > parseLSN(b.ReplayedLSN)
}

// walPosition is how far a replica's WAL reaches (postgres.Status.WALPosition);
// what does not parse counts as 0.
func walPosition(s *postgres.Status) uint64 {
	pos, _ := s.WALPosition()
	return pos
}

// parseLSN reads postgres's "X/Y" notation; anything else is 0.
func parseLSN(s string) uint64 {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0
	}
	return h<<32 | l
}

// promisedTo names the replicas that report a failsafe promise in force
// to primary.
func promisedTo(views []view, primary string) []string {
	var out []string
	for _, v := range views {
		if r := v.Report; r != nil && r.Promise != nil && r.Promise.Primary == primary && r.Promise.RemainingMillis > 0 {
			out = append(out, v.Pod.Name)
		}
	}
	return out
}

// recordFailsafe writes into the history a failsafe period the primary
// reports as ended, once: the operator may not have been there to see it
// (the API server was away), so the primary's report is its record.
func recordFailsafe(views []view, primary string, p *plan) {
	v := findView(views, primary)
	if v == nil || v.Report == nil || v.Report.Failsafe == nil || v.Report.Failsafe.Ended == nil {
		return
	}
	f := v.Report.Failsafe
	// Status keeps microseconds: compare at that precision.
	for _, rec := range p.History {
		if rec.Kind == holdfastv1.OperationFailsafe && rec.From == primary && rec.StartedAt.Time.Truncate(time.Microsecond).Equal(f.Since.Truncate(time.Microsecond)) {
			return
		}
	}
	d := f.Ended.Sub(f.Since).Round(time.Millisecond)
	p.record(holdfastv1.OperationRecord{
		Kind: holdfastv1.OperationFailsafe, From: primary, To: primary, Promised: f.Promised, Outcome: holdfastv1.OutcomeSucceeded,
		Reason: fmt.Sprintf("primary %s could not renew its Lease (the API server did not answer) and took writes for %s on promises from %s",
			primary, d, strings.Join(f.Promised, ", ")),
		StartedAt: metav1.MicroTime{Time: f.Since}, FinishedAt: metav1.MicroTime{Time: *f.Ended}, Duration: d.String(),
	})
	p.say(true, "FailsafeEnded", "Failsafe", p.History[len(p.History)-1].Reason)
}

// considerFailover judges the primary and, when it has failed, starts a
// failover to the best replica, preempting any other operation. It fills
// p's PrimaryFailingSince, Waiting and Blocked.
func considerFailover(c *holdfastv1.PostgresCluster, views []view, now time.Time, leaseQuiet time.Duration, p *plan) {
	target := p.TargetPrimary
	// Only a cluster that has had this primary can lose it; during
	// bootstrap or a change of primary there is nothing to replace yet.
	if c.Status.CurrentPrimary != target {
		return
	}
	pv := findView(views, target)
	h, why := judgePrimary(pv)
	if h == healthy {
		p.PrimaryFailingSince = nil
		return
	}
	if !failoverMayStart(c, p.Operation, now) {
		if op := p.Operation; op != nil && op.PhaseDeadline != nil {
			p.Waiting = fmt.Sprintf("primary %s: %s; it was stopped on purpose (%s), and has until %s to come back",
				target, why, op.Kind, op.PhaseDeadline.UTC().Format(time.RFC3339))
		}
		return
	}
	if h == failing {
		if who := promisedTo(views, target); len(who) > 0 {
			// Cut off from us, it may still reach its replicas, and take
			// writes on their promises without the API server; they accept
			// no promotion while those hold, so none is ordered.
			p.Waiting = fmt.Sprintf("primary %s: %s; it holds failsafe promises from %s, so it may be taking writes without the API server",
				target, why, strings.Join(who, ", "))
			return
		}
		if p.PrimaryFailingSince == nil {
			since := now
			if pv != nil && pv.Report == nil && !pv.LastAnswer.IsZero() {
				// Silent since its last answer, not since the call that
				// waited instanceTimeout to find it silent.
				since = pv.LastAnswer
			}
			p.PrimaryFailingSince = &metav1.Time{Time: since}
		}
		wait := time.Duration(c.Spec.Failover.UnreachableSeconds) * time.Second
		if wait <= 0 {
			wait = 10 * time.Second
		}
		if now.Sub(p.PrimaryFailingSince.Time) < wait {
			p.Waiting = fmt.Sprintf("primary %s: %s; failover after %s", target, why, wait)
			return
		}
		// It may be alive and cut off: promote only once its lease has
		// expired, by which time it has stopped postgres itself.
		if lease := time.Duration(c.Spec.Failover.LeaseDurationSeconds) * time.Second; leaseQuiet < lease {
			p.Waiting = fmt.Sprintf("primary %s: %s; its lease was renewed %s ago and lasts %s", target, why, leaseQuiet.Round(time.Second), lease)
			return
		}
		why = fmt.Sprintf("%s for %s", why, now.Sub(p.PrimaryFailingSince.Time).Round(time.Second))
	}
	cand, how := chooseCandidate(c, views, []string{target}, 0)
	if cand == nil {
		p.Blocked = fmt.Sprintf("primary %s failed (%s) but no replica can be promoted: %s", target, why, how)
		if op := p.Operation; op != nil && op.Kind == holdfastv1.OperationFence {
			// The stopped replica may hold writes no other has, or be
			// needed to count the quorum: it runs again.
			p.finish(holdfastv1.OutcomePreempted, fmt.Sprintf("primary %s failed, and the failover may need %s", target, op.Instance), now)
		}
		return
	}
	started := now
	if p.PrimaryFailingSince != nil {
		started = p.PrimaryFailingSince.Time
	}
	if p.Operation != nil {
		p.finish(holdfastv1.OutcomePreempted, fmt.Sprintf("primary %s failed", target), now)
	}
	op := p.begin(holdfastv1.OperationFailover, holdfastv1.PhasePromoting, started, now, promoteTimeout,
		fmt.Sprintf("primary %s failed: %s; promoting %s, %s", target, why, cand.Pod.Name, how))
	op.From = target
	op.RequiredLSN = formatLSN(walPosition(cand.Report.Postgres))
	p.promote(cand.Pod.Name)
	p.PrimaryFailingSince = nil
}

// refusesForPromise marks, in a failover's reason, that its target refused
// the promotion for a failsafe promise.
const refusesForPromise = "refuses the promotion"

// stepFailover moves a failover on whose target has not become primary by
// its deadline, or whose target is gone: the next eligible replica is
// promoted, once the dropped one's lease has lapsed (a target that renews
// it is alive, only slow, and may be taking writes).
func stepFailover(c *holdfastv1.PostgresCluster, views []view, now time.Time, leaseQuiet time.Duration, p *plan) {
	op := p.Operation
	if c.Status.CurrentPrimary == op.To {
		return // done; decide records it
	}
	if from := findView(views, op.From); from != nil && from.HoldsLease && op.From != op.To {
		// The lease has not been handed to the target yet, as the
		// failover's first look meant to (it lost a race on the Lease's
		// resourceVersion, say). If the old primary has renewed it since,
		// it may take writes: the failover is given up, and it stays.
		h, _ := judgePrimary(from)
		if lease := time.Duration(c.Spec.Failover.LeaseDurationSeconds) * time.Second; h != dead && leaseQuiet < lease {
			why := fmt.Sprintf("%s renewed the primary lease before it was handed to %s: it is the primary again", op.From, op.To)
			p.finish(holdfastv1.OutcomeFailed, why, now)
			p.TargetPrimary, p.CurrentPrimary = op.From, op.From
			p.say(true, "FailoverAbandoned", "Failover", why)
			return
		}
	}
	if v := findView(views, op.To); v != nil && v.Report != nil && v.Report.Promise != nil && v.Report.Promise.RemainingMillis > 0 &&
		!strings.Contains(op.Reason, refusesForPromise) {
		// Said once in the record: the wait that follows is the promise's.
		op.Reason += fmt.Sprintf("; %s %s: it promised %s to accept none for %dms more, and is ordered again until it lapses",
			op.To, refusesForPromise, v.Report.Promise.Primary, v.Report.Promise.RemainingMillis)
	}
	h, why := judgePrimary(findView(views, op.To))
	if h != dead && !pastDeadline(op, now) {
		return
	}
	if h != dead {
		if v := findView(views, op.To); v != nil && v.Report != nil && v.Report.Promise != nil {
			// It refuses the order until its promise to the old primary
			// lapses, and has promised nothing since it heard of the order.
			p.Waiting = fmt.Sprintf("failover target %s promised %s to accept no promotion for %dms more; the order is sent again until it is taken",
				op.To, v.Report.Promise.Primary, v.Report.Promise.RemainingMillis)
			return
		}
		why = fmt.Sprintf("it has not become primary within %s", promoteTimeout)
		if lease := time.Duration(c.Spec.Failover.LeaseDurationSeconds) * time.Second; leaseQuiet < lease {
			p.Waiting = fmt.Sprintf("failover target %s: %s; its lease was renewed %s ago and lasts %s", op.To, why, leaseQuiet.Round(time.Second), lease)
			return
		}
	}
	required, _ := postgres.ParseLSN(op.RequiredLSN)
	next, how := chooseCandidate(c, views, slices.Concat([]string{op.From, op.To}, op.Dropped), required)
	if next == nil {
		p.Blocked = fmt.Sprintf("failover target %s: %s, and no other replica can be promoted: %s", op.To, why, how)
		return
	}
	dropped := op.To
	op.Dropped = append(op.Dropped, dropped)
	op.Reason += fmt.Sprintf("; dropped %s (%s), promoting %s, %s", dropped, why, next.Pod.Name, how)
	p.enter(holdfastv1.PhasePromoting, now, promoteTimeout)
	p.promote(next.Pod.Name)
	p.say(true, "FailoverRetargeted", "Failover", fmt.Sprintf("dropped %s (%s); promoting %s, %s", dropped, why, next.Pod.Name, how))
}

// setPrimaryCondition says whether the cluster has a primary taking
// writes, and if not, why and what the operator is doing about it.
func setPrimaryCondition(c *holdfastv1.PostgresCluster, p plan) {
	ok, reason, msg := true, "PrimaryReady", p.CurrentPrimary+" is the primary"
	switch {
	case p.Blocked != "":
		ok, reason, msg = false, "FailoverBlocked", p.Blocked
	case p.Waiting != "":
		ok, reason, msg = false, "PrimaryFailing", p.Waiting
	case p.CurrentPrimary == "" && changingPrimary(p.Operation) && p.Operation.Kind == holdfastv1.OperationFailover:
		ok, reason, msg = false, "FailingOver", p.Operation.Reason
	case p.CurrentPrimary == "" && handingOver(p.Operation):
		ok, reason, msg = false, "SwitchingOver", p.Operation.Reason
	case p.CurrentPrimary == "":
		ok, reason, msg = false, "NoPrimary", "no instance has reported itself primary yet"
	}
	setCondition(&c.Status, c, holdfastv1.ConditionPrimaryAvailable, ok, reason, msg)
}

// considerSwitchover starts a switchover the cluster's annotation asks for,
// when no operation runs and the instance named is a ready replica.
func considerSwitchover(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	want := c.Annotations[holdfastv1.AnnotationSwitchoverTo]
	if want == "" || want == p.TargetPrimary || !p.idle() {
		return
	}
	if c.Status.CurrentPrimary != p.TargetPrimary {
		return // no primary to hand over from yet: try again later
	}
	refuse := func(why string) { p.SwitchoverRefused = fmt.Sprintf("switchover to %s refused: %s", want, why) }
	v := findView(views, want)
	switch {
	case v == nil || resources.Ordinal(want) >= int(c.Spec.Instances):
		refuse("no such instance")
		return
	case v.Report == nil || v.Report.Role != postgres.Replica || !v.Report.Ready:
		refuse("it is not a ready, streaming replica")
		return
	case c.Spec.Synchronous != nil && !slices.Contains(c.Status.SyncStandbys, want):
		refuse("it is not a synchronous standby, so it may lack acknowledged writes")
		return
	}
	op := p.begin(holdfastv1.OperationSwitchover, holdfastv1.PhasePromoting, now, now, switchoverTimeout,
		fmt.Sprintf("switchover from %s to %s asked for with the %s annotation", p.TargetPrimary, want, holdfastv1.AnnotationSwitchoverTo))
	op.From = p.TargetPrimary
	p.promote(want)
}

// considerScaleDown hands the primary role on before a scale-down removes
// the primary's pod: a switchover to the most advanced remaining replica,
// not a crash of the primary. The StatefulSet keeps the primary's pod
// until then (podsToKeep).
func considerScaleDown(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	if !p.idle() || c.Status.CurrentPrimary != p.TargetPrimary || resources.Ordinal(p.TargetPrimary) < int(c.Spec.Instances) {
		return
	}
	cand := switchoverCandidate(c, views, p.TargetPrimary)
	if cand == nil {
		return // the StatefulSet keeps the primary; Progressing says what waits
	}
	op := p.begin(holdfastv1.OperationSwitchover, holdfastv1.PhasePromoting, now, now, switchoverTimeout,
		fmt.Sprintf("spec.instances is %d, which removes the primary %s: switching over to %s, the most advanced replica that stays",
			c.Spec.Instances, p.TargetPrimary, cand.Pod.Name))
	op.From = p.TargetPrimary
	p.promote(cand.Pod.Name)
}

// switchoverCandidate is the most advanced replica a planned switchover may
// hand the primary role to: ready and streaming, synchronous when
// replication is, and staying in the cluster. The old primary stops
// cleanly before it is promoted, so it then holds every write.
func switchoverCandidate(c *holdfastv1.PostgresCluster, views []view, primary string) *view {
	var best *view
	for i := range views {
		v := &views[i]
		if v.Pod.Name == primary || !mayTakeOver(c, v) {
			continue
		}
		if best == nil || moreAdvanced(v.Report.Postgres, best.Report.Postgres) {
			best = v
		}
	}
	return best
}

// mayTakeOver: v may become the primary in a planned switchover.
func mayTakeOver(c *holdfastv1.PostgresCluster, v *view) bool {
	return resources.Ordinal(v.Pod.Name) < int(c.Spec.Instances) && v.Pod.DeletionTimestamp == nil &&
		instanceReady(v) && v.Report.Role == postgres.Replica && !v.Report.Fenced &&
		(c.Spec.Synchronous == nil || slices.Contains(c.Status.SyncStandbys, v.Pod.Name))
}

// podsToKeep is how many pods the StatefulSet must keep: spec.instances,
// or more while the primary, or the primary an operation is handing over
// from, has a higher ordinal (a scale-down waits for its switchover).
func podsToKeep(c *holdfastv1.PostgresCluster) int32 {
	if stoppingForHibernation(c) {
		return 0
	}
	n := c.Spec.Instances
	for _, name := range []string{c.Status.TargetPrimary, c.Status.CurrentPrimary} {
		if name != "" {
			n = max(n, int32(resources.Ordinal(name))+1)
		}
	}
	if op := c.Status.Operation; changingPrimary(op) && op.From != "" {
		n = max(n, int32(resources.Ordinal(op.From))+1)
	}
	return n
}

// stepSwitchover gives up a switchover whose target is down and has not
// become primary by its deadline (abandonHandover); a target that is up is
// waited for, and the condition says so.
func stepSwitchover(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	op := p.Operation
	if c.Status.CurrentPrimary == op.To || !pastDeadline(op, now) {
		return
	}
	if !abandonHandover(views, now, p, "") {
		p.Waiting = fmt.Sprintf("switchover target %s has not become primary within %s", op.To, switchoverTimeout)
	}
}

// abandonHandover ends, Failed, a planned handover (a switchover, on its
// own or within a rolling update or hibernation) past its deadline whose
// target is down: the failover rules then judge the target as the primary
// it was told to be, and replace it. A target that is up was told to
// promote and is waited for: abandonHandover then does nothing and says so.
func abandonHandover(views []view, now time.Time, p *plan, prefix string) bool {
	to := p.Operation.To
	h, why := judgePrimary(findView(views, to))
	if h == healthy {
		return false
	}
	p.finish(holdfastv1.OutcomeFailed, fmt.Sprintf("%s%s has not become primary within %s: %s", prefix, to, switchoverTimeout, why), now)
	p.CurrentPrimary = p.TargetPrimary
	return true
}

// targetBehind says how the switchover's target falls short of the WAL
// the old primary wrote before it stopped at epoch, "" when it does not
// (or the old primary did not say where its WAL ends). A standby not
// connected when the old primary shut down missed the end: promoting it
// would lose writes the other standbys acknowledged.
func targetBehind(views []view, old, target string, epoch int64) string {
	o, t := findView(views, old), findView(views, target)
	if o == nil || o.Report == nil || o.Report.DemotedAtEpoch != epoch || o.Report.DemotedAtLSN == "" {
		return ""
	}
	end, err := postgres.ParseLSN(o.Report.DemotedAtLSN)
	if err != nil {
		return ""
	}
	if t != nil && t.Report != nil && t.Report.Role == postgres.Primary {
		return "" // promoted already, once it had them all
	}
	received := "nothing"
	if t != nil && t.Report != nil && t.Report.Postgres != nil && t.Report.Postgres.ReceivedLSN != "" {
		received = t.Report.Postgres.ReceivedLSN
		if got, err := postgres.ParseLSN(received); err == nil && got >= end {
			return ""
		}
	}
	return fmt.Sprintf("switchover target %s has received WAL up to %s, short of %s where %s stopped; it is promoted once it has it all", target, received, o.Report.DemotedAtLSN, old)
}

// oldPrimaryStopped: the primary a switchover replaces has stopped taking
// writes at the new epoch (its clean shutdown has sent every WAL record to
// the streaming replicas), or is gone. It says so for good with
// DemotedAtEpoch: the moment it runs no postgres at all lasts only until
// it starts again as a standby, and a look may well miss it.
func oldPrimaryStopped(views []view, old string, epoch int64) bool {
	for _, v := range views {
		if v.Pod.Name != old {
			continue
		}
		if h, _ := judgePrimary(&v); h == dead {
			return true
		}
		r := v.Report
		return r != nil && r.Desired != nil && r.Desired.Epoch == epoch && (!r.Running || r.Role == postgres.Replica || r.DemotedAtEpoch == epoch)
	}
	return true
}
