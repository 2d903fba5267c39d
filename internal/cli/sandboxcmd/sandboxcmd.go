// Package sandboxcmd is the holdfast CLI's sandbox command. It is the one
// part of the CLI that links the sandbox (virtual-kubelet, netlink, the
// control plane), so it lives apart: cmd/holdfastd, the binary in the
// image, must not import it.
package sandboxcmd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"

	"holdfast.dev/holdfast/internal/cli"
	"holdfast.dev/holdfast/internal/rig/sandbox"
	"holdfast.dev/holdfast/internal/rig/sandbox/launch"
)

// New builds the sandbox command.
func New() *cobra.Command {
	var (
		cfg       sandbox.Config
		advertise string
	)
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "A Kubernetes control plane on this machine, from the pinned binaries",
		Long: `The sandbox runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler on this
machine under one folder, with kube-proxy, CoreDNS, an S3 object store, an image registry and a
node that runs pods as local processes from the images it pulls (see docs/sandbox.md).`,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			dir, err := filepath.Abs(cfg.Dir)
			if err != nil {
				return err
			}
			cfg.Dir = dir
			if cfg.BinDir == "" {
				matches, _ := filepath.Glob("bin/k8s/*")
				if len(matches) != 1 {
					return errors.New("--bin-dir: the folder hack/build-k8s.sh prints (make sandbox passes it)")
				}
				cfg.BinDir = matches[0]
			}
			if cfg.BinDir, err = filepath.Abs(cfg.BinDir); err != nil {
				return err
			}
			if cfg.Images != "" {
				if cfg.Images, err = filepath.Abs(cfg.Images); err != nil {
					return err
				}
			}
			if advertise == "" {
				ip, err := sandbox.DefaultAdvertiseIP()
				if err != nil {
					return err
				}
				cfg.AdvertiseIP = ip
			} else if cfg.AdvertiseIP = net.ParseIP(advertise); cfg.AdvertiseIP == nil {
				return fmt.Errorf("--advertise-ip %q is not an IP address", advertise)
			}
			return nil
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&cfg.Dir, "dir", ".sandbox", "the sandbox's state folder")
	f.StringVar(&cfg.BinDir, "bin-dir", os.Getenv("HOLDFAST_K8S_BIN"), "folder of the pinned control-plane binaries")
	f.IntVar(&cfg.APIPort, "api-port", 6443, "the API server's port")
	f.IntVar(&cfg.EtcdPort, "etcd-port", 23790, "etcd's client port on loopback (peer: the next port)")
	f.StringVar(&advertise, "advertise-ip", "", "the API server's advertised address (default: this machine's first non-loopback IPv4)")
	f.StringVar(&cfg.ServiceCIDR, "service-cidr", "10.96.0.0/16", "the Service ClusterIP range")
	f.StringVar(&cfg.Images, "images", "", "an OCI image layout (the folder `make images` prints) to push to the sandbox's registry on up")

	cmd.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Start the sandbox in the background and wait until it is ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sandbox.Up(cmd.Context(), cfg, cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nThe sandbox is up.\n  export KUBECONFIG=%s\n  kubectl get nodes,pods -A\n", cfg.Kubeconfig())
			return nil
		},
	}, &cobra.Command{
		Use:   "down",
		Short: "Stop the sandbox and every process it started",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sandbox.Down(cfg, cmd.OutOrStdout())
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "Say whether the sandbox runs, and where to reach it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid := sandbox.Running(cfg)
			if pid == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "the sandbox is not running")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "the sandbox is running (pid %d)\n  API server: https://127.0.0.1:%d\n  kubeconfig: %s\n  logs: %s\n",
				pid, cfg.APIPort, cfg.Kubeconfig(), filepath.Join(cfg.Dir, "logs"))
			return nil
		},
	}, &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the sandbox's admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), cfg.Kubeconfig())
			return nil
		},
	}, &cobra.Command{
		Use:    "launch SPEC",
		Short:  "Become a container's process as SPEC describes (the node starts containers through this)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		// It runs before any of the sandbox's own flags matter.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		Run: func(_ *cobra.Command, args []string) {
			err := launch.Exec(args[0])
			// The container's log holds why it could not start; 128 is the
			// exit code a kubelet reports for a container that never ran.
			fmt.Fprintf(os.Stderr, "holdfast sandbox launch: %v\n", err)
			os.Exit(launch.StartFailedCode)
		},
	}, &cobra.Command{
		Use:    "serve",
		Short:  "Run the sandbox in the foreground (what up starts in the background)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			ctrl.SetLogger(cli.NewLogger())
			return sandbox.Serve(ctrl.SetupSignalHandler(), cfg)
		},
	})
	return cmd
}
