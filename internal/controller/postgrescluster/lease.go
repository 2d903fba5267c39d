package postgrescluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/resources"
)

// leaseWatch remembers, per cluster, when the operator last saw the primary
// Lease renewed. It compares its own clock readings only: the primary's
// clock, which wrote renewTime, may differ from the operator's.
type leaseWatch struct {
	mu   sync.Mutex
	seen map[types.NamespacedName]leaseSighting
}

type leaseSighting struct {
	holder, renewTime string
	at                time.Time
}

// quietFor says how long the lease has gone without a renewal the operator
// saw. An operator that has just started has seen nothing yet and counts
// from now: it waits a whole lease duration before trusting silence.
func (w *leaseWatch) quietFor(key types.NamespacedName, l *coordinationv1.Lease, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen = map[types.NamespacedName]leaseSighting{}
	}
	s := leaseSighting{at: now}
	if l != nil {
		s.holder = ptr.Deref(l.Spec.HolderIdentity, "")
		if l.Spec.RenewTime != nil {
			s.renewTime = l.Spec.RenewTime.String()
		}
	}
	last, ok := w.seen[key]
	if !ok || last.holder != s.holder || last.renewTime != s.renewTime {
		w.seen[key] = s
		return 0
	}
	return now.Sub(last.at)
}

// primaryLease reads the cluster's primary Lease from the API server, not
// the cache: whether a primary renewed it after its container died, or
// since a failover began, decides whether that failover may go on; nil
// when the Lease does not exist yet.
func (r *Reconciler) primaryLease(ctx context.Context, c *holdfastv1.PostgresCluster) (*coordinationv1.Lease, error) {
	var l coordinationv1.Lease
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	err := reader.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.LeaseName(c)}, &l)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the primary lease: %w", err)
	}
	return &l, nil
}

// handLease makes holder the holder of the primary Lease, creating it if
// needed. The new holder starts with a fresh renewal, so it can act at once;
// the old one finds it has lost the lease on its next renewal and stops.
func (r *Reconciler) handLease(ctx context.Context, c *holdfastv1.PostgresCluster, l *coordinationv1.Lease, holder string) error {
	now := metav1.NewMicroTime(time.Now())
	duration := ptr.To(c.Spec.Failover.LeaseDurationSeconds)
	if *duration <= 0 {
		duration = ptr.To[int32](6)
	}
	if l == nil {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: resources.LeaseName(c), Namespace: c.Namespace, Labels: resources.Labels(c)},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: duration,
				AcquireTime: &now, RenewTime: &now},
		}
		if err := controllerutil.SetControllerReference(c, l, r.Client.Scheme()); err != nil {
			return err
		}
		if err := r.Client.Create(ctx, l); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the primary lease: %w", err)
		}
		return nil
	}
	if ptr.Deref(l.Spec.HolderIdentity, "") == holder && ptr.Deref(l.Spec.LeaseDurationSeconds, 0) == *duration {
		return nil
	}
	l = l.DeepCopy()
	if ptr.Deref(l.Spec.HolderIdentity, "") != holder {
		// The pod that renewed it last is the old holder's: the new one
		// writes its own with its first renewal.
		delete(l.Annotations, instanceapi.LeaseHolderPodAnnotation)
		l.Spec.HolderIdentity = &holder
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	}
	l.Spec.LeaseDurationSeconds = duration
	if err := r.Client.Update(ctx, l); err != nil {
		return fmt.Errorf("handing the primary lease to %s: %w", holder, err)
	}
	return nil
}
