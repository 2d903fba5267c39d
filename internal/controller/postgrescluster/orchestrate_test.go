package postgrescluster

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

func podAt(name, ip string, role string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}, Status: corev1.PodStatus{PodIP: ip}}
	if role != "" {
		p.Labels["role"] = role
	}
	return p
}

func reportOf(role postgres.Role, ready bool) *instanceapi.Report {
	r := &instanceapi.Report{Role: role, Ready: ready, Running: role != ""}
	if role != "" {
		r.Desired = &instanceapi.Desired{Role: role, Epoch: 1}
		r.Postgres = &postgres.Status{InRecovery: role == postgres.Replica}
	}
	return r
}

var now = time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)

func TestDecide(t *testing.T) {
	cluster := func(currentPrimary string, quorum int32) *holdfastv1.PostgresCluster {
		c := &holdfastv1.PostgresCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "demo"},
			Spec:       holdfastv1.PostgresClusterSpec{Instances: 3},
			Status:     holdfastv1.PostgresClusterStatus{TargetPrimary: "demo-0", CurrentPrimary: currentPrimary},
		}
		if quorum > 0 {
			c.Spec.Synchronous = &holdfastv1.SynchronousSpec{Quorum: quorum}
		}
		return c
	}

	t.Run("first instance told to be primary, others wait", func(t *testing.T) {
		p := decide(cluster("", 0), []view{{Pod: podAt("demo-0", "10.0.0.5", ""), Report: reportOf("", false)}}, now, time.Hour, "")
		d, ok := p.Desired["demo-0"]
		if !ok || d.Role != postgres.Primary || d.Epoch != 1 || len(d.Replicas) != 2 || d.Replicas[0] != "demo-1" {
			t.Fatalf("desired for demo-0 = %+v", d)
		}
		if p.CurrentPrimary != "" {
			t.Errorf("currentPrimary %q before the instance reports it", p.CurrentPrimary)
		}
		if role, ok := p.Roles["demo-0"]; !ok || role != "" {
			t.Errorf("role label %q: no label until the instance reports its role", role)
		}
	})

	t.Run("replicas follow once the primary reports", func(t *testing.T) {
		p := decide(cluster("", 1), []view{
			{Pod: podAt("demo-0", "10.0.0.5", ""), Report: reportOf(postgres.Primary, true)},
			{Pod: podAt("demo-1", "10.0.0.6", ""), Report: reportOf("", false)},
		}, now, time.Hour, "")
		// No standby has joined yet: synchronous commit would block the
		// bootstrap itself.
		if d := p.Desired["demo-0"]; d.SyncQuorum != 0 {
			t.Errorf("sync quorum %d before any standby joined, want 0", d.SyncQuorum)
		}
		p = decide(cluster("", 1), []view{
			{Pod: podAt("demo-0", "10.0.0.5", ""), Report: reportOf(postgres.Primary, true)},
			{Pod: podAt("demo-1", "10.0.0.6", ""), Report: reportOf(postgres.Replica, false)},
		}, now, time.Hour, "")
		if p.CurrentPrimary != "demo-0" || p.Roles["demo-0"] != holdfastv1.RolePrimary {
			t.Errorf("currentPrimary %q roles %v", p.CurrentPrimary, p.Roles)
		}
		if d := p.Desired["demo-0"]; d.SyncQuorum != 1 {
			t.Errorf("sync quorum %d, want 1", d.SyncQuorum)
		}
		d := p.Desired["demo-1"]
		if d.Role != postgres.Replica || d.PrimaryHost != "10.0.0.5" || d.PrimaryPort != 5432 {
			t.Errorf("desired for demo-1 = %+v", d)
		}
	})

	t.Run("a replica is labelled only once it streams", func(t *testing.T) {
		p := decide(cluster("demo-0", 0), []view{
			{Pod: podAt("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true)},
			{Pod: podAt("demo-1", "10.0.0.6", "replica"), Report: reportOf(postgres.Replica, false)},
			{Pod: podAt("demo-2", "10.0.0.7", ""), Report: reportOf(postgres.Replica, true)},
		}, now, time.Hour, "")
		if p.Roles["demo-1"] != "" || p.Roles["demo-2"] != holdfastv1.RoleReplica {
			t.Errorf("roles %v", p.Roles)
		}
	})

	t.Run("a fenced primary loses its label", func(t *testing.T) {
		rep := reportOf("", false)
		rep.Fenced = true
		p := decide(cluster("demo-0", 0), []view{{Pod: podAt("demo-0", "10.0.0.5", "primary"), Report: rep}}, now, time.Hour, "")
		if role, ok := p.Roles["demo-0"]; !ok || role != "" {
			t.Errorf("fenced primary keeps role %q", role)
		}
	})

	t.Run("an unreachable pod keeps its label and gets no orders", func(t *testing.T) {
		p := decide(cluster("demo-0", 0), []view{
			{Pod: podAt("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true)},
			{Pod: podAt("demo-1", "10.0.0.6", "replica"), Report: nil},
		}, now, time.Hour, "")
		if _, ok := p.Roles["demo-1"]; ok {
			t.Errorf("unreachable pod's label touched")
		}
		if _, ok := p.Desired["demo-1"]; ok {
			t.Errorf("unreachable pod given orders")
		}
	})

	t.Run("pods beyond spec.instances get no orders", func(t *testing.T) {
		c := cluster("demo-0", 0)
		c.Spec.Instances = 2
		p := decide(c, []view{
			{Pod: podAt("demo-0", "10.0.0.5", "primary"), Report: reportOf(postgres.Primary, true)},
			{Pod: podAt("demo-2", "10.0.0.7", "replica"), Report: reportOf(postgres.Replica, true)},
		}, now, time.Hour, "")
		if _, ok := p.Desired["demo-2"]; ok {
			t.Errorf("an instance being removed got orders")
		}
		if d := p.Desired["demo-0"]; len(d.Replicas) != 1 {
			t.Errorf("primary keeps slots for %v, want demo-1 only", d.Replicas)
		}
	})
}
