// Package failsafe keeps a primary taking writes while it cannot reach the
// API server to renew its Lease, on promises from every replica that could
// replace it: "I will accept no promotion until T". The rules are pure
// functions of what each side knows and a monotonic clock reading, so that
// they are tested on a fake clock; the instance manager carries the
// messages and keeps the state.
//
// Why it is safe: the primary counts a promise valid from before it asked
// (sentAt) for the renew deadline; the replica keeps it from when it
// answered (at or after sentAt) for the lease duration, which is longer
// than the renew deadline plus the watchdog's grace. So every moment the
// primary may take writes on a promise, the replica that gave it refuses
// promotion; a lost or late answer only shortens what the primary may use.
package failsafe

import (
	"fmt"
	"slices"
	"time"
)

// Request is what a primary asks of a replica.
type Request struct {
	// Primary names the instance asking, and Epoch its term as primary.
	Primary string
	Epoch   int64
	// Hold is how long the replica is to refuse promotion from the moment
	// it answers: the primary's lease duration.
	Hold time.Duration
}

// Promise is a replica's word: no promotion until Until (CLOCK_MONOTONIC).
type Promise struct {
	Primary string        `json:"primary"`
	Epoch   int64         `json:"epoch"`
	Until   time.Duration `json:"until"`
}

// Replica is what a replica knows of itself when asked.
type Replica struct {
	// Following: its desired role is replica and it is not a primary.
	Following bool
	// Epoch is the newest epoch it has heard of (orders it took or refused).
	Epoch int64
}

// Grant gives the promise asked, extending cur, or says why not. A replica
// that has heard of a newer epoch than the primary's refuses: the operator
// has moved on, and the primary is to stop once it cannot renew.
func Grant(cur *Promise, req Request, self Replica, now time.Duration) (Promise, error) {
	switch {
	case !self.Following:
		return Promise{}, fmt.Errorf("this instance is not a replica")
	case req.Epoch < self.Epoch:
		return Promise{}, fmt.Errorf("this replica has heard of epoch %d, newer than %s's %d", self.Epoch, req.Primary, req.Epoch)
	case req.Hold <= 0:
		return Promise{}, fmt.Errorf("a promise must hold for some time")
	case Blocks(cur, now) != "" && (cur.Primary != req.Primary || cur.Epoch != req.Epoch):
		return Promise{}, fmt.Errorf("this replica has promised %s at epoch %d already", cur.Primary, cur.Epoch)
	}
	p := Promise{Primary: req.Primary, Epoch: req.Epoch, Until: now + req.Hold}
	if cur != nil && cur.Primary == p.Primary && cur.Epoch == p.Epoch {
		p.Until = max(p.Until, cur.Until)
	}
	return p, nil
}

// Blocks says why a promotion must wait for cur to lapse; "" when it need not.
func Blocks(cur *Promise, now time.Duration) string {
	if cur == nil || now >= cur.Until {
		return ""
	}
	return fmt.Sprintf("this replica promised %s (epoch %d) to accept no promotion for %s more",
		cur.Primary, cur.Epoch, (cur.Until - now).Round(time.Millisecond))
}

// Tally is a primary's count of the promises it holds.
type Tally struct {
	// valid holds, per replica, until when (CLOCK_MONOTONIC) its latest
	// promise may be relied on.
	valid map[string]time.Duration
}

// Promised records a replica's promise to a request sent at sentAt: it
// may be relied on for validFor (the renew deadline) from then.
func (t *Tally) Promised(replica string, sentAt, validFor time.Duration) {
	if t.valid == nil {
		t.valid = map[string]time.Duration{}
	}
	t.valid[replica] = max(t.valid[replica], sentAt+validFor)
}

// Reset forgets every promise: the primary renewed its Lease again.
func (t *Tally) Reset() { t.valid = nil }

// Until is how long the primary may take writes on promises: until the
// earliest of the required replicas' promises lapses. Missing names the
// required replicas whose promise it lacks or that has lapsed; then Until
// is 0.
func (t *Tally) Until(required []string, now time.Duration) (until time.Duration, missing []string) {
	until = -1
	for _, name := range required {
		v, ok := t.valid[name]
		if !ok || v <= now {
			missing = append(missing, name)
			continue
		}
		if until < 0 || v < until {
			until = v
		}
	}
	if len(missing) > 0 || until < 0 {
		return 0, missing
	}
	return until, nil
}

// Holders names the replicas whose promises are in force, sorted.
func (t *Tally) Holders(now time.Duration) []string {
	var out []string
	for name, v := range t.valid {
		if v > now {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
