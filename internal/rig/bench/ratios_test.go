package bench

import (
	"strings"
	"testing"
	"time"
)

func TestRatiosSayWhatNeverRecovered(t *testing.T) {
	results := []Result{
		{Suite: "holdfast", Config: "defaults", Faults: []FaultResult{
			{Fault: Kill, Samples: []Sample{{Outage: time.Second}}},
			{Fault: Stop, Samples: []Sample{{Outage: 2 * time.Second, Gap: 2 * time.Second}}},
		}},
		{Suite: "cnpg", Config: "defaults", Faults: []FaultResult{
			{Fault: Kill, Samples: []Sample{{Outage: 30 * time.Second}, {Err: "no acknowledged write"}}},
			{Fault: Stop, Samples: []Sample{{Err: "no acknowledged write"}}},
		}},
	}
	got := Ratios(results)
	for _, want := range []string{"30.0x (1 of 2 did not recover)", "none of 1 recovered"} {
		if !strings.Contains(got, want) {
			t.Errorf("the ratios lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, " 0.0x") {
		t.Errorf("a fault that never recovered shows a ratio:\n%s", got)
	}
}

func TestRatiosJudgeADeletedPrimaryByTheGapClientsFeel(t *testing.T) {
	results := []Result{
		{Suite: "holdfast", Config: "defaults", Faults: []FaultResult{{Fault: Stop, Samples: []Sample{{Outage: 4 * time.Second, Gap: 2 * time.Second}}}}},
		// The old primary served its open sessions through a 180 s smart
		// shutdown: a write elsewhere only after 197 s, a 12 s gap.
		{Suite: "cnpg", Config: "defaults", Faults: []FaultResult{{Fault: Stop, Samples: []Sample{{Outage: 197 * time.Second, Gap: 12 * time.Second}}}}},
	}
	got := Ratios(results)
	if !strings.Contains(got, "longest write gap to a new primary") || !strings.Contains(got, "6.0x") {
		t.Errorf("a deleted primary is not judged by its write gap:\n%s", got)
	}
}
