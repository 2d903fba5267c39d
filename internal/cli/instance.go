package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"holdfast.dev/holdfast/internal/instance"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

func newInstanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "instance",
		Short: "The instance manager that runs inside every database pod",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "install DEST",
		Short: "Copy this binary to DEST (the init container puts it on a volume the database container shares)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return installSelf(args[0])
		},
	}, newInstanceRunCmd(), newInstanceWatchdogCmd())
	return cmd
}

func newInstanceWatchdogCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:    "watchdog",
		Short:  "Fence postgres when the instance manager stops renewing the primary lease (the manager starts it, and arms it through stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			// It ends when its stdin does: when the manager, and with it
			// the container, is gone.
			return instance.RunWatchdog(context.Background(), os.Stdin, dataDir, NewLogger().WithName("watchdog"))
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", os.Getenv("PGDATA"), "postgres data directory")
	return cmd
}

// clusterIdentity is namespace/name of the pod's cluster, or "" outside one.
func clusterIdentity() string {
	ns, name := os.Getenv("NAMESPACE"), os.Getenv("CLUSTER_NAME")
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}

func newInstanceRunCmd() *cobra.Command {
	cfg := instance.Config{StopTimeout: 50 * time.Second, Version: Version}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run and supervise postgres in this pod, converging it to the state the operator asks for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Name == "" || cfg.DataDir == "" {
				return errors.New("--name (POD_NAME) and --data-dir (PGDATA) are required")
			}
			log := NewLogger()
			ctrl.SetLogger(log)
			ctx := ctrl.SetupSignalHandler()
			m := instance.NewManager(cfg, log.WithName("instance"))
			if restCfg, err := rest.InClusterConfig(); err != nil {
				log.Info("no Kubernetes API access: the primary lease is not used", "reason", err.Error())
			} else {
				cs, err := kubernetes.NewForConfig(restCfg)
				if err != nil {
					return err
				}
				m.UseLease(&instance.LeaseKeeper{Leases: cs.CoordinationV1(), Namespace: os.Getenv("NAMESPACE"), Identity: cfg.Name,
					PodUID: os.Getenv("POD_UID")})
			}
			srv, err := m.Listen()
			if err != nil {
				return err
			}
			defer srv.Close()
			runErr := m.Run(ctx)
			select {
			case err := <-srv.Errs:
				return err
			default:
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", os.Getenv("POD_NAME"), "instance name (the pod name)")
	f.StringVar(&cfg.Cluster, "cluster", clusterIdentity(), "the cluster this instance belongs to, namespace/name (from NAMESPACE and CLUSTER_NAME)")
	f.StringVar(&cfg.Incarnation, "incarnation", os.Getenv("CLUSTER_UID"), "the cluster's UID, which tells its data from an earlier cluster's of the same name (from CLUSTER_UID)")
	f.StringVar(&cfg.DataDir, "data-dir", os.Getenv("PGDATA"), "postgres data directory")
	f.StringVar(&cfg.RunDir, "run-dir", resources.RunMountPath, "socket and password file folder")
	f.StringVar(&cfg.PGBinDir, "pg-bin-dir", "", "folder of the postgres binaries (default: PATH)")
	f.IntVar(&cfg.Port, "port", postgres.Port, "postgres port")
	f.StringVar(&cfg.StatusAddr, "status-addr", fmt.Sprintf(":%d", instance.StatusPort), "address of the probes (plain HTTP)")
	f.StringVar(&cfg.APIAddr, "api-addr", fmt.Sprintf(":%d", instance.APIPort), "address of the instance API (mutual TLS)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", fmt.Sprintf(":%d", instance.MetricsPort), `address of the Prometheus metrics (plain HTTP); "" serves none`)
	f.StringVar(&cfg.SecretsDir, "secrets-dir", resources.SecretsMountPath, "mounted credentials and certificates")
	f.StringVar(&cfg.RepositoryDir, "repository-dir", resources.RepositoryMountPath, "the backup repository's credentials")
	f.StringVar(&cfg.RestoreRepositoryDir, "restore-repository-dir", resources.RestoreRepositoryMountPath, "the credentials of the repository a new cluster is restored from")
	f.StringVar(&cfg.Database, "database", os.Getenv("HOLDFAST_DATABASE"), "application database initdb creates")
	f.StringVar(&cfg.Owner, "owner", os.Getenv("HOLDFAST_OWNER"), "owner of the application database")
	f.Int64Var(&cfg.MaxLagBytes, "max-lag-bytes", 16<<20, "replay lag beyond which a replica is not ready")
	return cmd
}

// installSelf copies the running binary to dest through a temporary file, so
// that dest is never seen half-written.
func installSelf(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("opening %s: %w", self, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".holdfast-*")
	if err != nil {
		return fmt.Errorf("creating a file beside %s: %w", dest, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copying %s: %w", self, err)
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return fmt.Errorf("making %s executable: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return fmt.Errorf("moving the binary to %s: %w", dest, err)
	}
	return nil
}
