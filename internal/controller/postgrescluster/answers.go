package postgrescluster

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
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
	last   time.Time // the last answer; zero when none was seen
	silent bool      // the latest call went unanswered
	seen   time.Time // the latest call, to forget pods long gone
}

// record notes the outcome of a call made at at, and returns when the pod
// last answered.
func (l *answerLog) record(pod types.UID, answered bool, at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pods == nil {
		l.pods = map[types.UID]answer{}
	}
	a := l.pods[pod]
	a.silent, a.seen = !answered, at
	if answered {
		a.last = at
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
