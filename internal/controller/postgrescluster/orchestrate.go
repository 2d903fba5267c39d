package postgrescluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/instances"
	"holdfast.dev/holdfast/internal/controller/metrics"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// view is one instance pod and what its instance manager last said; Report
// is nil when the pod has no address yet or did not answer.
type view struct {
	Pod    *corev1.Pod
	Report *instanceapi.Report
	// LastAnswer is when its instance manager last answered; zero when the
	// operator has not heard from it since it started.
	LastAnswer time.Time
	// HoldsLease: the primary Lease names this instance; LeaseRenewed is
	// then its renewTime (zero if never renewed), which tells a primary
	// whose container died from one that came back (judgePrimary).
	HoldsLease   bool
	LeaseRenewed time.Time
}

// plan is what the operator wants of each instance after one look at them.
type plan struct {
	// Desired holds the orders to send, by pod name.
	Desired map[string]instanceapi.Desired
	// Roles holds the role label each pod should carry; "" removes it.
	Roles          map[string]holdfastv1.InstanceRole
	CurrentPrimary string
	TargetPrimary  string
	Epoch          int64
	// PrimaryFailingSince and SyncStandbys are the status fields of those
	// names as they should become.
	PrimaryFailingSince *metav1.Time
	SyncStandbys        []string
	// Operation and History are status.operation and status.history as
	// they should become; Notes the Events their steps ask for.
	Operation *holdfastv1.Operation
	History   []holdfastv1.OperationRecord
	Notes     []note
	finished  bool // an operation ended in this look
	// ended are the records this look adds to History, for the metrics
	// once they are written.
	ended []holdfastv1.OperationRecord
	// Evict is the pod the operation restarts now, nil for none.
	Evict *corev1.Pod
	// SwitchoverRefused says why the switchover asked for cannot happen.
	SwitchoverRefused string
	// Waiting says why a failing primary is not replaced yet; Blocked why a
	// failed one cannot be.
	Waiting, Blocked string
}

// decide is the operator's judgement as a pure function of the cluster,
// what its instances report and the time: it keeps the cluster together
// around status.targetPrimary, moves the operation under way on, replaces
// the primary when it fails, and starts the operations asked for.
// leaseQuiet is how long the operator has seen no renewal of the primary's
// Lease; revision the StatefulSet's current template revision ("" when not
// known).
func decide(c *holdfastv1.PostgresCluster, views []view, now time.Time, leaseQuiet time.Duration, revision string) plan {
	p := plan{
		Desired:             map[string]instanceapi.Desired{},
		Roles:               map[string]holdfastv1.InstanceRole{},
		CurrentPrimary:      c.Status.CurrentPrimary,
		TargetPrimary:       c.Status.TargetPrimary,
		Epoch:               max(c.Status.Epoch, 1),
		PrimaryFailingSince: c.Status.PrimaryFailingSince,
		SyncStandbys:        c.Status.SyncStandbys,
		Operation:           c.Status.Operation.DeepCopy(),
		History:             slices.Clone(c.Status.History),
	}
	if p.TargetPrimary == "" {
		p.TargetPrimary = resources.InstanceName(c, 0)
	}
	if op := p.Operation; op != nil {
		switch op.Kind {
		case holdfastv1.OperationFailover:
			stepFailover(c, views, now, leaseQuiet, &p)
		case holdfastv1.OperationSwitchover:
			stepSwitchover(c, views, now, &p)
		case holdfastv1.OperationRollingUpdate:
			stepRollingUpdate(c, views, revision, now, &p)
		case holdfastv1.OperationHibernate, holdfastv1.OperationWake:
			stepHibernation(c, views, now, &p)
		case holdfastv1.OperationFence:
			stepFence(c, views, now, &p)
		}
	}
	recordFailsafe(views, p.TargetPrimary, &p)
	considerFailover(c, views, now, leaseQuiet, &p)
	considerHibernation(c, views, now, &p)
	considerScaleDown(c, views, now, &p)
	considerSwitchover(c, views, now, &p)
	considerRollingUpdate(c, views, revision, now, &p)
	considerReplacingUnstarted(c, views, revision, now, &p)
	considerFence(c, views, now, &p)
	target := p.TargetPrimary
	var replicas []string
	for i := range int(c.Spec.Instances) {
		if name := resources.InstanceName(c, i); name != target {
			replicas = append(replicas, name)
		}
	}
	var primary *view
	for i, v := range views {
		if v.Pod.Name == target {
			primary = &views[i]
		}
	}
	quorum := syncQuorum(c, views, primary, target, p.Epoch, len(replicas))
	// A switchover promotes only once the old primary has stopped cleanly,
	// so that the new one holds every write the old one took.
	op := p.Operation
	switching := handingOver(op) && op.To == target
	var from string
	if changingPrimary(op) {
		from = op.From
	}
	// The lease went to the new primary when the switchover began, so the
	// old one, which can no longer renew it, has stopped taking writes once
	// it has gone unrenewed for its duration, even if it never said so.
	leaseLapsed := leaseQuiet >= time.Duration(c.Spec.Failover.LeaseDurationSeconds)*time.Second
	hold := switching && !oldPrimaryStopped(views, from, p.Epoch) && !leaseLapsed
	// The old primary said where its writes end: no lapse of time makes
	// a target that has not received them all a safe one.
	if behind := targetBehind(views, from, target, p.Epoch); switching && behind != "" {
		hold = true
		p.Waiting = behind
	}
	if primary != nil && primary.Report != nil && primary.Pod.DeletionTimestamp == nil && !hold {
		p.Desired[target] = instanceapi.Desired{Role: postgres.Primary, Replicas: replicas, SyncQuorum: quorum, Epoch: p.Epoch,
			ReplicaHosts: replicaHosts(views, replicas),
			Lease: &instanceapi.LeaseTerms{Name: resources.LeaseName(c), RenewDeadlineSeconds: int(c.Spec.Failover.RenewDeadlineSeconds),
				DurationSeconds: int(c.Spec.Failover.LeaseDurationSeconds)}}
		if r := primary.Report; r.Role == postgres.Primary && !r.Fenced && r.Desired != nil && r.Desired.Epoch == p.Epoch {
			p.CurrentPrimary = target
			if r.Postgres != nil {
				p.SyncStandbys = syncStandbys(r.Postgres)
			}
		}
	}
	failingOver := changingPrimary(op) && op.To == target && p.CurrentPrimary != target
	// A failover or switchover is done once its target takes writes; the
	// kinds that promote on the way (a rolling update, hibernation) move
	// on to their next phase in their step, on the next look.
	if changingPrimary(op) && (op.Kind == holdfastv1.OperationFailover || op.Kind == holdfastv1.OperationSwitchover) &&
		op.To == target && p.CurrentPrimary == target {
		p.finish(holdfastv1.OutcomeSucceeded, "", now)
	}
	// Replicas clone or follow the primary, so they wait until it reports
	// itself; during a failover they follow the promoted replica at once
	// (cascading until its promotion, then along its new timeline).
	follow := primary != nil && primary.Pod.Status.PodIP != "" && (p.CurrentPrimary == target || failingOver)

	for _, v := range views {
		name := v.Pod.Name
		if v.Report == nil {
			// A silent instance keeps its label until judged, but a
			// replaced primary loses it at once, whether it answers or not.
			if name != target && v.Pod.Labels[resources.LabelRole] == string(holdfastv1.RolePrimary) {
				p.Roles[name] = ""
			}
			continue
		}
		switch {
		case v.Report.Role == postgres.Primary && name == p.CurrentPrimary:
			p.Roles[name] = holdfastv1.RolePrimary
		case switching && p.CurrentPrimary != target && name == from &&
			v.Pod.Labels[resources.LabelRole] == string(holdfastv1.RolePrimary):
			// The primary being switched away from keeps its label until
			// the new one takes it, so that the -rw Service changes once,
			// not twice: kube-proxy applies a second change no sooner than
			// a second after the first. It takes no write meanwhile once
			// demoted, and it is not demoted until told so.
			p.Roles[name] = holdfastv1.RolePrimary
		case v.Report.Role == postgres.Replica && v.Report.Ready:
			p.Roles[name] = holdfastv1.RoleReplica
		case name == target && changingPrimary(op) && v.Report.Role == postgres.Replica &&
			v.Pod.Labels[resources.LabelRole] == string(holdfastv1.RoleReplica):
			// The instance being promoted is not "ready" as a replica
			// once told to be the primary, yet keeps its replica label
			// until it takes the primary one, in a single change: every
			// change to a Service's endpoints makes kube-proxy wait its
			// minimum sync period (1 s) before applying the next, and
			// the next is the -rw change that clients wait for.
			p.Roles[name] = holdfastv1.RoleReplica
		default:
			p.Roles[name] = ""
		}
		// The primary a scale-down removes is told to step down too.
		if name != target && follow && (resources.Ordinal(name) < int(c.Spec.Instances) || name == from) && v.Pod.DeletionTimestamp == nil {
			p.Desired[name] = instanceapi.Desired{
				Role: postgres.Replica, PrimaryHost: primary.Pod.Status.PodIP, PrimaryPort: postgres.Port, Epoch: p.Epoch,
				// A backup snapshots this replica's volume while it is stopped.
				Fenced: fenced(p.Operation, name),
				// The old primary of a planned handover waits for its
				// successor to stream before it stops.
				Handover: switching && name == from,
			}
		}
	}
	return p
}

// replicaHosts locates the instance manager of each of replicas that has
// an address, for the primary to ask for failsafe promises.
func replicaHosts(views []view, replicas []string) map[string]string {
	hosts := map[string]string{}
	for _, name := range replicas {
		if v := findView(views, name); v != nil && v.Pod.Status.PodIP != "" && v.Pod.DeletionTimestamp == nil {
			hosts[name] = v.Pod.Status.PodIP
		}
	}
	return hosts
}

// syncQuorum is how many standbys must confirm each commit. It counts
// only standbys that have joined (cloned and reported), and never goes down
// while the primary keeps its epoch: a replica that fails still counts, so
// writes wait for it (the trade-off the user chose), but a cluster that is
// still bootstrapping, whose replicas do not exist yet, can commit at all.
func syncQuorum(c *holdfastv1.PostgresCluster, views []view, primary *view, target string, epoch int64, replicas int) int {
	if c.Spec.Synchronous == nil {
		return 0
	}
	joined := 0
	for _, v := range views {
		if v.Pod.Name != target && resources.Ordinal(v.Pod.Name) < int(c.Spec.Instances) && v.Report != nil &&
			v.Report.Role == postgres.Replica && v.Report.Postgres != nil {
			joined++
		}
	}
	if primary != nil && primary.Report != nil {
		if d := primary.Report.Desired; d != nil && d.Role == postgres.Primary && d.Epoch == epoch {
			joined = max(joined, d.SyncQuorum)
		}
	}
	return min(int(c.Spec.Synchronous.Quorum), replicas, joined)
}

// syncStandbys are the standbys a primary reports as synchronous.
func syncStandbys(st *postgres.Status) []string {
	var out []string
	for _, s := range st.Standbys {
		if s.SyncState == "sync" || s.SyncState == "quorum" {
			out = append(out, s.Name)
		}
	}
	return out
}

// instanceTimeout bounds each call to an instance manager: they answer from
// memory, so a slow answer is as good as none.
const instanceTimeout = 2 * time.Second

// InstanceAPI is how the operator talks to a cluster's instance managers.
type InstanceAPI interface {
	Status(ctx context.Context, c *holdfastv1.PostgresCluster, base string, w instanceapi.Wait) (instanceapi.Report, error)
	Desire(ctx context.Context, c *holdfastv1.PostgresCluster, base string, d instanceapi.Desired) error
}

// statusWait is how long a look waits for the instance an operation
// waits on (awaited) to report its next move, before it looks anyway.
const statusWait = 500 * time.Millisecond

// orchestrate asks every instance for its state, tells each what to be,
// labels pods with their roles and records the primary in c's status (in
// memory; updateStatus writes it). It returns the reports by pod name,
// and whether it waited for an instance's next move.
func (r *Reconciler) orchestrate(ctx context.Context, c *holdfastv1.PostgresCluster, pods []corev1.Pod, revision string, restore *instanceapi.RestoreOrder) (map[string]*instanceapi.Report, bool, error) {
	reports := map[string]*instanceapi.Report{}
	views := make([]view, len(pods))
	addressed := false
	for i := range pods {
		views[i] = view{Pod: &pods[i]}
		addressed = addressed || pods[i].Status.PodIP != "" && pods[i].DeletionTimestamp == nil
	}
	// The instance an operation waits on is asked first, to answer once
	// it has moved: the moment an old primary stops, or a new one takes
	// writes, and not up to a poll later. The others are asked after it,
	// so that their reports are as new as its news (the target of a
	// switchover has received the old primary's last record by then).
	waited := false
	if i := r.awaited(c, views); i >= 0 {
		waited = true
		r.ask(ctx, c, views, []int{i}, true)
		others := make([]int, 0, len(views)-1)
		for j := range views {
			if j != i {
				others = append(others, j)
			}
		}
		r.ask(ctx, c, views, others, false)
	} else {
		all := make([]int, len(views))
		for j := range views {
			all[j] = j
		}
		r.ask(ctx, c, views, all, false)
	}
	for _, v := range views {
		if v.Report != nil {
			reports[v.Pod.Name] = v.Report
		}
	}
	if !addressed && c.Status.CurrentPrimary == "" && unstarted(c, views, revision) == nil {
		return reports, waited, nil
	}
	now := time.Now()
	lease, err := r.primaryLease(ctx, c)
	if err != nil {
		return reports, waited, err
	}
	if lease != nil {
		holder := ptr.Deref(lease.Spec.HolderIdentity, "")
		for i := range views {
			if views[i].HoldsLease = views[i].Pod.Name == holder; views[i].HoldsLease && lease.Spec.RenewTime != nil {
				views[i].LeaseRenewed = lease.Spec.RenewTime.Time
			}
		}
	}
	p := decide(c, views, now, r.leases.quietFor(client.ObjectKeyFromObject(c), lease, now), revision)
	if d, ok := p.Desired[p.TargetPrimary]; ok && restore != nil {
		// Only the first primary restores; replicas clone it.
		d.Restore = restore
		p.Desired[p.TargetPrimary] = d
	}
	archive, params := archiveOrder(c), parameters(c)
	for name, d := range p.Desired {
		// Every instance archives: whichever is promoted does from then on.
		d.Archive, d.Parameters = archive, params
		d.Cluster, d.Incarnation = c.Namespace+"/"+c.Name, string(c.UID)
		p.Desired[name] = d
	}
	was := c.Status.DeepCopy()
	if p.Epoch != c.Status.Epoch || p.TargetPrimary != c.Status.TargetPrimary ||
		!equality.Semantic.DeepEqual(p.Operation, c.Status.Operation) || len(p.History) != len(c.Status.History) {
		// A new epoch, and every step of an operation, is written down
		// before anything acts on it. A look
		// that began from a stale copy of the cluster (the cache lags the
		// last status write) fails here on the resource version, before it
		// has handed over the lease or given an order; one that acted
		// first could lose its decision to that conflict after instances
		// had already moved to an epoch the operator no longer knows.
		if err := r.recordDecision(ctx, c, p); err != nil {
			return reports, waited, err
		}
	}
	metrics.Recorded(c, p.ended, p.Operation)
	// The lease goes to the primary before it is told to be one: it renews
	// the lease before it takes writes.
	if err := r.handLease(ctx, c, lease, p.TargetPrimary); err != nil {
		return reports, waited, err
	}

	for _, n := range p.Notes {
		kind := corev1.EventTypeNormal
		if n.warning {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(c, nil, kind, n.reason, n.what, "%s", n.message)
	}
	if p.SwitchoverRefused != "" {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "SwitchoverRefused", "Switchover", "%s", p.SwitchoverRefused)
	}
	// The promotion goes first: the other orders point at the new primary.
	slices.SortStableFunc(views, func(a, b view) int {
		return boolInt(b.Pod.Name == p.TargetPrimary) - boolInt(a.Pod.Name == p.TargetPrimary)
	})
	for _, v := range views {
		d, ok := p.Desired[v.Pod.Name]
		if !ok || v.Report == nil || (v.Report.Desired != nil && reflect.DeepEqual(*v.Report.Desired, d)) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, instanceTimeout)
		err := r.Instances.Desire(qctx, c, instances.URL(v.Pod), d)
		cancel()
		if err != nil {
			metrics.InstanceCallFailed(c, "desire")
		}
		if err != nil && v.Pod.Name == p.TargetPrimary && !errors.Is(err, instanceapi.ErrPromiseHolds) {
			return reports, waited, err
		}
		if err != nil {
			// One silent replica must not hold up the others.
			log.FromContext(ctx).Info("instance refused its desired state", "pod", v.Pod.Name, "error", err.Error())
			continue
		}
		log.FromContext(ctx).Info("told instance its desired state", "pod", v.Pod.Name, "role", d.Role, "epoch", d.Epoch)
	}
	// Labels given before labels taken: the -rw Service moves from one
	// primary to the next without a moment with no endpoint at all.
	slices.SortStableFunc(views, func(a, b view) int {
		return boolInt(p.Roles[a.Pod.Name] == "") - boolInt(p.Roles[b.Pod.Name] == "")
	})
	for _, v := range views {
		role, ok := p.Roles[v.Pod.Name]
		if !ok || holdfastv1.InstanceRole(v.Pod.Labels[resources.LabelRole]) == role {
			continue
		}
		patch := client.MergeFrom(v.Pod.DeepCopy())
		if role == "" {
			delete(v.Pod.Labels, resources.LabelRole)
		} else {
			v.Pod.Labels[resources.LabelRole] = string(role)
		}
		if err := r.Client.Patch(ctx, v.Pod, patch); err != nil {
			return reports, waited, fmt.Errorf("labelling pod %s %q: %w", v.Pod.Name, role, err)
		}
	}
	if p.Evict != nil {
		if err := r.evict(ctx, p.Evict); err != nil {
			// Refused by the PodDisruptionBudget, say: the next look tries
			// again, until the phase's deadline.
			log.FromContext(ctx).Info("could not evict instance pod", "pod", p.Evict.Name, "error", err.Error())
		}
	}
	if p.CurrentPrimary != was.CurrentPrimary && p.CurrentPrimary != "" {
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "PrimaryReady", "Observe", "%s is the primary", p.CurrentPrimary)
	}
	p.applyTo(&c.Status)
	c.Status.SyncStandbys = p.SyncStandbys
	setPrimaryCondition(c, p)
	if err := r.settleSwitchoverAnnotation(ctx, c, p); err != nil {
		return reports, waited, err
	}
	return reports, waited, nil
}

// ask asks the instances views[which] for their reports, all at once and
// briefly: a silent instance must not delay the judgement of the others,
// least of all the primary's. With wait, each answers once its report
// has changed since the operator last saw it, or after statusWait.
func (r *Reconciler) ask(ctx context.Context, c *holdfastv1.PostgresCluster, views []view, which []int, wait bool) {
	var wg sync.WaitGroup
	for _, i := range which {
		pod := views[i].Pod
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			asked := time.Now()
			timeout := r.answers.timeout(pod.UID, asked)
			var w instanceapi.Wait
			if last := r.answers.lastReport(pod.UID); wait && last != nil {
				w = instanceapi.Wait{After: last.Changes, For: statusWait}
				timeout += statusWait
			}
			qctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rep, err := r.Instances.Status(qctx, c, instances.URL(pod), w)
			if err != nil {
				metrics.InstanceCallFailed(c, "status")
				last, turned := r.answers.record(pod.UID, nil, err, asked)
				views[i].LastAnswer = last
				// Said once when it falls silent, not at every look.
				if turned {
					log.FromContext(ctx).Info("instance stopped answering", "pod", pod.Name, "error", err.Error())
				} else {
					log.FromContext(ctx).V(1).Info("instance did not answer", "pod", pod.Name, "error", err.Error())
				}
				return
			}
			last, turned := r.answers.record(pod.UID, &rep, nil, asked)
			if turned {
				log.FromContext(ctx).Info("instance answers again", "pod", pod.Name)
			}
			views[i].LastAnswer = last
			views[i].Report = &rep
		}()
	}
	wg.Wait()
}

// awaited is the index in views of the instance whose next report moves
// the operation under way on, -1 for none: the old primary of a
// handover until it has stopped, then the instance being promoted until
// it reports itself primary at the operation's epoch.
func (r *Reconciler) awaited(c *holdfastv1.PostgresCluster, views []view) int {
	op := c.Status.Operation
	if !changingPrimary(op) {
		return -1
	}
	find := func(name string) (int, *instanceapi.Report) {
		for i, v := range views {
			if v.Pod.Name == name && v.Pod.Status.PodIP != "" && v.Pod.DeletionTimestamp == nil {
				return i, r.answers.lastReport(v.Pod.UID)
			}
		}
		return -1, nil
	}
	if i, last := find(op.From); i >= 0 && last != nil && handingOver(op) &&
		last.Running && last.Role == postgres.Primary && last.DemotedAtEpoch != c.Status.Epoch {
		return i
	}
	if i, last := find(op.To); i >= 0 && last != nil &&
		(last.Role != postgres.Primary || last.Desired == nil || last.Desired.Epoch != c.Status.Epoch) {
		return i
	}
	return -1
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// applyTo copies the plan's choice of primary into a status.
func (p plan) applyTo(st *holdfastv1.PostgresClusterStatus) {
	st.CurrentPrimary, st.TargetPrimary, st.Epoch = p.CurrentPrimary, p.TargetPrimary, p.Epoch
	st.PrimaryFailingSince, st.Operation, st.History = p.PrimaryFailingSince, p.Operation, p.History
}

// recordDecision writes the plan's choice of primary and epoch to the
// cluster's status at once, failing on a conflict.
func (r *Reconciler) recordDecision(ctx context.Context, c *holdfastv1.PostgresCluster, p plan) error {
	before := c.Status.DeepCopy()
	p.applyTo(&c.Status)
	if err := r.Client.Status().Update(ctx, c); err != nil {
		c.Status = *before
		return fmt.Errorf("recording epoch %d with %s as the primary: %w", p.Epoch, p.TargetPrimary, err)
	}
	return nil
}

// evict asks the API server to evict pod, as a drain would: the
// PodDisruptionBudget may refuse, and the pod shuts down gracefully.
func (r *Reconciler) evict(ctx context.Context, pod *corev1.Pod) error {
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}}}
	if err := r.Client.SubResource("eviction").Create(ctx, pod, ev); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("evicting pod %s: %w", pod.Name, err)
	}
	log.FromContext(ctx).Info("evicted instance pod", "pod", pod.Name)
	return nil
}

// settleSwitchoverAnnotation removes the switchover annotation once the
// switchover it asked for is done or refused, so that it cannot start again.
func (r *Reconciler) settleSwitchoverAnnotation(ctx context.Context, c *holdfastv1.PostgresCluster, p plan) error {
	want, ok := c.Annotations[holdfastv1.AnnotationSwitchoverTo]
	if !ok {
		return nil
	}
	done := p.SwitchoverRefused != "" || want == "" ||
		(want == p.TargetPrimary && p.Operation == nil && p.CurrentPrimary == want)
	if !done {
		return nil
	}
	status := c.Status.DeepCopy()
	patch := client.MergeFrom(c.DeepCopy())
	delete(c.Annotations, holdfastv1.AnnotationSwitchoverTo)
	if err := r.Client.Patch(ctx, c, patch); err != nil {
		return fmt.Errorf("removing the %s annotation: %w", holdfastv1.AnnotationSwitchoverTo, err)
	}
	c.Status = *status // the patch answer carries the stored status, not this one
	return nil
}

// parameters are the user's settings as every instance's order carries
// them: no kubelet refreshing a mounted ConfigMap stands between a change
// and the instances.
func parameters(c *holdfastv1.PostgresCluster) map[string]string {
	if len(c.Spec.PostgreSQL.Parameters) == 0 {
		return nil
	}
	out := make(map[string]string, len(c.Spec.PostgreSQL.Parameters))
	for k, v := range c.Spec.PostgreSQL.Parameters {
		out[k] = string(v)
	}
	return out
}
