package node

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPhaseFollowsTheKubelet(t *testing.T) {
	terminated := func(code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}
	for _, tc := range []struct {
		name     string
		policy   corev1.RestartPolicy
		initDone bool
		states   []corev1.ContainerState
		restarts int32
		want     corev1.PodPhase
	}{
		{"init containers still running", corev1.RestartPolicyAlways, false, []corev1.ContainerState{waiting}, 0, corev1.PodPending},
		{"never started", corev1.RestartPolicyAlways, true, []corev1.ContainerState{waiting}, 0, corev1.PodPending},
		{"one runs", corev1.RestartPolicyAlways, true, []corev1.ContainerState{running, waiting}, 0, corev1.PodRunning},
		// A pod reported Failed is never updated again by virtual-kubelet:
		// a container about to restart must not make it so.
		{"exited, will restart", corev1.RestartPolicyAlways, true, []corev1.ContainerState{terminated(1)}, 0, corev1.PodRunning},
		{"backing off", corev1.RestartPolicyAlways, true, []corev1.ContainerState{waiting}, 2, corev1.PodRunning},
		{"failed, OnFailure restarts", corev1.RestartPolicyOnFailure, true, []corev1.ContainerState{terminated(1)}, 0, corev1.PodRunning},
		{"succeeded under OnFailure", corev1.RestartPolicyOnFailure, true, []corev1.ContainerState{terminated(0)}, 0, corev1.PodSucceeded},
		{"failed under Never", corev1.RestartPolicyNever, true, []corev1.ContainerState{terminated(0), terminated(2)}, 0, corev1.PodFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &podRuntime{ctx: ctx, initDone: tc.initDone, pod: &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tc.policy}}}
			for _, s := range tc.states {
				r.containers = append(r.containers, &container{state: s, restarts: tc.restarts})
			}
			if got := r.phaseLocked(); got != tc.want {
				t.Errorf("phase %s, want %s", got, tc.want)
			}
		})
	}
}
