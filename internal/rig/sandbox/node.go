package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"

	buildimages "holdfast.dev/holdfast/internal/images"
	"holdfast.dev/holdfast/internal/rig/sandbox/images"
	"holdfast.dev/holdfast/internal/rig/sandbox/imagestore"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
	"holdfast.dev/holdfast/internal/rig/sandbox/node"
)

// PodBridge is the pod network: 10.244.0.0/16, the range Kubernetes
// examples use for pods, on a bridge that exists only on this machine. One
// sandbox runs per machine.
var PodBridge = network.Bridge{Name: "hf0", Gateway: &net.IPNet{IP: net.IPv4(10, 244, 0, 1).To4(), Mask: net.CIDRMask(16, 32)}}

// startNode registers the node and runs its pods; the returned func stops
// every pod and waits for them.
func startNode(ctx context.Context, c Config, cs kubernetes.Interface, reg RegistryInfo) (func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	transport, err := reg.Transport()
	if err != nil {
		return nil, err
	}
	// Pulled images outlive a sandbox, as a node's image store outlives a
	// reboot: the next `up` starts its pods from the roots unpacked before.
	store := &imagestore.Store{Dir: filepath.Join(buildimages.CacheDir(), "node"), Transport: transport,
		Mirrors: reg.Mirrors()}
	o := node.Options{
		Client:        cs,
		NodeName:      NodeName,
		NodeIP:        c.AdvertiseIP,
		Bridge:        PodBridge,
		Dir:           c.path("pods"),
		Launcher:      []string{self, "sandbox", "launch"},
		Store:         store,
		Images:        images.Table{PostgresRoot: "/usr/lib/postgresql"},
		ClusterDNS:    ClusterDNS,
		ClusterDomain: ClusterDomain,
		ServingCert:   c.path("pki", "node.crt"),
		ServingKey:    c.path("pki", "node.key"),
		ClientCA:      c.path("pki", "ca.crt"),
		ShutdownGrace: 10 * time.Second,
		Log:           ctrl.Log.WithName("node"),
	}
	nodeCtx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- node.Run(nodeCtx, o, func() { close(ready) }) }()
	stop := func() {
		cancel()
		<-done
	}
	select {
	case <-ready:
		return stop, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return nil, fmt.Errorf("the sandbox node: %w", err)
	case <-time.After(2 * time.Minute):
		stop()
		return nil, errors.New("the sandbox node did not register within 2 minutes")
	}
}
