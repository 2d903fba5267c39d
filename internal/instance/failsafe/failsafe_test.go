package failsafe

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const s = time.Second

func TestGrant(t *testing.T) {
	req := Request{Primary: "pg-0", Epoch: 3, Hold: 6 * s}
	given := &Promise{Primary: "pg-0", Epoch: 3, Until: 8 * s}
	for _, tc := range []struct {
		name      string
		cur       *Promise
		req       Request
		self      Replica
		now       time.Duration
		wantUntil time.Duration
		wantErr   string
	}{
		{name: "a following replica promises for the hold, from when it answers",
			req: req, self: Replica{Following: true, Epoch: 3}, now: 5 * s, wantUntil: 11 * s},
		{name: "a replica still at an older epoch promises the newer primary",
			req: req, self: Replica{Following: true, Epoch: 2}, now: 5 * s, wantUntil: 11 * s},
		{name: "renewal extends, never shortens",
			cur: &Promise{Primary: "pg-0", Epoch: 3, Until: 20 * s}, req: req, self: Replica{Following: true, Epoch: 3}, now: 5 * s, wantUntil: 20 * s},
		{name: "an instance told to be primary refuses",
			req: req, self: Replica{Following: false, Epoch: 3}, now: 5 * s, wantErr: "not a replica"},
		{name: "a replica that heard of a newer epoch (it was ordered to promote) refuses",
			req: req, self: Replica{Following: true, Epoch: 4}, now: 5 * s, wantErr: "heard of epoch 4"},
		{name: "a promise in force to another primary is not given to a second",
			cur: given, req: Request{Primary: "pg-1", Epoch: 3, Hold: 6 * s}, self: Replica{Following: true, Epoch: 3}, now: 5 * s, wantErr: "promised pg-0"},
		{name: "once lapsed, another primary at a newer epoch may have one",
			cur: given, req: Request{Primary: "pg-1", Epoch: 4, Hold: 6 * s}, self: Replica{Following: true, Epoch: 4}, now: 8 * s, wantUntil: 14 * s},
		{name: "a promise must hold for some time",
			req: Request{Primary: "pg-0", Epoch: 3}, self: Replica{Following: true, Epoch: 3}, now: 5 * s, wantErr: "some time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Grant(tc.cur, tc.req, tc.self, tc.now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || p.Until != tc.wantUntil || p.Primary != tc.req.Primary || p.Epoch != tc.req.Epoch {
				t.Fatalf("promise %+v, %v; want until %s", p, err, tc.wantUntil)
			}
		})
	}
}

func TestBlocksUntilTheLapse(t *testing.T) {
	p := &Promise{Primary: "pg-0", Epoch: 3, Until: 10 * s}
	if why := Blocks(p, 9*s); !strings.Contains(why, "pg-0") || !strings.Contains(why, "1s more") {
		t.Errorf("before the lapse: %q", why)
	}
	if why := Blocks(p, 10*s); why != "" {
		t.Errorf("at the lapse: %q", why)
	}
	if why := Blocks(nil, 0); why != "" {
		t.Errorf("no promise: %q", why)
	}
}

// The primary relies on a promise from before it asked, for less than the
// replica keeps it: at every instant the primary may write on it, the
// replica refuses promotion, however late the answer came.
func TestThePrimaryNeverOutlastsThePromise(t *testing.T) {
	const renewDeadline, leaseDuration = 4 * s, 6 * s
	for _, delay := range []time.Duration{0, 300 * time.Millisecond, 2 * s, 5 * s} {
		sentAt := 10 * s
		p, err := Grant(nil, Request{Primary: "pg-0", Epoch: 1, Hold: leaseDuration}, Replica{Following: true, Epoch: 1}, sentAt+delay)
		if err != nil {
			t.Fatal(err)
		}
		var tally Tally
		tally.Promised("pg-1", sentAt, renewDeadline)
		until, _ := tally.Until([]string{"pg-1"}, sentAt+delay)
		for now := sentAt; now < until; now += 100 * time.Millisecond {
			if Blocks(&p, now) == "" {
				t.Fatalf("answer %s late: at %s the primary may write (until %s) but the promise has lapsed (%s)", delay, now, until, p.Until)
			}
		}
	}
}

func TestTallyNeedsEveryRequiredReplica(t *testing.T) {
	var tally Tally
	tally.Promised("pg-1", 10*s, 4*s)
	tally.Promised("pg-2", 11*s, 4*s)
	for _, tc := range []struct {
		name        string
		required    []string
		now         time.Duration
		wantUntil   time.Duration
		wantMissing []string
	}{
		{name: "both promised: until the earlier lapses", required: []string{"pg-1", "pg-2"}, now: 12 * s, wantUntil: 14 * s},
		{name: "one lapsed: none", required: []string{"pg-1", "pg-2"}, now: 14 * s, wantMissing: []string{"pg-1"}},
		{name: "one never asked: none", required: []string{"pg-1", "pg-3"}, now: 12 * s, wantMissing: []string{"pg-3"}},
		{name: "no replica to promise: no failsafe", required: nil, now: 12 * s},
	} {
		t.Run(tc.name, func(t *testing.T) {
			until, missing := tally.Until(tc.required, tc.now)
			if until != tc.wantUntil || !slices.Equal(missing, tc.wantMissing) {
				t.Errorf("until %s missing %v; want %s %v", until, missing, tc.wantUntil, tc.wantMissing)
			}
		})
	}
	if got := tally.Holders(12 * s); !slices.Equal(got, []string{"pg-1", "pg-2"}) {
		t.Errorf("holders %v", got)
	}
	tally.Reset()
	if until, _ := tally.Until([]string{"pg-1"}, 12*s); until != 0 {
		t.Errorf("after a reset the primary still relies on promises until %s", until)
	}
}
