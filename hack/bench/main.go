// Command bench runs the failover benchmarks of issue 5 on this machine,
// one suite per subcommand, and writes a report under bench/:
//
//	go run ./hack/bench patroni [-n 20] [-out bench] [-faults kill,stop,partition,switchover] [-configs defaults,tuned,failsafe]
//	go run ./hack/bench failover -suites holdfast,cnpg,patroni [-n 10]
//
// It needs root (network namespaces) and the packages of
// hack/install-bench-deps.sh. -n 1 is a smoke run of a few minutes.
// A suite is a function from the common flags to []bench.Result. The
// failover suite runs the suites -suites names, one after the other, and
// sets Holdfast against each.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/bench/cnpgsuite"
	"holdfast.dev/holdfast/internal/rig/bench/holdfast"
	"holdfast.dev/holdfast/internal/rig/bench/patroni"
)

// common are the flags every suite takes.
type common struct {
	n       int
	out     string
	faults  []bench.Fault
	configs []string
	keep    bool
	// from names, per suite, the results file of an earlier run to use
	// instead of running it again (failover suite only).
	from map[string]string
	// suites are what the failover suite runs, Holdfast first.
	suites []string
}

type suite struct {
	about string
	run   func(ctx context.Context, c common) (results []bench.Result, header string, err error)
}

var suites = map[string]suite{
	"patroni":  {"Patroni 3.0.2 + etcd, 3 members in network namespaces", runPatroni},
	"holdfast": {"Holdfast in the sandbox: 3 instances, synchronous quorum 1", runHoldfast},
	"cnpg":     {"CloudNativePG 1.30.0 in the sandbox: 3 instances, synchronous any 1", runCNPG},
	"failover": {"the suites of -suites in one run (Holdfast, CloudNativePG, Patroni), and the ratios", runFailover},
}

func main() {
	if len(os.Args) < 2 || suites[os.Args[1]].run == nil {
		fmt.Fprintln(os.Stderr, "usage: go run ./hack/bench <suite> [flags]; suites:")
		for name, s := range suites {
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", name, s.about)
		}
		os.Exit(2)
	}
	name := os.Args[1]
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	n := fs.Int("n", 20, "injections of each fault per configuration")
	out := fs.String("out", "bench", "folder for the report")
	faults := fs.String("faults", "kill,stop,partition,switchover,rolling-update,control-plane-outage,operator-and-primary-kill,freeze-primary,replica-claim-deleted", "faults to inject, in round order")
	suiteList := fs.String("suites", "holdfast,cnpg,patroni", "failover suite: the suites to run, in order; the first is set against the others")
	cnpgFrom := fs.String("cnpg-results", "", "failover suite: take CloudNativePG's results from this .json of an earlier `cnpg` run (or several, comma-separated, merged: runs of some faults each)")
	configs := fs.String("configs", "defaults,tuned,failsafe", "configurations to measure")
	keep := fs.Bool("keep", false, "keep the last cluster's data and logs")
	holdfastFrom := fs.String("holdfast-results", "", "failover suite: take Holdfast's results from this .json of an earlier `holdfast` run (the report says so) instead of running it; several, comma-separated, are merged")
	patroniFrom := fs.String("patroni-results", "", "failover suite: the same for Patroni's, from a `patroni` run")
	_ = fs.Parse(os.Args[2:])
	c := common{n: *n, out: *out, configs: strings.Split(*configs, ","), keep: *keep, suites: strings.Split(*suiteList, ","),
		from: map[string]string{"holdfast": *holdfastFrom, "patroni": *patroniFrom, "cnpg": *cnpgFrom}}
	for f := range strings.SplitSeq(*faults, ",") {
		c.faults = append(c.faults, bench.Fault(f))
	}

	release, err := bench.Lock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer release()

	// Ctrl-C cancels the run; the suite then cleans up and the partial
	// results are still reported. A second Ctrl-C kills outright.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()

	started := time.Now()
	results, header, err := suites[name].run(ctx, c)
	if len(results) > 0 {
		text := fmt.Sprintf("failover benchmark: %s suite\n%s%s%s\ntook %s, go run ./hack/bench %s\n\n%s\n%s%s",
			name, bench.Machine(started), header, note(err), time.Since(started).Round(time.Second), strings.Join(os.Args[1:], " "),
			bench.Table(results), bench.FaultSet(results), details(results))
		fmt.Print(text)
		path, werr := bench.WriteReport(c.out, "failover-"+name, text)
		if werr == nil {
			werr = writeResults(strings.TrimSuffix(path, ".txt")+".json", header, results)
		}
		if werr != nil {
			err = errors.Join(err, werr)
		} else {
			fmt.Fprintf(os.Stderr, "report written to %s (results: .json)\n", path)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", name, err)
		os.Exit(1)
	}
}

func note(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprintf("INCOMPLETE: %v\n", err)
}

// details lists the settings, the checker's verdict and every sample.
func details(results []bench.Result) string {
	var b strings.Builder
	b.WriteString("times: fault -> first write acknowledged by a new primary through the read-write target; gap: longest time without an acknowledged write in that window (the write unavailability of a switchover); for rolling-update, the gap is the longest in the whole update, start to end (the fair comparison: Holdfast's operator and Patroni's runbook both restart every member once with one switchover)\nsamples in seconds, in the order taken:\n\n")
	for _, r := range results {
		fmt.Fprintf(&b, "%s %s: %s\n", r.Suite, r.Config, r.Settings)
		for _, f := range r.Faults {
			fmt.Fprintf(&b, "  %s:", f.Fault)
			for _, s := range f.Samples {
				if s.Err != "" {
					b.WriteString(" FAILED")
					continue
				}
				fmt.Fprintf(&b, " %.2f", s.Outage.Seconds())
				switch {
				case f.Fault == bench.Switchover:
					fmt.Fprintf(&b, "(gap %.2f)", s.Gap.Seconds())
				case f.Fault.Lasting():
					fmt.Fprintf(&b, "(took %.2f, gap %.2f, %d failed writes)", s.Took.Seconds(), s.Gap.Seconds(), s.FailedWrites)
				}
			}
			b.WriteString("\n")
			for i, s := range f.Samples {
				if s.Verdict != "" {
					fmt.Fprintf(&b, "    %d: %s\n", i+1, s.Verdict)
				}
			}
			if steps := f.StepMedians(); len(steps) > 0 {
				fmt.Fprintf(&b, "  %s, where the time goes (median of each step):", f.Fault)
				for _, st := range steps {
					fmt.Fprintf(&b, " %s %.2f;", st.Name, st.Took.Seconds())
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

func runPatroni(ctx context.Context, c common) ([]bench.Result, string, error) {
	o := patroni.Options{N: c.n, Keep: c.keep, Etcd: etcdBinary()}
	skipped := ""
	for _, f := range c.faults {
		if f == bench.ReplicaClaimDeleted {
			skipped = "skipped for Patroni: replica-claim-deleted (its members have no claims to delete)\n"
			continue
		}
		o.Faults = append(o.Faults, f)
	}
	for _, name := range c.configs {
		switch name {
		case patroni.Defaults.Name:
			o.Configs = append(o.Configs, patroni.Defaults)
		case patroni.Tuned.Name:
			o.Configs = append(o.Configs, patroni.Tuned)
		case patroni.Failsafe.Name:
			o.Configs = append(o.Configs, patroni.Failsafe)
		default:
			return nil, "", fmt.Errorf("unknown configuration %q", name)
		}
	}
	header := fmt.Sprintf("%s; %s; %s; 3 members, synchronous_mode, each in its own network namespace on bridge hfbench0; client: pgx, target_session_attrs=read-write over the 3 members, connect timeout 1s, write timeout 2s, one insert every 10ms\n",
		bench.Version("patroni", "--version"), bench.Version("/usr/lib/postgresql/15/bin/postgres", "--version"), bench.Version(o.Etcd, "--version"))
	results, err := patroni.Run(ctx, o)
	return results, header + skipped, err
}

func runHoldfast(ctx context.Context, c common) ([]bench.Result, string, error) {
	o := holdfast.Options{Holdfast: "bin/holdfast", BinDir: k8sBinDir(), Manifest: "config/default", N: c.n, Faults: c.faults, Keep: c.keep}
	header := fmt.Sprintf("holdfast %s; %s; 3 instances, synchronous quorum 1, in the sandbox (one node, pods as processes in their own network namespaces); client: pgx through the pg-rw Service's ClusterIP (kube-proxy) with TLS (sslmode=require; pg_hba admits only TLS, replication by certificate, the operator to instances over mutual TLS), connect timeout 1s, write timeout 2s, one insert every 10ms\n",
		gitDescribe(), bench.Version("/usr/lib/postgresql/15/bin/postgres", "--version"))
	results, err := holdfast.Run(ctx, o)
	return results, header, err
}

// savedResults is what writeResults keeps of a run, for a later run to
// compare against.
type savedResults struct {
	Header  string
	Results []bench.Result
}

func writeResults(path, header string, results []bench.Result) error {
	b, err := json.MarshalIndent(savedResults{Header: header, Results: results}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// loadResults reads the results of an earlier run.
func loadResults(path string) ([]bench.Result, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var saved savedResults
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", path, err)
	}
	var from, to time.Time
	for _, r := range saved.Results {
		if from.IsZero() || r.Started.Before(from) {
			from = r.Started
		}
		if r.Ended.After(to) {
			to = r.Ended
		}
	}
	note := fmt.Sprintf("these results are from an earlier run (%s, %s to %s), not measured in this one:\n",
		path, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	return saved.Results, note + saved.Header, nil
}

// loadRuns reads the results of one or more earlier runs of a suite, and
// merges them (bench.Merge): a suite too long for one sitting is run in
// parts, on some faults each.
func loadRuns(paths []string) ([]bench.Result, string, error) {
	var runs [][]bench.Result
	var headers strings.Builder
	for _, p := range paths {
		rs, h, err := loadResults(p)
		if err != nil {
			return nil, headers.String(), err
		}
		runs = append(runs, rs)
		headers.WriteString(h)
	}
	return bench.Merge(runs...), headers.String(), nil
}

func runCNPG(ctx context.Context, c common) ([]bench.Result, string, error) {
	o := cnpgsuite.Options{Holdfast: "bin/holdfast", BinDir: k8sBinDir(), N: c.n, Faults: c.faults, Keep: c.keep}
	header := fmt.Sprintf("harness holdfast %s; %s; the same postgres (Debian's, in CloudNativePG's image layout: uid 26, its binaries on PATH) in the same sandbox as Holdfast; client: the same writer through the pg-rw Service's ClusterIP with TLS (sslmode=require)\n",
		gitDescribe(), cnpgsuite.Settings)
	results, err := cnpgsuite.Run(ctx, o)
	return results, header, err
}

// runFailover runs the suites of c.suites in one run and puts the ratios
// of the first (Holdfast) against the others first.
func runFailover(ctx context.Context, c common) ([]bench.Result, string, error) {
	var results []bench.Result
	var headers strings.Builder
	for _, name := range c.suites {
		run, ok := map[string]func(context.Context, common) ([]bench.Result, string, error){
			"holdfast": runHoldfast, "cnpg": runCNPG, "patroni": runPatroni}[name]
		if !ok {
			return results, headers.String(), fmt.Errorf("unknown suite %q", name)
		}
		if from := c.from[name]; from != "" {
			run = func(context.Context, common) ([]bench.Result, string, error) {
				return loadRuns(strings.Split(from, ","))
			}
		}
		sc := c
		if name != "patroni" {
			sc.configs = nil
		}
		rs, h, err := run(ctx, sc)
		results = append(results, rs...)
		headers.WriteString(h)
		if err != nil {
			return results, headers.String() + "\n" + bench.Ratios(results) + "\n", fmt.Errorf("suite %s: %w", name, err)
		}
	}
	return results, headers.String() + "\n" + bench.Ratios(results) + "\n", nil
}

func k8sBinDir() string {
	out, err := exec.Command("hack/build-k8s.sh", "--dir").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "(no git)"
	}
	return strings.TrimSpace(string(out))
}

// etcdBinary is the project's pinned etcd when it is built, else one on PATH.
func etcdBinary() string {
	if out, err := exec.Command("hack/build-k8s.sh", "--dir").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "etcd")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	return "etcd"
}
