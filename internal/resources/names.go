// Package resources builds, as pure functions of a PostgresCluster, the
// Kubernetes objects that run it. Nothing here talks to the API server, so
// every builder is tested by value.
package resources

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/objectstore"
)

// Label keys on every object Holdfast makes for a cluster.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	// LabelCluster selects a cluster's pods.
	LabelCluster = "holdfast.dev/cluster"
	// LabelRole is set on a pod by the operator once its instance reports its
	// role; the -rw and -ro Services select on it.
	LabelRole = "role"

	ManagedBy = "holdfast"
)

// Fixed names inside an instance pod.
const (
	ContainerPostgres  = "postgres"
	ContainerBootstrap = "bootstrap-controller"

	VolumeData       = "pgdata"
	VolumeController = "controller"
	VolumeRun        = "run"
	VolumeTmp        = "tmp"
	VolumeShm        = "shm"
	VolumeSecrets    = "secrets"
	VolumeConfig     = "config"
	// VolumeRepository holds the backup repository's credentials, and
	// VolumeRestoreRepository those of the repository a new cluster is
	// restored from.
	VolumeRepository        = "repository"
	VolumeRestoreRepository = "restore-repository"

	DataMountPath = "/var/lib/postgresql/data"
	PGDataPath    = DataMountPath + "/pgdata"
	// RunMountPath holds postgres's socket and the instance manager's
	// password file (its --run-dir).
	RunMountPath        = "/var/run/postgresql"
	ControllerMountPath = "/controller"
	SecretsMountPath    = "/etc/holdfast/secrets"
	ConfigMountPath     = "/etc/holdfast/config"

	RepositoryMountPath        = "/etc/holdfast/repository"
	RestoreRepositoryMountPath = "/etc/holdfast/restore-repository"

	// ConfigKeyParameters is the ConfigMap key holding the user's postgresql.conf settings.
	ConfigKeyParameters = "custom.conf"
)

// Secret keys, as in kubernetes.io/basic-auth Secrets, plus connection details.
const (
	SecretKeyUsername = "username"
	SecretKeyPassword = "password"
	SecretKeyHost     = "host"
	SecretKeyPort     = "port"
	SecretKeyDatabase = "dbname"
	SecretKeyURI      = "uri"
)

// StatefulSetName is the StatefulSet's name; pods are <name>-0, <name>-1, ...
func StatefulSetName(c *holdfastv1.PostgresCluster) string { return c.Name }

// InstanceName is the pod name of the ordinal-th instance.
func InstanceName(c *holdfastv1.PostgresCluster, ordinal int) string {
	return fmt.Sprintf("%s-%d", c.Name, ordinal)
}

// VolumeSnapshotGVK is the kind a volumeSnapshot backup makes. The operator
// reads it unstructured: the snapshot API is an add-on a cluster may lack.
var VolumeSnapshotGVK = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}

// Ordinal is the StatefulSet ordinal of an instance's pod name, or -1.
func Ordinal(pod string) int {
	n, err := strconv.Atoi(pod[strings.LastIndexByte(pod, '-')+1:])
	if err != nil {
		return -1
	}
	return n
}

// ServiceRWName is the Service that follows the primary.
func ServiceRWName(c *holdfastv1.PostgresCluster) string { return c.Name + "-rw" }

// ServiceROName is the Service over the replicas.
func ServiceROName(c *holdfastv1.PostgresCluster) string { return c.Name + "-ro" }

// ServiceHeadlessName governs the StatefulSet and gives each pod a DNS name.
func ServiceHeadlessName(c *holdfastv1.PostgresCluster) string { return c.Name + "-headless" }

// SecretSuperuserName holds the postgres superuser's credentials.
func SecretSuperuserName(c *holdfastv1.PostgresCluster) string { return c.Name + "-superuser" }

// SecretAppName holds the application owner's credentials and connection URI.
func SecretAppName(c *holdfastv1.PostgresCluster) string { return c.Name + "-app" }

// SecretReplicationName holds the replication role's credentials.
func SecretReplicationName(c *holdfastv1.PostgresCluster) string { return c.Name + "-replication" }

// SecretRestoreRepositoryName holds a copy, made when the cluster is created,
// of the credentials of the repository it is restored from: the pod
// template names it whatever becomes of the source Backup later.
func SecretRestoreRepositoryName(c *holdfastv1.PostgresCluster) string {
	return c.Name + "-restore-repository"
}

// RepositoryLocation is the folder prefix of the S3 repository r.
func RepositoryLocation(r *holdfastv1.S3Repository, prefix string) objectstore.Location {
	return objectstore.Location{Endpoint: r.Endpoint, Bucket: r.Bucket, Region: r.Region, Prefix: prefix}
}

// PGBackRestPath is the folder of the cluster's pgBackRest repository in
// its bucket: the sets of the cluster's stanza and its WAL archive. Each
// incarnation of the cluster (its UID) has its own: a cluster deleted and
// created again under the same name is another postgres system, which
// pgBackRest refuses to archive into the stanza of the first. A Backup
// records the folder it was written to, so restoring it finds the old one.
func PGBackRestPath(c *holdfastv1.PostgresCluster) string {
	return path.Join(c.Spec.Backup.Repository.S3.Path, c.Namespace, c.Name, string(c.UID), "pgbackrest")
}

// ConfigMapName holds the rendered postgresql.conf settings.
func ConfigMapName(c *holdfastv1.PostgresCluster) string { return c.Name + "-config" }

// PodDisruptionBudgetName limits voluntary disruptions of the cluster's pods.
func PodDisruptionBudgetName(c *holdfastv1.PostgresCluster) string { return c.Name }

// ClaimName is the data claim of the ordinal-th instance, as the StatefulSet names it.
func ClaimName(c *holdfastv1.PostgresCluster, ordinal int) string {
	return fmt.Sprintf("%s-%s-%d", VolumeData, c.Name, ordinal)
}

// Labels go on every object of the cluster.
func Labels(c *holdfastv1.PostgresCluster) map[string]string {
	return map[string]string{
		LabelName:      "postgresql",
		LabelInstance:  c.Name,
		LabelManagedBy: ManagedBy,
		LabelCluster:   c.Name,
	}
}

// SelectorLabels select the cluster's pods.
func SelectorLabels(c *holdfastv1.PostgresCluster) map[string]string {
	return map[string]string{LabelCluster: c.Name}
}

func roleSelector(c *holdfastv1.PostgresCluster, role holdfastv1.InstanceRole) map[string]string {
	s := SelectorLabels(c)
	s[LabelRole] = string(role)
	return s
}
