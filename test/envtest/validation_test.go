package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"holdfast.dev/holdfast/internal/postgres"
)

// goodCluster is a minimal valid PostgresCluster as a user would write it.
func goodCluster(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "holdfast.dev/v1alpha1",
		"kind":       "PostgresCluster",
		"metadata":   map[string]any{"name": name},
		"spec": map[string]any{
			"instances": int64(3),
			"storage":   map[string]any{"size": "1Gi", "storageClassName": "standard"},
		},
	}}
}

func set(u *unstructured.Unstructured, value any, path ...string) {
	if err := unstructured.SetNestedField(u.Object, value, path...); err != nil {
		panic(err)
	}
}

// createStrict creates as kubectl does, which asks the API server to refuse unknown fields.
func createStrict(ctx context.Context, u *unstructured.Unstructured) error {
	return k8s.Create(ctx, u, client.FieldValidation("Strict"))
}

func wantRejected(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a rejection saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("rejection %q does not say %q", err.Error(), w)
		}
	}
}

func TestAdmissionRejectsBadSpecs(t *testing.T) {
	ns := newNamespace(t)
	tests := []struct {
		name   string
		mutate func(u *unstructured.Unstructured)
		want   []string
	}{
		{"no instances", func(u *unstructured.Unstructured) { set(u, int64(0), "spec", "instances") },
			[]string{"spec.instances", "greater than or equal to 1"}},
		{"too many instances", func(u *unstructured.Unstructured) { set(u, int64(10), "spec", "instances") },
			[]string{"spec.instances", "less than or equal to 9"}},
		{"unsupported major version", func(u *unstructured.Unstructured) { set(u, int64(12), "spec", "postgresVersion") },
			[]string{"spec.postgresVersion", "greater than or equal to 14"}},
		{"storage size missing", func(u *unstructured.Unstructured) {
			unstructured.RemoveNestedField(u.Object, "spec", "storage", "size")
		},
			[]string{"spec.storage.size", "Required value"}},
		{"storage too small", func(u *unstructured.Unstructured) { set(u, "10Mi", "spec", "storage", "size") },
			[]string{"spec.storage.size must be at least 64Mi"}},
		{"storage size not a quantity", func(u *unstructured.Unstructured) { set(u, "lots", "spec", "storage", "size") },
			[]string{"spec.storage.size", "should match"}},
		{"unknown retention", func(u *unstructured.Unstructured) {
			set(u, "Keep", "spec", "storage", "retentionPolicy", "whenDeleted")
		},
			[]string{"spec.storage.retentionPolicy.whenDeleted", `supported values: "Retain", "Delete"`}},
		{"upper-case parameter dodging the owned list", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"Port": "5433"}, "spec", "postgresql", "parameters")
		}, []string{"spec.postgresql.parameters", "names must be lower case"}},
		{"synchronous quorum as large as the cluster", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"quorum": int64(3)}, "spec", "synchronous")
		}, []string{"spec.synchronous.quorum must be less than spec.instances"}},
		{"a renew deadline that leaves no margin before the lease expires", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"leaseDurationSeconds": int64(6), "renewDeadlineSeconds": int64(5)}, "spec", "failover")
		}, []string{"renewDeadlineSeconds must be at least 2 seconds shorter than leaseDurationSeconds"}},
		{"failover on silence sooner than the lease expires", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"unreachableSeconds": int64(3), "leaseDurationSeconds": int64(10), "renewDeadlineSeconds": int64(5)}, "spec", "failover")
		}, []string{"unreachableSeconds must be at least leaseDurationSeconds"}},
		{"a lease shorter than 3 seconds", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"leaseDurationSeconds": int64(2)}, "spec", "failover")
		}, []string{"spec.failover.leaseDurationSeconds"}},
		{"synchronous quorum zero", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"quorum": int64(0)}, "spec", "synchronous")
		}, []string{"spec.synchronous.quorum", "greater than or equal to 1"}},
		{"unknown synchronous setting", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"quorum": int64(1), "mode": "first"}, "spec", "synchronous")
		}, []string{`unknown field "spec.synchronous.mode"`}},
		{"reserved database", func(u *unstructured.Unstructured) { set(u, "postgres", "spec", "bootstrap", "initdb", "database") },
			[]string{"spec.bootstrap.initdb.database cannot be postgres"}},
		{"database name with upper case", func(u *unstructured.Unstructured) { set(u, "My-DB", "spec", "bootstrap", "initdb", "database") },
			[]string{"spec.bootstrap.initdb.database", "should match"}},
		{"reserved owner", func(u *unstructured.Unstructured) { set(u, "pg_monitor", "spec", "bootstrap", "initdb", "owner") },
			[]string{"spec.bootstrap.initdb.owner cannot be pg_monitor: postgres, streaming_replica and names starting with pg_ belong"}},
		{"owner public, which postgres reserves", func(u *unstructured.Unstructured) { set(u, "public", "spec", "bootstrap", "initdb", "owner") },
			[]string{"spec.bootstrap.initdb.owner cannot be public", "reserved words for roles"}},
		{"owner session_user", func(u *unstructured.Unstructured) { set(u, "session_user", "spec", "bootstrap", "initdb", "owner") },
			[]string{"spec.bootstrap.initdb.owner cannot be session_user"}},
		{"name too long for its Services", func(u *unstructured.Unstructured) { u.SetName(strings.Repeat("a", 48)) },
			[]string{"metadata.name must be at most 47 characters"}},
		{"name starting with a digit", func(u *unstructured.Unstructured) { u.SetName("1abc") },
			[]string{"metadata.name must start with a letter"}},
	}
	for param, hint := range postgres.OwnedParameters {
		tests = append(tests, struct {
			name   string
			mutate func(u *unstructured.Unstructured)
			want   []string
		}{"owned parameter " + param, func(u *unstructured.Unstructured) {
			set(u, map[string]any{param: "x", "work_mem": "4MB"}, "spec", "postgresql", "parameters")
		}, []string{"spec.postgresql.parameters: " + param + " is managed by Holdfast and cannot be set: " + hint}})
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := goodCluster(fmt.Sprintf("bad-%d", i))
			u.SetNamespace(ns)
			tt.mutate(u)
			wantRejected(t, createStrict(t.Context(), u), tt.want...)
		})
	}
}

func TestAdmissionRejectsBadChanges(t *testing.T) {
	ns := newNamespace(t)
	tests := []struct {
		name   string
		mutate func(u *unstructured.Unstructured)
		want   []string
	}{
		{"storage shrink", func(u *unstructured.Unstructured) { set(u, "512Mi", "spec", "storage", "size") },
			[]string{"spec.storage", "spec.storage.size cannot shrink"}},
		{"storage class change", func(u *unstructured.Unstructured) { set(u, "fast", "spec", "storage", "storageClassName") },
			[]string{"spec.storage", "storageClassName cannot change"}},
		{"storage class removed", func(u *unstructured.Unstructured) {
			unstructured.RemoveNestedField(u.Object, "spec", "storage", "storageClassName")
		}, []string{"storageClassName cannot change"}},
		{"major version change", func(u *unstructured.Unstructured) { set(u, int64(16), "spec", "postgresVersion") },
			[]string{"spec.postgresVersion cannot change"}},
		{"bootstrap change", func(u *unstructured.Unstructured) { set(u, "other", "spec", "bootstrap", "initdb", "database") },
			[]string{"spec.bootstrap cannot change after the cluster is created"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := goodCluster(fmt.Sprintf("change-%d", i))
			u.SetNamespace(ns)
			if err := createStrict(t.Context(), u); err != nil {
				t.Fatalf("creating a good cluster: %v", err)
			}
			tt.mutate(u)
			wantRejected(t, k8s.Update(t.Context(), u), tt.want...)
		})
	}

	t.Run("allowed changes", func(t *testing.T) {
		u := goodCluster("allowed")
		u.SetNamespace(ns)
		if err := createStrict(t.Context(), u); err != nil {
			t.Fatalf("creating a good cluster: %v", err)
		}
		set(u, "2Gi", "spec", "storage", "size")
		set(u, int64(5), "spec", "instances")
		set(u, map[string]any{"work_mem": "8MB"}, "spec", "postgresql", "parameters")
		set(u, map[string]any{"quorum": int64(2)}, "spec", "synchronous")
		if err := k8s.Update(t.Context(), u); err != nil {
			t.Fatalf("growing storage, scaling and setting parameters was refused: %v", err)
		}
	})

	t.Run("defaults", func(t *testing.T) {
		u := goodCluster("defaults")
		u.SetNamespace(ns)
		if err := createStrict(t.Context(), u); err != nil {
			t.Fatalf("creating a good cluster: %v", err)
		}
		for path, want := range map[string]any{
			"spec.postgresVersion":                     int64(15),
			"spec.storage.retentionPolicy.whenDeleted": "Retain",
			"spec.storage.retentionPolicy.whenScaled":  "Retain",
			"spec.bootstrap.initdb.database":           "app",
			"spec.bootstrap.initdb.owner":              "app",
		} {
			got, _, _ := unstructured.NestedFieldNoCopy(u.Object, strings.Split(path, ".")...)
			if got != want {
				t.Errorf("%s defaulted to %v, want %v", path, got, want)
			}
		}
	})
}
