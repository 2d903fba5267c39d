package postgrescluster

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

// silentTimeout bounds the call to an instance that did not answer last
// time. While the primary is cut off every look at the cluster would
// otherwise wait the whole instanceTimeout for it, and a failover takes
// several looks. Safety does not rest on it: a primary that is merely slow
// keeps renewing its Lease, and is never replaced while it does.
const silentTimeout = 500 * time.Millisecond

// answerLog remembers, per pod, when its instance manager last answered
// the operator (on the operator's clock) and whether the latest call
// failed. Silence is counted from the last answer, not from the first
// call that went unanswered, which itself took instanceTimeout to fail.
type answerLog struct {
	mu   sync.Mutex
	pods map[types.UID]answer
}

type answer struct {
	last   time.Time           // the last answer; zero when none was seen
	silent bool                // the latest call went unanswered
	seen   time.Time           // the latest call, to forget pods long gone
	report *instanceapi.Report // the last answer's
}

// record notes the outcome of a call made at at, the report when it was
// answered, and returns when the pod last answered.
func (l *answerLog) record(pod types.UID, report *instanceapi.Report, at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pods == nil {
		l.pods = map[types.UID]answer{}
	}
	a := l.pods[pod]
	a.silent, a.seen = report == nil, at
	if report != nil {
		a.last, a.report = at, report
	}
	l.pods[pod] = a
	for uid, other := range l.pods {
		if at.Sub(other.seen) > 10*time.Minute {
			delete(l.pods, uid)
		}
	}
	return a.last
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
