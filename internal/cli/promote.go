package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func newPromoteCmd() *cobra.Command {
	var kubeconfig, namespace string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "promote CLUSTER INSTANCE",
		Short: "Switch a cluster's primary over to INSTANCE, a ready replica, and wait until it takes writes",
		Long: `promote asks for a planned switchover by setting the ` + holdfastv1.AnnotationSwitchoverTo + `
annotation on the PostgresCluster (kubectl annotate does the same). The operator checkpoints and
stops the primary cleanly, so that every write it took reaches the replicas, then promotes INSTANCE
and moves the -rw Service to it. promote waits for that and says how long it took.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, namespace, err := kubeClient(kubeconfig, namespace)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			took, err := promote(ctx, c, client.ObjectKey{Namespace: namespace, Name: args[0]}, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is the primary of %s/%s (switchover took %s)\n", args[1], namespace, args[0], took.Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the cluster's namespace (default: the kubeconfig's)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	return cmd
}

// promote sets the switchover annotation and waits until the operator
// reports the switchover done, or removes the annotation without doing it
// (refused: the cluster's PrimaryAvailable condition and Events say why).
func promote(ctx context.Context, c client.Client, key client.ObjectKey, to string) (time.Duration, error) {
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
	for {
		select {
		case <-ctx.Done():
			return 0, errors.New("the switchover did not finish in time; see kubectl describe pgc " + key.Name)
		case <-time.After(200 * time.Millisecond):
		}
		if err := c.Get(ctx, key, &pgc); err != nil {
			return 0, err
		}
		sw := pgc.Status.LastSwitchover
		if sw != nil && sw.To == to && sw.CompletedAt != nil && !sw.StartedAt.Time.Before(asked.Add(-time.Second)) {
			return sw.CompletedAt.Sub(sw.StartedAt.Time), nil
		}
		if _, still := pgc.Annotations[holdfastv1.AnnotationSwitchoverTo]; !still && (sw == nil || sw.To != to) {
			return 0, fmt.Errorf("the operator refused the switchover to %s; see the SwitchoverRefused Event (kubectl describe pgc %s)", to, key.Name)
		}
	}
}

// kubeClient connects as the kubeconfig (or, inside a pod, the pod's
// ServiceAccount) says, and settles the namespace: the flag's, else the
// kubeconfig's.
func kubeClient(kubeconfig, namespace string) (client.Client, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	if namespace == "" {
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, "", err
		}
		namespace = ns
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connecting to the API server: %w", err)
	}
	return c, namespace, nil
}
