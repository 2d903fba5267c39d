package envtest

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/controller/roles"
)

// TestRolesWithoutPrimary: a cluster that declares roles and databases,
// and has no primary (envtest runs no pods), gets one condition each saying
// so, and nothing else; the cluster controller's status writes keep them;
// and then no controller writes anything.
func TestRolesWithoutPrimary(t *testing.T) {
	ns := newNamespace(t)
	c := newCluster(ns, "declared", 1, storageClass(t, "1Gi"))
	c.Spec.Roles = []holdfastv1.RoleSpec{
		{Name: "reader", Login: true, InRoles: []holdfastv1.RoleName{"pg_read_all_data"},
			PasswordSecret: &holdfastv1.PasswordSecretReference{Name: "reader-password"}},
		{Name: "owner"},
	}
	c.Spec.Databases = []holdfastv1.DatabaseSpec{{Name: "shop", Owner: "owner", Extensions: []holdfastv1.ExtensionName{"pgcrypto"}}}
	if err := k8s.Create(t.Context(), c); err != nil {
		t.Fatal(err)
	}

	waitConditions := func(generation int64) {
		t.Helper()
		eventually(t, settle, "RolesReconciled and DatabasesReconciled False, PrimaryUnavailable", func(ctx context.Context) error {
			got, err := get(ctx, ns, "declared", &holdfastv1.PostgresCluster{})
			if err != nil {
				return err
			}
			if got.Status.ObservedGeneration != generation {
				return fmt.Errorf("the cluster controller observed generation %d", got.Status.ObservedGeneration)
			}
			for _, typ := range []string{holdfastv1.ConditionRolesReconciled, holdfastv1.ConditionDatabasesReconciled} {
				cond := meta.FindStatusCondition(got.Status.Conditions, typ)
				if cond == nil || cond.Status != "False" || cond.Reason != roles.ReasonPrimaryUnavailable {
					return fmt.Errorf("%s: %+v", typ, cond)
				}
			}
			if got.Status.Roles != nil || got.Status.Databases != nil || got.Status.UnmanagedRoles != nil {
				return fmt.Errorf("status lists roles %v, databases %v, unmanaged %v with no primary to read them from",
					got.Status.Roles, got.Status.Databases, got.Status.UnmanagedRoles)
			}
			if meta.FindStatusCondition(got.Status.Conditions, holdfastv1.ConditionReady) == nil {
				return fmt.Errorf("the cluster controller's conditions are gone: %+v", got.Status.Conditions)
			}
			return nil
		})
	}
	waitConditions(1)
	t.Run("no-op reconcile writes nothing", func(t *testing.T) { checkNoWrites(t, ns, "declared") })

	// A change of spec makes the cluster controller write its status over
	// the object it read: the roles controller's conditions stay.
	updateSpec(t, ns, "declared", func(c *holdfastv1.PostgresCluster) {
		c.Spec.Roles = append(c.Spec.Roles, holdfastv1.RoleSpec{Name: "extra"})
	})
	waitConditions(2)
	t.Run("no-op reconcile after a change writes nothing", func(t *testing.T) { checkNoWrites(t, ns, "declared") })

	// Nothing declared any more: the conditions go.
	updateSpec(t, ns, "declared", func(c *holdfastv1.PostgresCluster) { c.Spec.Roles, c.Spec.Databases = nil, nil })
	eventually(t, settle, "the roles controller's conditions removed", func(ctx context.Context) error {
		got, err := get(ctx, ns, "declared", &holdfastv1.PostgresCluster{})
		if err != nil {
			return err
		}
		for _, typ := range []string{holdfastv1.ConditionRolesReconciled, holdfastv1.ConditionDatabasesReconciled} {
			if cond := meta.FindStatusCondition(got.Status.Conditions, typ); cond != nil {
				return fmt.Errorf("%s still there: %+v", typ, cond)
			}
		}
		return nil
	})
	t.Run("no-op reconcile with nothing declared writes nothing", func(t *testing.T) { checkNoWrites(t, ns, "declared") })
}
