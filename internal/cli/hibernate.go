package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func newHibernateCmd() *cobra.Command {
	var flags clusterFlags
	cmd := &cobra.Command{
		Use:   "hibernate CLUSTER on|off",
		Short: "Stop every instance of a cluster, keeping its data (on), or start it again (off), and wait",
		Long: `hibernate on sets spec.hibernation to true on the PostgresCluster (kubectl patch does the same).
The operator switches the primary over to <cluster>-0 if it is elsewhere, then stops every
pod and keeps the claims; the cluster's phase becomes Hibernated. hibernate off sets it back to
false: <cluster>-0 starts again as the primary, then the replicas, and the cluster is Healthy.

hibernate prints each step of the operation as the operator reports it, and how long it took.
A cluster already in the state asked for is left alone.`,
		Example: `  holdfast hibernate mydb on
  holdfast hibernate mydb off --timeout 20m`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(2)(cmd, args); err != nil {
				return err
			}
			if args[1] != "on" && args[1] != "off" {
				return fmt.Errorf("hibernate %s %q: want on or off", args[0], args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel, c, namespace, err := flags.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			on := args[1] == "on"
			res, err := hibernate(ctx, c, client.ObjectKey{Namespace: namespace, Name: args[0]}, on, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case res.already && on:
				fmt.Fprintf(out, "%s/%s is already hibernated\n", namespace, args[0])
			case res.already:
				fmt.Fprintf(out, "%s/%s is not hibernated (phase %s)\n", namespace, args[0], res.phase)
			case on:
				fmt.Fprintf(out, "%s/%s is hibernated: every instance stopped, the claims kept (took %s)\n", namespace, args[0], res.took.Round(time.Second))
			default:
				fmt.Fprintf(out, "%s/%s is awake and Healthy (took %s)\n", namespace, args[0], res.took.Round(time.Second))
			}
			return nil
		},
	}
	// Stopping may first wait for a switchover; waking for every replica
	// to start and catch up.
	flags.add(cmd, 15*time.Minute)
	return cmd
}

// hibernateResult says how hibernate ended.
type hibernateResult struct {
	// already: the cluster was in the state asked for; nothing was changed.
	already bool
	phase   holdfastv1.ClusterPhase
	took    time.Duration
}

// hibernatePoll is how often hibernate reads the cluster; tests shorten it.
var hibernatePoll = time.Second

// hibernate sets spec.hibernation and waits until the cluster is
// Hibernated (on) or Healthy (off), writing to progress each step the
// operator reports.
func hibernate(ctx context.Context, c client.Client, key client.ObjectKey, on bool, progress io.Writer) (hibernateResult, error) {
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, key, &pgc); err != nil {
		return hibernateResult{}, fmt.Errorf("reading cluster %s: %w", key, err)
	}
	if inState(&pgc, on) {
		return hibernateResult{already: true, phase: pgc.Status.Phase}, nil
	}
	kind, want := holdfastv1.OperationWake, holdfastv1.PhaseHealthy
	if on {
		kind, want = holdfastv1.OperationHibernate, holdfastv1.PhaseHibernated
	}
	asked := time.Now()
	if pgc.Spec.Hibernation != on {
		patch := client.MergeFrom(pgc.DeepCopy())
		pgc.Spec.Hibernation = on
		if err := c.Patch(ctx, &pgc, patch); err != nil {
			return hibernateResult{}, fmt.Errorf("setting spec.hibernation to %t: %w", on, err)
		}
	}
	// A status older than the change still shows the state before it.
	generation := pgc.Generation
	var res hibernateResult
	err := follow(ctx, c, key, &pgc, hibernatePoll, progress, func(pgc *holdfastv1.PostgresCluster) (string, bool, error) {
		current := pgc.Status.ObservedGeneration >= generation
		step := ""
		if current {
			step = hibernateStep(pgc)
		}
		if rec := lastRecord(pgc, kind, asked); rec != nil && rec.Outcome == holdfastv1.OutcomeFailed {
			return step, true, fmt.Errorf("the %s of %s ended Failed: %s", kind, key.Name, rec.Reason)
		}
		if current && pgc.Status.Operation == nil && pgc.Status.Phase == want {
			res = hibernateResult{phase: want, took: time.Since(asked)}
			return step, true, nil
		}
		return step, false, nil
	}, func(string) error {
		return fmt.Errorf("%s is not %s in time (phase %s); see holdfast status %s", key.Name, want, pgc.Status.Phase, key.Name)
	})
	return res, err
}

// inState: the cluster is already as hibernate on (or off) would leave
// it, and no operation is about to change that.
func inState(pgc *holdfastv1.PostgresCluster, on bool) bool {
	if pgc.Spec.Hibernation != on {
		return false
	}
	if on {
		return pgc.Status.Phase == holdfastv1.PhaseHibernated
	}
	if op := pgc.Status.Operation; op != nil && (op.Kind == holdfastv1.OperationHibernate || op.Kind == holdfastv1.OperationWake) {
		return false
	}
	// The operator wakes a cluster whose last operation was a
	// hibernation once spec.hibernation is false: that is still to come.
	n := len(pgc.Status.History)
	return pgc.Status.Phase != holdfastv1.PhaseHibernated && (n == 0 || pgc.Status.History[n-1].Kind != holdfastv1.OperationHibernate)
}

// hibernateStep is what the cluster is doing, as the user follows it: the
// operation and its phase while one runs ("Hibernate: Stopping"), else
// the cluster's phase and ready instances (the replicas starting after a
// wake).
func hibernateStep(pgc *holdfastv1.PostgresCluster) string {
	if op := pgc.Status.Operation; op != nil {
		return fmt.Sprintf("%s: %s", op.Kind, op.Phase)
	}
	return fmt.Sprintf("phase %s, %d of %d instances ready", pgc.Status.Phase, pgc.Status.ReadyInstances, pgc.Spec.Instances)
}
