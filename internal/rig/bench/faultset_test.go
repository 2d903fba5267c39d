package bench

import (
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

func TestFaultSetGroupsWhatEachSystemDid(t *testing.T) {
	results := []Result{
		{Suite: "holdfast", Config: "defaults", Faults: []FaultResult{
			{Fault: Kill, Samples: []Sample{{Outage: time.Second}}},
			{Fault: FreezePrimary, Samples: []Sample{
				{Outage: 11 * time.Second, Verdict: "a new primary took writes 11.2s into the freeze; the thawed primary: held session refused after 70ms: conn closed"},
				{Outage: 12 * time.Second, Verdict: "a new primary took writes 12.0s into the freeze; the thawed primary: held session refused after 91ms: conn closed"},
			}},
		}},
		{Suite: "cnpg", Config: "defaults", Check: loadcheck.Report{SplitBrain: []string{"x"}}, Faults: []FaultResult{
			{Fault: FreezePrimary, Samples: []Sample{
				{Verdict: "no other instance took writes during the freeze; the thawed primary: ACKNOWLEDGED a write on a session opened before the freeze (in 580ms)",
					Err: "no acknowledged write after 00:06:38: context deadline exceeded"},
			}},
		}},
	}
	got := FaultSet(results)
	for _, want := range []string{
		"  freeze-primary\n    holdfast defaults: n=2, median 11.00s, 0 without a write taken, 0 acknowledged writes lost; run: 0 lost, 0 split-brain findings\n",
		"      2x a new primary took writes … into the freeze; the thawed primary: held session refused after …: conn closed\n",
		"    cnpg defaults: n=1, median none recovered, 1 without a write taken, 0 acknowledged writes lost; run: 0 lost, 1 split-brain findings\n",
		"      1x no other instance took writes during the freeze; the thawed primary: ACKNOWLEDGED a write on a session opened before the freeze (in …) no write taken: no acknowledged write after …: context deadline exceeded\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the fault set lacks %q:\n%s", want, got)
		}
	}
	if FaultSet(results[:0]) != "" {
		t.Errorf("a fault set of no results is not empty")
	}
	if strings.Contains(got, "  kill\n") || strings.Contains(got, "operator-and-primary-kill") {
		t.Errorf("the fault set names faults outside it or that no result has:\n%s", got)
	}
}
