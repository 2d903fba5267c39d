// Package controlplane starts a real Kubernetes control plane from the
// pinned binaries (hack/build-k8s.sh): etcd and kube-apiserver through
// envtest, and kube-controller-manager and kube-scheduler beside them, so
// that StatefulSets, garbage collection, claim retention and scheduling
// behave as in a cluster.
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
	components []*Process
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
	if opts.Scheduler {
		if err := cp.startScheduler(opts); err != nil {
			return nil, cp.failed(err)
		}
	}
	return cp, nil
}

func (cp *ControlPlane) startControllerManager(opts Options) error {
	c, err := StartProcess("kube-controller-manager", filepath.Join(opts.BinDir, "kube-controller-manager"), append(ComponentFlags(cp.Kubeconfig),
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
	c, err := StartProcess("kube-scheduler", filepath.Join(opts.BinDir, "kube-scheduler"), ComponentFlags(cp.Kubeconfig), opts.Log)
	if err != nil {
		return err
	}
	cp.components = append(cp.components, c)
	return nil
}

// ComponentFlags connect kube-controller-manager or kube-scheduler to the
// API server with kubeconfig, alone (no leader election) and without a
// serving port of its own.
func ComponentFlags(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	}
}

// Process is one control-plane process started from the pinned binaries.
type Process struct {
	Name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited, with err set
	err    error
}

// StartProcess starts bin with args, its output to out. The process dies
// with this one's thread (PR_SET_PDEATHSIG), so a crashed parent leaves no
// control plane behind.
func StartProcess(name, bin string, args []string, out io.Writer) (*Process, error) {
	if out == nil {
		out = io.Discard
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the exit status, once Exited is closed.
func (p *Process) Err() error { return p.err }

// Stop asks the process to stop and kills it if it takes over 10 seconds.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
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
	return WaitAny(ctx, cp.components)
}

// WaitAny blocks until ctx ends (nil) or one of ps exits (an error naming it).
func WaitAny(ctx context.Context, ps []*Process) error {
	exited := make(chan *Process, len(ps))
	for _, p := range ps {
		go func() {
			select {
			case <-p.exited:
				exited <- p
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case p := <-exited:
		return fmt.Errorf("%s exited: %w", p.Name, p.err)
	}
}
