package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func newPromoteCmd() *cobra.Command {
	var flags clusterFlags
	cmd := &cobra.Command{
		Use:   "promote CLUSTER INSTANCE",
		Short: "Switch a cluster's primary over to INSTANCE, a ready replica, and wait until it takes writes",
		Long: `promote asks for a planned switchover by setting the ` + holdfastv1.AnnotationSwitchoverTo + `
annotation on the PostgresCluster (kubectl annotate does the same). The operator checkpoints and
stops the primary cleanly, so that every write it took reaches the replicas, then promotes INSTANCE
and moves the -rw Service to it. promote waits for that and says how long it took.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel, c, namespace, err := flags.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			took, err := promote(ctx, c, client.ObjectKey{Namespace: namespace, Name: args[0]}, args[1], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is the primary of %s/%s (switchover took %s)\n", args[1], namespace, args[0], took.Round(time.Millisecond))
			return nil
		},
	}
	flags.add(cmd, 5*time.Minute)
	return cmd
}

// promote sets the switchover annotation and waits until the operator
// reports the switchover done, or removes the annotation without doing it
// (refused: its SwitchoverRefused Event says why, which promote quotes).
// Each step of the switchover is said on progress as it comes.
func promote(ctx context.Context, c client.Client, key client.ObjectKey, to string, progress io.Writer) (time.Duration, error) {
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, key, &pgc); err != nil {
		return 0, err
	}
	if pgc.Status.CurrentPrimary == to {
		return 0, fmt.Errorf("%s is already the primary", to)
	}
	patch := client.MergeFrom(pgc.DeepCopy())
	if pgc.Annotations == nil {
		pgc.Annotations = map[string]string{}
	}
	pgc.Annotations[holdfastv1.AnnotationSwitchoverTo] = to
	if err := c.Patch(ctx, &pgc, patch); err != nil {
		return 0, fmt.Errorf("asking for the switchover: %w", err)
	}
	asked := time.Now()
	fmt.Fprintf(progress, "asked for a switchover of %s from %s to %s; waiting for the operator to start it\n", key.Name, pgc.Status.CurrentPrimary, to)
	var took time.Duration
	err := follow(ctx, c, key, &pgc, 200*time.Millisecond, progress, func(pgc *holdfastv1.PostgresCluster) (string, bool, error) {
		sw := lastRecord(pgc, holdfastv1.OperationSwitchover, asked)
		if sw != nil && sw.Outcome == holdfastv1.OutcomeSucceeded {
			took = sw.FinishedAt.Sub(sw.StartedAt.Time)
			return "", true, nil
		}
		if sw != nil {
			return "", true, fmt.Errorf("the switchover to %s ended %s: %s", to, sw.Outcome, sw.Reason)
		}
		op := pgc.Status.Operation
		running := op != nil && op.Kind == holdfastv1.OperationSwitchover && op.To == to
		if _, still := pgc.Annotations[holdfastv1.AnnotationSwitchoverTo]; !still && !running {
			return "", true, refusal(ctx, c, key, to, asked)
		}
		if running {
			return fmt.Sprintf("switchover %s: %s", op.Phase, op.Reason), false, nil
		}
		return "", false, nil
	}, func(said string) error {
		return fmt.Errorf("the switchover did not finish in time (last: %s); see kubectl describe pgc %s", orNone(said), key.Name)
	})
	return took, err
}

// refusal is the operator's refusal of the switchover, in the words of
// its newest SwitchoverRefused Event since asked.
func refusal(ctx context.Context, c client.Client, key client.ObjectKey, to string, asked time.Time) error {
	var events corev1.EventList
	if err := c.List(ctx, &events, client.InNamespace(key.Namespace),
		client.MatchingFields{"involvedObject.name": key.Name, "reason": "SwitchoverRefused"}); err == nil {
		var newest *corev1.Event
		for i := range events.Items {
			ev := &events.Items[i]
			if at := eventTime(ev); !at.Before(asked.Add(-time.Second)) && (newest == nil || at.After(eventTime(newest))) {
				newest = ev
			}
		}
		if newest != nil {
			return fmt.Errorf("the operator refused: %s", newest.Message)
		}
	}
	return fmt.Errorf("the operator refused the switchover to %s; see the SwitchoverRefused Event (kubectl describe pgc %s)", to, key.Name)
}

func orNone(s string) string {
	if s == "" {
		return "the operator has not started it"
	}
	return s
}

// lastRecord is the last operation of kind the history records as started
// after asked (less a second of clock skew), nil when none.
func lastRecord(pgc *holdfastv1.PostgresCluster, kind holdfastv1.OperationKind, asked time.Time) *holdfastv1.OperationRecord {
	for i := len(pgc.Status.History) - 1; i >= 0; i-- {
		rec := &pgc.Status.History[i]
		if rec.Kind == kind && !rec.StartedAt.Time.Before(asked.Add(-time.Second)) {
			return rec
		}
	}
	return nil
}
