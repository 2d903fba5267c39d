package postgrescluster

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/instance"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// view is one instance pod and what its instance manager last said; Report
// is nil when the pod has no address yet or did not answer.
type view struct {
	Pod    *corev1.Pod
	Report *instance.Report
}

// plan is what the operator wants of each instance after one look at them.
type plan struct {
	// Desired holds the orders to send, by pod name.
	Desired map[string]instance.Desired
	// Roles holds the role label each pod should carry; "" removes it.
	Roles          map[string]holdfastv1.InstanceRole
	CurrentPrimary string
	TargetPrimary  string
	Epoch          int64
	// PrimaryFailingSince, SyncStandbys and LastFailover are the status
	// fields of those names as they should become.
	PrimaryFailingSince *metav1.Time
	SyncStandbys        []string
	LastFailover        *holdfastv1.RoleChange
	// Waiting says why a failing primary is not replaced yet; Blocked why a
	// failed one cannot be.
	Waiting, Blocked string
}

// decide is the operator's judgement as a pure function of the cluster,
// what its instances report and the time: it keeps the cluster together
// around status.targetPrimary, and replaces that primary when it fails.
func decide(c *holdfastv1.PostgresCluster, views []view, now time.Time) plan {
	p := plan{
		Desired:             map[string]instance.Desired{},
		Roles:               map[string]holdfastv1.InstanceRole{},
		CurrentPrimary:      c.Status.CurrentPrimary,
		TargetPrimary:       c.Status.TargetPrimary,
		Epoch:               max(c.Status.Epoch, 1),
		PrimaryFailingSince: c.Status.PrimaryFailingSince,
		SyncStandbys:        c.Status.SyncStandbys,
		LastFailover:        c.Status.LastFailover.DeepCopy(),
	}
	if p.TargetPrimary == "" {
		p.TargetPrimary = resources.InstanceName(c, 0)
	}
	considerFailover(c, views, now, &p)
	target := p.TargetPrimary
	var replicas []string
	for i := range int(c.Spec.Instances) {
		if name := resources.InstanceName(c, i); name != target {
			replicas = append(replicas, name)
		}
	}
	quorum := 0
	if c.Spec.Synchronous != nil {
		quorum = min(int(c.Spec.Synchronous.Quorum), len(replicas))
	}

	var primary *view
	for i, v := range views {
		if v.Pod.Name == target {
			primary = &views[i]
		}
	}
	if primary != nil && primary.Report != nil && primary.Pod.DeletionTimestamp == nil {
		p.Desired[target] = instance.Desired{Role: postgres.Primary, Replicas: replicas, SyncQuorum: quorum, Epoch: p.Epoch}
		if r := primary.Report; r.Role == postgres.Primary && !r.Fenced && r.Desired != nil && r.Desired.Epoch == p.Epoch {
			p.CurrentPrimary = target
			if r.Postgres != nil {
				p.SyncStandbys = syncStandbys(r.Postgres)
			}
		}
	}
	failingOver := p.LastFailover != nil && p.LastFailover.CompletedAt == nil && p.LastFailover.To == target
	if failingOver && p.CurrentPrimary == target {
		p.LastFailover.CompletedAt = &metav1.Time{Time: now}
		failingOver = false
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
			if p.LastFailover != nil && p.LastFailover.From == name && name != target && v.Pod.Labels[resources.LabelRole] != "" {
				p.Roles[name] = ""
			}
			continue
		}
		switch {
		case v.Report.Role == postgres.Primary && name == p.CurrentPrimary:
			p.Roles[name] = holdfastv1.RolePrimary
		case v.Report.Role == postgres.Replica && v.Report.Ready:
			p.Roles[name] = holdfastv1.RoleReplica
		default:
			p.Roles[name] = ""
		}
		if name != target && follow && ordinal(name) < int(c.Spec.Instances) && v.Pod.DeletionTimestamp == nil {
			p.Desired[name] = instance.Desired{
				Role: postgres.Replica, PrimaryHost: primary.Pod.Status.PodIP, PrimaryPort: postgres.Port, Epoch: p.Epoch,
			}
		}
	}
	return p
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

// InstanceAPI is how the operator talks to instance managers.
type InstanceAPI interface {
	Status(ctx context.Context, base string) (instance.Report, error)
	Desire(ctx context.Context, base, token string, d instance.Desired) error
}

// orchestrate asks every instance for its state, tells each what to be,
// labels pods with their roles and records the primary in c's status (in
// memory; updateStatus writes it). It returns the reports by pod name.
func (r *Reconciler) orchestrate(ctx context.Context, c *holdfastv1.PostgresCluster, pods []corev1.Pod) (map[string]*instance.Report, error) {
	reports := map[string]*instance.Report{}
	var views []view
	addressed := false
	for i := range pods {
		pod := &pods[i]
		v := view{Pod: pod}
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			views = append(views, v)
			continue
		}
		addressed = true
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rep, err := r.Instances.Status(qctx, instanceURL(pod))
		cancel()
		if err != nil {
			log.FromContext(ctx).V(1).Info("instance did not answer", "pod", pod.Name, "error", err.Error())
		} else {
			v.Report = &rep
			reports[pod.Name] = &rep
		}
		views = append(views, v)
	}
	if !addressed && c.Status.CurrentPrimary == "" {
		return reports, nil
	}
	p := decide(c, views, time.Now())

	token, err := r.instanceToken(ctx, c)
	if err != nil {
		return reports, err
	}
	r.recordFailover(c, p)
	// The promotion goes first: the other orders point at the new primary.
	slices.SortStableFunc(views, func(a, b view) int {
		return boolInt(b.Pod.Name == p.TargetPrimary) - boolInt(a.Pod.Name == p.TargetPrimary)
	})
	for _, v := range views {
		d, ok := p.Desired[v.Pod.Name]
		if !ok || v.Report == nil || (v.Report.Desired != nil && reflect.DeepEqual(*v.Report.Desired, d)) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := r.Instances.Desire(qctx, instanceURL(v.Pod), token, d)
		cancel()
		if err != nil && v.Pod.Name == p.TargetPrimary {
			return reports, err
		}
		if err != nil {
			// One silent replica must not hold up the others.
			log.FromContext(ctx).Info("instance refused its desired state", "pod", v.Pod.Name, "error", err.Error())
			continue
		}
		log.FromContext(ctx).Info("told instance its desired state", "pod", v.Pod.Name, "role", d.Role, "epoch", d.Epoch)
	}
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
			return reports, fmt.Errorf("labelling pod %s %q: %w", v.Pod.Name, role, err)
		}
	}
	if p.CurrentPrimary != c.Status.CurrentPrimary {
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "PrimaryReady", "Observe", "%s is the primary", p.CurrentPrimary)
	}
	c.Status.CurrentPrimary = p.CurrentPrimary
	c.Status.TargetPrimary = p.TargetPrimary
	c.Status.Epoch = p.Epoch
	c.Status.PrimaryFailingSince = p.PrimaryFailingSince
	c.Status.SyncStandbys = p.SyncStandbys
	c.Status.LastFailover = p.LastFailover
	setPrimaryCondition(c, p)
	return reports, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// recordFailover says with Events when a failover starts and ends.
func (r *Reconciler) recordFailover(c *holdfastv1.PostgresCluster, p plan) {
	was, now := c.Status.LastFailover, p.LastFailover
	if now == nil {
		return
	}
	if was == nil || was.StartedAt != now.StartedAt || was.To != now.To {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "FailoverStarted", "Failover", "%s", now.Reason)
	}
	if now.CompletedAt != nil && (was == nil || was.CompletedAt == nil) {
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "FailoverCompleted", "Failover", "%s is the primary, %s after %s failed",
			now.To, now.CompletedAt.Sub(now.StartedAt.Time).Round(time.Millisecond), now.From)
	}
}

func instanceURL(pod *corev1.Pod) string {
	return "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(instance.StatusPort))
}

func (r *Reconciler) instanceToken(ctx context.Context, c *holdfastv1.PostgresCluster) (string, error) {
	var s corev1.Secret
	key := client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretInstanceTokenName(c)}
	if err := r.Client.Get(ctx, key, &s); err != nil {
		return "", fmt.Errorf("reading the instance token: %w", err)
	}
	return string(s.Data[resources.SecretKeyToken]), nil
}
