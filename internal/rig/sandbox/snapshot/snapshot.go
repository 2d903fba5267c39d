// Package snapshot serves snapshot.storage.k8s.io/v1 VolumeSnapshots of the
// sandbox's hostpath volumes: it installs the upstream CRDs and runs the
// upstream snapshot controller and CSI snapshotter sidecar in this process,
// the sidecar calling storage.Snapshotter where it would call a CSI driver.
package snapshot

import (
	"context"
	"fmt"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapshotscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	snapshotinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	commoncontroller "github.com/kubernetes-csi/external-snapshotter/v8/pkg/common-controller"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/metrics"
	sidecarcontroller "github.com/kubernetes-csi/external-snapshotter/v8/pkg/sidecar-controller"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/snapshotter"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/utils"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/rig/sandbox/storage"
)

// ClassName is the default VolumeSnapshotClass, for the sandbox's driver.
const ClassName = "sandbox-snapshots"

var _ snapshotter.Snapshotter = storage.Snapshotter{}

// The controllers' settings, from the upstream commands' defaults unless
// said otherwise.
const (
	resyncPeriod = 15 * time.Minute
	// Upstream runs 10 workers each; the sandbox's snapshots are few.
	workers = 2
	// Upstream's 1 minute is a gRPC call's deadline; here the call is the
	// copy of a whole volume.
	createTimeout    = 10 * time.Minute
	retryIntervalMin = time.Second
	retryIntervalMax = 5 * time.Minute
)

// Start installs the CRDs, the CSIDriver and the default VolumeSnapshotClass,
// and runs the snapshot controllers until ctx ends, with snapshots kept
// under root/snapshots. It returns a client for the snapshot API, which the
// provisioner reads to restore claims from snapshots.
func Start(ctx context.Context, cfg *rest.Config, root string) (snapshotclient.Interface, error) {
	// The controllers record Events about snapshot objects through the
	// client-go scheme.
	if err := snapshotscheme.AddToScheme(scheme.Scheme); err != nil {
		return nil, err
	}
	if err := installCRDs(ctx, cfg); err != nil {
		return nil, err
	}
	snapClient, err := snapshotclient.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("a client for snapshots: %w", err)
	}
	// As the upstream commands do: protobuf for the core API, JSON for the CRDs.
	coreCfg := rest.CopyConfig(cfg)
	coreCfg.ContentType = runtime.ContentTypeProtobuf
	kubeClient, err := kubernetes.NewForConfig(coreCfg)
	if err != nil {
		return nil, fmt.Errorf("a client for snapshots: %w", err)
	}
	if err := ensureObjects(ctx, kubeClient, snapClient); err != nil {
		return nil, err
	}

	factory := snapshotinformers.NewSharedInformerFactory(snapClient, resyncPeriod)
	coreFactory := informers.NewSharedInformerFactory(kubeClient, resyncPeriod)
	rateLimiter := func() workqueue.TypedRateLimiter[string] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryIntervalMin, retryIntervalMax)
	}
	common := commoncontroller.NewCSISnapshotCommonController(
		snapClient,
		kubeClient,
		factory.Snapshot().V1().VolumeSnapshots(),
		factory.Snapshot().V1().VolumeSnapshotContents(),
		factory.Snapshot().V1().VolumeSnapshotClasses(),
		// The group snapshot CRDs are installed, so the controller runs with
		// group snapshots on, as upstream does when it finds them; the
		// sidecar below takes no group snapshots.
		factory.Groupsnapshot().V1().VolumeGroupSnapshots(),
		factory.Groupsnapshot().V1().VolumeGroupSnapshotContents(),
		factory.Groupsnapshot().V1().VolumeGroupSnapshotClasses(),
		coreFactory.Core().V1().PersistentVolumeClaims(),
		coreFactory.Core().V1().PersistentVolumes(),
		nil, // node informer: only for distributed snapshotting
		metrics.NewMetricsManager(),
		resyncPeriod,
		rateLimiter(), // snapshots
		rateLimiter(), // contents
		rateLimiter(), // group snapshots
		rateLimiter(), // group snapshot contents
		false,         // enableDistributedSnapshotting: one node takes every snapshot
		true,          // preventVolumeModeConversion
		true,          // enableVolumeGroupSnapshots
	)
	sidecar := sidecarcontroller.NewCSISnapshotSideCarController(
		snapClient,
		kubeClient,
		storage.DriverName,
		factory.Snapshot().V1().VolumeSnapshotContents(),
		factory.Snapshot().V1().VolumeSnapshotClasses(),
		storage.Snapshotter{Root: root, Client: kubeClient},
		nil, // groupSnapshotter
		createTimeout,
		resyncPeriod,
		"snapshot", // snapshotNamePrefix: snapshots are named snapshot-<VolumeSnapshot UID>
		-1,         // snapshotNameUUIDLength: the whole UID
		"groupsnapshot",
		-1,
		false, // extraCreateMetadata
		rateLimiter(),
		false, // enableVolumeGroupSnapshots: the sandbox's driver takes none
		nil,
		nil,
		rateLimiter(),
	)
	// Informers are registered by the constructors, so the factories start
	// after them.
	factory.Start(ctx.Done())
	coreFactory.Start(ctx.Done())
	// Run needs a WaitGroup only with the ReleaseLeaderElectionOnExit
	// feature gate; the controllers stop with ctx either way.
	var wg sync.WaitGroup
	go common.Run(workers, ctx.Done(), &wg)
	go sidecar.Run(workers, ctx.Done(), &wg)
	return snapClient, nil
}

// ensureObjects creates the CSIDriver of the sandbox's volumes and the
// default VolumeSnapshotClass, which VolumeSnapshots without a class get.
func ensureObjects(ctx context.Context, kubeClient kubernetes.Interface, snapClient snapshotclient.Interface) error {
	driver := &storagev1.CSIDriver{
		ObjectMeta: metav1.ObjectMeta{Name: storage.DriverName},
		Spec: storagev1.CSIDriverSpec{
			// Nothing attaches volumes to the node: its folders are already there.
			AttachRequired:       ptr.To(false),
			PodInfoOnMount:       ptr.To(false),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
		},
	}
	if _, err := kubeClient.StorageV1().CSIDrivers().Create(ctx, driver, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating CSIDriver %s: %w", driver.Name, err)
	}
	class := &snapshotv1.VolumeSnapshotClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        ClassName,
			Annotations: map[string]string{utils.IsDefaultSnapshotClassAnnotation: "true"},
		},
		Driver:         storage.DriverName,
		DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
	}
	if _, err := snapClient.SnapshotV1().VolumeSnapshotClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating VolumeSnapshotClass %s: %w", class.Name, err)
	}
	return nil
}
