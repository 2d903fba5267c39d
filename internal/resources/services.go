package resources

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// Services are the cluster's three Services: -rw follows the primary, -ro
// spreads over replicas, and -headless gives each pod a stable DNS name.
func Services(c *holdfastv1.PostgresCluster) []*corev1.Service {
	pg := corev1.ServicePort{Name: "postgres", Port: postgres.Port, TargetPort: intstr.FromString("postgres"), Protocol: corev1.ProtocolTCP}
	status := corev1.ServicePort{Name: "status", Port: instanceapi.StatusPort, TargetPort: intstr.FromString("status"), Protocol: corev1.ProtocolTCP}
	return []*corev1.Service{
		service(c, ServiceRWName(c), "rw", corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: roleSelector(c, holdfastv1.RolePrimary),
			Ports:    []corev1.ServicePort{pg},
		}),
		service(c, ServiceROName(c), "ro", corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: roleSelector(c, holdfastv1.RoleReplica),
			Ports:    []corev1.ServicePort{pg},
		}),
		// Replicas must reach the primary's pod by name before any pod is
		// ready, so the headless Service publishes addresses of unready pods.
		service(c, ServiceHeadlessName(c), "headless", corev1.ServiceSpec{
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 SelectorLabels(c),
			PublishNotReadyAddresses: true,
			Ports:                    []corev1.ServicePort{pg, status},
		}),
	}
}

func service(c *holdfastv1.PostgresCluster, name, component string, spec corev1.ServiceSpec) *corev1.Service {
	labels := Labels(c)
	labels[LabelComponent] = component
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: labels},
		Spec:       spec,
	}
}
