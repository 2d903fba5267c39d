package postgrescluster

import (
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

// silentTimeout bounds the call to an instance that did not answer last
// time. While the primary is cut off every look at the cluster would
// otherwise wait the whole instanceTimeout for it, and a failover takes
// several looks. Safety does not rest on it: a primary that is merely slow
// keeps renewing its Lease, and is never replaced while it does.
//
// A silent instance gets the whole instanceTimeout again every
// patientEvery: a new instance manager that needs longer than
// silentTimeout to answer (a loaded node, a first TLS handshake) must not
// stay unheard for good because it missed its first call.
const silentTimeout = 500 * time.Millisecond

const patientEvery = 5 * time.Second

// answerLog remembers, per pod, when its instance manager last answered
// the operator (on the operator's clock) and whether the latest call
// failed. Silence is counted from the last answer, not from the first
// call that went unanswered, which itself took instanceTimeout to fail.
type answerLog struct {
	mu   sync.Mutex
	pods map[types.UID]answer
}

type answer struct {
	last    time.Time           // the last answer; zero when none was seen
	silent  bool                // the latest call went unanswered
	seen    time.Time           // the latest call, to forget pods long gone
	first   time.Time           // the first call
	patient time.Time           // the latest call given the whole instanceTimeout
	err     string              // why the latest call went unanswered
	report  *instanceapi.Report // the last answer's
}

// timeout is how long the call to pod made at now may take.
func (l *answerLog) timeout(pod types.UID, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.pods[pod]
	switch {
	case !a.silent:
		return instanceTimeout
	case now.Sub(a.patient) >= patientEvery:
		a.patient = now
		l.pods[pod] = a
		return instanceTimeout
	}
	return silentTimeout
}

// record notes the outcome of a call made at at, the report when it was
// answered or the error when not, and returns when the pod last answered
// and whether this call changed it from answering to silent or back.
func (l *answerLog) record(pod types.UID, report *instanceapi.Report, err error, at time.Time) (last time.Time, turned bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pods == nil {
		l.pods = map[types.UID]answer{}
	}
	a, known := l.pods[pod]
	turned = known && a.silent != (report == nil)
	a.silent, a.seen = report == nil, at
	if a.first.IsZero() {
		a.first = at
	}
	if report != nil {
		a.last, a.report, a.err = at, report, ""
	} else if err != nil {
		a.err = err.Error()
	}
	l.pods[pod] = a
	for uid, other := range l.pods {
		if at.Sub(other.seen) > 10*time.Minute {
			delete(l.pods, uid)
		}
	}
	return a.last, turned
}

// neverAnswered says, for a pod whose instance manager has not answered a
// single call, since when the operator has called it and the latest
// error; ok is false once it has answered, or before the first call.
func (l *answerLog) neverAnswered(pod types.UID) (since time.Time, why string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, known := l.pods[pod]
	if !known || !a.last.IsZero() {
		return time.Time{}, "", false
	}
	return a.first, a.err, true
}

// lookup says when pod last answered, and whether its latest call did not.
func (l *answerLog) lookup(pod types.UID) (last time.Time, silent bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.pods[pod]
	return a.last, a.silent
}

// lastReport is pod's last answer, nil when none was seen.
func (l *answerLog) lastReport(pod types.UID) *instanceapi.Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pods[pod].report
}

// noteUnanswered marks the instances whose managers have not answered a
// single call in startGrace: a pod that runs but never hears from the
// operator waits for its orders for good, and nothing else in the status
// would tell (a cluster still creating its other pods is "progressing").
func noteUnanswered(st *holdfastv1.PostgresClusterStatus, c *holdfastv1.PostgresCluster, pods []corev1.Pod,
	reports map[string]*instanceapi.Report, l *answerLog, now time.Time) {
	var unheard []string
	for _, p := range pods {
		if reports[p.Name] != nil || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		since, why, ok := l.neverAnswered(p.UID)
		if !ok || now.Sub(since) < startGrace {
			continue
		}
		msg := fmt.Sprintf("no answer from its instance manager in %s: %s", now.Sub(since).Round(time.Second), why)
		for i := range st.Instances {
			if st.Instances[i].Name == p.Name {
				st.Instances[i].Message = msg
			}
		}
		unheard = append(unheard, p.Name+": "+msg)
	}
	if len(unheard) == 0 || meta.IsStatusConditionTrue(st.Conditions, holdfastv1.ConditionDegraded) {
		return
	}
	setCondition(st, c, holdfastv1.ConditionDegraded, true, ReasonInstanceUnreachable, strings.Join(unheard, "; "))
	st.Phase = holdfastv1.PhaseDegraded
}

// ReasonInstanceUnreachable: an instance's pod runs, but its manager has
// never answered the operator.
const ReasonInstanceUnreachable = "InstanceUnreachable"
