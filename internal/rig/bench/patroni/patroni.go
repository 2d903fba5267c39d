// Package patroni measures failover on a 3-member Patroni 3.0.2 cluster
// (Debian's) with etcd, on this machine: each member (Patroni and its
// postgres-15) in its own network namespace on a private bridge, a client
// writing through a read-write target across the three members. It is the
// baseline the Holdfast failover figures are compared with.
package patroni

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// Settings are Patroni's timing settings (dynamic configuration).
type Settings struct {
	Name                        string
	TTL, LoopWait, RetryTimeout int
	PrimaryStartTimeout         *int
	// FailsafeMode keeps the leader running while the DCS is away, as
	// long as every member answers its POST /failsafe (Patroni 3.0+).
	FailsafeMode bool
}

func (s Settings) String() string {
	str := fmt.Sprintf("ttl=%d loop_wait=%d retry_timeout=%d", s.TTL, s.LoopWait, s.RetryTimeout)
	if s.PrimaryStartTimeout != nil {
		str += fmt.Sprintf(" primary_start_timeout=%d", *s.PrimaryStartTimeout)
	}
	if s.FailsafeMode {
		str += " failsafe_mode=true"
	}
	return str + " synchronous_mode=true"
}

var zero = 0

var (
	// Defaults are Patroni's defaults.
	Defaults = Settings{Name: "defaults", TTL: 30, LoopWait: 10, RetryTimeout: 10}
	// Tuned is as fast as Patroni's documentation allows. Its dynamic
	// configuration page (docs/dynamic_configuration.rst, "Dynamic
	// Configuration Settings", https://patroni.readthedocs.io/en/latest/dynamic_configuration.html)
	// gives the minimums: loop_wait "minimum possible value: 1", ttl
	// "minimum possible value: 20", retry_timeout "minimum possible value:
	// 3", under the rule "loop_wait + 2 * retry_timeout <= ttl" (1 + 6 <= 20).
	// primary_start_timeout: "When set to 0 failover is done immediately
	// after a crash is detected if possible" (it only matters when postgres
	// dies and Patroni lives; no fault here does that, but it is the fast
	// setting).
	Tuned = Settings{Name: "tuned", TTL: 20, LoopWait: 1, RetryTimeout: 3, PrimaryStartTimeout: &zero}
	// Failsafe is Tuned with failsafe_mode, Patroni's answer to a DCS
	// outage and the counterpart of Holdfast's failsafe.
	Failsafe = Settings{Name: "failsafe", TTL: 20, LoopWait: 1, RetryTimeout: 3, PrimaryStartTimeout: &zero, FailsafeMode: true}
)

// Options of a benchmark run.
type Options struct {
	// N is how many times each fault is injected per configuration.
	N       int
	Faults  []bench.Fault
	Configs []Settings
	// Etcd is the etcd binary.
	Etcd string
	// Keep leaves the data and logs of the last cluster in place.
	Keep bool
	// Log gets progress lines.
	Log io.Writer
}

// Run measures every configuration in turn, each on a fresh cluster, and
// cleans up after itself, also when ctx is cancelled.
func Run(ctx context.Context, o Options) ([]bench.Result, error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	var results []bench.Result
	for _, s := range o.Configs {
		r, err := runConfig(ctx, o, s)
		if len(r.Faults) > 0 {
			results = append(results, r)
		}
		if err != nil {
			return results, fmt.Errorf("patroni %s: %w", s.Name, err)
		}
	}
	return results, nil
}

func runConfig(ctx context.Context, o Options, s Settings) (r bench.Result, err error) {
	r = bench.Result{Suite: "patroni", Config: s.Name, Settings: s.String(), Started: time.Now()}
	fmt.Fprintf(o.Log, "patroni %s (%s): starting 3 members\n", s.Name, s)
	c, err := start(ctx, s, o.Etcd, o.Log)
	if err != nil {
		return r, err
	}
	defer func() {
		if err != nil {
			for _, m := range c.members {
				fmt.Fprintf(o.Log, "--- %s patroni.log (end)\n%s\n", m.name, m.tail())
			}
		}
		c.stop(o.Keep)
	}()
	leader, err := c.waitHealthy(ctx, 3*time.Minute)
	if err != nil {
		return r, err
	}
	fmt.Fprintf(o.Log, "patroni %s: leader %s, 2 streaming (%s)\n", s.Name, leader.name, time.Since(r.Started).Round(time.Second))

	connString := "host=10.250.0.11,10.250.0.12,10.250.0.13 port=5432 user=postgres dbname=postgres sslmode=disable target_session_attrs=read-write"
	w := &loadcheck.Writer{ConnString: connString, Table: "bench"}
	if err := w.Setup(ctx); err != nil {
		return r, err
	}
	wctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() { _ = w.Run(wctx); close(writerDone) }()
	defer func() { stopWriter(); <-writerDone }()

	for _, f := range o.Faults {
		r.Faults = append(r.Faults, bench.FaultResult{Fault: f})
	}
	// Rounds inject every fault once, so that drift over the run (WAL
	// growth, a busy machine) touches all faults alike.
	for i := range o.N {
		for fi, f := range o.Faults {
			sample, err := c.inject(ctx, w, f)
			r.Faults[fi].Samples = append(r.Faults[fi].Samples, sample)
			status := fmt.Sprintf("%.2fs to a write on the new primary (gap %.2fs)", sample.Outage.Seconds(), sample.Gap.Seconds())
			if sample.Err != "" {
				status = "no new primary: " + sample.Err
			}
			fmt.Fprintf(o.Log, "patroni %s: %s %d/%d: %s\n", s.Name, f, i+1, o.N, status)
			if err != nil {
				return finish(ctx, r, w, stopWriter, writerDone, connString, o.Log), err
			}
		}
	}
	// The cluster must come back whole after the last fault too.
	if _, err := c.waitHealthy(ctx, 3*time.Minute); err != nil {
		return finish(ctx, r, w, stopWriter, writerDone, connString, o.Log), fmt.Errorf("after the last fault: %w", err)
	}
	return finish(ctx, r, w, stopWriter, writerDone, connString, o.Log), nil
}

// finish stops the writer, checks its history against the final table and
// gives each sample the lost writes acknowledged in its window.
func finish(ctx context.Context, r bench.Result, w *loadcheck.Writer, stopWriter func(), writerDone chan struct{}, connString string, log io.Writer) bench.Result {
	stopWriter()
	<-writerDone
	r.Ended = time.Now()
	// The cluster is still up: read the final table even after Ctrl-C,
	// but do not keep an impatient user waiting for long.
	wait := time.Minute
	if ctx.Err() != nil {
		wait = 10 * time.Second
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait)
	defer cancel()
	var final loadcheck.Final
	err := bench.Poll(rctx, wait, func() (err error) {
		final, err = loadcheck.ReadFinal(rctx, connString, "bench")
		return err
	})
	if err != nil {
		fmt.Fprintf(log, "reading the final table: %v\n", err)
		return r
	}
	r.Check = loadcheck.Check(w.History(), final)
	r.AttributeLost(w.History())
	fmt.Fprintf(log, "patroni %s: %s\n", r.Config, r.Check)
	return r
}

// inject waits for a healthy cluster, does f to the leader, measures until
// a new primary acknowledges a write, and restores the member. An error
// means the cluster could not be brought back, and the run must stop.
func (c *cluster) inject(ctx context.Context, w *loadcheck.Writer, f bench.Fault) (bench.Sample, error) {
	recovery := time.Duration(3*c.settings.TTL)*time.Second + time.Minute
	leader, err := c.waitHealthy(ctx, 3*time.Minute)
	if err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	// The writer must be on the leader before the fault, or the time to
	// the first write elsewhere measures nothing.
	onLeader, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := w.WaitAck(onLeader, time.Now(), func(a loadcheck.Ack) bool { return a.Server == leader.addr() }); err != nil {
		return bench.Sample{Err: err.Error()}, err
	}
	recovered, refused := context.WithCancelCause(ctx)
	defer refused(nil)
	recovered, cancel = context.WithTimeout(recovered, recovery)
	defer cancel()
	var held *bench.HeldSession
	if f == bench.FreezePrimary {
		if held, err = bench.HoldSession(ctx, w.ConnString, leader.ip.String(), w.Table+"_held"); err != nil {
			return bench.Sample{Err: err.Error()}, err
		}
		defer held.Close()
	}
	s := bench.Sample{At: time.Now()}
	var rolled chan error
	switch f {
	case bench.Kill, bench.OperatorAndPrimaryKill:
		killNamespace(leader.ns)
	case bench.Stop:
		err = leader.cmd.Process.Signal(syscall.SIGTERM)
	case bench.Partition:
		err = leader.partition(true)
	case bench.Switchover:
		// Answered once done; the write measurement runs meanwhile, and
		// stops waiting if Patroni refuses.
		go func() {
			if err := c.switchover(ctx, leader); err != nil {
				refused(err)
			}
		}()
	case bench.ControlPlaneOutage:
		if err := bench.Freeze(ctx, c.etcd.Process.Pid, w, &s); err != nil {
			return s, err
		}
		_, err = c.waitHealthy(ctx, 3*time.Minute)
		return s, err
	case bench.FreezePrimary:
		var resume func() error
		if resume, err = bench.StopProcesses(namespaceProcs(leader.ns)); err == nil {
			s.Verdict, err = bench.Thaw(ctx, &s, w, resume, held, func(a loadcheck.Ack) bool { return a.Server != leader.addr() })
		}
	case bench.RollingUpdate:
		rolled = make(chan error, 1)
		go func() {
			err := c.rollingUpdate(ctx, leader)
			if err != nil {
				refused(err)
			}
			rolled <- err
		}()
	default:
		err = fmt.Errorf("unknown fault %q", f)
	}
	if err != nil {
		return s, err
	}
	a, ackErr := w.WaitAck(recovered, s.At, func(a loadcheck.Ack) bool { return a.Server != leader.addr() })
	if ackErr == nil {
		s.Outage = a.At.Sub(s.At)
		s.Gap = w.History().LongestGap(s.At, a.At)
	} else {
		s.Err = ackErr.Error()
	}

	if rolled != nil {
		if err := <-rolled; err != nil {
			s.Err = err.Error()
			return s, err
		}
		s.Spread(w.History(), time.Now())
	}

	// Restore: the old leader comes back and must rejoin as a replica.
	switch f {
	case bench.Kill, bench.OperatorAndPrimaryKill, bench.Stop:
		select {
		case <-leader.done:
		case <-time.After(time.Minute):
			killNamespace(leader.ns)
			<-leader.done
		}
		err = c.startMember(leader)
	case bench.Partition:
		err = leader.partition(false)
	}
	if err != nil {
		return s, err
	}
	if ctx.Err() != nil {
		return s, ctx.Err()
	}
	return s, nil
}
