package node

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// statusResyncInterval is how often the node compares the pods' status in
// the API with its own, as a kubelet's status manager does every 10 s.
const statusResyncInterval = 10 * time.Second

// resyncStatus puts back the status of pods that someone else changed:
// after the node was out of touch, the node lifecycle controller marks its
// pods not Ready, and the node, which reports only changes it makes, would
// never say otherwise (virtual-kubelet skips a status it already sent).
func (p *Provider) resyncStatus(ctx context.Context, pods corelisters.PodLister, client kubernetes.Interface) {
	t := time.NewTicker(statusResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range p.runtimes() {
			ours := r.snapshot()
			theirs, err := pods.Pods(ours.Namespace).Get(ours.Name)
			if err != nil || theirs.UID != ours.UID || sameConditions(theirs.Status.Conditions, ours.Status.Conditions) {
				continue
			}
			ours.ResourceVersion = theirs.ResourceVersion
			if _, err := client.CoreV1().Pods(ours.Namespace).UpdateStatus(ctx, ours, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				p.log.Info("pod status not put back", "pod", ours.Namespace+"/"+ours.Name, "error", err.Error())
			}
		}
	}
}

// sameConditions: every condition of want has the same status in have.
func sameConditions(have, want []corev1.PodCondition) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Type == w.Type {
				found = h.Status == w.Status
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
