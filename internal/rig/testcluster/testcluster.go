// Package testcluster starts a real Kubernetes control plane for tests and
// `make run`: etcd and kube-apiserver through envtest, and
// kube-controller-manager and kube-scheduler beside them, so that
// StatefulSets, garbage collection, claim retention and scheduling behave
// as in a cluster.
package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"holdfast.dev/holdfast/internal/rig/controlplane"
)

// Options say what to start.
type Options struct {
	// BinDir holds etcd, kube-apiserver and kube-controller-manager.
	// Empty means $KUBEBUILDER_ASSETS.
	BinDir string
	// CRDDirs are installed once the API server is up.
	CRDDirs []string
	// Dir keeps the kubeconfig and logs. Empty means a new temporary folder.
	Dir string
	// ControllerManager starts kube-controller-manager too.
	ControllerManager bool
	// Scheduler starts kube-scheduler too.
	Scheduler bool
	// Log receives the controller manager's output; nil discards it.
	Log io.Writer
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string

	env        *envtest.Environment
	components []*controlplane.Process
}

// Start brings the control plane up and returns once the API server answers.
func Start(opts Options) (*ControlPlane, error) {
	if opts.BinDir == "" {
		opts.BinDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if opts.BinDir == "" {
		return nil, errors.New("no control-plane binaries: set KUBEBUILDER_ASSETS to the folder hack/build-k8s.sh prints")
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "holdfast-controlplane-")
		if err != nil {
			return nil, fmt.Errorf("making the control plane's folder: %w", err)
		}
		opts.Dir = dir
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: opts.BinDir,
		CRDDirectoryPaths:     opts.CRDDirs,
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		// Start fails after etcd and kube-apiserver run when the CRDs are
		// refused: stop them, or they outlive the test.
		return nil, errors.Join(fmt.Errorf("starting etcd and kube-apiserver from %s: %w", opts.BinDir, err), env.Stop())
	}
	cp := &ControlPlane{Config: cfg, env: env}

	admin, err := env.AddUser(envtest.User{Name: "holdfast-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return nil, cp.failed(fmt.Errorf("adding an admin user: %w", err))
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return nil, cp.failed(fmt.Errorf("writing the admin kubeconfig: %w", err))
	}
	cp.Kubeconfig = filepath.Join(opts.Dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, cp.failed(fmt.Errorf("writing %s: %w", cp.Kubeconfig, err))
	}
	cp.Config = admin.Config()

	if opts.ControllerManager {
		if err := cp.startControllerManager(opts); err != nil {
			return nil, cp.failed(err)
		}
	}
	if opts.Scheduler {
		if err := cp.startScheduler(opts); err != nil {
			return nil, cp.failed(err)
		}
	}
	return cp, nil
}

func (cp *ControlPlane) startControllerManager(opts Options) error {
	c, err := controlplane.StartProcess("kube-controller-manager", filepath.Join(opts.BinDir, "kube-controller-manager"), append(controlplane.ComponentFlags(cp.Kubeconfig),
		// The token controller needs the API server's signing key, which
		// envtest keeps to itself; clients here use the admin kubeconfig.
		"--controllers=*,-serviceaccount-token",
		"--use-service-account-credentials=false",
		// Pods and claims come and go in tests: react at once.
		"--concurrent-statefulset-syncs=5",
	), opts.Log)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, c)
	return nil
}

func (cp *ControlPlane) startScheduler(opts Options) error {
	c, err := controlplane.StartProcess("kube-scheduler", filepath.Join(opts.BinDir, "kube-scheduler"), controlplane.ComponentFlags(cp.Kubeconfig), opts.Log)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, c)
	return nil
}

func (cp *ControlPlane) failed(err error) error {
	return errors.Join(err, cp.Stop())
}

// Stop stops every process it started.
func (cp *ControlPlane) Stop() error {
	for i := len(cp.components) - 1; i >= 0; i-- {
		cp.components[i].Stop()
	}
	if err := cp.env.Stop(); err != nil {
		return fmt.Errorf("stopping etcd and kube-apiserver: %w", err)
	}
	return nil
}

// Wait blocks until ctx ends or a component exits.
func (cp *ControlPlane) Wait(ctx context.Context) error {
	return controlplane.WaitAny(ctx, cp.components)
}
