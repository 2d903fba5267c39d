package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func newRestartCmd() *cobra.Command {
	var flags clusterFlags
	cmd := &cobra.Command{
		Use:   "restart CLUSTER [INSTANCE]",
		Short: "Restart every instance of a cluster, or one, and wait until it is done",
		Long: `restart asks for a rolling restart by setting the ` + holdfastv1.AnnotationRestartedAt + ` annotation
on the PostgresCluster to the current time, as kubectl rollout restart does for a Deployment
(kubectl annotate does the same). The operator restarts the replicas one at a time, highest
ordinal first, each back ready and streaming before the next, then switches the primary over
to the most advanced replica and restarts the old primary (or restarts it in place, when
spec.primaryUpdateMethod is Restart). restart waits for that and prints the operation's record.

With INSTANCE, only that instance restarts (the ` + holdfastv1.AnnotationRestartInstance + ` annotation):
a replica at once, the primary after a switchover.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel, c, namespace, err := flags.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			var instance string
			if len(args) == 2 {
				instance = args[1]
			}
			rec, err := restart(ctx, c, client.ObjectKey{Namespace: namespace, Name: args[0]}, instance)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s restarted in %s: %v", namespace, args[0], rec.Duration, rec.Restarted)
			if rec.From != "" && rec.To != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "; the primary moved from %s to %s", rec.From, rec.To)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	flags.add(cmd, 15*time.Minute)
	return cmd
}

// restart sets the restart annotation (for every instance, or for one)
// and waits for the rolling update it starts to end.
func restart(ctx context.Context, c client.Client, key client.ObjectKey, instance string) (*holdfastv1.OperationRecord, error) {
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, key, &pgc); err != nil {
		return nil, err
	}
	patch := client.MergeFrom(pgc.DeepCopy())
	if pgc.Annotations == nil {
		pgc.Annotations = map[string]string{}
	}
	asked := time.Now()
	request := instance + "@" + asked.UTC().Format(time.RFC3339Nano)
	if instance == "" {
		pgc.Annotations[holdfastv1.AnnotationRestartedAt] = asked.UTC().Format(time.RFC3339)
	} else {
		pgc.Annotations[holdfastv1.AnnotationRestartInstance] = request
	}
	if err := c.Patch(ctx, &pgc, patch); err != nil {
		return nil, fmt.Errorf("asking for the restart: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, errors.New("the restart did not finish in time; see kubectl describe pgc " + key.Name)
		case <-time.After(time.Second):
		}
		if err := c.Get(ctx, key, &pgc); err != nil {
			return nil, err
		}
		if rec := lastRecord(&pgc, holdfastv1.OperationRollingUpdate, asked); rec != nil && (instance == "" || rec.Request == request) {
			if rec.Outcome != holdfastv1.OutcomeSucceeded {
				return rec, fmt.Errorf("the rolling restart ended %s: %s", rec.Outcome, rec.Reason)
			}
			return rec, nil
		}
	}
}
