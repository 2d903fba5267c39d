package envtest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/rig/testutil"
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

// withRoles and withDatabases set spec.roles and spec.databases.
func withRoles(rs ...map[string]any) func(u *unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) { set(u, anySlice(rs), "spec", "roles") }
}

func withDatabases(ds ...map[string]any) func(u *unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) { set(u, anySlice(ds), "spec", "databases") }
}

func anySlice(ms []map[string]any) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
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
		{"autoGrow maximum below the size", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"maxSize": "512Mi"}, "spec", "storage", "autoGrow")
		}, []string{"spec.storage.autoGrow.maxSize must be at least spec.storage.size"}},
		{"autoGrow step neither quantity nor percentage", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"maxSize": "4Gi", "step": "a lot"}, "spec", "storage", "autoGrow")
		}, []string{"spec.storage.autoGrow.step must be a positive quantity (2Gi) or a percentage (25%)"}},
		{"autoGrow step of 0%", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"maxSize": "4Gi", "step": "0%"}, "spec", "storage", "autoGrow")
		}, []string{"spec.storage.autoGrow.step must be a positive quantity"}},
		{"autoGrow threshold too high", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"maxSize": "4Gi", "thresholdPercent": int64(99)}, "spec", "storage", "autoGrow")
		}, []string{"spec.storage.autoGrow.thresholdPercent", "less than or equal to 95"}},
		{"autoGrow without a maximum", func(u *unstructured.Unstructured) {
			set(u, map[string]any{"step": "1Gi"}, "spec", "storage", "autoGrow")
		}, []string{"spec.storage.autoGrow.maxSize", "Required value"}},
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
		{"reserved role postgres", withRoles(map[string]any{"name": "postgres"}),
			[]string{"spec.roles: postgres cannot be declared: postgres, streaming_replica and names starting with pg_ belong"}},
		{"reserved role streaming_replica", withRoles(map[string]any{"name": "streaming_replica"}),
			[]string{"spec.roles: streaming_replica cannot be declared"}},
		{"role named like the server's own", withRoles(map[string]any{"name": "pg_signal_backend"}),
			[]string{"spec.roles: pg_signal_backend cannot be declared"}},
		{"role public", withRoles(map[string]any{"name": "public"}),
			[]string{"spec.roles: public cannot be declared", "reserved words for roles"}},
		{"the bootstrap owner as a declared role", withRoles(map[string]any{"name": "app", "login": true}),
			[]string{"spec.roles cannot declare app: it is the bootstrap owner (spec.bootstrap.initdb.owner)"}},
		{"another bootstrap owner as a declared role", func(u *unstructured.Unstructured) {
			set(u, "shop", "spec", "bootstrap", "initdb", "owner")
			withRoles(map[string]any{"name": "shop"})(u)
		}, []string{"spec.roles cannot declare shop: it is the bootstrap owner"}},
		{"two roles of one name", withRoles(map[string]any{"name": "reader"}, map[string]any{"name": "reader", "login": true}),
			[]string{"spec.roles[1]", "Duplicate value", "reader"}},
		{"an absent role with attributes", withRoles(map[string]any{"name": "gone", "ensure": "absent", "login": true}),
			[]string{"a role with ensure: absent is dropped: give it no other field than name"}},
		{"an absent role with memberships", withRoles(map[string]any{"name": "gone", "ensure": "absent", "inRoles": []any{"pg_monitor"}}),
			[]string{"a role with ensure: absent is dropped"}},
		{"an absent role with a connection limit", withRoles(map[string]any{"name": "gone", "ensure": "absent", "connectionLimit": int64(3)}),
			[]string{"a role with ensure: absent is dropped"}},
		{"an unknown ensure", withRoles(map[string]any{"name": "r", "ensure": "gone"}),
			[]string{"spec.roles[0].ensure", `supported values: "present", "absent"`}},
		{"a role in itself", withRoles(map[string]any{"name": "loop", "inRoles": []any{"pg_monitor", "loop"}}),
			[]string{"a role cannot be a member of itself"}},
		{"a password for a role that cannot log in", withRoles(map[string]any{"name": "group", "passwordSecret": map[string]any{"name": "pw"}}),
			[]string{"a password is only used to log in: set login: true or remove passwordSecret"}},
		{"a superuser that cannot log in, with a password", withRoles(map[string]any{"name": "boss", "superuser": true, "login": false,
			"passwordSecret": map[string]any{"name": "pw"}}), []string{"a password is only used to log in"}},
		{"replication without login", withRoles(map[string]any{"name": "repl", "replication": true}),
			[]string{"a replication role must log in to stream"}},
		{"role name with upper case", withRoles(map[string]any{"name": "Reader"}),
			[]string{"spec.roles[0].name", "should match"}},
		{"role name past 63 characters", withRoles(map[string]any{"name": strings.Repeat("r", 64)}),
			[]string{"spec.roles[0].name", "Too long: may not be more than 63"}},
		{"membership in a badly named role", withRoles(map[string]any{"name": "r", "inRoles": []any{"Bad Role"}}),
			[]string{"spec.roles[0].inRoles[0]", "should match"}},
		{"a connection limit below -1", withRoles(map[string]any{"name": "r", "connectionLimit": int64(-2)}),
			[]string{"spec.roles[0].connectionLimit", "greater than or equal to -1"}},
		{"a validUntil that is not a time", withRoles(map[string]any{"name": "r", "login": true, "validUntil": "next year"}),
			[]string{"spec.roles[0].validUntil"}},
		{"reserved database template1", withDatabases(map[string]any{"name": "template1", "owner": "postgres"}),
			[]string{"spec.databases: postgres, template0 and template1 belong to the server"}},
		{"the bootstrap database as a declared one", withDatabases(map[string]any{"name": "app", "owner": "postgres"}),
			[]string{"spec.databases cannot declare app: it is the bootstrap database"}},
		{"two databases of one name", withDatabases(map[string]any{"name": "shop", "owner": "postgres"}, map[string]any{"name": "shop", "owner": "app"}),
			[]string{"spec.databases[1]", "Duplicate value", "shop"}},
		{"a database owned by an undeclared role", withDatabases(map[string]any{"name": "shop", "owner": "nobody"}),
			[]string{"spec.databases: a database's owner must be a role of spec.roles with ensure: present, the bootstrap owner, or postgres"}},
		{"a database owned by a role being dropped", func(u *unstructured.Unstructured) {
			withRoles(map[string]any{"name": "old", "ensure": "absent"})(u)
			withDatabases(map[string]any{"name": "shop", "owner": "old"})(u)
		}, []string{"spec.databases: a database's owner must be a role of spec.roles with ensure: present"}},
		{"a database without an owner", withDatabases(map[string]any{"name": "shop"}),
			[]string{"a database with ensure: present needs an owner"}},
		{"an extension with a space", withDatabases(map[string]any{"name": "shop", "owner": "postgres", "extensions": []any{"pg crypto"}}),
			[]string{"spec.databases[0].extensions[0]", "should match"}},
		{"an unknown reclaim policy", withDatabases(map[string]any{"name": "shop", "ensure": "absent", "reclaimPolicy": "Delete"}),
			[]string{"spec.databases[0].reclaimPolicy", `supported values: "retain", "delete"`}},
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

// TestRolesAndDatabasesAdmitted: the examples of docs/roles.md are
// admitted as written, and so are the forms admission must not refuse.
func TestRolesAndDatabasesAdmitted(t *testing.T) {
	ns := newNamespace(t)
	doc := filepath.Join(repoDir, "docs", "roles.md")
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(testutil.DocBlock(t, doc, "cluster")), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	if err := createStrict(t.Context(), &u); err != nil {
		t.Fatalf("docs/roles.md's cluster: %v", err)
	}
	var changed unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(testutil.DocBlock(t, doc, "cluster-changed")), &changed.Object); err != nil {
		t.Fatal(err)
	}
	changed.SetNamespace(ns)
	// As kubectl apply would, over whatever status the operator wrote meanwhile.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(t.Context(), client.ObjectKeyFromObject(&u), &u); err != nil {
			return err
		}
		changed.SetResourceVersion(u.GetResourceVersion())
		return k8s.Update(t.Context(), &changed, client.FieldValidation("Strict"))
	}); err != nil {
		t.Fatalf("docs/roles.md's changed cluster: %v", err)
	}
	for name, want := range map[string]any{"ensure": "present", "connectionLimit": int64(-1)} {
		rs, _, _ := unstructured.NestedSlice(changed.Object, "spec", "roles")
		if got := rs[0].(map[string]any)[name]; got != want {
			t.Errorf("spec.roles[0].%s defaulted to %v, want %v", name, got, want)
		}
	}
	ds, _, _ := unstructured.NestedSlice(changed.Object, "spec", "databases")
	if got := ds[2].(map[string]any)["reclaimPolicy"]; got != "retain" {
		t.Errorf("spec.databases[2].reclaimPolicy defaulted to %v, want retain", got)
	}

	others := goodCluster("others")
	others.SetNamespace(ns)
	set(others, "shop_admin", "spec", "bootstrap", "initdb", "owner")
	withRoles(
		// Postgres allows a superuser that cannot log in: members reach it with SET ROLE.
		map[string]any{"name": "breakglass", "superuser": true},
		map[string]any{"name": "app", "login": true}, // not the bootstrap owner here
		map[string]any{"name": "monitor", "login": true, "inRoles": []any{"pg_monitor"}, "validUntil": "2030-01-01T00:00:00.5+01:00"},
		map[string]any{"name": "gone", "ensure": "absent"},
	)(others)
	withDatabases(
		map[string]any{"name": "a", "owner": "postgres", "extensions": []any{"uuid-ossp", "pg_stat_statements"}},
		map[string]any{"name": "b", "owner": "shop_admin"},
		map[string]any{"name": "c", "owner": "app", "encoding": "LATIN1", "locale": "en_US.UTF-8"},
		map[string]any{"name": "d", "ensure": "absent", "reclaimPolicy": "delete"},
	)(others)
	if err := createStrict(t.Context(), others); err != nil {
		t.Fatalf("a valid mix of roles and databases: %v", err)
	}
}

func TestAutoGrowAdmittedWithDefaults(t *testing.T) {
	ns := newNamespace(t)
	for name, grow := range map[string]map[string]any{
		"defaults":   {"maxSize": "3Gi"},
		"a quantity": {"maxSize": "3Gi", "step": "512Mi", "thresholdPercent": int64(90)},
		"up to size": {"maxSize": "1Gi", "step": "100%"},
	} {
		u := goodCluster(strings.ReplaceAll(name, " ", "-"))
		u.SetNamespace(ns)
		set(u, grow, "spec", "storage", "autoGrow")
		if err := createStrict(t.Context(), u); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, _, _ := unstructured.NestedMap(u.Object, "spec", "storage", "autoGrow")
		if name == "defaults" && (got["thresholdPercent"] != int64(80) || got["step"] != "25%") {
			t.Errorf("autoGrow defaulted to %v; want thresholdPercent 80 and step 25%%", got)
		}
	}
}
