package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
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
	f.addConnection(cmd)
	cmd.Flags().DurationVar(&f.timeout, "timeout", timeout, "how long to wait")
}

// addConnection adds the flags that say where the cluster is, without
// --timeout: for commands that run as long as the user wants (psql, logs
// --follow).
func (f *clusterFlags) addConnection(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", "", "the cluster's namespace (default: the kubeconfig's)")
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

// kube is a connection for the commands that reach into pods (exec, logs)
// besides reading objects: those go through the typed clientset, which
// the controller-runtime client has no verbs for.
type kube struct {
	config    *rest.Config
	client    client.Client
	clientset kubernetes.Interface
	namespace string
}

// connectKube reaches the API server with both clients.
func (f *clusterFlags) connectKube() (*kube, error) {
	cfg, namespace, err := kubeConfig(f.kubeconfig, f.namespace)
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	return &kube{config: cfg, client: c, clientset: cs, namespace: namespace}, nil
}

// kubeClient connects as the kubeconfig (or, inside a pod, the pod's
// ServiceAccount) says, and settles the namespace: the flag's, else the
// kubeconfig's.
func kubeClient(kubeconfig, namespace string) (client.Client, string, error) {
	cfg, namespace, err := kubeConfig(kubeconfig, namespace)
	if err != nil {
		return nil, "", err
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, "", err
	}
	return c, namespace, nil
}

// kubeConfig reads the kubeconfig (or the pod's ServiceAccount) and
// settles the namespace: the flag's, else the kubeconfig's.
func kubeConfig(kubeconfig, namespace string) (*rest.Config, string, error) {
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
	return cfg, namespace, nil
}

// newClient is a client for the kinds the commands read.
func newClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	if err := holdfastv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// Pods, for status; Services, claims, Events and Secrets for report.
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// The StatefulSet, for report.
	if err := appsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	return c, nil
}
