package resources

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

// LeaseName is the coordination.k8s.io Lease that holds the primary role:
// the primary renews it, and stops taking writes when it cannot.
func LeaseName(c *holdfastv1.PostgresCluster) string { return c.Name + "-primary" }

// InstanceServiceAccountName is the identity instance pods run as.
func InstanceServiceAccountName(c *holdfastv1.PostgresCluster) string { return c.Name + "-instance" }

// InstanceAccess is all the API access an instance has: its ServiceAccount
// may read and renew the cluster's primary Lease, and nothing else.
func InstanceAccess(c *holdfastv1.PostgresCluster) (*corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding) {
	meta := metav1.ObjectMeta{Name: InstanceServiceAccountName(c), Namespace: c.Namespace, Labels: Labels(c)}
	return access(meta, rbacv1.PolicyRule{
		APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
		ResourceNames: []string{LeaseName(c)}, Verbs: []string{"get", "update"},
	})
}

// access is a ServiceAccount and a Role of these rules bound to it, all of one name.
func access(meta metav1.ObjectMeta, rules ...rbacv1.PolicyRule) (*corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding) {
	sa := &corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta}
	role := &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: meta,
		Rules:      rules,
	}
	binding := &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: meta.Namespace}},
	}
	return sa, role, binding
}
