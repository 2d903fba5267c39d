package node

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestSameConditions(t *testing.T) {
	cond := func(typ corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
		return corev1.PodCondition{Type: typ, Status: s}
	}
	ours := []corev1.PodCondition{cond(corev1.ContainersReady, corev1.ConditionTrue), cond(corev1.PodReady, corev1.ConditionTrue)}
	// What the node lifecycle controller leaves after the node was out of touch.
	marked := []corev1.PodCondition{cond(corev1.PodScheduled, corev1.ConditionTrue), cond(corev1.ContainersReady, corev1.ConditionTrue), cond(corev1.PodReady, corev1.ConditionFalse)}
	if sameConditions(marked, ours) {
		t.Error("a pod marked not Ready by someone else is taken as in step")
	}
	marked[2].Status = corev1.ConditionTrue
	if !sameConditions(marked, ours) {
		t.Error("the same conditions, plus one the node does not set, are taken as different")
	}
	if sameConditions(marked[:2], ours) {
		t.Error("a missing condition is taken as in step")
	}
}
