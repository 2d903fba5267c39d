package bench

// Merge joins the results of runs that measured the same systems in
// parts (some faults in one run, the others in another, as a suite too
// long for one sitting is run): one Result per suite and configuration,
// its faults in the order first met, the samples of a fault measured in
// several runs one after the other, and the checker's verdicts summed.
func Merge(runs ...[]Result) []Result {
	var out []Result
	at := map[[2]string]int{}
	for _, run := range runs {
		for _, r := range run {
			key := [2]string{r.Suite, r.Config}
			i, ok := at[key]
			if !ok {
				at[key] = len(out)
				r.Faults = append([]FaultResult(nil), r.Faults...)
				out = append(out, r)
				continue
			}
			m := &out[i]
			if r.Started.Before(m.Started) {
				m.Started = r.Started
			}
			if r.Ended.After(m.Ended) {
				m.Ended = r.Ended
			}
			for _, f := range r.Faults {
				j := -1
				for k := range m.Faults {
					if m.Faults[k].Fault == f.Fault {
						j = k
					}
				}
				if j < 0 {
					m.Faults = append(m.Faults, f)
					continue
				}
				m.Faults[j].Samples = append(append([]Sample(nil), m.Faults[j].Samples...), f.Samples...)
			}
			c := &m.Check
			c.Acked += r.Check.Acked
			c.Failed += r.Check.Failed
			c.InDoubt += r.Check.InDoubt
			c.Lost = append(c.Lost, r.Check.Lost...)
			c.SplitBrain = append(c.SplitBrain, r.Check.SplitBrain...)
			c.Spans = append(c.Spans, r.Check.Spans...)
		}
	}
	return out
}
