package postgrescluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/resources"
)

const (
	// fullPercent is how full a volume is when, unable to grow, it makes
	// the cluster Degraded: postgres stops on a full WAL volume.
	fullPercent = 95
	// resizeStuckAfter is how long a claim may ask for more than it has
	// before its resize counts as stuck, when nothing says it failed.
	resizeStuckAfter = 2 * time.Minute
	// AnnotationResizeRequested on a claim is when the operator last grew
	// it: a resize that no resizer answers is stuck after resizeStuckAfter
	// from it.
	AnnotationResizeRequested = "holdfast.dev/resize-requested-at"
)

const (
	// ReasonVolumeFull: a volume is fullPercent full and cannot grow.
	ReasonVolumeFull = "VolumeFull"
	// ReasonVolumeResizing: a claim grows.
	ReasonVolumeResizing = "VolumeResizing"
	// ReasonVolumeResizeStuck: a claim's growth failed or is not happening.
	ReasonVolumeResizeStuck = "VolumeResizeStuck"
)

// tendClaims grows the bound data claims to what they should ask for
// (growClaim) and gives the claims as they now are.
func (r *Reconciler) tendClaims(ctx context.Context, c *holdfastv1.PostgresCluster, reports map[string]*instanceapi.Report) ([]corev1.PersistentVolumeClaim, error) {
	var claims corev1.PersistentVolumeClaimList
	if err := r.Client.List(ctx, &claims, client.InNamespace(c.Namespace), client.MatchingLabels(resources.SelectorLabels(c))); err != nil {
		return nil, fmt.Errorf("listing claims: %w", err)
	}
	largest := largestRequest(claims.Items)
	now := time.Now()
	for i := range claims.Items {
		pvc := &claims.Items[i]
		want, why := growClaim(c, pvc, reports[claimInstance(pvc)], largest)
		if why == "" {
			continue
		}
		have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		patch := client.MergeFrom(pvc.DeepCopy())
		pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
		if pvc.Annotations == nil {
			pvc.Annotations = map[string]string{}
		}
		pvc.Annotations[AnnotationResizeRequested] = now.UTC().Format(time.RFC3339)
		if err := r.Client.Patch(ctx, pvc, patch); err != nil {
			return nil, fmt.Errorf("growing claim %s to %s: %w", pvc.Name, want.String(), err)
		}
		r.Recorder.Eventf(c, pvc, corev1.EventTypeNormal, "Resized", "Resize", "claim %s grows from %s to %s: %s", pvc.Name, have.String(), want.String(), why)
	}
	return claims.Items, nil
}

// growClaim says what a claim should grow to and why, or "" when it keeps
// its size. Kubernetes resizes only bound claims; a pending one grows once
// bound, when its change brings the cluster back here. Nothing asks a
// claim to shrink: the CRD refuses a smaller size.
func growClaim(c *holdfastv1.PostgresCluster, pvc *corev1.PersistentVolumeClaim, rep *instanceapi.Report, largest resource.Quantity) (resource.Quantity, string) {
	have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if pvc.Status.Phase != corev1.ClaimBound {
		return have, ""
	}
	if c.Spec.Storage.Size.Cmp(have) > 0 {
		return c.Spec.Storage.Size, "spec.storage.size is " + c.Spec.Storage.Size.String()
	}
	grow := c.Spec.Storage.AutoGrow
	if grow == nil || resizing(pvc) {
		// The next step waits for the last to land: until then the volume
		// looks as full as it did.
		return have, ""
	}
	if largest.Cmp(have) > 0 {
		// Each replica holds what the primary holds: a claim that stayed
		// behind (a new replica's, say) catches up before it fills.
		return largest, "another instance's claim has grown to " + largest.String()
	}
	usage, ok := dataUsage(rep)
	if !ok || usage.UsedPercent() < int(grow.ThresholdPercent) || !usageCurrent(usage, pvc) {
		return have, ""
	}
	next := stepUp(have, grow.Step)
	if next.Cmp(grow.MaxSize) > 0 {
		next = grow.MaxSize.DeepCopy()
	}
	if next.Cmp(have) <= 0 {
		return have, ""
	}
	return next, fmt.Sprintf("its volume is %d%% full (autoGrow grows it at %d%%, by %s, to %s at most)",
		usage.UsedPercent(), grow.ThresholdPercent, grow.Step, grow.MaxSize.String())
}

// stepUp is size grown by step, a quantity or a percentage of size,
// rounded up to a whole MiB.
func stepUp(size resource.Quantity, step string) resource.Quantity {
	var add int64
	if pct, ok := strings.CutSuffix(step, "%"); ok {
		n, _ := strconv.ParseInt(pct, 10, 64) // the CRD admits digits only
		add = (size.Value()*n + 99) / 100
	} else if q, err := resource.ParseQuantity(step); err == nil {
		add = q.Value()
	}
	const mi = 1 << 20
	total := (size.Value() + add + mi - 1) / mi * mi
	return *resource.NewQuantity(total, resource.BinarySI)
}

// usageCurrent: the report's filesystem is as large as the claim's
// capacity says, less what a filesystem keeps for itself. A report read
// just before a resize landed shows the old, smaller filesystem, as full
// as ever, and must not grow the claim again.
func usageCurrent(u instanceapi.VolumeUsage, pvc *corev1.PersistentVolumeClaim) bool {
	capacity, ok := pvc.Status.Capacity[corev1.ResourceStorage]
	return !ok || float64(u.CapacityBytes) >= 0.85*float64(capacity.Value())
}

// resizing: the claim asks for more than it has.
func resizing(pvc *corev1.PersistentVolumeClaim) bool {
	capacity, ok := pvc.Status.Capacity[corev1.ResourceStorage]
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	return ok && request.Cmp(capacity) > 0
}

func largestRequest(claims []corev1.PersistentVolumeClaim) resource.Quantity {
	var largest resource.Quantity
	for i := range claims {
		if q := claims[i].Spec.Resources.Requests[corev1.ResourceStorage]; q.Cmp(largest) > 0 {
			largest = q.DeepCopy()
		}
	}
	return largest
}

// claimInstance is the pod whose data the claim holds.
func claimInstance(pvc *corev1.PersistentVolumeClaim) string {
	return strings.TrimPrefix(pvc.Name, resources.VolumeData+"-")
}

func dataUsage(rep *instanceapi.Report) (instanceapi.VolumeUsage, bool) {
	if rep == nil {
		return instanceapi.VolumeUsage{}, false
	}
	for _, v := range rep.Volumes {
		if v.Name == instanceapi.DataVolume {
			return v, true
		}
	}
	return instanceapi.VolumeUsage{}, false
}

// observeVolumes puts each instance's claim and usage in the status, and
// says in the conditions what the volumes need: a claim that grows keeps
// the cluster Progressing, one whose growth is stuck or a volume full
// with no room to grow makes it Degraded, unless it already is for a
// cause that comes first.
func observeVolumes(st *holdfastv1.PostgresClusterStatus, c *holdfastv1.PostgresCluster, claims []corev1.PersistentVolumeClaim,
	reports map[string]*instanceapi.Report, now time.Time) {
	byInstance := map[string]*corev1.PersistentVolumeClaim{}
	for i := range claims {
		byInstance[claimInstance(&claims[i])] = &claims[i]
	}
	var growing, stuck, full []string
	for i := range st.Instances {
		is := &st.Instances[i]
		pvc := byInstance[is.Name]
		if pvc == nil {
			is.Volume = nil
			continue
		}
		v := &holdfastv1.VolumeStatus{Claim: pvc.Name, Size: pvc.Spec.Resources.Requests[corev1.ResourceStorage]}
		if q, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok {
			v.Capacity = &q
		}
		if u, ok := dataUsage(reports[is.Name]); ok {
			v.UsedBytes, v.AvailableBytes, v.UsedPercent = u.UsedBytes, u.AvailableBytes, int32(u.UsedPercent())
		} else if was := c.Status.Instance(is.Name); was != nil && was.Volume != nil {
			// An instance that did not answer this look keeps its last figures.
			v.UsedBytes, v.AvailableBytes, v.UsedPercent = was.Volume.UsedBytes, was.Volume.AvailableBytes, was.Volume.UsedPercent
		}
		if resizing(pvc) {
			msg, failed := resizeState(pvc, now)
			v.Resizing = msg
			if failed {
				stuck = append(stuck, is.Name+": "+msg)
			} else {
				growing = append(growing, is.Name+": "+msg)
			}
		}
		if v.UsedPercent >= fullPercent && !canGrow(c, pvc) {
			v.Full = true
			full = append(full, fmt.Sprintf("%s: its data volume is %d%% full (%s free) and cannot grow (%s)",
				is.Name, v.UsedPercent, resource.NewQuantity(v.AvailableBytes, resource.BinarySI).String(), whyNoGrowth(c)))
		}
		is.Volume = v
	}

	if len(growing) > 0 && !meta.IsStatusConditionTrue(st.Conditions, holdfastv1.ConditionProgressing) {
		setCondition(st, c, holdfastv1.ConditionProgressing, true, ReasonVolumeResizing, strings.Join(growing, "; "))
		if st.Phase == holdfastv1.PhaseHealthy {
			st.Phase = holdfastv1.PhaseUpdating
		}
	}
	if len(full) > 0 {
		// A full volume comes first: what else fails (postgres cannot write
		// its files) follows from it, and is said after it.
		msg := strings.Join(full, "; ")
		if was := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); was != nil && was.Status == metav1.ConditionTrue && was.Reason != ReasonVolumeFull {
			msg += "; and " + was.Reason + ": " + was.Message
		}
		setCondition(st, c, holdfastv1.ConditionDegraded, true, ReasonVolumeFull, msg)
		st.Phase = holdfastv1.PhaseDegraded
		return
	}
	if meta.IsStatusConditionTrue(st.Conditions, holdfastv1.ConditionDegraded) {
		return
	}
	switch {
	case len(stuck) > 0:
		setCondition(st, c, holdfastv1.ConditionDegraded, true, ReasonVolumeResizeStuck, strings.Join(stuck, "; "))
	default:
		return
	}
	st.Phase = holdfastv1.PhaseDegraded
}

// resizeState says how a claim's growth goes, and whether it failed or
// has waited too long: the resizer's own verdict when it gave one, else
// how long it has waited.
func resizeState(pvc *corev1.PersistentVolumeClaim, now time.Time) (string, bool) {
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	capacity := pvc.Status.Capacity[corev1.ResourceStorage]
	msg := fmt.Sprintf("claim %s grows from %s to %s", pvc.Name, capacity.String(), request.String())
	switch pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage] {
	case corev1.PersistentVolumeClaimControllerResizeInfeasible, corev1.PersistentVolumeClaimNodeResizeInfeasible:
		return msg + ": the resize is infeasible" + conditionMessages(pvc), true
	}
	for _, cond := range pvc.Status.Conditions {
		if cond.Status == corev1.ConditionTrue && (cond.Type == corev1.PersistentVolumeClaimControllerResizeError || cond.Type == corev1.PersistentVolumeClaimNodeResizeError) {
			return msg + ": " + cond.Message, true
		}
	}
	since := now
	if at, err := time.Parse(time.RFC3339, pvc.Annotations[AnnotationResizeRequested]); err == nil {
		since = at
	}
	for _, cond := range pvc.Status.Conditions {
		if cond.Type == corev1.PersistentVolumeClaimResizing && cond.Status == corev1.ConditionTrue && cond.LastTransitionTime.After(since) {
			since = cond.LastTransitionTime.Time
		}
	}
	// The status names when the wait began, not how long it has lasted: a
	// running count would rewrite the status on every look.
	asked := since.UTC().Format(time.RFC3339)
	if now.Sub(since) >= resizeStuckAfter {
		return fmt.Sprintf("%s: no resizer has grown it since %s (%s allowed)%s; does its StorageClass allow expansion, and does a resizer run for its driver?",
			msg, asked, resizeStuckAfter, conditionMessages(pvc)), true
	}
	return fmt.Sprintf("%s (asked at %s)%s", msg, asked, conditionMessages(pvc)), false
}

func conditionMessages(pvc *corev1.PersistentVolumeClaim) string {
	var out []string
	for _, cond := range pvc.Status.Conditions {
		if cond.Status == corev1.ConditionTrue && cond.Message != "" {
			out = append(out, fmt.Sprintf("%s: %s", cond.Type, cond.Message))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, "; ") + ")"
}

// canGrow: autoGrow may still grow the claim.
func canGrow(c *holdfastv1.PostgresCluster, pvc *corev1.PersistentVolumeClaim) bool {
	grow := c.Spec.Storage.AutoGrow
	have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	return grow != nil && have.Cmp(grow.MaxSize) < 0
}

func whyNoGrowth(c *holdfastv1.PostgresCluster) string {
	if g := c.Spec.Storage.AutoGrow; g != nil {
		return "autoGrow has reached its maxSize " + g.MaxSize.String()
	}
	return "spec.storage.autoGrow is not set; raise spec.storage.size"
}

// announceVolumes warns with an Event when a volume becomes full or its
// resize stuck.
func (r *Reconciler) announceVolumes(c *holdfastv1.PostgresCluster, was, now *holdfastv1.PostgresClusterStatus) {
	after := meta.FindStatusCondition(now.Conditions, holdfastv1.ConditionDegraded)
	if after == nil || after.Status != "True" || (after.Reason != ReasonVolumeFull && after.Reason != ReasonVolumeResizeStuck) {
		return
	}
	if before := meta.FindStatusCondition(was.Conditions, holdfastv1.ConditionDegraded); before != nil && before.Reason == after.Reason && before.Status == after.Status {
		return
	}
	r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, after.Reason, "Observe", "%s", after.Message)
}
