// Command run is `make run`: until the sandbox lands, it starts etcd,
// kube-apiserver and kube-controller-manager from the pinned binaries, runs
// the operator against them in this process, applies config/samples and
// keeps everything up until interrupted. No node runs pods, so instances stay
// Pending; every object the operator makes can be inspected with kubectl.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"holdfast.dev/holdfast/internal/operator"
	"holdfast.dev/holdfast/internal/resources"
	"holdfast.dev/holdfast/internal/rig/testcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrl.SetLogger(zap.New())

	dir, err := filepath.Abs(".run")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	kcmLog, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	defer kcmLog.Close()

	fmt.Println("starting etcd, kube-apiserver and kube-controller-manager ...")
	cp, err := testcluster.Start(testcluster.Options{
		CRDDirs:           []string{filepath.Join("config", "crd", "bases")},
		Dir:               dir,
		ControllerManager: true,
		Log:               kcmLog,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping the control plane")
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()

	mgr, err := operator.NewManager(cp.Config, operator.Options{
		Resources:   resources.Options{InstanceImage: "ghcr.io/holdfast-dev/holdfast:dev"},
		MetricsAddr: "0",
		HealthAddr:  "0",
	})
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- mgr.Start(ctx) }()
	go func() { errs <- cp.Wait(ctx) }()

	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	apply := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "--server-side", "-k", filepath.Join("config", "samples"))
	apply.Stdout, apply.Stderr = os.Stdout, os.Stderr
	if err := apply.Run(); err != nil {
		return fmt.Errorf("applying config/samples: %w", err)
	}
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}
	get := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.Kubeconfig, "get", "pgc,statefulsets,services,secrets,configmaps,pdb,pods,pvc")
	get.Stdout, get.Stderr = os.Stdout, os.Stderr
	_ = get.Run()

	fmt.Printf(`
The control plane and the operator are running; Ctrl-C stops them.
  export KUBECONFIG=%s
  %s get pgc
No node runs pods yet (the sandbox, issue 4, adds one), so instances stay Pending.
`, cp.Kubeconfig, kubectl)

	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}
