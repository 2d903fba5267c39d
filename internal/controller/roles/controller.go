// Package roles reconciles a PostgresCluster's declared roles and
// databases (spec.roles, spec.databases): it makes the primary's roles and
// databases match them, over a TLS connection as the superuser, and
// reports each one's outcome in status.roles, status.databases,
// status.unmanagedRoles and the RolesReconciled and DatabasesReconciled
// conditions. It writes nothing else, and only those fields.
//
// It talks to postgres directly, not through the instance manager: the
// SQL is package catalog's. It must not import the postgrescluster
// controller, whose status writes keep its fields because they modify the
// object they read.
package roles

import (
	"context"
	"errors"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres/catalog"
	"holdfast.dev/holdfast/internal/resources"
)

// Reconciler keeps declared roles and databases on each cluster's primary.
type Reconciler struct {
	Client client.Client
	// APIReader reads the password Secrets: the operator caches only the
	// Secrets it labelled, and a user's may carry no label.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Port is where the instances' postgres listens: postgres.Port, unless
	// a test's server listens elsewhere.
	Port int

	mu       sync.Mutex
	failures map[types.NamespacedName]int
}

// resync is how often a cluster is looked at with nothing to prompt it,
// so that a role dropped or altered by hand is put back.
const resync = time.Minute

// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler and what it watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("roles").
		// Its own status writes, and the cluster controller's, change
		// neither the spec nor the primary: they bring no look.
		For(&holdfastv1.PostgresCluster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, primaryChanged()))).
		// A password Secret's change reaches the role at once when the
		// operator caches the Secret (it carries holdfast.dev/cluster);
		// otherwise at the next resync.
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.referencing)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(toCluster), builder.WithPredicates(primaryPodChanged())).
		Complete(r)
}

func primaryChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*holdfastv1.PostgresCluster)
		n, ok2 := e.ObjectNew.(*holdfastv1.PostgresCluster)
		return ok1 && ok2 && o.Status.CurrentPrimary != n.Status.CurrentPrimary
	}}
}

// primaryPodChanged: a pod became or stopped being the primary, or moved.
func primaryPodChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			return e.Object.GetLabels()[resources.LabelRole] == string(holdfastv1.RolePrimary)
		},
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*corev1.Pod)
			n, ok2 := e.ObjectNew.(*corev1.Pod)
			return ok1 && ok2 && (o.Labels[resources.LabelRole] != n.Labels[resources.LabelRole] || o.Status.PodIP != n.Status.PodIP)
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func toCluster(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetLabels()[resources.LabelCluster]
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// referencing maps a Secret to the clusters of its namespace whose roles
// take their password from it.
func (r *Reconciler) referencing(ctx context.Context, o client.Object) []reconcile.Request {
	var list holdfastv1.PostgresClusterList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "listing clusters for a Secret's change", "secret", o.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, c := range list.Items {
		for _, role := range c.Spec.Roles {
			if role.PasswordSecret != nil && role.PasswordSecret.Name == o.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
				break
			}
		}
	}
	return out
}

// Reconcile makes one cluster's primary hold its declared roles and databases.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var c holdfastv1.PostgresCluster
	if err := r.Client.Get(ctx, req.NamespacedName, &c); err != nil {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if c.DeletionTimestamp != nil {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if len(c.Spec.Roles) == 0 && len(c.Spec.Databases) == 0 {
		// Nothing declared: what was reported goes, and nothing is asked
		// of the primary.
		r.forget(req.NamespacedName)
		return r.write(ctx, &c, &report{})
	}

	rep, err := r.observeAndApply(ctx, &c)
	var notReady *notReadyError
	switch {
	case errors.As(err, &notReady) && notReady.transient && hasConditions(&c):
		// No primary for a moment (a failover, a restart): the conditions
		// keep what they said, and the primary's return brings a look.
		return ctrl.Result{RequeueAfter: resync}, nil
	case errors.As(err, &notReady):
		n := r.fail(req.NamespacedName)
		// A connection that fails once may be a primary going away: it
		// is reported when it fails again, unless nothing was reported yet.
		if n < 3 && !notReady.transient && hasConditions(&c) {
			return ctrl.Result{RequeueAfter: r.backoff(req.NamespacedName)}, nil
		}
		res, werr := r.write(ctx, &c, notReady.report(&c))
		if werr != nil || res.RequeueAfter > 0 {
			return res, werr
		}
		return ctrl.Result{RequeueAfter: r.backoff(req.NamespacedName)}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	res, err := r.write(ctx, &c, rep)
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	if rep.failed() {
		r.fail(req.NamespacedName)
		return ctrl.Result{RequeueAfter: r.backoff(req.NamespacedName)}, nil
	}
	r.forget(req.NamespacedName)
	return ctrl.Result{RequeueAfter: resync}, nil
}

// observeAndApply reads the declaration's inputs and the primary's
// catalog, applies the plan, and says how each role and database fared.
func (r *Reconciler) observeAndApply(ctx context.Context, c *holdfastv1.PostgresCluster) (*report, error) {
	connect, err := r.primary(ctx, c)
	if err != nil {
		return nil, err
	}
	in := r.inputs(ctx, c)
	obs, err := catalog.Observe(ctx, connect, in.databases)
	if err != nil {
		return nil, &notReadyError{reason: ReasonPrimaryUnreachable, message: err.Error()}
	}
	plan, err := catalog.PlanFor(in.roles, in.databases, obs)
	if err != nil {
		return nil, err
	}
	outcomes := catalog.Apply(ctx, connect, plan.Steps)
	for s, o := range outcomes {
		for _, done := range o.Done {
			log.FromContext(ctx).Info("applied", "subject", s.String(), "step", done)
		}
	}
	return r.reportOn(c, in, obs, plan, outcomes), nil
}

func (r *Reconciler) fail(key types.NamespacedName) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[types.NamespacedName]int{}
	}
	r.failures[key]++
	return r.failures[key]
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.failures, key)
}

// backoff is how long a cluster whose roles failed waits for its next
// look: 5 s doubling with each failure in a row, up to 5 minutes. A role
// postgres refuses to drop is not asked again every moment.
func (r *Reconciler) backoff(key types.NamespacedName) time.Duration {
	r.mu.Lock()
	n := r.failures[key]
	r.mu.Unlock()
	d := 5 * time.Second
	for i := 1; i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// notReadyError: the primary cannot be asked yet.
type notReadyError struct {
	reason, message string
	// transient: no primary right now, which passes by itself.
	transient bool
}

func (e *notReadyError) Error() string { return e.reason + ": " + e.message }

// Reasons of the RolesReconciled and DatabasesReconciled conditions.
const (
	ReasonApplied               = "Applied"
	ReasonApplyFailed           = "ApplyFailed"
	ReasonPasswordSecretMissing = "PasswordSecretMissing"
	ReasonPrimaryUnavailable    = "PrimaryUnavailable"
	ReasonPrimaryUnreachable    = "PrimaryUnreachable"
	ReasonCredentialsMissing    = "CredentialsMissing"
	ReasonCreationSettings      = "CreationSettingsDiffer"
)
