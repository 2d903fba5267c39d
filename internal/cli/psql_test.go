package cli

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/resources"
)

func instancePod(name string, role holdfastv1.InstanceRole, phase corev1.PodPhase, ready bool) corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{resources.LabelCluster: "verbs", resources.LabelRole: string(role)}},
		Status:     corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func TestPickPod(t *testing.T) {
	cluster := func(primary string, phase holdfastv1.ClusterPhase) *holdfastv1.PostgresCluster {
		return &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "verbs"},
			Status: holdfastv1.PostgresClusterStatus{CurrentPrimary: primary, Phase: phase}}
	}
	pods := func() []corev1.Pod {
		return []corev1.Pod{
			instancePod("verbs-10", holdfastv1.RoleReplica, corev1.PodRunning, true),
			instancePod("verbs-0", holdfastv1.RoleReplica, corev1.PodRunning, true),
			instancePod("verbs-1", holdfastv1.RolePrimary, corev1.PodRunning, true),
			instancePod("verbs-2", holdfastv1.RoleReplica, corev1.PodRunning, true),
		}
	}
	for _, tc := range []struct {
		name    string
		pgc     *holdfastv1.PostgresCluster
		pods    []corev1.Pod
		replica bool
		want    string // a pod, or an error's words
	}{
		{"the primary is status.currentPrimary", cluster("verbs-1", holdfastv1.PhaseHealthy), pods(), false, "verbs-1"},
		{"a replica: the lowest ordinal ready, not by string order", cluster("verbs-1", holdfastv1.PhaseHealthy), pods(), true, "verbs-0"},
		{"an unready replica is passed over", cluster("verbs-1", holdfastv1.PhaseHealthy), []corev1.Pod{
			instancePod("verbs-0", holdfastv1.RoleReplica, corev1.PodRunning, false),
			instancePod("verbs-1", holdfastv1.RolePrimary, corev1.PodRunning, true),
			instancePod("verbs-2", holdfastv1.RoleReplica, corev1.PodRunning, true),
		}, true, "verbs-2"},
		{"a pod not yet labelled replica is passed over", cluster("verbs-1", holdfastv1.PhaseHealthy), []corev1.Pod{
			instancePod("verbs-0", "", corev1.PodRunning, true),
			instancePod("verbs-1", holdfastv1.RolePrimary, corev1.PodRunning, true),
		}, true, "no ready replica"},
		{"no primary yet", cluster("", holdfastv1.PhaseCreating), pods(), false, "no primary yet (phase Creating)"},
		{"the primary's pod is gone", cluster("verbs-5", holdfastv1.PhaseDegraded), pods(), false, "primary verbs-5 has no pod"},
		{"the primary's pod is not running", cluster("verbs-0", holdfastv1.PhaseDegraded), []corev1.Pod{
			instancePod("verbs-0", holdfastv1.RolePrimary, corev1.PodPending, false),
		}, false, "not running"},
		{"a hibernated cluster", cluster("verbs-0", holdfastv1.PhaseHibernated), nil, false, "hibernated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickPod(tc.pgc, tc.pods, tc.replica)
			if err != nil {
				got = err.Error()
			}
			if (err == nil) != strings.HasPrefix(tc.want, "verbs-") || !strings.Contains(got, tc.want) {
				t.Errorf("pickPod: %q, want %q", got, tc.want)
			}
		})
	}
}

// The superuser over the socket, with the instance manager's password
// file: no password on the command line, no TCP.
func TestPsqlCommand(t *testing.T) {
	got := psqlCommand("app", []string{"-Atc", "SELECT 1"})
	want := []string{"psql", "dbname='app' host='/var/run/postgresql' passfile='/var/run/postgresql/pgpass' port='5432' user='postgres'", "-Atc", "SELECT 1"}
	if !slices.Equal(got, want) {
		t.Errorf("psqlCommand:\n got %q\nwant %q", got, want)
	}
}

// psql's own flags go after --, so that holdfast's flags and psql's do
// not mix.
func TestPsqlArgsGoAfterTheDash(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"verbs"}, true},
		{[]string{"verbs", "--", "-c", "SELECT 1"}, true},
		{[]string{"verbs", "--replica", "--", "-At"}, true},
		{[]string{"verbs", "SELECT 1"}, false},
		{[]string{"--", "-c", "SELECT 1"}, false},
		{nil, false},
	} {
		cmd := newPsqlCmd()
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		err := cmd.ValidateArgs(cmd.Flags().Args())
		if (err == nil) != tc.ok {
			t.Errorf("psql %q: %v, want ok %t", tc.args, err, tc.ok)
		}
	}
}
