// Package storage is the sandbox's storage: a dynamic provisioner that
// serves claims from folders on this machine, and the StorageClasses that
// name it.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// ProvisionerName is what the sandbox's StorageClasses name as provisioner.
const ProvisionerName = "holdfast.dev/hostpath"

// Class names: the default keeps volumes when their claim goes, as a
// database's storage should; the other deletes them.
const (
	ClassRetain = "holdfast-hostpath"
	ClassDelete = "holdfast-hostpath-delete"
)

// HostPath provisions each volume as a folder under Root, pinned to Node.
type HostPath struct {
	Root string
	// NodeHostname is the kubernetes.io/hostname of the node that can reach Root.
	NodeHostname string
}

var _ controller.Provisioner = HostPath{}

// Provision makes the folder and the PersistentVolume for a claim.
func (h HostPath) Provision(_ context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.PVC.Spec.VolumeMode != nil && *opts.PVC.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New("the sandbox serves filesystem volumes only, not block")
	}
	dir := filepath.Join(h.Root, opts.PVName)
	// Pods reach the folder as their fsGroup once the node hands it over.
	if err := os.MkdirAll(dir, 0o770); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("making %s: %w", dir, err)
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: opts.PVC.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   opts.PVC.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              opts.StorageClass.Name,
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: dir, Type: ptr.To(corev1.HostPathDirectory),
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{h.NodeHostname},
				}},
			}}}},
		},
	}, controller.ProvisioningFinished, nil
}

// Delete removes a volume's folder, refusing anything outside Root.
func (h HostPath) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath == nil {
		return &controller.IgnoredError{Reason: "not a hostpath volume"}
	}
	dir := filepath.Clean(pv.Spec.HostPath.Path)
	if !strings.HasPrefix(dir, filepath.Clean(h.Root)+string(filepath.Separator)) {
		return fmt.Errorf("volume %s points at %s, outside %s: not deleting it", pv.Name, dir, h.Root)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
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

// Run provisions and deletes volumes until ctx ends.
func Run(ctx context.Context, cs kubernetes.Interface, h HostPath) {
	controller.NewProvisionController(ctx, cs, ProvisionerName, h,
		controller.LeaderElection(false),
		controller.MetricsPort(0),
	).Run(ctx)
}
