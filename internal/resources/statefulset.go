package resources

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// Options are the operator's settings that shape what it builds.
type Options struct {
	// InstanceImage is the holdfast image whose binary the init container copies into each pod.
	InstanceImage string
}

// PostgresUID is the postgres user of the community images; pods run as it.
const PostgresUID = 999

// terminationGracePeriod leaves postgres time for a fast shutdown and a final checkpoint.
const terminationGracePeriod = 60

// StatefulSet runs the cluster's instances. Updates are OnDelete because the
// operator restarts pods itself, replicas first and the primary last.
func StatefulSet(c *holdfastv1.PostgresCluster, opts Options) *appsv1.StatefulSet {
	labels := Labels(c)
	return &appsv1.StatefulSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      StatefulSetName(c),
			Namespace: c.Namespace,
			Labels:    labels,
		},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(c.Spec.Instances),
			ServiceName:         ServiceHeadlessName(c),
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Selector:            &metav1.LabelSelector{MatchLabels: SelectorLabels(c)},
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: retention(c.Spec.Storage.RetentionPolicy.WhenDeleted),
				WhenScaled:  retention(c.Spec.Storage.RetentionPolicy.WhenScaled),
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: templateAnnotations(c)},
				Spec:       podSpec(c, opts),
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{DataClaimTemplate(c)},
		},
	}
}

// templateAnnotations carry a restart request into the pod template: a
// changed template is what a rolling update replaces, so a new request
// restarts every instance, and an old one nothing.
func templateAnnotations(c *holdfastv1.PostgresCluster) map[string]string {
	at, ok := c.Annotations[holdfastv1.AnnotationRestartedAt]
	if !ok {
		return nil
	}
	return map[string]string{holdfastv1.AnnotationRestartedAt: at}
}

// DataClaimTemplate is the claim each instance gets for its data directory.
func DataClaimTemplate(c *holdfastv1.PostgresCluster) corev1.PersistentVolumeClaim {
	return corev1.PersistentVolumeClaim{
		// No TypeMeta: the API server drops it from templates, and it would
		// then always look changed.
		ObjectMeta: metav1.ObjectMeta{Name: VolumeData, Labels: Labels(c)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: c.Spec.Storage.StorageClassName,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: c.Spec.Storage.Size},
			},
		},
	}
}

func retention(r holdfastv1.ClaimRetention) appsv1.PersistentVolumeClaimRetentionPolicyType {
	if r == holdfastv1.ClaimDelete {
		return appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	return appsv1.RetainPersistentVolumeClaimRetentionPolicyType
}

// repositoryVolumes mount the credentials of the backup repositories the
// cluster uses: its own, and the one it is restored from.
func repositoryVolumes(c *holdfastv1.PostgresCluster) ([]corev1.Volume, []corev1.VolumeMount) {
	var vols []corev1.Volume
	var mounts []corev1.VolumeMount
	add := func(name, secret, path string, optional bool) {
		vols = append(vols, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secret, DefaultMode: ptr.To[int32](0o440), Optional: ptr.To(optional),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: path, ReadOnly: true})
	}
	if b := c.Spec.Backup; b != nil && b.Repository.S3 != nil {
		add(VolumeRepository, b.Repository.S3.CredentialsSecret, RepositoryMountPath, false)
	}
	if c.Spec.Bootstrap.Restore != nil {
		// Optional: a restore from a VolumeSnapshot reads no repository.
		add(VolumeRestoreRepository, SecretRestoreRepositoryName(c), RestoreRepositoryMountPath, true)
	}
	return vols, mounts
}

func podSpec(c *holdfastv1.PostgresCluster, opts Options) corev1.PodSpec {
	image := c.Spec.Image
	if image == "" {
		image = postgres.DefaultImage(c.Spec.PostgresVersion)
	}
	spread := c.Spec.Scheduling.TopologySpreadConstraints
	if len(spread) == 0 {
		spread = []corev1.TopologySpreadConstraint{{
			MaxSkew:           1,
			TopologyKey:       corev1.LabelHostname,
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: SelectorLabels(c)},
		}}
	}
	repoVolumes, repoMounts := repositoryVolumes(c)
	return corev1.PodSpec{
		// Instances get what they need from mounted Secrets and the operator;
		// the token only lets the primary renew its Lease (InstanceAccess).
		ServiceAccountName:            InstanceServiceAccountName(c),
		AutomountServiceAccountToken:  ptr.To(true),
		EnableServiceLinks:            ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To[int64](terminationGracePeriod),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:        ptr.To(true),
			RunAsUser:           ptr.To[int64](PostgresUID),
			RunAsGroup:          ptr.To[int64](PostgresUID),
			FSGroup:             ptr.To[int64](PostgresUID),
			FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
			SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		InitContainers: []corev1.Container{{
			Name:            ContainerBootstrap,
			Image:           opts.InstanceImage,
			Command:         []string{"/holdfast", "instance", "install", ControllerMountPath + "/holdfast"},
			SecurityContext: containerSecurityContext(),
			VolumeMounts:    []corev1.VolumeMount{{Name: VolumeController, MountPath: ControllerMountPath}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    mustQuantity("10m"),
					corev1.ResourceMemory: mustQuantity("32Mi"),
				},
			},
		}},
		Containers: []corev1.Container{{
			Name:    ContainerPostgres,
			Image:   image,
			Command: []string{ControllerMountPath + "/holdfast", "instance", "run"},
			Env: []corev1.EnvVar{
				fieldEnv("POD_NAME", "metadata.name"),
				fieldEnv("POD_UID", "metadata.uid"),
				fieldEnv("NAMESPACE", "metadata.namespace"),
				{Name: "CLUSTER_NAME", Value: c.Name},
				{Name: "CLUSTER_UID", Value: string(c.UID)},
				{Name: "PGDATA", Value: PGDataPath},
				{Name: "PG_MAJOR", Value: itoa(c.Spec.PostgresVersion)},
				{Name: "HOLDFAST_DATABASE", Value: c.Spec.Bootstrap.InitDB.Database},
				{Name: "HOLDFAST_OWNER", Value: c.Spec.Bootstrap.InitDB.Owner},
			},
			Ports: []corev1.ContainerPort{
				{Name: "postgres", ContainerPort: postgres.Port, Protocol: corev1.ProtocolTCP},
				{Name: "status", ContainerPort: instanceapi.StatusPort, Protocol: corev1.ProtocolTCP},
				{Name: "api", ContainerPort: instanceapi.APIPort, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", ContainerPort: instanceapi.MetricsPort, Protocol: corev1.ProtocolTCP},
			},
			// A startup that clones a large primary may take long; liveness
			// only starts counting once startup has succeeded.
			// The instance manager answers these from its last reading, so
			// they are cheap to ask often: a pod is ready within a second of
			// postgres, and a StatefulSet creates the next pod only then.
			// Startup still allows an hour (a long clone or recovery).
			StartupProbe:    httpProbe(instanceapi.StartupPath, 1, 3600),
			LivenessProbe:   httpProbe(instanceapi.LivenessPath, 10, 3),
			ReadinessProbe:  httpProbe(instanceapi.ReadinessPath, 2, 3),
			Resources:       c.Spec.Resources,
			SecurityContext: containerSecurityContext(),
			VolumeMounts: append([]corev1.VolumeMount{
				{Name: VolumeData, MountPath: DataMountPath},
				{Name: VolumeController, MountPath: ControllerMountPath},
				{Name: VolumeRun, MountPath: RunMountPath},
				{Name: VolumeTmp, MountPath: "/tmp"},
				{Name: VolumeShm, MountPath: "/dev/shm"},
				{Name: VolumeSecrets, MountPath: SecretsMountPath, ReadOnly: true},
				{Name: VolumeConfig, MountPath: ConfigMountPath, ReadOnly: true},
			}, repoMounts...),
		}},
		Volumes: append([]corev1.Volume{
			emptyDir(VolumeController, ""),
			emptyDir(VolumeRun, ""),
			emptyDir(VolumeTmp, ""),
			emptyDir(VolumeShm, corev1.StorageMediumMemory),
			{Name: VolumeSecrets, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr.To[int32](0o440),
				Sources: []corev1.VolumeProjection{
					secretProjection(SecretSuperuserName(c), "superuser"),
					secretProjection(SecretReplicationName(c), "replication"),
					secretProjection(SecretAppName(c), "app"),
					// Optional, so that a pod starts while its certificates
					// are issued; until then its postgres admits no TCP client
					// and its API no caller.
					tlsProjection(SecretServerTLSName(c), TLSServerDir),
					tlsProjection(SecretReplicationTLSName(c), TLSReplicationDir),
				},
			}}},
			{Name: VolumeConfig, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(c)},
			}}},
		}, repoVolumes...),
		NodeSelector:              c.Spec.Scheduling.NodeSelector,
		Affinity:                  c.Spec.Scheduling.Affinity,
		Tolerations:               c.Spec.Scheduling.Tolerations,
		TopologySpreadConstraints: spread,
		PriorityClassName:         c.Spec.Scheduling.PriorityClassName,
	}
}

// containerSecurityContext meets the restricted Pod Security Standard.
func containerSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func httpProbe(path string, period, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path,
			Port: intstr.FromString("status"),
		}},
		PeriodSeconds:    period,
		TimeoutSeconds:   5,
		FailureThreshold: failureThreshold,
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

func emptyDir(name string, medium corev1.StorageMedium) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: medium}}}
}

// TLSServerDir and TLSReplicationDir are where, under the secrets mount,
// an instance finds the server and replication certificates (tls.crt,
// tls.key, ca.crt).
const (
	TLSServerDir      = "tls/server"
	TLSReplicationDir = "tls/replication"
)

func tlsProjection(secret, dir string) corev1.VolumeProjection {
	var items []corev1.KeyToPath
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, SecretKeyCACert} {
		items = append(items, corev1.KeyToPath{Key: k, Path: dir + "/" + k})
	}
	return corev1.VolumeProjection{Secret: &corev1.SecretProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Items: items, Optional: ptr.To(true),
	}}
}

func secretProjection(secret, dir string) corev1.VolumeProjection {
	return corev1.VolumeProjection{Secret: &corev1.SecretProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret},
		Items: []corev1.KeyToPath{
			{Key: SecretKeyUsername, Path: dir + "/" + SecretKeyUsername},
			{Key: SecretKeyPassword, Path: dir + "/" + SecretKeyPassword},
		},
	}}
}
