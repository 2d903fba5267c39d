package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func newFenceCmd() *cobra.Command {
	var flags clusterFlags
	cmd := &cobra.Command{
		Use:   "fence CLUSTER INSTANCE on|off",
		Short: "Stop a replica's postgres, keeping its pod and claim (on), or start it again (off), and wait",
		Long: `fence on sets the ` + holdfastv1.AnnotationFence + ` annotation on the PostgresCluster. The
operator runs a Fence operation when no other runs: it stops the replica's postgres and holds it
stopped, its pod and claim kept, until fence off removes the annotation. The replica then starts
again and catches up. Only a replica is fenced; the primary is refused (promote another instance
first). While a fence holds, no other operation starts, except a failover.

fence prints each step the operator reports. A refusal returns at once with the operator's reason.`,
		Example: `  holdfast fence mydb mydb-2 on
  holdfast fence mydb mydb-2 off`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(3)(cmd, args); err != nil {
				return err
			}
			if args[2] != "on" && args[2] != "off" {
				return fmt.Errorf("fence %s %s %q: want on or off", args[0], args[1], args[2])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel, c, namespace, err := flags.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			key := client.ObjectKey{Namespace: namespace, Name: args[0]}
			if args[2] == "on" {
				if err := fenceOn(ctx, c, key, args[1], cmd.ErrOrStderr()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is fenced: its postgres is stopped, its pod and claim kept\n", args[1])
				return nil
			}
			if err := fenceOff(ctx, c, key, args[1], cmd.ErrOrStderr()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is no longer fenced, and ready\n", args[1])
			return nil
		},
	}
	flags.add(cmd, 5*time.Minute)
	return cmd
}

// fencePoll is how often fence reads the cluster.
const fencePoll = 500 * time.Millisecond

// fenceOn asks for instance's fence and waits until it holds, or until the
// operator records the request Failed.
func fenceOn(ctx context.Context, c client.Client, key client.ObjectKey, instance string, progress io.Writer) error {
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, key, &pgc); err != nil {
		return fmt.Errorf("reading cluster %s: %w", key, err)
	}
	request := instance + "@" + strconv.FormatInt(time.Now().UnixNano(), 10)
	current := pgc.Annotations[holdfastv1.AnnotationFence]
	held, _, _ := strings.Cut(current, "@")
	if fenceRecord(&pgc, current) != nil && pgc.Status.Operation == nil {
		held = "" // a request the operator has finished with
	}
	if held == instance {
		request = current // already asked for: wait for it
	} else if held != "" {
		return fmt.Errorf("%s is fenced; release it first (holdfast fence %s %s off)", held, key.Name, held)
	} else {
		patch := client.MergeFrom(pgc.DeepCopy())
		if pgc.Annotations == nil {
			pgc.Annotations = map[string]string{}
		}
		pgc.Annotations[holdfastv1.AnnotationFence] = request
		if err := c.Patch(ctx, &pgc, patch); err != nil {
			return fmt.Errorf("asking for the fence: %w", err)
		}
	}
	return follow(ctx, c, key, &pgc, fencePoll, progress, func(pgc *holdfastv1.PostgresCluster) (string, bool, error) {
		op := pgc.Status.Operation
		if op != nil && op.Request == request && op.Phase == holdfastv1.PhaseFenced {
			return "", true, nil
		}
		if rec := fenceRecord(pgc, request); rec != nil {
			// The request is spent; it goes, so that it misleads nobody.
			patch := client.MergeFrom(pgc.DeepCopy())
			delete(pgc.Annotations, holdfastv1.AnnotationFence)
			_ = c.Patch(ctx, pgc, patch)
			return "", true, fmt.Errorf("the fence of %s ended %s: %s", instance, rec.Outcome, rec.Reason)
		}
		switch {
		case op != nil && op.Request == request:
			return fmt.Sprintf("Fence: %s", op.Phase), false, nil
		case op != nil:
			return fmt.Sprintf("waiting for the %s under way to end", op.Kind), false, nil
		}
		return "waiting for the operator to start the fence (it waits for any other operation, and for every instance to be ready)", false, nil
	}, func(said string) error {
		return fmt.Errorf("%s is not fenced in time (last: %s); the request stays, holdfast fence %s %s off withdraws it", instance, said, key.Name, instance)
	})
}

// fenceOff removes instance's fence and waits until the operation is over
// and the instance is ready again.
func fenceOff(ctx context.Context, c client.Client, key client.ObjectKey, instance string, progress io.Writer) error {
	var pgc holdfastv1.PostgresCluster
	if err := c.Get(ctx, key, &pgc); err != nil {
		return fmt.Errorf("reading cluster %s: %w", key, err)
	}
	request := pgc.Annotations[holdfastv1.AnnotationFence]
	if held, _, _ := strings.Cut(request, "@"); held != instance {
		return fmt.Errorf("%s is not fenced (%s: %q)", instance, holdfastv1.AnnotationFence, request)
	}
	patch := client.MergeFrom(pgc.DeepCopy())
	delete(pgc.Annotations, holdfastv1.AnnotationFence)
	if err := c.Patch(ctx, &pgc, patch); err != nil {
		return fmt.Errorf("releasing the fence: %w", err)
	}
	return follow(ctx, c, key, &pgc, fencePoll, progress, func(pgc *holdfastv1.PostgresCluster) (string, bool, error) {
		if op := pgc.Status.Operation; op != nil && op.Request == request {
			return "waiting for the operator to end the fence", false, nil
		}
		if is := pgc.Status.Instance(instance); is != nil && is.Ready {
			return "", true, nil
		}
		return instance + " starting again", false, nil
	}, func(string) error {
		return fmt.Errorf("%s is not ready in time after its fence was released; see holdfast status %s", instance, key.Name)
	})
}

// fenceRecord is the history's record of the fence request, nil while none.
func fenceRecord(pgc *holdfastv1.PostgresCluster, request string) *holdfastv1.OperationRecord {
	for i := len(pgc.Status.History) - 1; i >= 0; i-- {
		if rec := &pgc.Status.History[i]; rec.Kind == holdfastv1.OperationFence && rec.Request == request {
			return rec
		}
	}
	return nil
}
