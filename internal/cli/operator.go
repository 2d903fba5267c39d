package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"

	"holdfast.dev/holdfast/internal/controller/certificates"
	"holdfast.dev/holdfast/internal/operator"
)

func newOperatorCmd() *cobra.Command {
	var (
		opts     operator.Options
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run the operator's controllers (the holdfast-operator Deployment runs this)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := parseLogLevel(logLevel)
			if err != nil {
				return err
			}
			ctrl.SetLogger(newLogger(level))
			cfg, err := ctrl.GetConfig()
			if err != nil {
				return fmt.Errorf("finding the cluster: %w", err)
			}
			return operator.Run(ctrl.SetupSignalHandler(), cfg, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Resources.InstanceImage, "instance-image", "ghcr.io/holdfast-dev/holdfast:"+Version,
		"image whose holdfast binary runs in every database pod")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, error, or a verbosity number (debug is 1)")
	f.StringSliceVar(&opts.WatchNamespaces, "watch-namespaces", nil,
		"namespaces whose clusters, backups and schedules the operator runs (comma-separated; default: all)")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "where to serve metrics; 0 turns them off")
	f.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":8081", "where to serve /healthz and /readyz")
	f.BoolVar(&opts.LeaderElection, "leader-elect", true, "elect one active operator among replicas")
	f.StringVar(&opts.LeaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's)")
	// A standby takes over a crashed leader after the lease duration; the
	// databases do not wait for it (their primaries hold Leases of their
	// own), but failovers and operations do. See docs/high-availability.md.
	f.DurationVar(&opts.LeaseDuration, "leader-elect-lease-duration", 2*time.Second, "how long a standby operator waits on an unrenewed leader lease before it takes over")
	f.DurationVar(&opts.RenewDeadline, "leader-elect-renew-deadline", 1500*time.Millisecond, "how long the leader tries to renew its lease before it steps down")
	f.DurationVar(&opts.RetryPeriod, "leader-elect-retry-period", 250*time.Millisecond, "how often operators try to renew or take the leader lease")
	f.DurationVar(&opts.CertificateLifetime, "certificate-lifetime", certificates.DefaultLifetime,
		"how long the clusters' TLS certificates are valid; each is renewed at two thirds of it")
	return cmd
}
