package postgrescluster

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	Epoch          int64
}

// decide is the operator's judgement as a pure function of the cluster and
// what its instances report. Today it bootstraps and keeps a cluster
// together around status.targetPrimary; choosing a new primary when that one
// fails is the HA work's (issue 5).
func decide(c *holdfastv1.PostgresCluster, views []view) plan {
	p := plan{
		Desired:        map[string]instance.Desired{},
		Roles:          map[string]holdfastv1.InstanceRole{},
		CurrentPrimary: c.Status.CurrentPrimary,
		Epoch:          max(c.Status.Epoch, 1),
	}
	target := c.Status.TargetPrimary
	if target == "" {
		target = resources.InstanceName(c, 0)
	}
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
	if primary != nil && primary.Report != nil {
		p.Desired[target] = instance.Desired{Role: postgres.Primary, Replicas: replicas, SyncQuorum: quorum, Epoch: p.Epoch}
		if primary.Report.Role == postgres.Primary && !primary.Report.Fenced {
			p.CurrentPrimary = target
		}
	}

	for _, v := range views {
		name := v.Pod.Name
		if v.Report == nil {
			continue // unreachable: its label stays until the HA logic judges it
		}
		switch {
		case v.Report.Role == postgres.Primary && name == p.CurrentPrimary:
			p.Roles[name] = holdfastv1.RolePrimary
		case v.Report.Role == postgres.Replica && v.Report.Ready:
			p.Roles[name] = holdfastv1.RoleReplica
		default:
			p.Roles[name] = ""
		}
		// Replicas clone the primary, so they wait until it reports itself.
		if name != target && p.CurrentPrimary == target && primary != nil && primary.Pod.Status.PodIP != "" &&
			ordinal(name) < int(c.Spec.Instances) {
			p.Desired[name] = instance.Desired{
				Role: postgres.Replica, PrimaryHost: primary.Pod.Status.PodIP, PrimaryPort: postgres.Port, Epoch: p.Epoch,
			}
		}
	}
	return p
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
	for i := range pods {
		pod := &pods[i]
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
			continue
		}
		v := view{Pod: pod}
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
	if len(views) == 0 {
		return reports, nil
	}
	p := decide(c, views)

	token, err := r.instanceToken(ctx, c)
	if err != nil {
		return reports, err
	}
	for _, v := range views {
		d, ok := p.Desired[v.Pod.Name]
		if !ok || v.Report == nil || (v.Report.Desired != nil && reflect.DeepEqual(*v.Report.Desired, d)) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := r.Instances.Desire(qctx, instanceURL(v.Pod), token, d)
		cancel()
		if err != nil {
			return reports, err
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
	c.Status.Epoch = p.Epoch
	return reports, nil
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
