package bench

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Holdouts are the faults of the cross-operator fault set: the
// holdout-style failures users report, judged by what each system did
// more than by how long it took.
var Holdouts = []Fault{FreezePrimary, OperatorAndPrimaryKill, ReplicaClaimDeleted}

// times matches the durations and clock times in a verdict, which differ
// from sample to sample while what happened does not.
var times = regexp.MustCompile(`\d+(\.\d+)?(ms|s|m)\b|\d\d:\d\d:\d\d(\.\d+)?`)

// FaultSet says, for each of Holdouts that the results have, what each
// system did: its samples grouped by what happened (their Verdict, or why
// no write was taken, with the times elided), and the checker's verdict
// on its run. Empty when the results have none of them.
func FaultSet(results []Result) string {
	var b strings.Builder
	for _, f := range Holdouts {
		header := false
		for _, r := range results {
			fr, ok := r.Fault(f)
			if !ok {
				continue
			}
			if !header {
				fmt.Fprintf(&b, "  %s\n", f)
				header = true
			}
			median := "none recovered"
			if fr.Failed() < len(fr.Samples) {
				median = secs(fr.Outage().Median)
			}
			fmt.Fprintf(&b, "    %s %s: n=%d, median %s, %d without a write taken, %d acknowledged writes lost; run: %d lost, %d split-brain findings\n",
				r.Suite, r.Config, len(fr.Samples), median, fr.Failed(), fr.Lost(), len(r.Check.Lost), len(r.Check.SplitBrain))
			for _, g := range groupSamples(fr.Samples) {
				fmt.Fprintf(&b, "      %dx %s\n", g.n, g.what)
			}
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "fault set: what each system did, its samples grouped by what happened (times elided as …), and the checker's verdict on its whole run\n" + b.String() + "\n"
}

type sampleGroup struct {
	what string
	n    int
}

// groupSamples counts the samples by what happened, in order of first
// appearance.
func groupSamples(samples []Sample) []sampleGroup {
	var groups []sampleGroup
	for _, s := range samples {
		what := s.Verdict
		if s.Err != "" {
			what = strings.TrimSpace(what + " no write taken: " + s.Err)
		}
		if what == "" {
			what = "recovered (no verdict recorded)"
		}
		what = times.ReplaceAllString(what, "…")
		if i := slices.IndexFunc(groups, func(g sampleGroup) bool { return g.what == what }); i >= 0 {
			groups[i].n++
		} else {
			groups = append(groups, sampleGroup{what: what, n: 1})
		}
	}
	return groups
}
