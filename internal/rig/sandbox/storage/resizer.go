package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// The Event reasons and source of the CSI external-resizer, which tools
// and people look for.
const (
	reasonResizing      = "Resizing"
	reasonResizeFailed  = "VolumeResizeFailed"
	reasonResizeSucceed = "VolumeResizeSuccessful"
	resizerComponent    = "external-resizer " + DriverName
)

// resizeResync sends every claim to the resizer again now and then, a
// safety net under the retries of failed resizes.
const resizeResync = 10 * time.Minute

// resizeConditions are the claim conditions that a resize sets; they are
// replaced together, and other conditions are left as they are.
var resizeConditions = []corev1.PersistentVolumeClaimConditionType{
	corev1.PersistentVolumeClaimResizing,
	corev1.PersistentVolumeClaimFileSystemResizePending,
	corev1.PersistentVolumeClaimControllerResizeError,
	corev1.PersistentVolumeClaimNodeResizeError,
}

// resizer grows the provisioner's volumes when their claims ask for more.
// kube-controller-manager leaves the expansion of CSI volumes to the CSI
// external-resizer, which calls the driver's ControllerExpandVolume; the
// sandbox runs neither, so the resizer does both, and writes the claim's
// status as the external-resizer does with RecoverVolumeExpansionFailure:
// allocatedResources, allocatedResourceStatuses and the resize conditions.
// The volume grows online, so no node-side expansion follows.
type resizer struct {
	client   kubernetes.Interface
	root     string
	recorder record.EventRecorder
}

// runResizer grows volumes under root until ctx ends.
func runResizer(ctx context.Context, cs kubernetes.Interface, root string) {
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events(metav1.NamespaceAll)})
	r := resizer{client: cs, root: root, recorder: events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: resizerComponent})}
	r.run(ctx)
}

// run watches claims and grows the volumes of those that ask for more,
// retrying failures with a growing delay, until ctx ends.
func (r resizer) run(ctx context.Context) {
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "sandbox-resizer"})
	factory := informers.NewSharedInformerFactory(r.client, resizeResync)
	defer factory.Shutdown()
	enqueue := func(obj any) {
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok && wantsGrowth(pvc) {
			queue.Add(pvc.Namespace + "/" + pvc.Name)
		}
	}
	_, err := factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	if err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Watching claims to resize")
		return
	}
	factory.Start(ctx.Done())
	var wg sync.WaitGroup
	wg.Go(func() {
		for r.next(ctx, queue) {
		}
	})
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
}

// next reconciles the next claim in the queue; false once the queue is shut down.
func (r resizer) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	if err := r.reconcile(ctx, key); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Resizing a claim's volume", "claim", key)
		queue.AddRateLimited(key)
		return true
	}
	queue.Forget(key)
	return true
}

// wantsGrowth says whether a bound claim asks for more than it has.
func wantsGrowth(pvc *corev1.PersistentVolumeClaim) bool {
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	capacity := pvc.Status.Capacity[corev1.ResourceStorage]
	return pvc.Status.Phase == corev1.ClaimBound && pvc.Spec.VolumeName != "" && request.Cmp(capacity) > 0
}

// reconcile grows the volume of the claim that key ("namespace/name")
// names, when the claim asks for more than it has.
func (r resizer) reconcile(ctx context.Context, key string) error {
	pvc, pv, err := r.claimToGrow(ctx, key)
	if err != nil || pvc == nil {
		return err
	}
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	size := grownSize(request)
	dir, err := volumeFolder(r.root, pv)
	if err != nil {
		return r.fail(ctx, pvc, pv.Name, request, &infeasibleError{err.Error()})
	}
	v := volumeOf(r.root, filepath.Base(dir))
	// Refused before the claim says it is resizing, so that a request
	// refused again on each retry leaves the claim's status as it was.
	if err := v.canGrow(imageBytes(size)); err != nil {
		return r.fail(ctx, pvc, pv.Name, request, err)
	}
	if pvc, err = r.markResizing(ctx, pvc, request); err != nil {
		return err
	}
	r.recorder.Eventf(pvc, corev1.EventTypeNormal, reasonResizing, "Growing volume %s to %s", pv.Name, size.String())
	if err := v.grow(ctx, imageBytes(size)); err != nil {
		return r.fail(ctx, pvc, pv.Name, request, err)
	}
	return r.finish(ctx, pvc, pv.Name, size)
}

// claimToGrow reads the claim that key names and its PV, or returns a nil
// claim when there is nothing to grow: the claim is gone, unbound, asks for
// no more than it has, or its volume is not one of the provisioner's.
func (r resizer) claimToGrow(ctx context.Context, key string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, nil, err
	}
	pvc, err := r.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading claim %s: %w", key, err)
	}
	if !wantsGrowth(pvc) {
		return nil, nil, nil
	}
	pv, err := r.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading volume %s of claim %s: %w", pvc.Spec.VolumeName, key, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName {
		return nil, nil, nil
	}
	// A PV bound to another claim of the same name is not this claim's.
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name || ref.UID != pvc.UID {
		return nil, nil, nil
	}
	return pvc, pv, nil
}

// markResizing says on the claim that its volume is growing to request.
func (r resizer) markResizing(ctx context.Context, pvc *corev1.PersistentVolumeClaim, request resource.Quantity) (*corev1.PersistentVolumeClaim, error) {
	next := pvc.DeepCopy()
	next.Status.Conditions = withResizeCondition(next.Status.Conditions, &corev1.PersistentVolumeClaimCondition{
		Type: corev1.PersistentVolumeClaimResizing, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(),
	})
	setAllocated(next, request, corev1.PersistentVolumeClaimControllerResizeInProgress)
	return r.updateStatus(ctx, next)
}

// fail records why a volume did not grow: a Warning Event, the claim's
// ControllerResizeError condition, and ControllerResizeInfeasible when
// asking again for the same cannot help. A failure that the claim already
// shows (an infeasible request retried) is not recorded again. It returns
// the failure, for the queue to retry.
func (r resizer) fail(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pvName string, request resource.Quantity, cause error) error {
	size := grownSize(request)
	msg := fmt.Sprintf("growing volume %s to %s: %v", pvName, size.String(), cause)
	failure := fmt.Errorf("claim %s/%s: %s", pvc.Namespace, pvc.Name, msg)
	next := pvc.DeepCopy()
	next.Status.Conditions = withResizeCondition(next.Status.Conditions, &corev1.PersistentVolumeClaimCondition{
		Type: corev1.PersistentVolumeClaimControllerResizeError, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(), Message: msg,
	})
	// Other failures leave the status as it was: the resize is still to be done.
	var infeasible *infeasibleError
	status := pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
	if errors.As(cause, &infeasible) {
		status = corev1.PersistentVolumeClaimControllerResizeInfeasible
	}
	setAllocated(next, request, status)
	if sameResizeState(pvc, next) {
		return failure
	}
	r.recorder.Event(pvc, corev1.EventTypeWarning, reasonResizeFailed, msg)
	if _, err := r.updateStatus(ctx, next); err != nil {
		return errors.Join(failure, err)
	}
	return failure
}

// finish records the grown volume: the PV's capacity first, then the
// claim's, as the external-resizer does, so that a claim never shows more
// than its PV has.
func (r resizer) finish(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pvName string, size resource.Quantity) error {
	if err := r.setCapacity(ctx, pvName, size); err != nil {
		return err
	}
	next := pvc.DeepCopy()
	if next.Status.Capacity == nil {
		next.Status.Capacity = corev1.ResourceList{}
	}
	next.Status.Capacity[corev1.ResourceStorage] = size
	next.Status.Conditions = withResizeCondition(next.Status.Conditions, nil)
	delete(next.Status.AllocatedResourceStatuses, corev1.ResourceStorage)
	if len(next.Status.AllocatedResourceStatuses) == 0 {
		next.Status.AllocatedResourceStatuses = nil
	}
	if _, err := r.updateStatus(ctx, next); err != nil {
		return err
	}
	r.recorder.Eventf(pvc, corev1.EventTypeNormal, reasonResizeSucceed, "Volume %s grew to %s", pvName, size.String())
	return nil
}

// setCapacity raises a PV's capacity to size. The PV controller writes to
// PVs too, so a conflict is read again rather than failed on.
func (r resizer) setCapacity(ctx context.Context, pvName string, size resource.Quantity) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pv, err := r.client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if capacity := pv.Spec.Capacity[corev1.ResourceStorage]; capacity.Cmp(size) >= 0 {
			return nil
		}
		if pv.Spec.Capacity == nil {
			pv.Spec.Capacity = corev1.ResourceList{}
		}
		pv.Spec.Capacity[corev1.ResourceStorage] = size
		_, err = r.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting the capacity of volume %s to %s: %w", pvName, size.String(), err)
	}
	return nil
}

func (r resizer) updateStatus(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (*corev1.PersistentVolumeClaim, error) {
	out, err := r.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("updating the status of claim %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	return out, nil
}

// withResizeCondition replaces the resize conditions with c, or with none
// when c is nil.
func withResizeCondition(conds []corev1.PersistentVolumeClaimCondition, c *corev1.PersistentVolumeClaimCondition) []corev1.PersistentVolumeClaimCondition {
	out := slices.DeleteFunc(slices.Clone(conds), func(c corev1.PersistentVolumeClaimCondition) bool {
		return slices.Contains(resizeConditions, c.Type)
	})
	if c != nil {
		out = append(out, *c)
	}
	return out
}

// setAllocated records the size a resize is for and how it stands; an
// empty status leaves the standing as it was.
func setAllocated(pvc *corev1.PersistentVolumeClaim, request resource.Quantity, status corev1.ClaimResourceStatus) {
	if pvc.Status.AllocatedResources == nil {
		pvc.Status.AllocatedResources = corev1.ResourceList{}
	}
	pvc.Status.AllocatedResources[corev1.ResourceStorage] = request
	if status == "" {
		return
	}
	if pvc.Status.AllocatedResourceStatuses == nil {
		pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{}
	}
	pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] = status
}

// sameResizeState says whether two claims show a resize the same way,
// whatever their conditions' times and messages: a message that names the
// disk's free space changes with every retry.
func sameResizeState(a, b *corev1.PersistentVolumeClaim) bool {
	types := func(pvc *corev1.PersistentVolumeClaim) []corev1.PersistentVolumeClaimConditionType {
		var out []corev1.PersistentVolumeClaimConditionType
		for _, c := range pvc.Status.Conditions {
			out = append(out, c.Type)
		}
		return out
	}
	return slices.Equal(types(a), types(b)) &&
		apiequality.Semantic.DeepEqual(a.Status.AllocatedResources, b.Status.AllocatedResources) &&
		apiequality.Semantic.DeepEqual(a.Status.AllocatedResourceStatuses, b.Status.AllocatedResourceStatuses)
}
