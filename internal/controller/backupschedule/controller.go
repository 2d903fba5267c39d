// Package backupschedule reconciles BackupSchedules: it keeps the CronJob
// that takes the backups, and prunes the schedule's backups by its
// retention.
package backupschedule

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/apply"
	"holdfast.dev/holdfast/internal/resources"
)

// Reconciler reconciles BackupSchedules.
type Reconciler struct {
	Client     client.Client
	Recorder   events.EventRecorder
	Options    resources.Options
	FieldOwner string
}

// pruneEvery bounds how late a backup past its maxAge is pruned.
const pruneEvery = time.Minute

// +kubebuilder:rbac:groups=holdfast.dev,resources=backupschedules,verbs=get;list;watch
// +kubebuilder:rbac:groups=holdfast.dev,resources=backupschedules/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=holdfast.dev,resources=backups,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=batch,resources=cronjobs,verbs=get;list;watch;create;patch

// SetupWithManager registers the reconciler; a Backup that changes brings
// its schedule back, so retention acts as soon as a backup completes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&holdfastv1.BackupSchedule{}).
		Owns(&batchv1.CronJob{}).
		Watches(&holdfastv1.Backup{}, handler.EnqueueRequestsFromMapFunc(toSchedule)).
		Complete(r)
}

func toSchedule(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetLabels()[resources.LabelBackupSchedule]
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: name}}}
}

// Reconcile keeps the CronJob in the shape of the schedule and prunes.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var s holdfastv1.BackupSchedule
	if err := r.Client.Get(ctx, req.NamespacedName, &s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if s.DeletionTimestamp != nil {
		return ctrl.Result{}, nil // the CronJob goes with it; its Backups stay
	}
	st := *s.Status.DeepCopy()
	st.ObservedGeneration = s.Generation

	applier := apply.Applier{Client: r.Client, FieldOwner: r.FieldOwner}
	sa, role, binding := resources.ScheduleAccess(&s)
	cron := resources.ScheduleCronJob(&s, r.Options)
	_, err := applier.Ensure(ctx, &s, sa, role)
	if err == nil {
		_, err = applier.Ensure(ctx, &s, binding, cron)
	}
	switch {
	case apply.Refused(err):
		// A schedule or time zone the CRD's checks let through but the
		// CronJob's validation refuses: only a change of spec cures it.
		setReady(&st, s.Generation, false, "CronJobRefused", err.Error())
		r.Recorder.Eventf(&s, nil, corev1.EventTypeWarning, "CronJobRefused", "Apply", "%v", err)
	case err != nil:
		return ctrl.Result{}, err
	default:
		st.CronJob = cron.Name
		setReady(&st, s.Generation, true, "Scheduled", fmt.Sprintf("CronJob %s takes the backups", cron.Name))
	}

	if _, err := s.Spec.Retention.MaxAge.Duration(); s.Spec.Retention.MaxAge != "" && err != nil {
		setReady(&st, s.Generation, false, "RetentionRefused", "spec.retention.maxAge: "+err.Error()+"; nothing is pruned until it is fixed")
	}

	backups, err := r.backups(ctx, &s)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, b := range backups {
		if st.LastBackup == "" || newer(b, backups, st.LastBackup) {
			st.LastBackup = b.Name
		}
	}
	keep, prune := retain(backups, s.Spec.Retention, time.Now())
	for _, b := range prune {
		if err := r.Client.Delete(ctx, &b); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("pruning Backup %s: %w", b.Name, err)
		}
		st.Pruned++
		r.Recorder.Eventf(&s, &b, corev1.EventTypeNormal, "Pruned", "Retention", "deleted Backup %s (%s), past the retention", b.Name, b.Status.Phase)
	}
	for _, b := range keep {
		if b.Status.Phase == holdfastv1.BackupCompleted {
			st.LastCompleted = b.Name
			break
		}
	}

	if !equality.Semantic.DeepEqual(st, s.Status) {
		// A patch, not an update: a conflict would lose the count of the
		// backups just pruned, which the next look no longer sees.
		patch := client.MergeFrom(s.DeepCopy())
		s.Status = st
		if err := r.Client.Status().Patch(ctx, &s, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("updating status: %w", err)
		}
	}
	return ctrl.Result{RequeueAfter: pruneEvery}, nil
}

// backups lists the schedule's Backups, newest first.
func (r *Reconciler) backups(ctx context.Context, s *holdfastv1.BackupSchedule) ([]holdfastv1.Backup, error) {
	var list holdfastv1.BackupList
	if err := r.Client.List(ctx, &list, client.InNamespace(s.Namespace),
		client.MatchingLabels{resources.LabelBackupSchedule: s.Name}); err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	items := list.Items
	slices.SortFunc(items, func(a, b holdfastv1.Backup) int {
		return b.CreationTimestamp.Compare(a.CreationTimestamp.Time)
	})
	return items, nil
}

func newer(b holdfastv1.Backup, all []holdfastv1.Backup, than string) bool {
	for _, o := range all {
		if o.Name == than {
			return b.CreationTimestamp.After(o.CreationTimestamp.Time)
		}
	}
	return true
}

// retain splits a schedule's backups, newest first, into those kept and
// those pruned. Running and pending backups are never pruned. Finished
// ones are ranked together, failed or not: one is kept while it is among
// the newest keepLast and younger than maxAge. The newest completed
// backup is always kept, whatever its age, so that retention never leaves
// a cluster with nothing to restore.
//
// A maxAge that does not read prunes nothing: the schema refuses one, so
// it can only be an object stored before that rule, and Reconcile says so.
func retain(backups []holdfastv1.Backup, r holdfastv1.RetentionSpec, now time.Time) (keep, prune []holdfastv1.Backup) {
	maxAge := time.Duration(math.MaxInt64)
	if r.MaxAge != "" {
		d, err := r.MaxAge.Duration()
		if err != nil {
			return backups, nil
		}
		maxAge = d
	}
	if r.KeepLast == nil && r.MaxAge == "" {
		return backups, nil
	}
	newestCompleted := ""
	for _, b := range backups {
		if b.Status.Phase == holdfastv1.BackupCompleted {
			newestCompleted = b.Name
			break
		}
	}
	rank := 0
	for _, b := range backups {
		if !b.Done() || b.DeletionTimestamp != nil {
			keep = append(keep, b)
			continue
		}
		ok := (r.KeepLast == nil || rank < int(*r.KeepLast)) &&
			now.Sub(b.CreationTimestamp.Time) < maxAge
		rank++
		if ok || b.Name == newestCompleted {
			keep = append(keep, b)
		} else {
			prune = append(prune, b)
		}
	}
	return keep, prune
}

func setReady(st *holdfastv1.BackupScheduleStatus, gen int64, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: holdfastv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	})
}
