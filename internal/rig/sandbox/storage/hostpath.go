// Package storage is the sandbox's storage: a dynamic provisioner that
// serves claims from filesystems of their size mounted on folders of this
// machine, empty or restored from a VolumeSnapshot, a resizer that grows
// them when their claims ask, the StorageClasses that name it, and the
// snapshotter that the upstream snapshot controllers call to copy those
// folders.
package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// ProvisionerName is what the sandbox's StorageClasses name as provisioner.
const ProvisionerName = "holdfast.dev/hostpath"

// DriverName is the CSI driver that the provisioner's volumes name, though
// no CSI driver runs: the upstream snapshot controller takes snapshots of
// CSI volumes only, and routes them by this name to the sidecar that calls
// Snapshotter. The node maps such volumes to their folders itself.
const DriverName = "hostpath.sandbox.holdfast.dev"

// PathAttribute is the volume attribute that holds a volume's folder.
const PathAttribute = "path"

// Class names: the default keeps volumes when their claim goes, as a
// database's storage should; the other deletes them.
const (
	ClassRetain = "holdfast-hostpath"
	ClassDelete = "holdfast-hostpath-delete"
)

// HostPath provisions each volume as a filesystem mounted on a folder
// under Root (see volume.go), pinned to Node.
type HostPath struct {
	Root string
	// NodeHostname is the kubernetes.io/hostname of the node that can reach Root.
	NodeHostname string
	// Snapshots reads the VolumeSnapshots that claims restore from; without
	// it such claims are refused.
	Snapshots snapshotclient.Interface
}

var _ controller.Provisioner = HostPath{}

// Provision makes the volume and the PersistentVolume for a claim: empty,
// or a copy of the snapshot named by the claim's data source.
func (h HostPath) Provision(ctx context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.PVC.Spec.VolumeMode != nil && *opts.PVC.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New("the sandbox serves filesystem volumes only, not block")
	}
	if !plainName(opts.PVName) {
		return nil, controller.ProvisioningFinished, fmt.Errorf("volume name %q is not a plain name", opts.PVName)
	}
	from, state, err := h.snapshotSource(ctx, opts.PVC)
	if err != nil {
		return nil, state, fmt.Errorf("claim %s/%s: %w", opts.PVC.Namespace, opts.PVC.Name, err)
	}
	capacity := provisionedSize(opts.PVC.Spec.Resources.Requests[corev1.ResourceStorage])
	v := volumeOf(h.Root, opts.PVName)
	var fill func() error
	if from != "" {
		fill = func() error {
			if _, err := copyInto(ctx, from, v.dir); err != nil {
				return fmt.Errorf("restoring a snapshot: %w", err)
			}
			return nil
		}
	}
	if err := v.ensure(ctx, imageBytes(capacity), fill); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("volume %s of claim %s/%s: %w", opts.PVName, opts.PVC.Namespace, opts.PVC.Name, err)
	}
	return h.persistentVolume(opts, capacity, v.dir), controller.ProvisioningFinished, nil
}

// persistentVolume is the PV of a volume made for a claim.
func (h HostPath) persistentVolume(opts controller.ProvisionOptions, capacity resource.Quantity, dir string) *corev1.PersistentVolume {
	reclaim := corev1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: capacity},
			AccessModes:                   opts.PVC.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              opts.StorageClass.Name,
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:           DriverName,
				VolumeHandle:     opts.PVName,
				VolumeAttributes: map[string]string{PathAttribute: dir},
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{h.NodeHostname},
				}},
			}}}},
		},
	}
}

// Delete unmounts a volume and removes its folder and image.
func (h HostPath) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	dir, err := volumeFolder(h.Root, pv)
	if err != nil {
		return err
	}
	if err := volumeOf(h.Root, filepath.Base(dir)).remove(); err != nil {
		return fmt.Errorf("deleting volume %s: %w", pv.Name, err)
	}
	return nil
}

// volumeFolder is the folder of a volume of Root, refusing anything else: a
// PV's path is whatever its writer put there. Another driver's volume is an
// IgnoredError.
func volumeFolder(root string, pv *corev1.PersistentVolume) (string, error) {
	var dir string
	switch {
	case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == DriverName:
		dir = pv.Spec.CSI.VolumeAttributes[PathAttribute]
	case pv.Spec.HostPath != nil:
		dir = pv.Spec.HostPath.Path
	default:
		return "", &controller.IgnoredError{Reason: "not a hostpath volume"}
	}
	dir = filepath.Clean(dir)
	// Volumes are the plain-named folders of Root; snapshots are not volumes.
	if filepath.Dir(dir) != filepath.Clean(root) || !plainName(filepath.Base(dir)) || dir == snapshotsDir(root) {
		return "", fmt.Errorf("volume %s points at %s, which is not a volume folder of %s", pv.Name, dir, root)
	}
	return dir, nil
}

// EnsureClasses creates the sandbox's StorageClasses; the Retain one is the default.
func EnsureClasses(ctx context.Context, cs kubernetes.Interface) error {
	for _, sc := range []*storagev1.StorageClass{
		class(ClassRetain, corev1.PersistentVolumeReclaimRetain, true),
		class(ClassDelete, corev1.PersistentVolumeReclaimDelete, false),
	} {
		_, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating StorageClass %s: %w", sc.Name, err)
		}
	}
	return nil
}

func class(name string, reclaim corev1.PersistentVolumeReclaimPolicy, isDefault bool) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: name},
		Provisioner:          ProvisionerName,
		ReclaimPolicy:        &reclaim,
		AllowVolumeExpansion: ptr.To(true),
		VolumeBindingMode:    ptr.To(storagev1.VolumeBindingImmediate),
	}
	if isDefault {
		sc.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
	}
	return sc
}

// Run provisions, grows and deletes volumes until ctx ends, then unmounts
// them all before it returns; its error says what stayed mounted.
func Run(ctx context.Context, cs kubernetes.Interface, h HostPath) error {
	var wg sync.WaitGroup
	wg.Go(func() { runResizer(ctx, cs, h.Root) })
	controller.NewProvisionController(ctx, cs, ProvisionerName, h,
		controller.LeaderElection(false),
		controller.MetricsPort(0),
		// The library's default waits 15 s before its first retry, and a
		// claim made just after its VolumeSnapshot is retried until the
		// snapshot is ready, which takes a second or two here.
		controller.RateLimiter(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute)),
	).Run(ctx)
	wg.Wait()
	if err := UnmountAll(h.Root); err != nil {
		return fmt.Errorf("unmounting the volumes: %w", err)
	}
	return nil
}

// snapshotSource finds the folder of the snapshot that a claim's data source
// names, or "" when the claim has none. It checks what the upstream CSI
// external-provisioner checks, since the provisioner library leaves data
// sources to the provisioner. A snapshot that is not ready yet is an error
// with ProvisioningNoChange, so the library tries again later.
func (h HostPath) snapshotSource(ctx context.Context, pvc *corev1.PersistentVolumeClaim) (string, controller.ProvisioningState, error) {
	var group, kind, name string
	switch ref, src := pvc.Spec.DataSourceRef, pvc.Spec.DataSource; {
	case ref != nil:
		if ref.Namespace != nil && *ref.Namespace != pvc.Namespace {
			return "", controller.ProvisioningFinished, fmt.Errorf("its data source is in namespace %s; the sandbox restores only from the claim's own namespace", *ref.Namespace)
		}
		group, kind, name = ptr.Deref(ref.APIGroup, ""), ref.Kind, ref.Name
	case src != nil:
		group, kind, name = ptr.Deref(src.APIGroup, ""), src.Kind, src.Name
	default:
		return "", controller.ProvisioningFinished, nil
	}
	if group != snapshotv1.GroupName || kind != "VolumeSnapshot" {
		return "", controller.ProvisioningFinished, fmt.Errorf("its data source is a %s %s; the sandbox fills volumes only from VolumeSnapshots", kind, name)
	}
	if h.Snapshots == nil {
		return "", controller.ProvisioningFinished, errors.New("this provisioner has no snapshot client to restore from")
	}
	vs, err := h.Snapshots.SnapshotV1().VolumeSnapshots(pvc.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		// The snapshot may be made after the claim, so a missing one is waited for.
		return "", controller.ProvisioningNoChange, fmt.Errorf("reading VolumeSnapshot %s: %w", name, err)
	}
	if vs.DeletionTimestamp != nil {
		return "", controller.ProvisioningFinished, fmt.Errorf("VolumeSnapshot %s is being deleted", name)
	}
	if vs.Status == nil || !ptr.Deref(vs.Status.ReadyToUse, false) || ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "") == "" {
		return "", controller.ProvisioningNoChange, fmt.Errorf("VolumeSnapshot %s is not ready to use yet", name)
	}
	contentName := *vs.Status.BoundVolumeSnapshotContentName
	content, err := h.Snapshots.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		return "", controller.ProvisioningNoChange, fmt.Errorf("reading VolumeSnapshotContent %s of VolumeSnapshot %s: %w", contentName, name, err)
	}
	if content.Spec.Driver != DriverName {
		return "", controller.ProvisioningFinished, fmt.Errorf("VolumeSnapshot %s was taken by driver %s, not %s", name, content.Spec.Driver, DriverName)
	}
	if content.Spec.VolumeSnapshotRef.UID != vs.UID {
		return "", controller.ProvisioningFinished, fmt.Errorf("VolumeSnapshotContent %s is bound to another VolumeSnapshot than %s", contentName, name)
	}
	if content.Status == nil || ptr.Deref(content.Status.SnapshotHandle, "") == "" {
		return "", controller.ProvisioningNoChange, fmt.Errorf("VolumeSnapshotContent %s has no snapshot handle yet", contentName)
	}
	request := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size := ptr.Deref(content.Status.RestoreSize, 0); size > request.Value() {
		return "", controller.ProvisioningFinished, fmt.Errorf("VolumeSnapshot %s needs %s, more than the %s the claim asks for",
			name, resource.NewQuantity(size, resource.BinarySI), request.String())
	}
	from, err := snapshotPath(h.Root, *content.Status.SnapshotHandle)
	if err != nil {
		return "", controller.ProvisioningFinished, fmt.Errorf("VolumeSnapshotContent %s: %w", contentName, err)
	}
	return from, controller.ProvisioningFinished, nil
}
