package node

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// snapshot is the pod with the status its containers have now.
func (r *podRuntime) snapshot() *corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	pod := r.pod.DeepCopy()
	old := pod.Status
	st := corev1.PodStatus{
		QOSClass:  old.QOSClass,
		StartTime: &r.startTime,
		HostIP:    r.p.opts.NodeIP.String(),
		HostIPs:   []corev1.HostIP{{IP: r.p.opts.NodeIP.String()}},
	}
	if r.ip != nil {
		st.PodIP = r.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	allReady := r.initDone
	for _, c := range r.inits {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.statusLocked())
	}
	for _, c := range r.containers {
		cs := c.statusLocked()
		allReady = allReady && cs.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	st.Phase = r.phaseLocked()
	if r.failed != "" {
		st.Reason, st.Message = "Failed", r.failed
	}
	for _, c := range old.Conditions {
		if c.Type == corev1.PodScheduled {
			st.Conditions = append(st.Conditions, c)
		}
	}
	st.Conditions = append(st.Conditions,
		r.condition(corev1.PodReadyToStartContainers, r.netReady, ""),
		r.condition(corev1.PodInitialized, r.initDone, "ContainersNotInitialized"),
		r.condition(corev1.ContainersReady, allReady, "ContainersNotReady"),
		r.condition(corev1.PodReady, allReady, "ContainersNotReady"),
	)
	pod.Status = st
	return pod
}

// condition keeps a condition's transition time while its status holds.
func (r *podRuntime) condition(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status, reason = corev1.ConditionTrue, ""
	}
	c, seen := r.conditions[t]
	if !seen || c.Status != status {
		c = corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: metav1.Now()}
		r.conditions[t] = c
	}
	return c
}

// phaseLocked follows the kubelet: Pending until the containers run,
// Running while one runs or will restart, then Succeeded or Failed.
func (r *podRuntime) phaseLocked() corev1.PodPhase {
	if r.failed != "" {
		return corev1.PodFailed
	}
	if !r.initDone {
		return corev1.PodPending
	}
	running, waiting, succeeded := 0, 0, 0
	for _, c := range r.containers {
		switch {
		case c.state.Running != nil:
			running++
		case c.state.Waiting != nil:
			if c.restarts > 0 || c.last.Terminated != nil {
				running++ // between restarts
			} else {
				waiting++
			}
		case c.state.Terminated != nil:
			code := c.state.Terminated.ExitCode
			if willRestart(r.pod.Spec.RestartPolicy, code) && r.ctx.Err() == nil {
				running++
			} else if code == 0 {
				succeeded++
			}
		}
	}
	switch {
	case running > 0:
		return corev1.PodRunning
	case waiting > 0:
		return corev1.PodPending
	case succeeded == len(r.containers):
		return corev1.PodSucceeded
	}
	return corev1.PodFailed
}

func (c *container) statusLocked() corev1.ContainerStatus {
	started := c.started
	s := corev1.ContainerStatus{
		Name:                 c.spec.Name,
		State:                *c.state.DeepCopy(),
		LastTerminationState: *c.last.DeepCopy(),
		Ready:                c.ready,
		RestartCount:         c.restarts,
		Image:                c.spec.Image,
		ImageID:              c.image.id,
		Started:              &started,
	}
	if c.attempt > 0 {
		s.ContainerID = c.containerID(c.attempt)
	}
	if c.init {
		s.Ready = c.state.Terminated != nil && c.state.Terminated.ExitCode == 0
		s.Started = nil
	}
	return s
}
