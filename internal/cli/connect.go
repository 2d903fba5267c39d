package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// clusterFlags are the flags of a command that acts on a cluster and waits.
type clusterFlags struct {
	kubeconfig, namespace string
	timeout               time.Duration
}

func (f *clusterFlags) add(cmd *cobra.Command, timeout time.Duration) {
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "", "the cluster's namespace (default: the kubeconfig's)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", timeout, "how long to wait")
}

// connect reaches the API server, and bounds the wait by --timeout.
func (f *clusterFlags) connect(parent context.Context) (context.Context, context.CancelFunc, client.Client, string, error) {
	c, namespace, err := kubeClient(f.kubeconfig, f.namespace)
	if err != nil {
		return nil, nil, nil, "", err
	}
	ctx, cancel := context.WithTimeout(parent, f.timeout)
	return ctx, cancel, c, namespace, nil
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
	// Pods, for status.
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("connecting to the API server: %w", err)
	}
	return c, namespace, nil
}
