package postgrescluster

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/resources"
)

// +kubebuilder:rbac:groups=holdfast.dev,resources=backups,verbs=get;list;watch

// restoreBlocked says why a cluster to be restored from a backup cannot
// start yet. Nothing of the cluster is made until it clears, so a cluster
// whose source is missing is refused whole, not half built.
type restoreBlocked struct {
	reason, message string
}

func (e *restoreBlocked) Error() string { return e.message }

// Reasons a restore waits, in the Ready condition.
const (
	reasonRestoreSourceMissing  = "RestoreSourceMissing"
	reasonRestoreSourceNotReady = "RestoreSourceNotReady"
	reasonRestoreTargetTooSmall = "RestoreTargetTooSmall"
)

// restoreOrder resolves spec.bootstrap.restore into the order the first
// primary bootstraps from. It is nil once the cluster has had a primary:
// from then on the cluster's own data is what counts.
func (r *Reconciler) restoreOrder(ctx context.Context, c *holdfastv1.PostgresCluster) (*instanceapi.RestoreOrder, error) {
	spec := c.Spec.Bootstrap.Restore
	if spec == nil || spec.Backup == nil || c.Status.CurrentPrimary != "" {
		return nil, nil
	}
	var b holdfastv1.Backup
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: spec.Backup.Name}, &b)
	if apierrors.IsNotFound(err) {
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.backup: Backup %s does not exist in namespace %s", spec.Backup.Name, c.Namespace)}
	}
	if err != nil {
		return nil, fmt.Errorf("reading Backup %s: %w", spec.Backup.Name, err)
	}
	var targetTime time.Time
	if t := spec.Target; t != nil && t.Time != "" {
		// The schema admits only what Parse reads; this guards an object
		// stored before that rule.
		if targetTime, err = t.Time.Parse(); err != nil {
			return nil, &restoreBlocked{reasonRestoreSourceMissing, "spec.bootstrap.restore.target.time: " + err.Error()}
		}
	}
	switch {
	case b.Status.Phase == holdfastv1.BackupFailed:
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.backup: Backup %s failed (%s), so there is nothing to restore", b.Name, b.Status.Message)}
	case b.Status.Phase != holdfastv1.BackupCompleted:
		return nil, &restoreBlocked{reasonRestoreSourceNotReady,
			fmt.Sprintf("waiting for Backup %s to complete (it is %s)", b.Name, phaseOrPending(b.Status.Phase))}
	case spec.Target != nil && b.Spec.Method != holdfastv1.BackupPGBackRest:
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.target: Backup %s is a %s backup, which has no WAL archive to recover to a target with; use a pgbackrest backup", b.Name, b.Spec.Method)}
	case !targetTime.IsZero() && b.Status.StoppedAt != nil && targetTime.Before(b.Status.StoppedAt.Time):
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.target.time %s is before Backup %s ended (%s): recovery can only go forward from a backup",
				spec.Target.Time, b.Name, b.Status.StoppedAt.UTC().Format(time.RFC3339))}
	case b.Spec.Method == holdfastv1.BackupVolumeSnapshot:
		return r.snapshotRestore(ctx, c, &b)
	case b.Status.Repository == nil || b.Status.Repository.S3 == nil || b.Status.Path == "":
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.backup: Backup %s does not say where it was written", b.Name)}
	}
	s3 := b.Status.Repository.S3
	if err := r.copyRestoreCredentials(ctx, c, s3.CredentialsSecret); err != nil {
		return nil, err
	}
	order := &instanceapi.RestoreOrder{
		Method:   string(b.Spec.Method),
		Location: resources.RepositoryLocation(s3, b.Status.Path),
	}
	if pb := b.Status.PGBackRest; pb != nil {
		order.Stanza, order.Set = pb.Stanza, pb.Label
		if t := spec.Target; t != nil {
			order.Target.LSN = t.LSN
			if !targetTime.IsZero() {
				// postgres reads this form; the zone keeps it unambiguous.
				order.Target.Time = targetTime.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
			}
		}
	}
	return order, nil
}

// archiveOrder is where the cluster's instances archive their WAL: its
// pgBackRest stanza, named after it, in its repository; nil without one.
func archiveOrder(c *holdfastv1.PostgresCluster) *instanceapi.ArchiveOrder {
	if c.Spec.Backup == nil || c.Spec.Backup.Repository.S3 == nil {
		return nil
	}
	return &instanceapi.ArchiveOrder{Stanza: c.Name, Location: resources.RepositoryLocation(c.Spec.Backup.Repository.S3, resources.PGBackRestPath(c))}
}

func phaseOrPending(p holdfastv1.BackupPhase) holdfastv1.BackupPhase {
	if p == "" {
		return holdfastv1.BackupPending
	}
	return p
}

// copyRestoreCredentials copies the source repository's credentials into
// the cluster's own Secret, once: the pods mount that, and it outlives
// whatever later becomes of the source.
func (r *Reconciler) copyRestoreCredentials(ctx context.Context, c *holdfastv1.PostgresCluster, source string) error {
	name := resources.SecretRestoreRepositoryName(c)
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, &corev1.Secret{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading Secret %s: %w", name, err)
	}
	var src corev1.Secret
	err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: source}, &src)
	if apierrors.IsNotFound(err) {
		return &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("the backup's repository credentials, Secret %s, do not exist in namespace %s", source, c.Namespace)}
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s: %w", source, err)
	}
	if _, err := objectstore.CredentialsFromMap(src.Data); err != nil {
		return &restoreBlocked{reasonRestoreSourceMissing, fmt.Sprintf("Secret %s: %v", source, err)}
	}
	data := map[string][]byte{}
	for _, k := range []string{objectstore.KeyAccessKeyID, objectstore.KeySecretAccessKey, objectstore.KeyCA} {
		if v, ok := src.Data[k]; ok {
			data[k] = v
		}
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: maps.Clone(resources.Labels(c))},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	if err := controllerutil.SetControllerReference(c, s, r.Client.Scheme()); err != nil {
		return fmt.Errorf("setting owner of Secret %s: %w", name, err)
	}
	if err := r.Client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s: %w", name, err)
	}
	r.Recorder.Eventf(c, s, corev1.EventTypeNormal, "Created", "Create", "copied the restore source's repository credentials into Secret %s", name)
	return nil
}

// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshots,verbs=get;list;watch

// snapshotRestore creates the first instance's claim from the Backup's
// VolumeSnapshot before the StatefulSet exists, which then adopts it by
// name. Only that claim: the replicas clone the restored primary, as in any
// new cluster.
func (r *Reconciler) snapshotRestore(ctx context.Context, c *holdfastv1.PostgresCluster, b *holdfastv1.Backup) (*instanceapi.RestoreOrder, error) {
	snap := &unstructured.Unstructured{}
	snap.SetGroupVersionKind(resources.VolumeSnapshotGVK)
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: b.Status.VolumeSnapshot}, snap)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil, &restoreBlocked{reasonRestoreSourceMissing,
			fmt.Sprintf("spec.bootstrap.restore.backup: Backup %s's VolumeSnapshot %s does not exist", b.Name, b.Status.VolumeSnapshot)}
	}
	if err != nil {
		return nil, fmt.Errorf("reading VolumeSnapshot %s: %w", b.Status.VolumeSnapshot, err)
	}
	if ready, _, _ := unstructured.NestedBool(snap.Object, "status", "readyToUse"); !ready {
		return nil, &restoreBlocked{reasonRestoreSourceNotReady, fmt.Sprintf("waiting for VolumeSnapshot %s to be ready", snap.GetName())}
	}
	claim := resources.DataClaimTemplate(c)
	// A claim smaller than its snapshot is never provisioned, and a claim
	// once made cannot shrink back into shape: refuse before making it.
	if rs, ok, _ := unstructured.NestedString(snap.Object, "status", "restoreSize"); ok {
		need, err := resource.ParseQuantity(rs)
		if asked := claim.Spec.Resources.Requests[corev1.ResourceStorage]; err == nil && asked.Cmp(need) < 0 {
			return nil, &restoreBlocked{reasonRestoreTargetTooSmall,
				fmt.Sprintf("spec.storage.size %s is smaller than VolumeSnapshot %s (%s) of Backup %s: set spec.storage.size to at least %s",
					asked.String(), snap.GetName(), need.String(), b.Name, need.String())}
		}
	}
	claim.Name = resources.ClaimName(c, 0)
	claim.Namespace = c.Namespace
	claim.Labels = maps.Clone(resources.SelectorLabels(c))
	maps.Copy(claim.Labels, resources.Labels(c))
	claim.Spec.DataSource = &corev1.TypedLocalObjectReference{
		APIGroup: ptr.To(resources.VolumeSnapshotGVK.Group), Kind: resources.VolumeSnapshotGVK.Kind, Name: snap.GetName(),
	}
	if err := r.Client.Create(ctx, &claim); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating claim %s from VolumeSnapshot %s: %w", claim.Name, snap.GetName(), err)
	}
	return &instanceapi.RestoreOrder{Method: instanceapi.MethodVolumeSnapshot}, nil
}
