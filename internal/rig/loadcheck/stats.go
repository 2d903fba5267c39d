package loadcheck

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of ds by the
// nearest-rank method: always one of the measured values, which is what a
// benchmark with 20 samples can honestly claim. Zero for no samples.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// Stats summarises a set of durations.
type Stats struct {
	N                int
	Median, P95, Max time.Duration
}

// Summarize computes the median, 95th percentile and maximum of ds.
func Summarize(ds []time.Duration) Stats {
	return Stats{N: len(ds), Median: Percentile(ds, 50), P95: Percentile(ds, 95), Max: Percentile(ds, 100)}
}

func (s Stats) String() string {
	return fmt.Sprintf("n=%d median=%s p95=%s max=%s", s.N, round(s.Median), round(s.P95), round(s.Max))
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
