package postgrescluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/resources"
)

// failingReasons are container waiting reasons that will not clear by
// themselves: the pod needs a fixed spec or image, not more time.
var failingReasons = []string{
	"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
	"CreateContainerConfigError", "CreateContainerError", "RunContainerError",
}

// computeStatus derives the cluster's status from its StatefulSet and pods,
// and from refused, the API server's refusal of the objects the spec makes. It starts from the current status so that fields other parts of the
// operator own (the primaries) and condition transition times carry over.
func computeStatus(c *holdfastv1.PostgresCluster, sts *appsv1.StatefulSet, pods []corev1.Pod,
	reports map[string]*instanceapi.Report, refused error) holdfastv1.PostgresClusterStatus {
	now := time.Now()
	st := *c.Status.DeepCopy()
	st.ObservedGeneration = c.Generation
	if st.TargetPrimary == "" {
		st.TargetPrimary = resources.InstanceName(c, 0)
	}

	slices.SortFunc(pods, func(a, b corev1.Pod) int { return resources.Ordinal(a.Name) - resources.Ordinal(b.Name) })
	st.Instances = nil
	st.ReadyInstances = 0
	var failing, unready, starting []string
	var reported instanceTrouble
	for _, p := range pods {
		is := holdfastv1.InstanceStatus{Name: p.Name, Role: holdfastv1.RoleUnknown, Ready: podReady(&p)}
		if r := p.Labels[resources.LabelRole]; r != "" {
			is.Role = holdfastv1.InstanceRole(r)
		}
		if rep := reports[p.Name]; rep != nil && rep.Postgres != nil {
			pg := rep.Postgres
			is.Timeline = pg.Timeline
			is.CurrentLSN, is.ReceivedLSN, is.ReplayedLSN, is.LagBytes = pg.CurrentLSN, pg.ReceivedLSN, pg.ReplayedLSN, pg.LagBytes
			is.PendingRestart = pg.PendingRestart
		}
		if is.Ready {
			st.ReadyInstances++
		} else {
			is.Message = podProblem(&p)
			switch {
			case fenced(st.Operation, p.Name) && !isFailing(&p):
				// Stopped on purpose, for as long as the fence holds: not a
				// failure, and the operation says so in Progressing.
				is.Message = "fenced: its postgres is stopped until the fence is released"
			case isFailing(&p):
				failing = append(failing, p.Name+": "+is.Message)
				unready = append(unready, p.Name+": "+is.Message)
			case startingUp(&p, reports[p.Name], now):
				starting = append(starting, p.Name)
			default:
				unready = append(unready, p.Name+": "+is.Message)
			}
		}
		if msg := reported.add(p.Name, reports[p.Name]); msg != "" {
			is.Message = msg
		}
		st.Instances = append(st.Instances, is)
	}

	st.MaxLagBytes = 0
	for _, is := range st.Instances {
		st.MaxLagBytes = max(st.MaxLagBytes, is.LagBytes)
		if is.Name == st.CurrentPrimary && is.Timeline > 0 {
			st.Timeline = is.Timeline
		}
	}

	want := c.Spec.Instances
	ready := st.ReadyInstances >= want
	setCondition(&st, c, holdfastv1.ConditionReady, ready, readyReason(ready),
		fmt.Sprintf("%d of %d instances ready", st.ReadyInstances, want))

	progress := progressing(c, sts, pods)
	// Instances down while the StatefulSet has caught up are a failure;
	// a new instance cloning or recovering for the first time is work
	// under way.
	stalled := len(unready) > 0 && progress == ""
	if progress == "" && len(starting) > 0 {
		progress = "starting instances: " + strings.Join(starting, ", ")
	}
	if op := st.Operation; op != nil && op.Kind != holdfastv1.OperationFailover && op.Kind != holdfastv1.OperationSwitchover {
		// An instance it restarts or stops is down on purpose, not failing.
		subject := op.Instance
		if op.Phase == holdfastv1.PhasePromoting {
			subject = op.To
		}
		progress = strings.TrimSpace(fmt.Sprintf("%s, %s %s: %s", op.Kind, op.Phase, subject, op.Reason))
	}
	halted := haltedUpdate(c, &st, sts, pods, reports)
	if hibernated(c) && len(pods) == 0 {
		msg := fmt.Sprintf("spec.hibernation is true: every instance is stopped, the claims are kept, and %s starts first as the primary on waking", st.TargetPrimary)
		setCondition(&st, c, holdfastv1.ConditionReady, false, "Hibernated", msg)
		setCondition(&st, c, holdfastv1.ConditionProgressing, false, "Hibernated", msg)
		setCondition(&st, c, holdfastv1.ConditionDegraded, false, "Hibernated", msg)
		st.Phase = holdfastv1.PhaseHibernated
		return st
	}
	var blocked *restoreBlocked
	if errors.As(refused, &blocked) {
		setCondition(&st, c, holdfastv1.ConditionReady, false, blocked.reason, blocked.message)
		setCondition(&st, c, holdfastv1.ConditionProgressing, false, blocked.reason, blocked.message)
		setCondition(&st, c, holdfastv1.ConditionDegraded, false, "NoFailures", "nothing is created until the restore source is ready")
		st.Phase = holdfastv1.PhaseCreating
		return st
	}
	if refused != nil {
		setCondition(&st, c, holdfastv1.ConditionProgressing, false, "SpecRefused", "the spec cannot be carried out: "+refused.Error())
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, "SpecRefused", refused.Error())
		st.Phase = holdfastv1.PhaseDegraded
		return st
	}
	if progress != "" {
		setCondition(&st, c, holdfastv1.ConditionProgressing, true, "Reconciling", progress)
	} else {
		setCondition(&st, c, holdfastv1.ConditionProgressing, false, "Stable", "the StatefulSet matches the spec")
	}

	stuck := replicasNotStreaming(pods, reports, now)
	var badCert string
	for _, cs := range st.Certificates {
		if cs.Problem != "" {
			badCert = cs.Problem
		}
	}
	switch {
	case len(failing) > 0:
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, "InstanceFailing", strings.Join(failing, "; "))
	case reported.reason() != "":
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, reported.reason(), reported.message())
	case len(stuck) > 0:
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, "ReplicaNotStreaming", strings.Join(stuck, "; "))
	case halted != "":
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, ReasonRollingUpdateHalted, halted)
	case badCert != "":
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, ReasonInvalidCertificate, badCert+"; the cluster goes on with the last good certificate")
	case stalled:
		setCondition(&st, c, holdfastv1.ConditionDegraded, true, "InstancesNotReady", strings.Join(unready, "; "))
	default:
		setCondition(&st, c, holdfastv1.ConditionDegraded, false, "NoFailures", "no instance is failing")
	}

	switch {
	case len(failing) > 0 || reported.reason() != "" || len(stuck) > 0 || halted != "" || badCert != "" || stalled:
		st.Phase = holdfastv1.PhaseDegraded
	case ready && progress == "":
		st.Phase = holdfastv1.PhaseHealthy
	case progress != "" && (st.CurrentPrimary == "" && st.Operation == nil && len(st.History) == 0 || c.Status.Phase == holdfastv1.PhaseCreating):
		// A cluster is created until it is first Healthy: its replicas
		// clone after the primary reports. (A switchover, with no
		// primary for a moment, is not a creation.)
		st.Phase = holdfastv1.PhaseCreating
	default:
		st.Phase = holdfastv1.PhaseUpdating
	}
	return st
}

// ReasonRollingUpdateHalted: a rolling update stopped at a phase deadline,
// and instances still wait for their restart.
const ReasonRollingUpdateHalted = "RollingUpdateHalted"

// haltedUpdate says why the last rolling update halted while instances
// still need the restart it was for, "" when none did.
func haltedUpdate(c *holdfastv1.PostgresCluster, st *holdfastv1.PostgresClusterStatus, sts *appsv1.StatefulSet, pods []corev1.Pod, reports map[string]*instanceapi.Report) string {
	n := len(st.History)
	if st.Operation != nil || n == 0 || st.History[n-1].Kind != holdfastv1.OperationRollingUpdate || st.History[n-1].Outcome != holdfastv1.OutcomeFailed {
		return ""
	}
	for i := range pods {
		if needsRestart(c, &view{Pod: &pods[i], Report: reports[pods[i].Name]}, templateRevision(sts)) != "" {
			return st.History[n-1].Reason
		}
	}
	return ""
}

// progressing says what the StatefulSet is still doing, or "" when it has
// caught up with the spec.
func progressing(c *holdfastv1.PostgresCluster, sts *appsv1.StatefulSet, pods []corev1.Pod) string {
	switch {
	case sts == nil:
		return "creating the StatefulSet"
	case sts.Status.ObservedGeneration < sts.Generation:
		return "the StatefulSet controller has not seen the latest change yet"
	case int32(len(pods)) < c.Spec.Instances:
		return fmt.Sprintf("creating instances: %d of %d pods exist", len(pods), c.Spec.Instances)
	case int32(len(pods)) > c.Spec.Instances:
		return fmt.Sprintf("removing instances: %d pods for %d instances", len(pods), c.Spec.Instances)
	case sts.Status.UpdateRevision != "" && sts.Status.CurrentRevision != sts.Status.UpdateRevision:
		return fmt.Sprintf("%d of %d instances run an older pod template and wait for the operator to restart them",
			int32(len(pods))-sts.Status.UpdatedReplicas, len(pods))
	}
	return ""
}

// startingUp: the not-ready pod's instance is on its way up, not down.
// Either it reports itself ready and the kubelet's next probe will say
// so, or it is coming up for the first time (a clone, a restore, a replica
// catching up): never ready yet, with no error to report and no restart
// behind it. A restarted container or postgres is recovering from a
// failure, and counts as one.
//
// Without a report, a pod counts for startGrace after it was made: it is
// waiting for its claim to bind, for the scheduler, for its containers, or
// for its instance manager to first answer. Past that, something stops it.
func startingUp(p *corev1.Pod, rep *instanceapi.Report, now time.Time) bool {
	if rep != nil && rep.Ready {
		return true
	}
	if p.DeletionTimestamp != nil || (rep != nil && (rep.BeenReady || rep.Restarts > 0 || rep.Failing != "" || rep.StartError != "")) {
		return false
	}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.RestartCount > 0 {
			return false
		}
	}
	return rep != nil || now.Sub(p.CreationTimestamp.Time) < startGrace
}

// startGrace is how long a new pod may take to first report.
const startGrace = 2 * time.Minute

func readyReason(ready bool) string {
	if ready {
		return "AllInstancesReady"
	}
	return "InstancesNotReady"
}

func setCondition(st *holdfastv1.PostgresClusterStatus, c *holdfastv1.PostgresCluster, typ string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: c.Generation,
	})
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isFailing(p *corev1.Pod) bool {
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if w := cs.State.Waiting; w != nil && slices.Contains(failingReasons, w.Reason) {
			return true
		}
	}
	return false
}

// podProblem explains in one line why a pod is not ready.
func podProblem(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" && w.Reason != "ContainerCreating" {
			return strings.TrimSpace(fmt.Sprintf("container %s: %s %s", cs.Name, w.Reason, w.Message))
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("container %s exited with code %d (%s)", cs.Name, t.ExitCode, t.Reason)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return strings.TrimSpace("not scheduled: " + c.Reason + " " + c.Message)
		}
	}
	if p.Status.Phase == corev1.PodPending {
		return "pending"
	}
	return "not ready"
}

// noteLastBackup sets when the cluster's last completed Backup stopped,
// from the cache.
func (r *Reconciler) noteLastBackup(ctx context.Context, c *holdfastv1.PostgresCluster, st *holdfastv1.PostgresClusterStatus) error {
	var backups holdfastv1.BackupList
	if err := r.Client.List(ctx, &backups, client.InNamespace(c.Namespace)); err != nil {
		return fmt.Errorf("listing backups: %w", err)
	}
	// Worked out afresh: the last one may have been deleted since.
	st.LastBackup = nil
	for _, b := range backups.Items {
		if b.Spec.Cluster.Name != c.Name || b.Status.Phase != holdfastv1.BackupCompleted || b.Status.StoppedAt == nil {
			continue
		}
		if st.LastBackup == nil || b.Status.StoppedAt.After(st.LastBackup.Time) {
			st.LastBackup = b.Status.StoppedAt.DeepCopy()
		}
	}
	return nil
}
