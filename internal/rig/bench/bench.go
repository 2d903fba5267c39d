// Package bench holds what the failover benchmarks share: the faults, the
// shape of their results, the machine they ran on, and the report file.
// Each system under test (Holdfast, Patroni) is a suite in a subpackage
// that returns []Result, so a report can set them side by side.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// Fault is something done to the current primary.
type Fault string

const (
	// Kill sends SIGKILL to every process of the primary's member (pod).
	Kill Fault = "kill"
	// Stop stops the primary's member gracefully, as deleting its pod does.
	Stop Fault = "stop"
	// Partition cuts the primary's network namespace off and heals it once
	// a new primary has taken a write.
	Partition Fault = "partition"
	// Switchover asks for a planned change of primary.
	Switchover Fault = "switchover"
	// RollingUpdate restarts every member once, with one planned change
	// of primary: Holdfast's operator rolls an image change (replicas
	// first, a switchover, then the old primary); Patroni's runbook does
	// the same by hand (restart each replica's member, a switchover, then
	// restart the old leader's member).
	RollingUpdate Fault = "rolling-update"
	// ControlPlaneOutage takes the coordination service away for
	// OutageFor: Holdfast's kube-apiserver, Patroni's etcd, frozen
	// (SIGSTOP), then resumed. No primary should change.
	ControlPlaneOutage Fault = "control-plane-outage"
	// OperatorAndPrimaryKill sends SIGKILL to the leading operator's pod
	// and to the primary's at once. Patroni has no operator: its members
	// elect among themselves, so for it this is Kill.
	OperatorAndPrimaryKill Fault = "operator-and-primary-kill"
	// FreezePrimary stops every process of the primary's pod (SIGSTOP) for
	// 60 s and resumes them, while a client holds a session to it opened
	// before the freeze; after the thaw it writes on that session. A
	// holdout-style failure users report (cnpg#11518): does the thawed
	// primary take writes on sessions already open? The sample's Verdict
	// says.
	FreezePrimary Fault = "freeze-primary"
	// ReplicaClaimDeleted deletes a replica's PersistentVolumeClaim and
	// its pod, as a lost disk does. Its Outage is the time until every
	// instance is ready again; the Verdict says how the operator rebuilt
	// it. Operators only: a Patroni member has no claim.
	ReplicaClaimDeleted Fault = "replica-claim-deleted"
)

// OutageFor is how long a ControlPlaneOutage lasts.
const OutageFor = 30 * time.Second

// Faults are all faults, in the order a round injects them.
var Faults = []Fault{Kill, Stop, Partition, Switchover, RollingUpdate, ControlPlaneOutage, OperatorAndPrimaryKill}

// Lasting: the fault is judged by its longest write gap and its failed
// writes from its start to its end, not by the time to a new primary.
func (f Fault) Lasting() bool { return f == RollingUpdate || f == ControlPlaneOutage }

// Sample is one injection of a fault.
type Sample struct {
	// At is when the fault was injected.
	At time.Time
	// Outage is from the fault to the first write acknowledged by a new
	// primary.
	Outage time.Duration
	// Gap is the longest time without any acknowledged write between the
	// fault and that first write: for a switchover, its write
	// unavailability.
	Gap time.Duration
	// Err says why no new primary took a write, if none did.
	Err string
	// Lost counts acknowledged writes of this sample's window (from this
	// fault to the next) that the final table lacks.
	Lost int
	// Took is, for a rolling update, from its start to its end; Gap is
	// then the longest time without an acknowledged write in all of it,
	// and FailedWrites the write attempts that failed in it.
	Took         time.Duration
	FailedWrites int
	// Verdict says what the system did, for faults judged by more than
	// time (FreezePrimary).
	Verdict string `json:",omitempty"`
	// Steps break a switchover's time to a write on the new primary down,
	// in order, where the suite can see them.
	Steps []Step `json:",omitempty"`
}

// Step is one stretch of a switchover.
type Step struct {
	Name string
	Took time.Duration
}

// StepMedians are the median of each step over the samples that have it,
// in the order of the first sample's steps.
func (f FaultResult) StepMedians() []Step {
	var names []string
	by := map[string][]time.Duration{}
	for _, s := range f.Samples {
		for _, st := range s.Steps {
			if _, ok := by[st.Name]; !ok {
				names = append(names, st.Name)
			}
			by[st.Name] = append(by[st.Name], st.Took)
		}
	}
	var out []Step
	for _, n := range names {
		out = append(out, Step{Name: n, Took: loadcheck.Summarize(by[n]).Median})
	}
	return out
}

// Spread records, for a fault that lasts (Lasting) from s.At to
// end, how long it took, its longest write gap and its failed writes.
func (s *Sample) Spread(h loadcheck.History, end time.Time) {
	s.Took = end.Sub(s.At)
	s.Gap = h.LongestGap(s.At, end)
	s.FailedWrites = 0
	for _, f := range h.Failures {
		if !f.At.Before(s.At) && !f.At.After(end) {
			s.FailedWrites++
		}
	}
}

// Freeze stops process pid (SIGSTOP) for OutageFor and resumes it, then
// records in s, from the fault to the first write acknowledged after the
// resumption: Outage, the longest write gap and the failed writes.
func Freeze(ctx context.Context, pid int, w *loadcheck.Writer, s *Sample) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freezing %d: %w", pid, err)
	}
	resume := func() error { return syscall.Kill(pid, syscall.SIGCONT) }
	select {
	case <-ctx.Done():
		_ = resume()
		return ctx.Err()
	case <-time.After(OutageFor - time.Since(s.At)):
	}
	if err := resume(); err != nil {
		return fmt.Errorf("resuming %d: %w", pid, err)
	}
	resumed := time.Now()
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	a, err := w.WaitAck(actx, resumed, func(loadcheck.Ack) bool { return true })
	if err != nil {
		s.Err = "no write after the outage: " + err.Error()
		return nil
	}
	s.Outage = a.At.Sub(s.At)
	s.Spread(w.History(), a.At)
	return nil
}

// FaultResult is every sample of one fault in one configuration.
type FaultResult struct {
	Fault   Fault
	Samples []Sample
}

// Outage summarises the outages of the samples that recovered.
func (f FaultResult) Outage() loadcheck.Stats {
	return f.stats(func(s Sample) time.Duration { return s.Outage })
}

// Gap summarises the gaps of the samples that recovered.
func (f FaultResult) Gap() loadcheck.Stats {
	return f.stats(func(s Sample) time.Duration { return s.Gap })
}

func (f FaultResult) stats(get func(Sample) time.Duration) loadcheck.Stats {
	var ds []time.Duration
	for _, s := range f.Samples {
		if s.Err == "" {
			ds = append(ds, get(s))
		}
	}
	return loadcheck.Summarize(ds)
}

// Failed counts samples with no new primary.
func (f FaultResult) Failed() int {
	n := 0
	for _, s := range f.Samples {
		if s.Err != "" {
			n++
		}
	}
	return n
}

// Lost counts the lost acknowledged writes over all samples.
func (f FaultResult) Lost() int {
	n := 0
	for _, s := range f.Samples {
		n += s.Lost
	}
	return n
}

// Result is one system in one configuration under every fault.
type Result struct {
	// Suite names the system ("patroni", "holdfast"), Config its settings
	// ("defaults", "tuned").
	Suite, Config string
	// Settings describes the configuration in a line.
	Settings       string
	Started, Ended time.Time
	Faults         []FaultResult
	// Check is the verdict on all writes of the run.
	Check loadcheck.Report
}

// Ratios sets the first result (Holdfast) against each other one, fault by
// fault: median and max time to the first acknowledged write after the
// fault, and how many times longer the other took.
func Ratios(results []Result) string {
	if len(results) < 2 {
		return ""
	}
	base := results[0]
	var b strings.Builder
	fmt.Fprintf(&b, "ratios: %s %s against each (other's median / %s's median; >1 means %s recovers sooner)\n", base.Suite, base.Config, base.Suite, base.Suite)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "fault\tmeasure\t%s median\tother\tother median\tratio\t\n", base.Suite)
	for _, f := range base.Faults {
		// A rolling update and an outage are judged by their longest write
		// gap: that is what clients feel.
		measure, get := "to a write on a new primary", FaultResult.Outage
		if f.Fault == ReplicaClaimDeleted {
			measure = "to every instance ready again"
		}
		if f.Fault.Lasting() {
			measure, get = "longest write gap", FaultResult.Gap
		}
		// A primary deleted gracefully may keep serving the sessions it
		// has (CloudNativePG's smart shutdown, up to 180 s) long before
		// another instance takes a write: clients feel the gap.
		if f.Fault == Stop {
			measure, get = "longest write gap to a new primary", FaultResult.Gap
		}
		bm := get(f).Median
		for _, o := range results[1:] {
			of, ok := o.Fault(f.Fault)
			if !ok || bm <= 0 {
				continue
			}
			// A sample that never recovered has no time: the ratio is of
			// those that did, and says how many did not.
			recovered := len(of.Samples) - of.Failed()
			if recovered == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\tnone of %d recovered\t-\t\n", f.Fault, measure, secs(bm), o.Suite, o.Config, len(of.Samples))
				continue
			}
			om := get(of).Median
			ratio := fmt.Sprintf("%.1fx", om.Seconds()/bm.Seconds())
			if recovered < len(of.Samples) {
				ratio += fmt.Sprintf(" (%d of %d did not recover)", of.Failed(), len(of.Samples))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t\n", f.Fault, measure, secs(bm), o.Suite, o.Config, secs(om), ratio)
		}
	}
	tw.Flush()
	return b.String()
}

// AttributeLost gives each sample the lost writes (r.Check.Lost) that were
// acknowledged in its window: after its fault, before the next one's.
func (r *Result) AttributeLost(h loadcheck.History) {
	ackedAt := map[int64]time.Time{}
	for _, a := range h.Acks {
		ackedAt[a.Seq] = a.At
	}
	for _, seq := range r.Check.Lost {
		at := ackedAt[seq]
		var owner *Sample
		for fi := range r.Faults {
			for si := range r.Faults[fi].Samples {
				s := &r.Faults[fi].Samples[si]
				if !s.At.After(at) && (owner == nil || s.At.After(owner.At)) {
					owner = s
				}
			}
		}
		if owner != nil {
			owner.Lost++
		}
	}
}

// Fault returns the result of fault f, if the run had it.
func (r Result) Fault(f Fault) (FaultResult, bool) {
	for _, fr := range r.Faults {
		if fr.Fault == f {
			return fr, true
		}
	}
	return FaultResult{}, false
}

// Table formats results: a line per configuration and fault, then the
// checker's verdict per configuration.
func Table(results []Result) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "suite\tconfig\tfault\tn\tfailed\tmedian\tp95\tmax\tgap median\tgap p95\tgap max\tlost acked\t")
	for _, r := range results {
		for _, f := range r.Faults {
			o, g := f.Outage(), f.Gap()
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.Suite, r.Config, f.Fault, len(f.Samples), f.Failed(),
				secs(o.Median), secs(o.P95), secs(o.Max), secs(g.Median), secs(g.P95), secs(g.Max), f.Lost())
		}
	}
	tw.Flush()
	b.WriteString("\n")
	for _, r := range results {
		fmt.Fprintf(&b, "%s %s checker: %s\n", r.Suite, r.Config, r.Check)
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// Machine describes this machine and when the run went, for a report's
// header.
func Machine(started time.Time) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "host %s, %d cores (%s), %s memory, kernel %s, Debian %s\n", host, runtime.NumCPU(),
		firstMatch("/proc/cpuinfo", "model name"), memory(),
		strings.TrimSpace(read("/proc/sys/kernel/osrelease")), strings.TrimSpace(read("/etc/debian_version")))
	fmt.Fprintf(&b, "ran from %s to %s\n", started.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
	return b.String()
}

// Version runs a program's version flag and returns its first line, or
// why it could not.
func Version(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s: %v", name, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func memory() string {
	var kb int64
	_, _ = fmt.Sscanf(firstMatch("/proc/meminfo", "MemTotal"), "%d kB", &kb)
	return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
}

func read(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func firstMatch(path, key string) string {
	for line := range strings.SplitSeq(read(path), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "?"
}

// WriteReport writes text to dir/<name>-<date>.txt and returns the path.
func WriteReport(dir, name, text string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	now := time.Now().UTC()
	path := filepath.Join(dir, fmt.Sprintf("%s-%s.txt", name, now.Format("2006-01-02")))
	if _, err := os.Stat(path); err == nil {
		// A suite run in parts may run twice a day: never overwrite a report.
		path = filepath.Join(dir, fmt.Sprintf("%s-%s.txt", name, now.Format("2006-01-02T150405Z")))
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

// Permanent wraps an error that no retry can cure: Poll returns it at once.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Poll calls f until it succeeds, ctx ends or timeout passes, and then
// returns f's last error. An error made by Permanent ends it at once.
func Poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.error
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Lock makes this process the machine's one running benchmark: benchmarks
// share its cores and the bench network. Call the returned release when
// done; the lock also goes with the process, however it ends.
func Lock() (release func(), err error) {
	f, err := os.OpenFile("/run/lock/holdfast-bench.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err != nil {
		return nil, fmt.Errorf("another benchmark is running (/run/lock/holdfast-bench.lock): %w", err)
	}
	// The closure keeps f: a file the collector finalised would close, and
	// so release the lock.
	return func() { f.Close() }, nil
}
