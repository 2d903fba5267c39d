// Package instances is how controllers reach a cluster's instance
// managers: the address of a pod's instance API and the token it asks for.
package instances

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/resources"
)

// URL is the base URL of the instance API of pod.
func URL(pod *corev1.Pod) string {
	return "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(instanceapi.StatusPort))
}

// Token reads the bearer token the cluster's instance managers ask for.
func Token(ctx context.Context, r client.Reader, c *holdfastv1.PostgresCluster) (string, error) {
	var s corev1.Secret
	key := client.ObjectKey{Namespace: c.Namespace, Name: resources.SecretInstanceTokenName(c)}
	if err := r.Get(ctx, key, &s); err != nil {
		return "", fmt.Errorf("reading the instance token: %w", err)
	}
	return string(s.Data[resources.SecretKeyToken]), nil
}
