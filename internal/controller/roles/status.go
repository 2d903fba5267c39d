package roles

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/postgres/catalog"
)

// maxUnmanaged is how many unmanaged roles status lists, as the schema allows.
const maxUnmanaged = 256

// report is what the controller writes: its status fields and conditions,
// and the Events of what it did.
type report struct {
	roles     []holdfastv1.RoleStatus
	databases []holdfastv1.DatabaseStatus
	unmanaged []string
	// keepLists leaves the three lists as they are (the primary was not read).
	keepLists bool
	// conditions to set; those of the two types not here are removed.
	conditions []metav1.Condition
	events     []reportEvent
}

type reportEvent struct{ kind, reason, note string }

func (rep *report) failed() bool {
	for _, c := range rep.conditions {
		if c.Status != metav1.ConditionTrue {
			return true
		}
	}
	return false
}

func hasConditions(c *holdfastv1.PostgresCluster) bool {
	return meta.FindStatusCondition(c.Status.Conditions, holdfastv1.ConditionRolesReconciled) != nil ||
		meta.FindStatusCondition(c.Status.Conditions, holdfastv1.ConditionDatabasesReconciled) != nil
}

// report for a primary that cannot be asked: the conditions say why, the
// lists stay as last seen.
func (e *notReadyError) report(c *holdfastv1.PostgresCluster) *report {
	rep := &report{keepLists: true}
	if len(c.Spec.Roles) > 0 {
		rep.conditions = append(rep.conditions, condition(c, holdfastv1.ConditionRolesReconciled, false, e.reason, e.message))
	}
	if len(c.Spec.Databases) > 0 {
		rep.conditions = append(rep.conditions, condition(c, holdfastv1.ConditionDatabasesReconciled, false, e.reason, e.message))
	}
	return rep
}

func condition(c *holdfastv1.PostgresCluster, typ string, ok bool, reason, msg string) metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: c.Generation}
}

// reportOn says how each declared role and database fared.
func (r *Reconciler) reportOn(c *holdfastv1.PostgresCluster, in inputs, obs catalog.Observed, plan catalog.Plan,
	outcomes map[catalog.Subject]*catalog.Outcome) *report {
	rep := &report{unmanaged: catalog.Unmanaged(obs, in.roles, postgres.SuperUser, postgres.ReplicationUser, postgres.MonitorUser, c.Spec.Bootstrap.InitDB.Owner)}
	if len(rep.unmanaged) > maxUnmanaged {
		rep.unmanaged = rep.unmanaged[:maxUnmanaged]
	}
	before := map[string]holdfastv1.RoleStatus{}
	for _, s := range c.Status.Roles {
		before[s.Name] = s
	}
	var secretTrouble, applyTrouble []string
	for _, role := range in.roles {
		o := outcomes[catalog.Subject{Kind: catalog.KindRole, Name: role.Name}]
		st := holdfastv1.RoleStatus{Name: role.Name, Applied: true}
		if !role.Absent {
			// The digest of the password the role holds: the Secret's
			// once it was set, the one before until then.
			st.PasswordDigest = before[role.Name].PasswordDigest
			if role.Password != nil && (!role.SetPassword || o == nil || o.Err == nil) {
				st.PasswordDigest = in.digests[role.Name]
			}
			if !hasSecret(c, role.Name) {
				st.PasswordDigest = ""
			}
		}
		switch {
		case o != nil && o.Err != nil:
			st.Applied, st.Message = false, o.Err.Error()
			applyTrouble = append(applyTrouble, "role "+role.Name+": "+st.Message)
		case in.secretProblems[role.Name] != "":
			st.Applied, st.Message = false, in.secretProblems[role.Name]
			secretTrouble = append(secretTrouble, "role "+role.Name+": "+st.Message)
		}
		if st.Message != "" && st.Message != before[role.Name].Message {
			reason := "RoleFailed"
			if o == nil || o.Err == nil {
				reason = ReasonPasswordSecretMissing
			}
			rep.events = append(rep.events, reportEvent{corev1.EventTypeWarning, reason, "role " + role.Name + ": " + st.Message})
		}
		if o != nil && len(o.Done) > 0 {
			rep.events = append(rep.events, reportEvent{corev1.EventTypeNormal, "RoleApplied", strings.Join(o.Done, "; ")})
		}
		rep.roles = append(rep.roles, st)
	}
	if len(in.roles) > 0 {
		rep.conditions = append(rep.conditions, outcome(c, holdfastv1.ConditionRolesReconciled, applyTrouble, secretTrouble,
			ReasonPasswordSecretMissing, fmt.Sprintf("%d roles as declared", len(in.roles))))
	}
	r.reportDatabases(c, rep, in, plan, outcomes)
	return rep
}

func (r *Reconciler) reportDatabases(c *holdfastv1.PostgresCluster, rep *report, in inputs, plan catalog.Plan,
	outcomes map[catalog.Subject]*catalog.Outcome) {
	before := map[string]string{}
	for _, s := range c.Status.Databases {
		before[s.Name] = s.Message
	}
	var failed, differ []string
	for _, db := range in.databases {
		subject := catalog.Subject{Kind: catalog.KindDatabase, Name: db.Name}
		o := outcomes[subject]
		st := holdfastv1.DatabaseStatus{Name: db.Name, Applied: true}
		switch {
		case o != nil && o.Err != nil:
			st.Applied, st.Message = false, o.Err.Error()
			failed = append(failed, "database "+db.Name+": "+st.Message)
		case plan.Unfixable[subject] != "":
			st.Applied, st.Message = false, plan.Unfixable[subject]
			differ = append(differ, "database "+db.Name+": "+st.Message)
		case db.Absent && !db.Drop:
			st.Message = "forgotten and kept (reclaimPolicy retain)"
		}
		if !st.Applied && st.Message != before[db.Name] {
			rep.events = append(rep.events, reportEvent{corev1.EventTypeWarning, "DatabaseFailed", "database " + db.Name + ": " + st.Message})
		}
		if o != nil && len(o.Done) > 0 {
			rep.events = append(rep.events, reportEvent{corev1.EventTypeNormal, "DatabaseApplied", strings.Join(o.Done, "; ")})
		}
		rep.databases = append(rep.databases, st)
	}
	if len(in.databases) == 0 {
		return
	}
	rep.conditions = append(rep.conditions, outcome(c, holdfastv1.ConditionDatabasesReconciled, failed, differ,
		ReasonCreationSettings, fmt.Sprintf("%d databases as declared", len(in.databases))))
}

// outcome is a condition of typ: False with reason ApplyFailed when postgres
// refused something, False with otherReason for the other troubles, and
// True with ok when there are none.
func outcome(c *holdfastv1.PostgresCluster, typ string, failed, other []string, otherReason, ok string) metav1.Condition {
	switch {
	case len(failed) > 0:
		return condition(c, typ, false, ReasonApplyFailed, summary(append(failed, other...)))
	case len(other) > 0:
		return condition(c, typ, false, otherReason, summary(other))
	}
	return condition(c, typ, true, ReasonApplied, ok)
}

// summary joins problems into a condition's message, which the API
// server caps at 32768 bytes.
func summary(problems []string) string {
	s := strings.Join(problems, "; ")
	if len(s) > 4096 {
		s = s[:4096] + " ..."
	}
	return s
}

// write patches the cluster's status with the report, when it changes
// anything, and records its Events. The patch is a merge patch of this
// controller's fields alone, but conditions are one list shared with the
// cluster controller, so it carries the version read: a conflict means the
// cluster changed meanwhile, and it is looked at again.
func (r *Reconciler) write(ctx context.Context, c *holdfastv1.PostgresCluster, rep *report) (ctrl.Result, error) {
	orig := c.DeepCopy()
	st := &c.Status
	if !rep.keepLists {
		st.Roles, st.Databases, st.UnmanagedRoles = rep.roles, rep.databases, rep.unmanaged
	}
	for _, typ := range []string{holdfastv1.ConditionRolesReconciled, holdfastv1.ConditionDatabasesReconciled} {
		want := slices.IndexFunc(rep.conditions, func(c metav1.Condition) bool { return c.Type == typ })
		switch {
		case want >= 0:
			// Keeps the transition time while the status holds.
			meta.SetStatusCondition(&st.Conditions, rep.conditions[want])
		case !rep.keepLists:
			meta.RemoveStatusCondition(&st.Conditions, typ)
		}
	}
	// What was done to postgres is told whether or not the status moves:
	// a role put back after a hand-made DROP leaves it as it was.
	for _, e := range rep.events {
		r.Recorder.Eventf(orig, nil, e.kind, e.reason, "Reconcile", "%s", e.note)
	}
	if equality.Semantic.DeepEqual(orig.Status, c.Status) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
	if err := r.Client.Status().Patch(ctx, c, patch); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patching the status of roles and databases: %w", err)
	}
	return ctrl.Result{}, nil
}

// hasSecret: the declared role takes its password from a Secret.
func hasSecret(c *holdfastv1.PostgresCluster, role string) bool {
	i := slices.IndexFunc(c.Spec.Roles, func(r holdfastv1.RoleSpec) bool { return r.Name == role })
	return i >= 0 && c.Spec.Roles[i].PasswordSecret != nil
}
