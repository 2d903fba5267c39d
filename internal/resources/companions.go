package resources

import (
	"fmt"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
)

// ConfigMap shows the user's postgresql.conf settings as the instances
// hold them. The instances get them with their orders, not from here: a
// kubelet refreshes a mounted ConfigMap only after a minute or so. It stays
// mounted because a change of pod template would need every pod restarted,
// which only a rolling update (not yet written) may do.
func ConfigMap(c *holdfastv1.PostgresCluster) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(c), Namespace: c.Namespace, Labels: Labels(c)},
		Data:       map[string]string{ConfigKeyParameters: postgres.RenderParameters(c.Spec.PostgreSQL.Parameters)},
	}
}

// PodDisruptionBudget lets a drain take one instance at a time. A pod
// that is not ready may always go: it serves nothing, and the budget must
// not keep a pod that cannot start (a wrong image) from being replaced.
func PodDisruptionBudget(c *holdfastv1.PostgresCluster) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{Name: PodDisruptionBudgetName(c), Namespace: c.Namespace, Labels: Labels(c)},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             ptrIntOrString(intstr.FromInt32(1)),
			Selector:                   &metav1.LabelSelector{MatchLabels: SelectorLabels(c)},
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// Credentials are the passwords of the cluster's three roles.
type Credentials struct {
	Superuser, App, Replication string
}

// Secrets hold the credentials. They are created once and never rewritten,
// so that passwords in them always match the ones in the database.
func Secrets(c *holdfastv1.PostgresCluster, creds Credentials) []*corev1.Secret {
	initdb := c.Spec.Bootstrap.InitDB
	host := ServiceRWName(c)
	port := strconv.Itoa(postgres.Port)
	uri := url.URL{
		Scheme: "postgresql",
		User:   url.UserPassword(initdb.Owner, creds.App),
		Host:   fmt.Sprintf("%s.%s:%s", host, c.Namespace, port),
		Path:   "/" + initdb.Database,
		// The server's certificate names host.namespace; the client brings
		// the CA from the ConfigMap ConfigMapCAName (sslrootcert).
		RawQuery: "sslmode=verify-full",
	}
	return []*corev1.Secret{
		secret(c, SecretSuperuserName(c), map[string]string{
			SecretKeyUsername: postgres.SuperUser,
			SecretKeyPassword: creds.Superuser,
		}),
		secret(c, SecretAppName(c), map[string]string{
			SecretKeyUsername: initdb.Owner,
			SecretKeyPassword: creds.App,
			SecretKeyHost:     host,
			SecretKeyPort:     port,
			SecretKeyDatabase: initdb.Database,
			SecretKeyURI:      uri.String(),
		}),
		secret(c, SecretReplicationName(c), map[string]string{
			SecretKeyUsername: postgres.ReplicationUser,
			SecretKeyPassword: creds.Replication,
		}),
	}
}

func secret(c *holdfastv1.PostgresCluster, name string, data map[string]string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: Labels(c)},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: data,
	}
}

func ptrIntOrString(v intstr.IntOrString) *intstr.IntOrString { return &v }

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func itoa(v int32) string { return strconv.Itoa(int(v)) }
