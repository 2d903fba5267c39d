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
	"holdfast.dev/holdfast/internal/controller/instances"
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
// it, and has it fenced. A cold snapshot of a stopped replica is consistent
// by itself; the primary is never stopped.
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
		stopped, why := r.replicaStopped(ctx, b, c)
		if !stopped {
			return r.note(ctx, b, why)
		}
		return r.createSnapshot(ctx, b, c)
	case err != nil:
		return r.note(ctx, b, fmt.Sprintf("reading VolumeSnapshot %s: %v", b.Status.VolumeSnapshot, err))
	}
	if msg, found, _ := unstructured.NestedString(snap.Object, "status", "error", "message"); found && msg != "" {
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonBackupError, "VolumeSnapshot "+snap.GetName()+": "+msg)
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

// replicaStopped asks the replica's instance manager whether postgres is
// fenced and down: only then is its volume consistent.
func (r *Reconciler) replicaStopped(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (bool, string) {
	var pod corev1.Pod
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.Instance}, &pod); err != nil || pod.Status.PodIP == "" {
		return false, "waiting for " + b.Status.Instance + " to run"
	}
	if pod.Annotations[holdfastv1.AnnotationFencedFor] != b.Name {
		if err := r.setFence(ctx, b, true); err != nil {
			return false, err.Error()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rep, err := r.Instances.Status(cctx, instances.URL(&pod))
	if err != nil {
		return false, fmt.Sprintf("asking %s whether it stopped: %v", pod.Name, err)
	}
	if !rep.Fenced || rep.Running {
		return false, "waiting for " + pod.Name + " to stop cleanly"
	}
	if c.Status.CurrentPrimary == pod.Name {
		return false, pod.Name + " has become the primary; it is not stopped for a snapshot"
	}
	return true, ""
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

// setFence sets or removes the annotation that has the backup's replica
// stopped. Removing it is idempotent and leaves another backup's alone.
func (r *Reconciler) setFence(ctx context.Context, b *holdfastv1.Backup, on bool) error {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.Instance}, &pod)
	if apierrors.IsNotFound(err) && !on {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading pod %s: %w", b.Status.Instance, err)
	}
	have := pod.Annotations[holdfastv1.AnnotationFencedFor]
	if on == (have == b.Name) || (!on && have != b.Name) {
		return nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	if on {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[holdfastv1.AnnotationFencedFor] = b.Name
	} else {
		delete(pod.Annotations, holdfastv1.AnnotationFencedFor)
	}
	if err := r.Client.Patch(ctx, &pod, patch); err != nil {
		return fmt.Errorf("fencing pod %s for the snapshot (%v): %w", pod.Name, on, err)
	}
	return nil
}
