// Package postgrescluster reconciles PostgresClusters: it keeps each
// cluster's StatefulSet, Services, Secrets, ConfigMap and PodDisruptionBudget
// in the shape of the spec, and reports what it sees in the status.
package postgrescluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/apply"
	"holdfast.dev/holdfast/internal/controller/certificates"
	"holdfast.dev/holdfast/internal/controller/metrics"
	"holdfast.dev/holdfast/internal/credentials"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/resources"
)

// FieldOwner is the field manager of everything the operator applies.
const FieldOwner = "holdfast-operator"

// Reconciler reconciles PostgresClusters.
type Reconciler struct {
	Client client.Client
	// APIReader reads what the cache does not hold: the operator caches
	// only objects it labelled, and a user's Secret is not one.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Options   resources.Options
	// Instances reaches the instance managers; nil leaves them alone.
	Instances InstanceAPI
	// Certificates keeps the cluster's CA and TLS certificates; nil
	// issues none.
	Certificates *certificates.Keeper

	leases  leaseWatch
	answers answerLog
	rejoins rejoinLog
}

// pollInstances is how often a cluster with running instances is looked at
// again: instance state changes are not API events.
const pollInstances = time.Second

// pollDuringChange is how often a cluster whose primary is failing or
// changing is looked at.
const pollDuringChange = 100 * time.Millisecond

// restoreWait is how often a cluster waiting for its restore source looks again.
const restoreWait = 5 * time.Second

// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters,verbs=get;list;watch;patch
// (patch: to remove the switchover annotation once it is carried out)
// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;patch;update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// (update: certificates are renewed in place, conditional on the version read)
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create
// (create: a rolling update restarts instances by eviction, which the PodDisruptionBudget may refuse)
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update

// SetupWithManager registers the reconciler and what it watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Annotations ask for operations (a switchover, a restart): they
		// are acted on at once, not at the next look.
		For(&holdfastv1.PostgresCluster{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(toCluster)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(toCluster)).
		Complete(r)
}

// toCluster maps an instance's pod or claim to its cluster.
func toCluster(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetLabels()[resources.LabelCluster]
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// Reconcile brings one cluster's objects to the shape of its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var c holdfastv1.PostgresCluster
	if err := r.Client.Get(ctx, req.NamespacedName, &c); err != nil {
		if apierrors.IsNotFound(err) {
			metrics.Forget(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if c.DeletionTimestamp != nil {
		// Owner references hand everything to the garbage collector, and the
		// StatefulSet's claim retention policy decides the claims' fate.
		return ctrl.Result{}, nil
	}

	// orchestrate records the primary in c.Status; the status as stored
	// decides whether anything changed.
	stored := *c.Status.DeepCopy()

	var sts *appsv1.StatefulSet
	var refused error
	restore, err := r.restoreOrder(ctx, &c)
	var blocked *restoreBlocked
	if errors.As(err, &blocked) {
		// Nothing is made until the source is there; the status says what
		// it waits for, and a look every few seconds notices the Backup.
		if cond := meta.FindStatusCondition(stored.Conditions, holdfastv1.ConditionReady); cond == nil || cond.Message != blocked.message {
			r.Recorder.Eventf(&c, nil, corev1.EventTypeWarning, blocked.reason, "Restore", "%s", blocked.message)
		}
		if err := r.updateStatus(ctx, &c, stored, nil, nil, nil, nil, blocked); err != nil && !apierrors.IsConflict(err) {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: restoreWait}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if r.Instances != nil && roleChangeUnderWay(&c, time.Now()) && !specRefused(&c) {
		// Every moment without a primary is a moment without writes: the
		// operator then looks at the instances alone, and puts the other
		// objects right once the change is over, a few seconds later.
		sts, err = r.liveStatefulSet(ctx, &c)
		if err != nil {
			return ctrl.Result{}, err
		}
	} else {
		sts, refused, err = r.ensureAll(ctx, &c)
		if err != nil {
			return ctrl.Result{}, err
		}
	}

	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(c.Namespace), client.MatchingLabels(resources.SelectorLabels(&c))); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing pods: %w", err)
	}
	var reports map[string]*instanceapi.Report
	var result ctrl.Result
	if r.Instances != nil && refused == nil {
		var waited bool
		reports, waited, err = r.orchestrate(ctx, &c, pods.Items, templateRevision(sts), restore)
		if apierrors.IsConflict(err) {
			// Decided from a stale copy: nothing was done; look again.
			return ctrl.Result{RequeueAfter: pollDuringChange}, nil
		}
		if err != nil {
			r.Recorder.Eventf(&c, nil, corev1.EventTypeWarning, "InstanceUnreachable", "Orchestrate", "%v", err)
			return ctrl.Result{}, err
		}
		r.announceRejoins(&c, reports)
		if anyPodAddressed(pods.Items) {
			result.RequeueAfter = pollInstances
		}
		// An operation moves on by what the instances do, not by API
		// events: look again while one runs, even with no pod to ask.
		if c.Status.Operation != nil {
			result.RequeueAfter = pollInstances
		}
		// While the primary changes, look again sooner; at once when this
		// look waited on the instance the change hangs on, which paces the
		// looks itself.
		if primaryChanging(&c) {
			result.RequeueAfter = pollDuringChange
			if waited {
				result.RequeueAfter = time.Millisecond
			}
		}
	}

	var claims []corev1.PersistentVolumeClaim
	if refused == nil {
		if claims, err = r.tendClaims(ctx, &c, reports); err != nil {
			return ctrl.Result{}, err
		}
	}
	err = r.updateStatus(ctx, &c, stored, sts, pods.Items, reports, claims, refused)
	if apierrors.IsConflict(err) {
		// The cache was behind the cluster; the newer version is on its way.
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	return result, err
}

// primaryChanging: an operation is promoting an instance, or the primary
// is failing and may be replaced any moment.
func primaryChanging(c *holdfastv1.PostgresCluster) bool {
	return changingPrimary(c.Status.Operation) || c.Status.PrimaryFailingSince != nil
}

// roleChangeUnderWay: an operation started promoting an instance less than
// fastPathLimit ago. The limit keeps a change that cannot complete (say,
// the new primary never starts) from holding off the fix, a change of spec
// that only the full reconcile applies.
func roleChangeUnderWay(c *holdfastv1.PostgresCluster, now time.Time) bool {
	op := c.Status.Operation
	return changingPrimary(op) && now.Sub(op.PhaseStartedAt.Time) < fastPathLimit
}

const fastPathLimit = 30 * time.Second

// specRefused: the API server refused the objects the current spec makes.
func specRefused(c *holdfastv1.PostgresCluster) bool {
	cond := meta.FindStatusCondition(c.Status.Conditions, holdfastv1.ConditionDegraded)
	return cond != nil && cond.Status == metav1.ConditionTrue && cond.Reason == "SpecRefused"
}

// liveStatefulSet reads the cluster's StatefulSet from the cache; nil when
// it does not exist yet.
func (r *Reconciler) liveStatefulSet(ctx context.Context, c *holdfastv1.PostgresCluster) (*appsv1.StatefulSet, error) {
	var live appsv1.StatefulSet
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: resources.StatefulSetName(c)}, &live)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading StatefulSet: %w", err)
	}
	return &live, nil
}

// ensureAll applies every object the spec makes. refused is the API
// server's refusal of them, which only a change of spec can cure.
func (r *Reconciler) ensureAll(ctx context.Context, c *holdfastv1.PostgresCluster) (sts *appsv1.StatefulSet, refused, err error) {
	if err := r.ensureSecrets(ctx, c); err != nil {
		return nil, nil, err
	}
	r.ensureCertificates(ctx, c)
	sts, err = r.ensureObjects(ctx, c)
	switch {
	case apply.Refused(err):
		// The spec passed admission but makes an object the API server
		// refuses. Retrying cannot help until the spec changes, which
		// brings the cluster back here; the status and an Event say why.
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "SpecRefused", "Apply", "%v", err)
		return nil, err, nil
	case err != nil:
		return nil, nil, err
	}
	return sts, nil, nil
}

// ensureCertificates issues and renews the cluster's certificates, puts
// them in c's status, and says so with an Event. A failure is reported
// and blocks nothing: the instances go on with the certificates they have.
func (r *Reconciler) ensureCertificates(ctx context.Context, c *holdfastv1.PostgresCluster) {
	if r.Certificates == nil {
		return
	}
	issued, err := r.Certificates.Ensure(ctx, c, time.Now())
	if err != nil {
		r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, "CertificateError", "Certificates", "%v", err)
		return
	}
	before := c.Status.Certificates
	c.Status.Certificates = nil
	for _, is := range issued {
		c.Status.Certificates = append(c.Status.Certificates, certificateStatus(is))
		if is.Problem != "" && !slices.ContainsFunc(before, func(s holdfastv1.CertificateStatus) bool { return s.Problem == is.Problem }) {
			r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, ReasonInvalidCertificate, "Certificates",
				"%s; the cluster goes on with the last good certificate", is.Problem)
		}
		if is.Reason != "" {
			r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, "CertificateIssued", "Certificates",
				"Secret %s: serial %s, valid until %s, to be renewed from %s; issued because %s", is.Secret, is.Serial,
				is.NotAfter.UTC().Format(time.RFC3339), is.RenewAt.UTC().Format(time.RFC3339), is.Reason)
		}
	}
}

// ReasonInvalidCertificate: the user's certificate (spec.certificates)
// cannot be used, and the last good one stays in force.
const ReasonInvalidCertificate = "InvalidCertificate"

func certificateStatus(is certificates.Issued) holdfastv1.CertificateStatus {
	st := holdfastv1.CertificateStatus{Secret: is.Secret, Serial: is.Serial, Issuer: is.Issuer, Problem: is.Problem}
	at := func(t time.Time) *metav1.Time {
		if t.IsZero() {
			return nil
		}
		return &metav1.Time{Time: t.Truncate(time.Second)}
	}
	st.NotAfter, st.RenewAt = at(is.NotAfter), at(is.RenewAt)
	return st
}

// templateRevision is the revision of the StatefulSet's current pod
// template, "" while the StatefulSet controller has not caught up with it.
func templateRevision(sts *appsv1.StatefulSet) string {
	if sts == nil || sts.Status.ObservedGeneration < sts.Generation {
		return ""
	}
	return sts.Status.UpdateRevision
}

func anyPodAddressed(pods []corev1.Pod) bool {
	for _, p := range pods {
		if p.Status.PodIP != "" {
			return true
		}
	}
	return false
}

// ensureSecrets creates the credential Secrets that are missing. An existing
// Secret is never rewritten: its password is the one in the database.
func (r *Reconciler) ensureSecrets(ctx context.Context, c *holdfastv1.PostgresCluster) error {
	var creds resources.Credentials
	for _, p := range []*string{&creds.Superuser, &creds.App, &creds.Replication} {
		pw, err := credentials.Password()
		if err != nil {
			return err
		}
		*p = pw
	}
	for _, s := range resources.Secrets(c, creds) {
		err := r.Client.Get(ctx, client.ObjectKeyFromObject(s), &corev1.Secret{})
		if err == nil {
			continue
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Secret %s: %w", s.Name, err)
		}
		if err := controllerutil.SetControllerReference(c, s, r.Client.Scheme()); err != nil {
			return fmt.Errorf("setting owner of Secret %s: %w", s.Name, err)
		}
		if err := r.Client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Secret %s: %w", s.Name, err)
		}
		r.Recorder.Eventf(c, s, corev1.EventTypeNormal, "Created", "Create", "created Secret %s", s.Name)
	}
	return nil
}

// ensureObjects applies everything but the Secrets, and returns the live StatefulSet.
func (r *Reconciler) ensureObjects(ctx context.Context, c *holdfastv1.PostgresCluster) (*appsv1.StatefulSet, error) {
	live, err := r.liveStatefulSet(ctx, c)
	if err != nil {
		return nil, err
	}
	sts := resources.StatefulSet(c, r.Options)
	sts.Spec.Replicas = ptr.To(podsToKeep(c))
	if live != nil {
		// Claim templates cannot change once the StatefulSet exists; growing
		// storage resizes the claims themselves (tendClaims).
		keepClaimSize(sts, live)
	}
	sa, role, binding := resources.InstanceAccess(c)
	objs := []client.Object{resources.ConfigMap(c), resources.PodDisruptionBudget(c), binding}
	for _, s := range resources.Services(c) {
		objs = append(objs, s)
	}
	objs = append(objs, sts)

	applier := apply.Applier{Client: r.Client, FieldOwner: FieldOwner}
	// The Role goes first: the API server checks a RoleBinding against the
	// Role it names, even in a dry run.
	changes, err := applier.Ensure(ctx, c, sa, role)
	if err != nil {
		return nil, err
	}
	more, err := applier.Ensure(ctx, c, objs...)
	if err != nil {
		return nil, err
	}
	changes = append(changes, more...)
	for _, ch := range changes {
		kind := ch.Object.GetObjectKind().GroupVersionKind().Kind
		r.Recorder.Eventf(c, ch.Object, corev1.EventTypeNormal, string(ch.Result), "Apply", "%s %s %s", ch.Result, kind, ch.Object.GetName())
		log.FromContext(ctx).Info("applied", "kind", kind, "name", ch.Object.GetName(), "result", ch.Result)
	}
	// nil when just created: the cache has not seen it yet.
	return r.liveStatefulSet(ctx, c)
}

func keepClaimSize(desired, live *appsv1.StatefulSet) {
	for i := range desired.Spec.VolumeClaimTemplates {
		for _, l := range live.Spec.VolumeClaimTemplates {
			if l.Name == desired.Spec.VolumeClaimTemplates[i].Name {
				desired.Spec.VolumeClaimTemplates[i].Spec.Resources = l.Spec.Resources
			}
		}
	}
}

// updateStatus writes the status only when it differs from stored.
func (r *Reconciler) updateStatus(ctx context.Context, c *holdfastv1.PostgresCluster, stored holdfastv1.PostgresClusterStatus,
	sts *appsv1.StatefulSet, pods []corev1.Pod, reports map[string]*instanceapi.Report, claims []corev1.PersistentVolumeClaim, refused error) error {
	st := computeStatus(c, sts, pods, reports, refused)
	noteUnanswered(&st, c, pods, reports, &r.answers, time.Now())
	if refused == nil {
		observeVolumes(&st, c, claims, reports, time.Now())
	}
	if err := r.noteLastBackup(ctx, c, &st); err != nil {
		return err
	}
	observeData(&st, c, reports)
	now := time.Now()
	if !statusDue(st, stored, now) {
		return nil
	}
	st.PositionsObservedAt = &metav1.Time{Time: now}
	before := stored.Phase
	c.Status = st
	if err := r.Client.Status().Update(ctx, c); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	r.announceData(c, &stored, &st)
	r.announceVolumes(c, &stored, &st)
	if st.Phase != before {
		kind, why := corev1.EventTypeNormal, ""
		if st.Phase == holdfastv1.PhaseDegraded {
			kind = corev1.EventTypeWarning
			// The Event outlives the condition: it says why.
			if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); d != nil {
				why = fmt.Sprintf(" (%s: %s)", d.Reason, d.Message)
			}
		}
		r.Recorder.Eventf(c, nil, kind, "Phase"+string(st.Phase), "Observe", "cluster is %s%s", st.Phase, why)
	}
	return nil
}

// statusDue says whether st must be written over stored. The instances'
// WAL positions and lag move with every write, and a busy cluster must not
// rewrite its status every second for them alone: they are written with
// anything else that changes, and on their own once positionsRefresh has
// passed since they were observed, so that they are never older than that.
// The time is kept in the status, not in this process: any operator, a
// restarted one too, judges alike. st carries stored's time over, so the
// two are equal exactly when nothing, positions included, moved.
func statusDue(st, stored holdfastv1.PostgresClusterStatus, now time.Time) bool {
	switch {
	case !equality.Semantic.DeepEqual(withoutPositions(st), withoutPositions(stored)):
		return true
	case equality.Semantic.DeepEqual(st, stored):
		return false
	}
	return stored.PositionsObservedAt == nil || now.Sub(stored.PositionsObservedAt.Time) >= positionsRefresh
}

// positionsRefresh bounds how stale the positions in status are.
const positionsRefresh = 10 * time.Second

func withoutPositions(st holdfastv1.PostgresClusterStatus) holdfastv1.PostgresClusterStatus {
	st = *st.DeepCopy()
	st.PositionsObservedAt = nil
	st.MaxLagBytes = 0
	for i := range st.Instances {
		st.Instances[i].CurrentLSN, st.Instances[i].ReceivedLSN, st.Instances[i].ReplayedLSN, st.Instances[i].LagBytes = "", "", "", 0
		if v := st.Instances[i].Volume; v != nil {
			// Usage moves with every write, as positions do; its percentage
			// is written at once when it crosses a whole step of ten.
			v.UsedBytes, v.AvailableBytes, v.UsedPercent = 0, 0, v.UsedPercent/10
		}
	}
	return st
}
