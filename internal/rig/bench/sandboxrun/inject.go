package sandboxrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
	"holdfast.dev/holdfast/internal/rig/sandbox/faults"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// Operator is what a round of faults needs of the operator under test in
// the sandbox: Holdfast's or CloudNativePG's. The faults themselves are
// the same for both.
type Operator interface {
	// Namespace is the database cluster's namespace.
	Namespace() string
	// WaitHealthy waits until every instance is ready, a primary serves,
	// and no change of primary is under way.
	WaitHealthy(ctx context.Context, timeout time.Duration) error
	// Primary names the primary's pod.
	Primary(ctx context.Context) (string, error)
	// Claim names the data claim of an instance's pod.
	Claim(pod string) string
	// Instances names the instance pods.
	Instances(ctx context.Context) ([]string, error)
	// OperatorNamespace is where the operator's pods run.
	OperatorNamespace() string
	// LeadingOperator names the operator pod that leads, with its
	// namespace and UID.
	LeadingOperator(ctx context.Context) (namespace, pod, uid string, err error)
	// Switchover asks for a planned change of primary away from primary,
	// as the operator's own tool does; it may return before it is done.
	Switchover(ctx context.Context, primary string) error
	// ChangeImage starts a rolling update by a change of the image's tag.
	ChangeImage(ctx context.Context) error
	// RollingUpdateEnd waits for the rolling update begun at at to end,
	// and says when it did.
	RollingUpdateEnd(ctx context.Context, at time.Time) (time.Time, error)
}

// FreezeFor is how long a FreezePrimary fault keeps the primary stopped.
const FreezeFor = bench.FreezeFor

// Inject waits for a healthy cluster, does f to its primary, and measures
// until a write is acknowledged by another instance (or, for the faults
// that last, until they end). done, if not nil, is called with the sample
// and the first write on another instance, before the fault is cleaned
// up.
func (s *Sandbox) Inject(ctx context.Context, op Operator, w *loadcheck.Writer, f bench.Fault, done func(*bench.Sample, loadcheck.Ack)) (bench.Sample, error) {
	fail := func(err error) (bench.Sample, error) { return bench.Sample{Err: err.Error()}, err }
	if err := s.waitSettled(ctx, op); err != nil {
		return fail(err)
	}
	if f == bench.ReplicaClaimDeleted {
		return s.deleteReplicaClaim(ctx, op, w)
	}
	ns := op.Namespace()
	var opNS, operator, operatorUID string
	if f == bench.OperatorAndPrimaryKill {
		var err error
		if opNS, operator, operatorUID, err = op.LeadingOperator(ctx); err != nil {
			return fail(err)
		}
	}
	primary, err := op.Primary(ctx)
	if err != nil {
		return fail(err)
	}
	ip, err := s.Kubectl(ctx, "-n", ns, "get", "pod", primary, "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return fail(err)
	}
	uid, err := s.Kubectl(ctx, "-n", ns, "get", "pod", primary, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return fail(err)
	}
	onPrimary := func(a loadcheck.Ack) bool { return strings.HasPrefix(a.Server, ip+":") || a.Server == ip }
	// The writer must be on the primary before the fault, or the time to a
	// write elsewhere measures nothing.
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := w.WaitAck(octx, time.Now(), onPrimary); err != nil {
		return fail(err)
	}
	var held *bench.HeldSession
	if f == bench.FreezePrimary {
		if held, err = bench.HoldSession(ctx, w.ConnString, ip, w.Table+"_held"); err != nil {
			return fail(err)
		}
		defer held.Close()
	}
	sample := bench.Sample{At: time.Now()}
	var heal func() error
	switch f {
	case bench.Kill:
		_, err = faults.KillPod(network.NamespacePath(network.Namespace(uid)))
	case bench.OperatorAndPrimaryKill:
		if _, err = faults.KillPod(network.NamespacePath(network.Namespace(operatorUID))); err == nil {
			_, err = faults.KillPod(network.NamespacePath(network.Namespace(uid)))
		}
	case bench.Stop:
		_, err = s.Kubectl(ctx, "-n", ns, "delete", "pod", primary, "--wait=false")
	case bench.Partition:
		heal, err = faults.Partition(network.Namespace(uid))
	case bench.FreezePrimary:
		heal, err = freezePod(uid)
	case bench.RollingUpdate:
		err = op.ChangeImage(ctx)
	case bench.ControlPlaneOutage:
		var pid int
		if pid, err = faults.FindProcess("kube-apiserver", s.Dir+"/"); err == nil {
			err = bench.Freeze(ctx, pid, w, &sample)
		}
		if err == nil {
			err = op.WaitHealthy(ctx, 5*time.Minute)
		}
		return sample, err
	case bench.Switchover:
		err = op.Switchover(ctx, primary)
	default:
		err = fmt.Errorf("unknown fault %q", f)
	}
	if err != nil {
		return sample, err
	}
	if f == bench.FreezePrimary {
		if sample.Verdict, err = bench.Thaw(ctx, &sample, w, heal, held, func(a loadcheck.Ack) bool { return !onPrimary(a) }); err != nil {
			return sample, err
		}
		heal = nil
	}
	// Long enough for an operator that shuts a deleted primary down
	// smartly, as CloudNativePG does for up to 180 s, to be measured
	// rather than cut off.
	actx, cancel2 := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel2()
	a, cameBack, ackErr := waitWritesResumed(actx, w, sample.At, onPrimary, restartsInPlace(f))
	if ackErr == nil {
		sample.Outage = a.At.Sub(sample.At)
		sample.Gap = w.History().LongestGap(sample.At, a.At)
		switch {
		case cameBack:
			sample.Verdict = fmt.Sprintf("no failover: the old primary %s took writes again after %.1fs, restarted in place", primary, sample.Outage.Seconds())
		case f == bench.OperatorAndPrimaryKill:
			// A holdout: what the system did matters as much as how long.
			sample.Verdict = fmt.Sprintf("failover: another instance took writes after %.1fs, with the operator down too", sample.Outage.Seconds())
		}
	} else {
		sample.Err = ackErr.Error()
	}
	if heal != nil {
		if err := heal(); err != nil {
			return sample, err
		}
	}
	if done != nil && ackErr == nil {
		done(&sample, a)
	}
	if f == bench.RollingUpdate && ackErr == nil {
		end, err := op.RollingUpdateEnd(ctx, sample.At)
		if err != nil {
			sample.Err = err.Error()
			return sample, err
		}
		sample.Spread(w.History(), end)
	}
	if f == bench.Kill || f == bench.OperatorAndPrimaryKill {
		// Restore, as the Patroni suite restarts a killed member at once:
		// a pod whose container is killed round after round waits out the
		// node's growing restart back-off (up to 5 minutes, as a kubelet's),
		// while a new pod starts at once. The measurement is over by now.
		if _, err := s.Kubectl(ctx, "-n", ns, "delete", "pod", primary, "--wait=false"); err != nil {
			return sample, err
		}
	}
	if f == bench.OperatorAndPrimaryKill {
		if _, err := s.Kubectl(ctx, "-n", opNS, "delete", "pod", operator, "--wait=false"); err != nil {
			return sample, err
		}
	}
	return sample, ctx.Err()
}

// deleteReplicaClaim deletes a replica's claim and pod, and waits until
// every instance is ready again.
func (s *Sandbox) deleteReplicaClaim(ctx context.Context, op Operator, w *loadcheck.Writer) (bench.Sample, error) {
	fail := func(err error) (bench.Sample, error) { return bench.Sample{Err: err.Error()}, err }
	ns := op.Namespace()
	primary, err := op.Primary(ctx)
	if err != nil {
		return fail(err)
	}
	before, err := op.Instances(ctx)
	if err != nil {
		return fail(err)
	}
	replica := ""
	for _, p := range before {
		if p != primary {
			replica = p
			break
		}
	}
	if replica == "" {
		return fail(fmt.Errorf("no replica among %v", before))
	}
	claim := op.Claim(replica)
	replicaUID, err := s.Kubectl(ctx, "-n", ns, "get", "pod", replica, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return fail(err)
	}
	sample := bench.Sample{At: time.Now()}
	// The claim goes once its pod does (kubernetes.io/pvc-protection).
	if _, err := s.Kubectl(ctx, "-n", ns, "delete", "pvc", claim, "--wait=false"); err != nil {
		return sample, err
	}
	if _, err := s.Kubectl(ctx, "-n", ns, "delete", "pod", replica, "--wait=false"); err != nil {
		return sample, err
	}
	// Healthy again, and not before the claim was gone and as many
	// instances as before were ready, none of them the deleted pod: an
	// operator's status may still call the cluster healthy a moment after
	// the deletion (CloudNativePG's did, 2.4 s in).
	if err := bench.Poll(ctx, 10*time.Minute, func() error {
		// A claim of the same name may already be back, made anew.
		if deleting, _ := s.Kubectl(ctx, "-n", ns, "get", "pvc", claim, "--ignore-not-found", "-o", "jsonpath={.metadata.deletionTimestamp}"); deleting != "" {
			return errors.New("the claim is still being deleted")
		}
		if err := s.instancesReady(ctx, op, len(before), replicaUID); err != nil {
			return err
		}
		return op.WaitHealthy(ctx, time.Second)
	}); err != nil {
		sample.Err = err.Error()
		sample.Verdict = fmt.Sprintf("deleted %s's claim %s: not healthy again in 10 minutes", replica, claim)
		return sample, nil
	}
	end := time.Now()
	sample.Outage = end.Sub(sample.At)
	sample.Spread(w.History(), end)
	after, err := op.Instances(ctx)
	if err != nil {
		return sample, err
	}
	sample.Verdict = fmt.Sprintf("deleted %s's claim %s; every instance ready again after %.1fs, instances now %s (before %s)",
		replica, claim, sample.Outage.Seconds(), strings.Join(after, ","), strings.Join(before, ","))
	return sample, nil
}

// instancesReady says whether want instance pods are ready, none of them
// the pod gone, by its UID.
func (s *Sandbox) instancesReady(ctx context.Context, op Operator, want int, gone string) error {
	pods, err := op.Instances(ctx)
	if err != nil {
		return err
	}
	if len(pods) < want {
		return fmt.Errorf("%d instance pods (%s), want %d", len(pods), strings.Join(pods, ","), want)
	}
	out, err := s.Kubectl(ctx, append([]string{"-n", op.Namespace(), "get", "pod", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`}, pods...)...)
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) < 2:
			return fmt.Errorf("pod %q has no status yet", line)
		case f[1] == gone:
			return fmt.Errorf("pod %s is still the deleted one", f[0])
		case len(f) < 3 || f[2] != "True":
			return fmt.Errorf("pod %s is not ready", f[0])
		}
	}
	return nil
}

// freezePod stops every process of the pod (SIGSTOP) and gives what
// resumes them.
func freezePod(uid string) (func() error, error) {
	procs, err := faults.PodProcesses(network.NamespacePath(network.Namespace(uid)))
	if err != nil {
		return nil, err
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.PID
	}
	return bench.StopProcesses(pids)
}

// Measure runs w and, o.N times, each fault of res.Faults in order
// through inject, then stops w and checks every write against the table
// as read through finalConn (the primary's). It fills res.
func Measure(ctx context.Context, w *loadcheck.Writer, res *bench.Result, n int, log io.Writer,
	inject func(context.Context, *loadcheck.Writer, bench.Fault) (bench.Sample, error), finalConn func(context.Context) (string, error)) error {
	res.Started = time.Now()
	wctx, stopWriter := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	var runErr error
rounds:
	for i := 0; i < n; i++ {
		for fi := range res.Faults {
			f := res.Faults[fi].Fault
			s, err := inject(ctx, w, f)
			res.Faults[fi].Samples = append(res.Faults[fi].Samples, s)
			fmt.Fprintf(log, "%s round %d %s: outage %s gap %s %s %s\n", res.Suite, i+1, f, s.Outage.Round(time.Millisecond), s.Gap.Round(time.Millisecond), s.Verdict, s.Err)
			if err != nil {
				runErr = err
				break rounds
			}
		}
	}
	stopWriter()
	<-done
	res.Ended = time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var final loadcheck.Final
	if err := bench.Poll(rctx, 2*time.Minute, func() error {
		conn, err := finalConn(rctx)
		if err != nil {
			return err
		}
		final, err = loadcheck.ReadFinal(rctx, conn, w.Table)
		return err
	}); err != nil {
		return errors.Join(runErr, fmt.Errorf("reading the final table: %w", err))
	}
	res.Check = loadcheck.Check(w.History(), final)
	res.AttributeLost(w.History())
	fmt.Fprintf(log, "%s: %s\n", res.Suite, res.Check)
	return runErr
}

// restartsInPlace says whether the old primary itself may end the outage
// of fault f: a primary whose processes were killed, whose pod was
// deleted, or whose image changed may come back in the same pod (as
// CloudNativePG restarts a primary to update it, or while its operator is
// down), and the writes it then takes end the outage as surely as a new
// primary's. A partition or a switchover ends only elsewhere.
func restartsInPlace(f bench.Fault) bool {
	switch f {
	case bench.Kill, bench.OperatorAndPrimaryKill, bench.Stop, bench.RollingUpdate:
		return true
	}
	return false
}

// waitWritesResumed waits for the first write acknowledged after at by a
// server onOld does not match, or, when sameMay, by the old one after a
// write failed: acknowledgements of writes in flight when the fault struck
// prove nothing, and one after a failure proves the server came back.
// cameBack says which it was.
func waitWritesResumed(ctx context.Context, w *loadcheck.Writer, at time.Time, onOld func(loadcheck.Ack) bool, sameMay bool) (loadcheck.Ack, bool, error) {
	var cameBack bool
	a, err := w.WaitFor(ctx, at, func(h loadcheck.History) (a loadcheck.Ack, found bool) {
		a, cameBack, found = resumed(h, at, onOld, sameMay)
		return a, found
	})
	return a, cameBack, err
}

// resumed finds in h the acknowledgement waitWritesResumed waits for.
func resumed(h loadcheck.History, at time.Time, onOld func(loadcheck.Ack) bool, sameMay bool) (a loadcheck.Ack, cameBack, found bool) {
	var failed time.Time
	for _, f := range h.Failures {
		if f.At.After(at) {
			failed = f.At
			break
		}
	}
	for _, a := range h.Acks {
		if !a.At.After(at) {
			continue
		}
		if !onOld(a) {
			return a, false, true
		}
		if sameMay && !failed.IsZero() && a.At.After(failed) {
			return a, true, true
		}
	}
	return loadcheck.Ack{}, false, false
}

// waitSettled waits until no instance pod is still terminating and the
// operator says the cluster is healthy. A pod deleted by the last round
// may still be shutting down, and look healthy, long after (CloudNativePG
// shuts a primary down smartly for up to 180 s): a fault injected then
// would strike a primary already on its way out.
func (s *Sandbox) waitSettled(ctx context.Context, op Operator) error {
	if err := s.replaceBackedOff(ctx, op.OperatorNamespace()); err != nil {
		return err
	}
	err := bench.Poll(ctx, 6*time.Minute, func() error {
		pods, err := op.Instances(ctx)
		if err != nil {
			return err
		}
		out, err := s.Kubectl(ctx, append([]string{"-n", op.Namespace(), "get", "pod", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`}, pods...)...)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
			if name, at, _ := strings.Cut(line, " "); at != "" {
				return fmt.Errorf("pod %s is terminating since %s", name, at)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the last round's pods to go: %w", err)
	}
	return op.WaitHealthy(ctx, 5*time.Minute)
}

// replaceBackedOff deletes the pods of namespace whose containers wait out
// a restart back-off, so that their Deployment starts new ones at once.
// An operator exits when an API-server outage costs it its leader lease,
// round after round, and its pod's back-off grows to 5 minutes (reset
// only after 10 minutes of running, as a kubelet's): a later round would
// find no operator ready, or one fewer, for reasons of an earlier round.
func (s *Sandbox) replaceBackedOff(ctx context.Context, namespace string) error {
	out, err := s.Kubectl(ctx, "-n", namespace, "get", "pods", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[*].state.waiting.reason}{"\n"}{end}`)
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		name, reasons, _ := strings.Cut(line, " ")
		if !strings.Contains(reasons, "CrashLoopBackOff") {
			continue
		}
		if _, err := s.Kubectl(ctx, "-n", namespace, "delete", "pod", name, "--wait=false"); err != nil {
			return err
		}
	}
	return nil
}
