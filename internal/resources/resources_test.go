package resources

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func cluster() *holdfastv1.PostgresCluster {
	return &holdfastv1.PostgresCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: "db"},
		Spec: holdfastv1.PostgresClusterSpec{
			Instances:       3,
			PostgresVersion: 15,
			Storage: holdfastv1.StorageSpec{
				Size:             resource.MustParse("1Gi"),
				StorageClassName: ptr.To("standard"),
				RetentionPolicy:  holdfastv1.ClaimRetentionPolicy{WhenDeleted: holdfastv1.ClaimRetain, WhenScaled: holdfastv1.ClaimRetain},
			},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
			PostgreSQL: holdfastv1.PostgreSQLSpec{Parameters: map[string]holdfastv1.ParameterValue{
				"shared_buffers": "64MB", "max_connections": "100",
			}},
			Bootstrap: holdfastv1.BootstrapSpec{InitDB: holdfastv1.InitDBSpec{Database: "app", Owner: "app"}},
		},
	}
}

// TestGolden pins every object built for a typical cluster; a change to
// them shows up as a reviewable diff of testdata (go test -update rewrites it).
func TestGolden(t *testing.T) {
	c := cluster()
	sa, role, binding := InstanceAccess(c)
	objs := map[string]any{
		"access":      []any{sa, role, binding},
		"statefulset": StatefulSet(c, Options{InstanceImage: "ghcr.io/holdfast-dev/holdfast:dev"}),
		"services":    Services(c),
		"configmap":   ConfigMap(c),
		"pdb":         PodDisruptionBudget(c),
		"secrets":     Secrets(c, Credentials{Superuser: "su-pw", App: "app-pw", Replication: "repl-pw"}),
	}
	for name, obj := range objs {
		t.Run(name, func(t *testing.T) {
			got, err := yaml.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from %s; if the change is meant, run go test ./internal/resources -update\ngot:\n%s", name, path, got)
			}
		})
	}
}

func TestStatefulSetFollowsSpec(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *holdfastv1.PostgresCluster)
		check  func(t *testing.T, s *appsv1.StatefulSet)
	}{
		{"retention Delete maps to the StatefulSet policy", func(c *holdfastv1.PostgresCluster) {
			c.Spec.Storage.RetentionPolicy = holdfastv1.ClaimRetentionPolicy{WhenDeleted: holdfastv1.ClaimDelete, WhenScaled: holdfastv1.ClaimRetain}
		}, func(t *testing.T, s *appsv1.StatefulSet) {
			p := s.Spec.PersistentVolumeClaimRetentionPolicy
			if p.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
				t.Errorf("policy %+v", p)
			}
		}},
		{"empty retention keeps claims", func(c *holdfastv1.PostgresCluster) {
			c.Spec.Storage.RetentionPolicy = holdfastv1.ClaimRetentionPolicy{}
		}, func(t *testing.T, s *appsv1.StatefulSet) {
			p := s.Spec.PersistentVolumeClaimRetentionPolicy
			if p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
				t.Errorf("policy %+v", p)
			}
		}},
		{"image override", func(c *holdfastv1.PostgresCluster) { c.Spec.Image = "example.com/pg:15.8" },
			func(t *testing.T, s *appsv1.StatefulSet) {
				if img := s.Spec.Template.Spec.Containers[0].Image; img != "example.com/pg:15.8" {
					t.Errorf("image %s", img)
				}
			}},
		{"default image follows the major version", func(c *holdfastv1.PostgresCluster) { c.Spec.PostgresVersion = 16 },
			func(t *testing.T, s *appsv1.StatefulSet) {
				if img := s.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/holdfast-dev/holdfast-postgres:16" {
					t.Errorf("image %s", img)
				}
			}},
		{"no storage class leaves the cluster default", func(c *holdfastv1.PostgresCluster) { c.Spec.Storage.StorageClassName = nil },
			func(t *testing.T, s *appsv1.StatefulSet) {
				if sc := s.Spec.VolumeClaimTemplates[0].Spec.StorageClassName; sc != nil {
					t.Errorf("storageClassName %q", *sc)
				}
			}},
		{"user spread replaces the default", func(c *holdfastv1.PostgresCluster) {
			c.Spec.Scheduling.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.DoNotSchedule}}
		}, func(t *testing.T, s *appsv1.StatefulSet) {
			tsc := s.Spec.Template.Spec.TopologySpreadConstraints
			if len(tsc) != 1 || tsc[0].TopologyKey != "topology.kubernetes.io/zone" {
				t.Errorf("spread %+v", tsc)
			}
		}},
		{"scheduling passes through", func(c *holdfastv1.PostgresCluster) {
			c.Spec.Scheduling.NodeSelector = map[string]string{"disk": "ssd"}
			c.Spec.Scheduling.Tolerations = []corev1.Toleration{{Key: "db", Operator: corev1.TolerationOpExists}}
		}, func(t *testing.T, s *appsv1.StatefulSet) {
			p := s.Spec.Template.Spec
			if p.NodeSelector["disk"] != "ssd" || len(p.Tolerations) != 1 || p.Tolerations[0].Key != "db" {
				t.Errorf("nodeSelector %v tolerations %v", p.NodeSelector, p.Tolerations)
			}
		}},
		{"instances set replicas", func(c *holdfastv1.PostgresCluster) { c.Spec.Instances = 5 },
			func(t *testing.T, s *appsv1.StatefulSet) {
				if *s.Spec.Replicas != 5 {
					t.Errorf("replicas %d", *s.Spec.Replicas)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cluster()
			tt.mutate(c)
			tt.check(t, StatefulSet(c, Options{}))
		})
	}
}

func TestSecretsURI(t *testing.T) {
	c := cluster()
	c.Spec.Bootstrap.InitDB = holdfastv1.InitDBSpec{Database: "shop", Owner: "shop_owner"}
	app := Secrets(c, Credentials{App: "pw"})[1]
	if got, want := app.StringData["uri"], "postgresql://shop_owner:pw@demo-rw.db:5432/shop?sslmode=verify-full"; got != want {
		t.Errorf("uri %q, want %q", got, want)
	}
}
