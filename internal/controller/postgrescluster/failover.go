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

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// chooseCandidate picks the replica to promote: a healthy streaming-capable
// replica with the most WAL received (then replayed). With synchronous
// replication only a standby that was synchronous qualifies, and enough of
// them must answer that one of them surely holds every acknowledged commit.
func chooseCandidate(c *holdfastv1.PostgresCluster, views []view, old string) (string, string) {
	quorum := 0
	if c.Spec.Synchronous != nil {
		quorum = int(c.Spec.Synchronous.Quorum)
	}
	var best *view
	answering := 0
	for i := range views {
		v := &views[i]
		name := v.Pod.Name
		if name == old || resources.Ordinal(name) >= int(c.Spec.Instances) || v.Pod.DeletionTimestamp != nil {
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
			return "", fmt.Sprintf("only %d of the synchronous standbys %v answer and %d are needed to be sure no acknowledged write is lost",
				answering, c.Status.SyncStandbys, need)
		}
	}
	if best == nil {
		return "", "no healthy replica to promote"
	}
	return best.Pod.Name, fmt.Sprintf("the most advanced replica (received %s, replayed %s)", best.Report.Postgres.ReceivedLSN, best.Report.Postgres.ReplayedLSN)
}

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

// considerFailover judges the primary and, when it has failed, picks the
// new one. It fills p's TargetPrimary, Epoch, PrimaryFailingSince,
// LastFailover and Blocked.
func considerFailover(c *holdfastv1.PostgresCluster, views []view, now time.Time, leaseQuiet time.Duration, p *plan) {
	target := p.TargetPrimary
	// Only a cluster that has had this primary can lose it; during
	// bootstrap or a change of primary there is nothing to replace yet.
	if c.Status.CurrentPrimary != target {
		return
	}
	var pv *view
	for i := range views {
		if views[i].Pod.Name == target {
			pv = &views[i]
		}
	}
	h, why := judgePrimary(pv)
	switch h {
	case healthy:
		p.PrimaryFailingSince = nil
		return
	case failing:
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
	cand, how := chooseCandidate(c, views, target)
	if cand == "" {
		p.Blocked = fmt.Sprintf("primary %s failed (%s) but no replica can be promoted: %s", target, why, how)
		return
	}
	started := now
	if p.PrimaryFailingSince != nil {
		started = p.PrimaryFailingSince.Time
	}
	p.LastFailover = &holdfastv1.RoleChange{From: target, To: cand, StartedAt: metav1.MicroTime{Time: started},
		Reason: fmt.Sprintf("primary %s failed: %s; promoting %s, %s", target, why, cand, how)}
	p.TargetPrimary = cand
	p.CurrentPrimary = ""
	p.PrimaryFailingSince = nil
	p.Epoch++
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
	case p.CurrentPrimary == "" && inProgress(p.LastFailover):
		ok, reason, msg = false, "FailingOver", p.LastFailover.Reason
	case p.CurrentPrimary == "" && inProgress(p.LastSwitchover):
		ok, reason, msg = false, "SwitchingOver", p.LastSwitchover.Reason
	case p.CurrentPrimary == "":
		ok, reason, msg = false, "NoPrimary", "no instance has reported itself primary yet"
	}
	setCondition(&c.Status, c, holdfastv1.ConditionPrimaryAvailable, ok, reason, msg)
}

// considerSwitchover starts a switchover the cluster's annotation asks for,
// when the cluster is settled and the instance named is a ready replica.
func considerSwitchover(c *holdfastv1.PostgresCluster, views []view, now time.Time, p *plan) {
	want := c.Annotations[holdfastv1.AnnotationSwitchoverTo]
	if want == "" || want == p.TargetPrimary || inProgress(p.LastSwitchover) || inProgress(p.LastFailover) {
		return
	}
	if c.Status.CurrentPrimary != p.TargetPrimary {
		return // no primary to hand over from yet: try again later
	}
	refuse := func(why string) { p.SwitchoverRefused = fmt.Sprintf("switchover to %s refused: %s", want, why) }
	var v *view
	for i := range views {
		if views[i].Pod.Name == want {
			v = &views[i]
		}
	}
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
	p.LastSwitchover = &holdfastv1.RoleChange{From: p.TargetPrimary, To: want, StartedAt: metav1.MicroTime{Time: now},
		Reason: fmt.Sprintf("switchover from %s to %s asked for with the %s annotation", p.TargetPrimary, want, holdfastv1.AnnotationSwitchoverTo)}
	p.TargetPrimary = want
	p.CurrentPrimary = ""
	p.Epoch++
}

func inProgress(rc *holdfastv1.RoleChange) bool { return rc != nil && rc.CompletedAt == nil }

// oldPrimaryStopped: the primary a switchover replaces has stopped taking
// writes at the new epoch (its clean shutdown has sent every WAL record to
// the streaming replicas), or is gone.
func oldPrimaryStopped(views []view, old string, epoch int64) bool {
	for _, v := range views {
		if v.Pod.Name != old {
			continue
		}
		if h, _ := judgePrimary(&v); h == dead {
			return true
		}
		r := v.Report
		return r != nil && r.Desired != nil && r.Desired.Epoch == epoch && (!r.Running || r.Role == postgres.Replica)
	}
	return true
}
