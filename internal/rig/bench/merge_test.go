package bench

import (
	"os"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// TestMergeJoinsRunsOfTheSameSuite: two runs of one suite, on different
// faults and one in common, become one result whose faults hold every
// sample and whose verdict counts every write; another suite stays apart.
func TestMergeJoinsRunsOfTheSameSuite(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	s := func(d time.Duration) Sample { return Sample{Outage: d} }
	a := []Result{{Suite: "cnpg", Config: "defaults", Started: t0, Ended: t0.Add(time.Hour),
		Faults: []FaultResult{{Fault: Kill, Samples: []Sample{s(20 * time.Second), s(30 * time.Second)}}, {Fault: Switchover, Samples: []Sample{s(time.Second)}}},
		Check:  loadcheck.Report{Acked: 100, Failed: 5, InDoubt: 1}}}
	b := []Result{
		{Suite: "cnpg", Config: "defaults", Started: t0.Add(2 * time.Hour), Ended: t0.Add(3 * time.Hour),
			Faults: []FaultResult{{Fault: Stop, Samples: []Sample{s(200 * time.Second)}}, {Fault: Kill, Samples: []Sample{s(25 * time.Second)}}},
			Check:  loadcheck.Report{Acked: 50, Failed: 2, Lost: []int64{7}, SplitBrain: []string{"x"}}},
		{Suite: "patroni", Config: "defaults", Faults: []FaultResult{{Fault: Kill, Samples: []Sample{s(time.Second)}}}},
	}
	got := Merge(a, b)
	if len(got) != 2 || got[0].Suite != "cnpg" || got[1].Suite != "patroni" {
		t.Fatalf("merged into %d results: %+v", len(got), got)
	}
	m := got[0]
	var order []Fault
	for _, f := range m.Faults {
		order = append(order, f.Fault)
	}
	if len(order) != 3 || order[0] != Kill || order[1] != Switchover || order[2] != Stop {
		t.Errorf("faults %v, want kill, switchover, stop", order)
	}
	if n := len(m.Faults[0].Samples); n != 3 || m.Faults[0].Outage().Median != 25*time.Second {
		t.Errorf("kill: %d samples, median %s; want 3 and 25s", n, m.Faults[0].Outage().Median)
	}
	if !m.Started.Equal(t0) || !m.Ended.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("ran from %s to %s", m.Started, m.Ended)
	}
	if c := m.Check; c.Acked != 150 || c.Failed != 7 || c.InDoubt != 1 || len(c.Lost) != 1 || len(c.SplitBrain) != 1 {
		t.Errorf("verdict %+v", c)
	}
	if len(a[0].Faults[0].Samples) != 2 {
		t.Error("merging changed the first run's samples")
	}
}

// TestWriteReportNeverOverwrites: a second report of the same suite on
// the same day is written beside the first.
func TestWriteReportNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	first, err := WriteReport(dir, "failover-cnpg", "first")
	if err != nil {
		t.Fatal(err)
	}
	second, err := WriteReport(dir, "failover-cnpg", "second")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(first)
	if first == second || string(b) != "first" {
		t.Errorf("the second report went to %s over the first (%s, now %q)", second, first, b)
	}
}
