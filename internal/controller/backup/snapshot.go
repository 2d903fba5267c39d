package backup

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshots,verbs=get;list;watch;create;delete

// noSpareReplica says why the cluster cannot spare a replica for a
// snapshot, or "".
func noSpareReplica(c *holdfastv1.PostgresCluster) string {
	spare := int(c.Spec.Instances) - 2 // standbys left while one is stopped
	if c.Spec.Synchronous != nil && spare < int(c.Spec.Synchronous.Quorum) || c.Spec.Instances < 2 {
		return fmt.Sprintf("a volumeSnapshot backup stops a replica while its volume is copied; cluster %s has %d instances and a synchronous quorum of %d, so stopping one would stop writes (or there is no replica): use logical or pgbackrest",
			c.Name, c.Spec.Instances, quorum(c))
	}
	return ""
}

// snapshotStart picks a ready replica, records the backup as Running on
// it, and asks the cluster to fence it. A cold snapshot of a stopped
// replica is consistent by itself; the primary is never stopped.
func (r *Reconciler) snapshotStart(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (ctrl.Result, error) {
	target := pickInstance(c, holdfastv1.TargetPreferStandby)
	if target == "" || target == c.Status.CurrentPrimary {
		return r.pending(ctx, b, "no replica of the cluster is ready to be stopped for a snapshot")
	}
	now := metav1.Now()
	b.Status.Phase, b.Status.Instance, b.Status.StartedAt = holdfastv1.BackupRunning, target, &now
	b.Status.Reason, b.Status.Message = "", "stopping "+target+" for the snapshot"
	b.Status.VolumeSnapshot = b.Name
	if err := r.Client.Status().Update(ctx, b); err != nil {
		return ctrl.Result{}, fmt.Errorf("recording the start of the backup: %w", err)
	}
	r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "Started", "Backup", "stopping replica %s of %s for a VolumeSnapshot of its volume", target, c.Name)
	if err := r.setFence(ctx, b, true); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: pollRunning}, nil
}

func parseQuantity(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, err
	}
	return q.Value(), nil
}

func quorum(c *holdfastv1.PostgresCluster) int32 {
	if c.Spec.Synchronous == nil {
		return 0
	}
	return c.Spec.Synchronous.Quorum
}

// snapshotFollow snapshots the replica's claim once it has stopped, waits
// for the snapshot to be ready, and lets the replica go back.
func (r *Reconciler) snapshotFollow(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (ctrl.Result, error) {
	if expired(b, b.Status.StartedAt.Time) {
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonDeadlineExceeded,
			fmt.Sprintf("the snapshot was not ready within %ds; last seen: %s", b.Spec.DeadlineSeconds, orNothing(b.Status.Message)))
	}
	snap := &unstructured.Unstructured{}
	snap.SetGroupVersionKind(resources.VolumeSnapshotGVK)
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.VolumeSnapshot}, snap)
	switch {
	case apierrors.IsNotFound(err):
		held, why, err := r.fenceHeld(ctx, b, c)
		switch {
		case err != nil:
			return ctrl.Result{}, err
		case why != "":
			return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonBackupError, why)
		case !held:
			return r.note(ctx, b, fenceProgress(b, c))
		}
		return r.createSnapshot(ctx, b, c)
	case err != nil:
		return r.note(ctx, b, fmt.Sprintf("reading VolumeSnapshot %s: %v", b.Status.VolumeSnapshot, err))
	}
	if msg, found, _ := unstructured.NestedString(snap.Object, "status", "error", "message"); found && msg != "" {
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonBackupError, "VolumeSnapshot "+snap.GetName()+": "+msg)
	}
	// The copy is only as good as the fence that held while it was made.
	if _, why, err := r.fenceHeld(ctx, b, c); err != nil || why != "" {
		if err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonBackupError, why+", before VolumeSnapshot "+snap.GetName()+" was ready")
	}
	if ready, _, _ := unstructured.NestedBool(snap.Object, "status", "readyToUse"); !ready {
		return r.note(ctx, b, "waiting for VolumeSnapshot "+snap.GetName()+" to be ready")
	}
	if err := r.setFence(ctx, b, false); err != nil {
		return ctrl.Result{}, err
	}
	size, _, _ := unstructured.NestedString(snap.Object, "status", "restoreSize")
	now := metav1.Now()
	b.Status.Phase, b.Status.Message, b.Status.StoppedAt = holdfastv1.BackupCompleted, "", &now
	if q, err := parseQuantity(size); err == nil {
		b.Status.SizeBytes = q
	}
	if err := r.Client.Status().Update(ctx, b); err != nil {
		return ctrl.Result{}, fmt.Errorf("recording the backup's completion: %w", err)
	}
	r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "Completed", "Backup", "VolumeSnapshot %s of %s is ready (%s); the replica is back in %s",
		snap.GetName(), b.Status.Instance, size, now.Sub(b.Status.StartedAt.Time).Round(time.Millisecond))
	return ctrl.Result{}, nil
}

// fenceRequest is the value of the cluster's fence-for-backup annotation
// that asks for b's replica.
func fenceRequest(b *holdfastv1.Backup) string { return b.Status.Instance + "@" + b.Name }

// fenceHeld reads the cluster's operation record: held when its Fence for
// b has the replica stopped; why says the fence ended without the Backup
// (a failover preempted it, or it failed); it (re)asks for a fence not
// yet recorded.
func (r *Reconciler) fenceHeld(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (held bool, why string, err error) {
	request := fenceRequest(b)
	if op := c.Status.Operation; op != nil && op.Kind == holdfastv1.OperationFence && op.Request == request {
		return op.Phase == holdfastv1.PhaseFenced, "", nil
	}
	for _, rec := range c.Status.History {
		if rec.Kind == holdfastv1.OperationFence && rec.Request == request {
			return false, fmt.Sprintf("the fence of %s ended %s: %s", b.Status.Instance, rec.Outcome, rec.Reason), nil
		}
	}
	if c.Status.CurrentPrimary == b.Status.Instance {
		return false, b.Status.Instance + " has become the primary, which is never stopped for a snapshot", nil
	}
	return false, "", r.setFence(ctx, b, true)
}

// fenceProgress says what the backup waits for until its replica is fenced.
func fenceProgress(b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) string {
	if op := c.Status.Operation; op != nil {
		if op.Kind == holdfastv1.OperationFence && op.Request == fenceRequest(b) {
			return "waiting for " + b.Status.Instance + " to stop cleanly"
		}
		return fmt.Sprintf("waiting for the cluster's %s (%s) to end before %s is fenced", op.Kind, op.Phase, b.Status.Instance)
	}
	if c.Annotations[holdfastv1.AnnotationFenceForBackup] != fenceRequest(b) {
		return "waiting for backup " + c.Annotations[holdfastv1.AnnotationFenceForBackup] + "'s fence to be released"
	}
	return "waiting for every instance to be ready before " + b.Status.Instance + " is fenced"
}

func (r *Reconciler) createSnapshot(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (ctrl.Result, error) {
	snap := &unstructured.Unstructured{}
	snap.SetGroupVersionKind(resources.VolumeSnapshotGVK)
	snap.SetNamespace(b.Namespace)
	snap.SetName(b.Status.VolumeSnapshot)
	snap.SetLabels(map[string]string{resources.LabelCluster: c.Name, resources.LabelManagedBy: resources.ManagedBy})
	spec := map[string]any{"source": map[string]any{"persistentVolumeClaimName": resources.ClaimName(c, resources.Ordinal(b.Status.Instance))}}
	if vs := b.Spec.VolumeSnapshot; vs != nil && vs.ClassName != "" {
		spec["volumeSnapshotClassName"] = vs.ClassName
	}
	snap.Object["spec"] = spec
	// The Backup owns it: deleting the Backup deletes the snapshot.
	if err := controllerutil.SetControllerReference(b, snap, r.Client.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Client.Create(ctx, snap); err != nil && !apierrors.IsAlreadyExists(err) {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonMethodNotServed,
				"this cluster serves no VolumeSnapshots (snapshot.storage.k8s.io/v1 is not installed)")
		}
		return r.note(ctx, b, fmt.Sprintf("creating VolumeSnapshot %s: %v", snap.GetName(), err))
	}
	return r.note(ctx, b, "waiting for VolumeSnapshot "+snap.GetName()+" to be ready")
}

// setFence asks the cluster to fence the backup's replica, or withdraws
// the request. Only one fence is asked at a time: another backup's
// request is left alone, and this one waits for it. Withdrawing is
// idempotent.
func (r *Reconciler) setFence(ctx context.Context, b *holdfastv1.Backup, on bool) error {
	var c holdfastv1.PostgresCluster
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Cluster.Name}, &c)
	if apierrors.IsNotFound(err) && !on {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading cluster %s: %w", b.Spec.Cluster.Name, err)
	}
	have, want := c.Annotations[holdfastv1.AnnotationFenceForBackup], fenceRequest(b)
	if on && have != "" || !on && have != want {
		return nil
	}
	// Optimistic: of two backups asking at once, one gets the fence.
	patch := client.MergeFromWithOptions(c.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if on {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[holdfastv1.AnnotationFenceForBackup] = want
	} else {
		delete(c.Annotations, holdfastv1.AnnotationFenceForBackup)
	}
	if err := r.Client.Patch(ctx, &c, patch); err != nil {
		return fmt.Errorf("asking cluster %s to fence %s for the snapshot (%v): %w", c.Name, b.Status.Instance, on, err)
	}
	return nil
}
