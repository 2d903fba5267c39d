// Package node is the sandbox's one node: it registers a Node, keeps its
// lease, and runs the pods bound to it as local processes, each pod in a
// network namespace of its own and each container in its own mount and PID
// namespaces, on virtual-kubelet's pod and node controllers.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/go-logr/logr"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	vknode "github.com/virtual-kubelet/virtual-kubelet/node"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"holdfast.dev/holdfast/internal/rig/sandbox/images"
	"holdfast.dev/holdfast/internal/rig/sandbox/imagestore"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// KubeletPort is where the node's API (logs) would listen, as the kubelet's.
const KubeletPort = 10250

// Options describe the node.
type Options struct {
	Client   kubernetes.Interface
	NodeName string
	// NodeIP is the node's InternalIP: this machine's address the API server reaches.
	NodeIP net.IP
	// Bridge is the pod network; pods get addresses from its gateway's range.
	Bridge network.Bridge
	// Dir holds one folder per pod: volumes, /etc files, logs.
	Dir string
	// Launcher is the command that becomes a container's process given a
	// spec file (the holdfast binary's `sandbox launch`).
	Launcher []string
	// Store pulls the images a registry serves; Images maps the others
	// (those that cannot be built here) to programs on this machine.
	Store  *imagestore.Store
	Images images.Table
	// ClusterDNS and ClusterDomain go into each pod's resolv.conf.
	ClusterDNS    string
	ClusterDomain string
	// ServingCert and ServingKey are the node API's certificate (logs,
	// exec); ClientCA verifies the API server's client certificate. Empty
	// ServingCert: no node API.
	ServingCert, ServingKey, ClientCA string
	// ShutdownGrace caps the containers' grace when the node stops.
	ShutdownGrace time.Duration
	Log           logr.Logger
}

// Run registers the node and runs its pods until ctx ends; then it stops
// every pod. ready is called once the node is registered.
func Run(ctx context.Context, o Options, ready func()) error {
	vklog.L = vkslog.FromSlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: o.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: o.NodeName})

	mine := informers.NewSharedInformerFactoryWithOptions(o.Client, time.Minute,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.NodeName).String()
		}))
	all := informers.NewSharedInformerFactory(o.Client, time.Minute)
	pods := mine.Core().V1().Pods()
	secrets, configMaps, services := all.Core().V1().Secrets(), all.Core().V1().ConfigMaps(), all.Core().V1().Services()
	synced := []cache.InformerSynced{pods.Informer().HasSynced, secrets.Informer().HasSynced,
		configMaps.Informer().HasSynced, services.Informer().HasSynced}
	p := newProvider(o, recorder, secrets.Lister(), configMaps.Lister())
	defer p.shutdown(o.ShutdownGrace)
	mine.Start(ctx.Done())
	all.Start(ctx.Done())
	// Pods created while the caches fill would fail their env resolution.
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("node caches did not sync: %w", ctx.Err())
	}

	pc, err := vknode.NewPodController(vknode.PodControllerConfig{
		PodClient:         o.Client.CoreV1(),
		PodInformer:       pods,
		EventRecorder:     recorder,
		Provider:          p,
		ConfigMapInformer: configMaps,
		SecretInformer:    secrets,
		ServiceInformer:   services,
	})
	if err != nil {
		return fmt.Errorf("pod controller: %w", err)
	}
	go func() { _ = pc.Run(ctx, 4) }()
	go p.resyncStatus(ctx, pods.Lister(), o.Client)
	select {
	case <-pc.Ready():
	case <-pc.Done():
		return fmt.Errorf("pod controller: %w", pc.Err())
	case <-ctx.Done():
		return nil
	}

	if err := p.serveAPI(ctx); err != nil {
		return err
	}
	nc, err := vknode.NewNodeController(vknode.NaiveNodeProvider{}, nodeObject(o), o.Client.CoreV1().Nodes(),
		vknode.WithNodeEnableLeaseV1(o.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease), 0))
	if err != nil {
		return fmt.Errorf("node controller: %w", err)
	}
	go func() { _ = nc.Run(ctx) }()
	select {
	case <-nc.Ready():
	case <-nc.Done():
		return fmt.Errorf("node controller: %w", nc.Err())
	case <-ctx.Done():
		return nil
	}
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-pc.Done():
		return fmt.Errorf("pod controller stopped: %w", pc.Err())
	case <-nc.Done():
		return fmt.Errorf("node controller stopped: %w", nc.Err())
	}
}

// nodeObject is the Node as registered: ready, with this machine's
// capacity and the InternalIP alone (the API server would try a Hostname
// address first and fail to resolve it).
func nodeObject(o Options) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memoryBytes(), resource.BinarySI),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: o.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   o.NodeName,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: runtime.GOARCH,
				"type":                 "holdfast-sandbox",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR(o), PodCIDRs: []string{podCIDR(o)}},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "the sandbox node runs pods as local processes"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", "pods are on the sandbox bridge"),
			},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: o.NodeIP.String()}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: KubeletPort}},
			NodeInfo: corev1.NodeSystemInfo{
				OperatingSystem:         "linux",
				Architecture:            runtime.GOARCH,
				KubeletVersion:          "holdfast-sandbox",
				ContainerRuntimeVersion: "holdfast-sandbox://processes",
				KernelVersion:           kernelVersion(),
			},
		},
	}
}

func podCIDR(o Options) string {
	n := net.IPNet{IP: o.Bridge.Gateway.IP.Mask(o.Bridge.Gateway.Mask), Mask: o.Bridge.Gateway.Mask}
	return n.String()
}
