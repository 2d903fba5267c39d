package resources

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

func TestServerCertificateNames(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 2}}
	names := ServerCertificateNames(c)
	for _, want := range []string{
		"demo-rw", "demo-rw.db", "demo-rw.db.svc", "demo-rw.db.svc.cluster.local",
		"demo-ro.db.svc", "demo-headless.db.svc.cluster.local",
		"demo-0.demo-headless", "demo-1.demo-headless.db.svc.cluster.local",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
	if slices.Contains(names, "demo-2.demo-headless.db.svc") {
		t.Errorf("a name for a third instance of two: %v", names)
	}
}
