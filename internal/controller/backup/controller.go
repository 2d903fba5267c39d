// Package backup reconciles Backups: it picks the instance a backup reads,
// orders the backup from that instance's manager, follows it to its end
// and records the outcome; deleting a Backup removes its files.
package backup

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/instances"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/resources"
)

// InstanceAPI is the part of the instance managers' API backups use.
type InstanceAPI interface {
	StartBackup(ctx context.Context, c *holdfastv1.PostgresCluster, base string, o instanceapi.BackupOrder) (instanceapi.BackupReport, error)
	CancelBackup(ctx context.Context, c *holdfastv1.PostgresCluster, base, id string) error
}

// Reconciler reconciles Backups.
type Reconciler struct {
	Client client.Client
	// APIReader reads the repository's credentials, a user's Secret the
	// operator's cache does not hold.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Instances InstanceAPI
}

// Finalizer keeps a Backup until its files are gone from the repository.
const Finalizer = "holdfast.dev/backup-files"

// pollRunning is how often a running backup is looked at.
const pollRunning = 2 * time.Second

// callTimeout bounds one call to an instance manager.
const callTimeout = 5 * time.Second

// +kubebuilder:rbac:groups=holdfast.dev,resources=backups,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=holdfast.dev,resources=backups/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=holdfast.dev,resources=backups/finalizers,verbs=update
// +kubebuilder:rbac:groups=holdfast.dev,resources=postgresclusters,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&holdfastv1.Backup{}).Complete(r)
}

// Reconcile moves one Backup along: Pending, Running, then Completed or Failed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var b holdfastv1.Backup
	if err := r.Client.Get(ctx, req.NamespacedName, &b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if b.DeletionTimestamp != nil {
		return r.finalize(ctx, &b)
	}
	if !controllerutil.ContainsFinalizer(&b, Finalizer) {
		controllerutil.AddFinalizer(&b, Finalizer)
		if err := r.Client.Update(ctx, &b); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the finalizer: %w", err)
		}
	}
	if b.Done() {
		return ctrl.Result{}, nil
	}

	var c holdfastv1.PostgresCluster
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Cluster.Name}, &c)
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.fail(ctx, &b, holdfastv1.BackupReasonClusterNotFound,
			fmt.Sprintf("PostgresCluster %s does not exist in namespace %s", b.Spec.Cluster.Name, b.Namespace))
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading cluster %s: %w", b.Spec.Cluster.Name, err)
	}
	if b.Spec.Method == holdfastv1.BackupVolumeSnapshot {
		if b.Status.Phase == "" || b.Status.Phase == holdfastv1.BackupPending {
			return r.start(ctx, &b, &c)
		}
		return r.snapshotFollow(ctx, &b, &c)
	}
	if c.Spec.Backup == nil || c.Spec.Backup.Repository.S3 == nil {
		return ctrl.Result{}, r.fail(ctx, &b, holdfastv1.BackupReasonNoRepository,
			fmt.Sprintf("PostgresCluster %s has no spec.backup.repository to write to", c.Name))
	}

	if b.Status.Phase == "" || b.Status.Phase == holdfastv1.BackupPending {
		return r.start(ctx, &b, &c)
	}
	return r.follow(ctx, &b, &c)
}

// start picks the instance and records the backup as Running before the
// order goes out, so that an operator restarted in between follows the
// same backup on the same instance instead of starting a second one.
func (r *Reconciler) start(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (ctrl.Result, error) {
	if expired(b, b.CreationTimestamp.Time) {
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonDeadlineExceeded,
			fmt.Sprintf("the backup could not start within %ds; last seen: %s", b.Spec.DeadlineSeconds, orNothing(b.Status.Message)))
	}
	snapshot := b.Spec.Method == holdfastv1.BackupVolumeSnapshot
	if why := noSpareReplica(c); snapshot && why != "" {
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonNoInstance, why)
	}
	if other, err := r.runningBackup(ctx, b); err != nil || other != "" {
		if err != nil {
			return ctrl.Result{}, err
		}
		return r.pending(ctx, b, fmt.Sprintf("waiting for Backup %s of the same cluster to finish", other))
	}
	if snapshot {
		return r.snapshotStart(ctx, b, c)
	}
	want := b.Spec.Target
	if b.Spec.Method == holdfastv1.BackupPGBackRest {
		// pgBackRest reads its data directory locally; a standby backup
		// would need its TLS server between the pods.
		want = holdfastv1.TargetPrimary
	}
	target := pickInstance(c, want)
	if target == "" {
		return r.pending(ctx, b, "no instance of the cluster is ready to be backed up")
	}
	now := metav1.Now()
	b.Status.Phase = holdfastv1.BackupRunning
	b.Status.Instance = target
	b.Status.StartedAt = &now
	b.Status.Reason, b.Status.Message = "", ""
	b.Status.Repository = c.Spec.Backup.Repository.DeepCopy()
	b.Status.Path = repositoryPath(b, c)
	if b.Spec.Method == holdfastv1.BackupPGBackRest {
		b.Status.Path = resources.PGBackRestPath(c)
		b.Status.PGBackRest = &holdfastv1.PGBackRestBackupStatus{Stanza: c.Name}
	}
	if err := r.Client.Status().Update(ctx, b); err != nil {
		return ctrl.Result{}, fmt.Errorf("recording the start of the backup: %w", err)
	}
	r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "Started", "Backup", "backing up %s from %s to %s", c.Name, target, location(b))
	return r.follow(ctx, b, c)
}

// pending keeps the backup waiting and says why.
func (r *Reconciler) pending(ctx context.Context, b *holdfastv1.Backup, why string) (ctrl.Result, error) {
	if b.Status.Phase != holdfastv1.BackupPending || b.Status.Message != why {
		b.Status.Phase, b.Status.Message = holdfastv1.BackupPending, why
		if err := r.Client.Status().Update(ctx, b); err != nil {
			return ctrl.Result{}, fmt.Errorf("updating the backup's status: %w", err)
		}
	}
	return ctrl.Result{RequeueAfter: 5 * time.Second}, nil
}

// follow asks the instance how the backup goes. The order is sent again on
// each look: the instance answers for the backup it knows, and starts
// afresh one it lost in a restart, within the same deadline.
func (r *Reconciler) follow(ctx context.Context, b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) (ctrl.Result, error) {
	var pod corev1.Pod
	podErr := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.Instance}, &pod)
	if expired(b, b.Status.StartedAt.Time) {
		if podErr == nil && pod.Status.PodIP != "" {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			_ = r.Instances.CancelBackup(cctx, c, instances.URL(&pod), string(b.UID))
			cancel()
		}
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonDeadlineExceeded,
			fmt.Sprintf("the backup did not finish within %ds and was stopped; last seen: %s", b.Spec.DeadlineSeconds, orNothing(b.Status.Message)))
	}
	if podErr != nil || pod.Status.PodIP == "" || pod.DeletionTimestamp != nil {
		return r.note(ctx, b, fmt.Sprintf("instance %s is not running; waiting for it until the deadline", b.Status.Instance))
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	order := instanceapi.BackupOrder{ID: string(b.UID), Method: string(b.Spec.Method), Location: location(b)}
	if b.Spec.Method == holdfastv1.BackupPGBackRest {
		order.Stanza, order.Type = b.Status.PGBackRest.Stanza, "full"
		if b.Spec.PGBackRest != nil && b.Spec.PGBackRest.Type != "" {
			order.Type = b.Spec.PGBackRest.Type
		}
	}
	rep, err := r.Instances.StartBackup(cctx, c, instances.URL(&pod), order)
	if err != nil {
		return r.note(ctx, b, fmt.Sprintf("asking %s about the backup: %v", pod.Name, err))
	}
	switch rep.Phase {
	case instanceapi.JobCompleted:
		b.Status.Phase = holdfastv1.BackupCompleted
		b.Status.Message = ""
		b.Status.StoppedAt = &metav1.Time{Time: *rep.StoppedAt}
		b.Status.SizeBytes, b.Status.Databases, b.Status.ServerVersion = rep.SizeBytes, rep.Databases, rep.ServerVersion
		if pb := b.Status.PGBackRest; pb != nil {
			pb.Label, pb.BeginWAL, pb.EndWAL, pb.BeginLSN, pb.EndLSN = rep.Label, rep.BeginWAL, rep.EndWAL, rep.BeginLSN, rep.EndLSN
			pb.DatabaseSizeBytes = rep.DatabaseSize
		}
		if err := r.Client.Status().Update(ctx, b); err != nil {
			return ctrl.Result{}, fmt.Errorf("recording the backup's completion: %w", err)
		}
		r.Recorder.Eventf(b, nil, corev1.EventTypeNormal, "Completed", "Backup", "backup of %s completed: %d bytes in %s",
			c.Name, rep.SizeBytes, rep.StoppedAt.Sub(rep.StartedAt).Round(time.Millisecond))
		return ctrl.Result{}, nil
	case instanceapi.JobFailed:
		return ctrl.Result{}, r.fail(ctx, b, holdfastv1.BackupReasonBackupError, rep.Error)
	}
	return r.note(ctx, b, "running on "+pod.Name)
}

// note records what the backup is waiting on, and looks again soon.
func (r *Reconciler) note(ctx context.Context, b *holdfastv1.Backup, msg string) (ctrl.Result, error) {
	if b.Status.Message != msg {
		b.Status.Message = msg
		if err := r.Client.Status().Update(ctx, b); err != nil {
			return ctrl.Result{}, fmt.Errorf("updating the backup's status: %w", err)
		}
	}
	return ctrl.Result{RequeueAfter: pollRunning}, nil
}

// fail ends the backup as Failed. The cluster is not touched.
func (r *Reconciler) fail(ctx context.Context, b *holdfastv1.Backup, reason, msg string) error {
	if b.Spec.Method == holdfastv1.BackupVolumeSnapshot && b.Status.Instance != "" {
		if err := r.setFence(ctx, b, false); err != nil {
			return err
		}
	}
	now := metav1.Now()
	b.Status.Phase, b.Status.Reason, b.Status.Message = holdfastv1.BackupFailed, reason, msg
	b.Status.StoppedAt = &now
	if err := r.Client.Status().Update(ctx, b); err != nil {
		return fmt.Errorf("recording the backup's failure: %w", err)
	}
	r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, reason, "Backup", "backup failed: %s", msg)
	return nil
}

// finalize removes the backup's files, then lets the Backup go.
func (r *Reconciler) finalize(ctx context.Context, b *holdfastv1.Backup) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(b, Finalizer) {
		return ctrl.Result{}, nil
	}
	if b.Status.Phase == holdfastv1.BackupRunning {
		r.cancelOnInstance(ctx, b)
	}
	if b.Spec.Method == holdfastv1.BackupVolumeSnapshot && b.Status.Instance != "" {
		// The snapshot itself goes with its owner, the Backup.
		if err := r.setFence(ctx, b, false); err != nil {
			return ctrl.Result{}, err
		}
	}
	var err error
	if b.Status.PGBackRest != nil {
		// A pgBackRest set shares its repository with the stanza's other
		// sets and WAL: only pgBackRest may take it out.
		err = r.expireSet(ctx, b)
	} else {
		err = r.removeFiles(ctx, b)
	}
	var gone *unreachableFiles
	switch {
	case errors.Is(err, errExpiring):
		return ctrl.Result{RequeueAfter: pollRunning}, nil
	case errors.As(err, &gone):
		r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, "FilesLeft", "Delete", "%v", err)
	case err != nil:
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(b, Finalizer)
	if err := r.Client.Update(ctx, b); err != nil {
		return ctrl.Result{}, fmt.Errorf("removing the finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

// errExpiring: the set is being expired; look again.
var errExpiring = errors.New("the pgBackRest set is being expired")

// expireSet has the cluster's primary expire the backup's set.
func (r *Reconciler) expireSet(ctx context.Context, b *holdfastv1.Backup) error {
	pb := b.Status.PGBackRest
	if pb.Label == "" {
		return nil // it never completed: no set bears its name
	}
	var c holdfastv1.PostgresCluster
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Cluster.Name}, &c)
	if apierrors.IsNotFound(err) {
		return &unreachableFiles{fmt.Sprintf("set %s is left in %s: cluster %s, whose pgBackRest expires sets, is gone", pb.Label, location(b), b.Spec.Cluster.Name)}
	}
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: c.Status.CurrentPrimary}, &pod); err != nil || pod.Status.PodIP == "" {
		return errExpiring // no primary to ask yet
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rep, err := r.Instances.StartBackup(cctx, &c, instances.URL(&pod), instanceapi.BackupOrder{
		ID: "expire-" + string(b.UID), Method: instanceapi.MethodPGBackRest, Location: location(b), Stanza: pb.Stanza, Expire: pb.Label,
	})
	switch {
	case err != nil:
		log.FromContext(ctx).Info("asking the primary to expire the set", "set", pb.Label, "error", err.Error())
		return errExpiring
	case rep.Phase == instanceapi.JobRunning:
		return errExpiring
	case rep.Phase == instanceapi.JobFailed:
		return &unreachableFiles{fmt.Sprintf("set %s is left in %s: %s", pb.Label, location(b), rep.Error)}
	}
	log.FromContext(ctx).Info("expired the pgBackRest set", "set", pb.Label, "at", location(b).String())
	return nil
}

// unreachableFiles: the files cannot be deleted and never will be (the
// credentials are gone); the Backup goes anyway, with an Event saying so.
type unreachableFiles struct{ msg string }

func (e *unreachableFiles) Error() string { return e.msg }

func (r *Reconciler) removeFiles(ctx context.Context, b *holdfastv1.Backup) error {
	repo := b.Status.Repository
	if repo == nil || repo.S3 == nil || b.Status.Path == "" {
		return nil // nothing was written
	}
	var secret corev1.Secret
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: repo.S3.CredentialsSecret}, &secret)
	if apierrors.IsNotFound(err) {
		return &unreachableFiles{fmt.Sprintf("the files of the backup at %s are left: Secret %s, the repository's credentials, is gone", location(b), repo.S3.CredentialsSecret)}
	}
	if err != nil {
		return fmt.Errorf("reading the repository credentials: %w", err)
	}
	cred, err := objectstore.CredentialsFromMap(secret.Data)
	if err != nil {
		return &unreachableFiles{fmt.Sprintf("the files of the backup at %s are left: Secret %s: %v", location(b), repo.S3.CredentialsSecret, err)}
	}
	store, err := objectstore.Open(location(b), cred)
	if err != nil {
		return &unreachableFiles{fmt.Sprintf("the files of the backup are left: %v", err)}
	}
	n, err := store.RemoveAll(ctx)
	if err != nil {
		return fmt.Errorf("deleting the backup's files: %w", err)
	}
	log.FromContext(ctx).Info("deleted the backup's files", "objects", n, "at", location(b).String())
	return nil
}

func (r *Reconciler) cancelOnInstance(ctx context.Context, b *holdfastv1.Backup) {
	var c holdfastv1.PostgresCluster
	var pod corev1.Pod
	if r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Spec.Cluster.Name}, &c) != nil ||
		r.Client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.Instance}, &pod) != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_ = r.Instances.CancelBackup(cctx, &c, instances.URL(&pod), string(b.UID))
}

// runningBackup names another Backup of the same cluster that is Running:
// one backup per cluster at a time, as a second would compete for the
// same disk and, for physical methods, the same WAL.
func (r *Reconciler) runningBackup(ctx context.Context, b *holdfastv1.Backup) (string, error) {
	var list holdfastv1.BackupList
	if err := r.Client.List(ctx, &list, client.InNamespace(b.Namespace)); err != nil {
		return "", fmt.Errorf("listing backups: %w", err)
	}
	for _, o := range list.Items {
		if o.UID != b.UID && o.Spec.Cluster.Name == b.Spec.Cluster.Name && o.Status.Phase == holdfastv1.BackupRunning {
			return o.Name, nil
		}
	}
	return "", nil
}

// pickInstance chooses a ready replica for prefer-standby (the most
// caught-up one, by the status's lag), else the ready primary.
func pickInstance(c *holdfastv1.PostgresCluster, target holdfastv1.BackupTarget) string {
	var primary string
	var replicas []holdfastv1.InstanceStatus
	for _, is := range c.Status.Instances {
		switch {
		case !is.Ready:
		case is.Name == c.Status.CurrentPrimary && is.Role == holdfastv1.RolePrimary:
			primary = is.Name
		case is.Role == holdfastv1.RoleReplica:
			replicas = append(replicas, is)
		}
	}
	if target == holdfastv1.TargetPrimary || len(replicas) == 0 {
		return primary
	}
	return slices.MinFunc(replicas, func(a, b holdfastv1.InstanceStatus) int {
		return int(a.LagBytes - b.LagBytes)
	}).Name
}

// repositoryPath is the backup's folder: <path>/<namespace>/<cluster>/logical/<backup>-<uid>.
// The UID keeps a Backup re-created under the same name from writing over
// files of its predecessor that are still being removed.
func repositoryPath(b *holdfastv1.Backup, c *holdfastv1.PostgresCluster) string {
	uid := string(b.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return path.Join(c.Spec.Backup.Repository.S3.Path, b.Namespace, c.Name, string(b.Spec.Method), b.Name+"-"+uid)
}

func location(b *holdfastv1.Backup) objectstore.Location {
	return resources.RepositoryLocation(b.Status.Repository.S3, b.Status.Path)
}

func expired(b *holdfastv1.Backup, since time.Time) bool {
	return time.Since(since) > time.Duration(b.Spec.DeadlineSeconds)*time.Second
}

func orNothing(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
