package resources

import (
	"maps"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// LabelBackupSchedule marks the Backups a schedule made; its retention
// prunes only those.
const LabelBackupSchedule = "holdfast.dev/backup-schedule"

// ScheduleRunnerName names a schedule's CronJob and the identity its Jobs run as.
func ScheduleRunnerName(s *holdfastv1.BackupSchedule) string { return s.Name + "-backup" }

// ScheduleLabels go on the objects that carry a schedule out.
func ScheduleLabels(s *holdfastv1.BackupSchedule) map[string]string {
	return map[string]string{
		LabelName:           "postgresql",
		LabelManagedBy:      ManagedBy,
		LabelComponent:      "backup-schedule",
		LabelCluster:        s.Spec.Cluster.Name,
		LabelBackupSchedule: s.Name,
	}
}

// jobGrace is how long a Job may outlive its backup's deadline: enough to
// see the backup marked Failed and say so.
const jobGrace = 300

// ScheduleCronJob runs `holdfast backup create --schedule` on the
// schedule. Each Job creates one Backup and waits for it, so that
// concurrencyPolicy Forbid really keeps two backups of a schedule apart.
func ScheduleCronJob(s *holdfastv1.BackupSchedule, opts Options) *batchv1.CronJob {
	labels := ScheduleLabels(s)
	name := ScheduleRunnerName(s)
	// Not the cluster's label on the Jobs' pods: the cluster's pods are
	// selected by it, and these are not instances.
	podLabels := maps.Clone(labels)
	delete(podLabels, LabelCluster)
	return &batchv1.CronJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace, Labels: labels},
		Spec: batchv1.CronJobSpec{
			Schedule:                   s.Spec.Schedule,
			TimeZone:                   s.Spec.TimeZone,
			ConcurrencyPolicy:          batchv1.ForbidConcurrent,
			Suspend:                    ptr.To(s.Spec.Suspend),
			StartingDeadlineSeconds:    ptr.To[int64](300),
			SuccessfulJobsHistoryLimit: ptr.To[int32](3),
			FailedJobsHistoryLimit:     ptr.To[int32](3),
			JobTemplate: batchv1.JobTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: batchv1.JobSpec{
					BackoffLimit:            ptr.To[int32](0),
					ActiveDeadlineSeconds:   ptr.To(int64(s.Spec.DeadlineSeconds) + jobGrace),
					TTLSecondsAfterFinished: ptr.To[int32](24 * 3600),
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
						Spec: corev1.PodSpec{
							ServiceAccountName:           name,
							AutomountServiceAccountToken: ptr.To(true),
							RestartPolicy:                corev1.RestartPolicyNever,
							EnableServiceLinks:           ptr.To(false),
							SecurityContext: &corev1.PodSecurityContext{
								RunAsNonRoot:   ptr.To(true),
								RunAsUser:      ptr.To[int64](PostgresUID),
								RunAsGroup:     ptr.To[int64](PostgresUID),
								SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
							},
							Containers: []corev1.Container{{
								Name:  "backup",
								Image: opts.InstanceImage,
								Command: []string{"/holdfast", "backup", "create", "--schedule", s.Name,
									"--namespace", s.Namespace, "--wait"},
								SecurityContext: containerSecurityContext(),
								Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
									corev1.ResourceCPU:    mustQuantity("10m"),
									corev1.ResourceMemory: mustQuantity("32Mi"),
								}},
							}},
						},
					},
				},
			},
		},
	}
}

// ScheduleAccess is all a schedule's Jobs may do: read their schedule, and
// create and watch Backups.
func ScheduleAccess(s *holdfastv1.BackupSchedule) (*corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding) {
	meta := metav1.ObjectMeta{Name: ScheduleRunnerName(s), Namespace: s.Namespace, Labels: ScheduleLabels(s)}
	return access(meta,
		rbacv1.PolicyRule{APIGroups: []string{holdfastv1.GroupVersion.Group}, Resources: []string{"backupschedules"},
			ResourceNames: []string{s.Name}, Verbs: []string{"get"}},
		rbacv1.PolicyRule{APIGroups: []string{holdfastv1.GroupVersion.Group}, Resources: []string{"backups"},
			Verbs: []string{"create", "get", "list", "watch"}},
	)
}
