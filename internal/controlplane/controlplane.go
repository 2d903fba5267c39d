// Package controlplane starts a real Kubernetes control plane from the
// pinned binaries (hack/build-k8s.sh): etcd and kube-apiserver through
// envtest, and kube-controller-manager beside them, so that StatefulSets,
// garbage collection and claim retention behave as in a cluster.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
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
	// Log receives the controller manager's output; nil discards it.
	Log io.Writer
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Config is an admin client configuration.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string

	env *envtest.Environment
	kcm *exec.Cmd
	// kcmExited is closed once the controller manager has exited, with kcmErr set.
	kcmExited chan struct{}
	kcmErr    error
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
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s: %w", opts.BinDir, err)
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
	return cp, nil
}

func (cp *ControlPlane) startControllerManager(opts Options) error {
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	cmd := exec.Command(filepath.Join(opts.BinDir, "kube-controller-manager"),
		"--kubeconfig="+cp.Kubeconfig,
		"--authentication-kubeconfig="+cp.Kubeconfig,
		"--authorization-kubeconfig="+cp.Kubeconfig,
		// The token controller needs the API server's signing key, which
		// envtest keeps to itself; clients here use the admin kubeconfig.
		"--controllers=*,-serviceaccount-token",
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
		// Pods and claims come and go in tests: react at once.
		"--concurrent-statefulset-syncs=5",
	)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	cp.kcm = cmd
	cp.kcmExited = make(chan struct{})
	go func() {
		cp.kcmErr = cmd.Wait()
		close(cp.kcmExited)
	}()
	return nil
}

func (cp *ControlPlane) failed(err error) error {
	return errors.Join(err, cp.Stop())
}

// Stop stops every process it started.
func (cp *ControlPlane) Stop() error {
	var errs []error
	if cp.kcm != nil && cp.kcm.Process != nil {
		_ = cp.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-cp.kcmExited:
		case <-time.After(10 * time.Second):
			_ = cp.kcm.Process.Kill()
			<-cp.kcmExited
		}
	}
	if err := cp.env.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stopping etcd and kube-apiserver: %w", err))
	}
	return errors.Join(errs...)
}

// Wait blocks until ctx ends or the controller manager exits.
func (cp *ControlPlane) Wait(ctx context.Context) error {
	if cp.kcm == nil {
		<-ctx.Done()
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-cp.kcmExited:
		return fmt.Errorf("kube-controller-manager exited: %w", cp.kcmErr)
	}
}
