package instance

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/instance/api"
)

func TestLeaseKeeperHoldsOnlyWhatItRenews(t *testing.T) {
	cs := fake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "demo-primary", Namespace: "db"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("demo-0")},
	})
	k := &LeaseKeeper{Leases: cs.CoordinationV1(), Namespace: "db", Identity: "demo-0"}
	ctx := context.Background()
	if ok, why := k.holds(time.Second); ok || !strings.Contains(why, "not been renewed") {
		t.Fatalf("before any renewal: %v %q", ok, why)
	}
	if err := k.renew(ctx, "demo-primary"); err != nil {
		t.Fatal(err)
	}
	if ok, why := k.holds(time.Second); !ok {
		t.Fatalf("after a renewal: %q", why)
	}
	l, _ := cs.CoordinationV1().Leases("db").Get(ctx, "demo-primary", metav1.GetOptions{})
	if l.Spec.RenewTime == nil {
		t.Errorf("renewTime not written")
	}
	// Past the deadline without a renewal, it must stop taking writes.
	k.mu.Lock()
	k.renewed = monotonicNow() - 5*time.Second
	k.mu.Unlock()
	if ok, _ := k.holds(4 * time.Second); ok {
		t.Errorf("holds the lease 5 s after the last renewal with a 4 s deadline")
	}
	// The operator hands the lease to another instance.
	l.Spec.HolderIdentity = ptr.To("demo-1")
	if _, err := cs.CoordinationV1().Leases("db").Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.renew(ctx, "demo-primary"); err == nil {
		t.Fatalf("renewed a lease held by demo-1")
	}
	if ok, why := k.holds(time.Hour); ok || !strings.Contains(why, "demo-1") {
		t.Errorf("after losing the lease: %v %q", ok, why)
	}
}

// TestResumeOnlyOnALeaseThatProvesThePrimaryRole: a restarted primary
// takes its role back on the Lease only when the Lease names it, was last
// renewed from this very pod, has not expired, and the renewal is taken.
func TestResumeOnlyOnALeaseThatProvesThePrimaryRole(t *testing.T) {
	fresh := metav1.NewMicroTime(time.Now().Add(-time.Second))
	stale := metav1.NewMicroTime(time.Now().Add(-10 * time.Second))
	for _, tc := range []struct {
		name     string
		holder   string
		pod      string
		renewed  *metav1.MicroTime
		conflict bool
		want     bool
		why      string
	}{
		{name: "its own, from this pod, unexpired", holder: "demo-0", pod: "uid-a", renewed: &fresh, want: true},
		{name: "handed to another instance", holder: "demo-1", pod: "uid-a", renewed: &fresh, why: `names "demo-1"`},
		{name: "last renewed from another pod of the same name", holder: "demo-0", pod: "uid-old", renewed: &fresh, why: `from pod "uid-old"`},
		{name: "expired", holder: "demo-0", pod: "uid-a", renewed: &stale, why: "expired"},
		{name: "never renewed", holder: "demo-0", pod: "uid-a", why: "expired"},
		{name: "changed between read and renewal", holder: "demo-0", pod: "uid-a", renewed: &fresh, conflict: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(&coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: "demo-primary", Namespace: "db",
					Annotations: map[string]string{api.LeaseHolderPodAnnotation: tc.pod}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(tc.holder), LeaseDurationSeconds: ptr.To[int32](6),
					RenewTime: tc.renewed},
			})
			if tc.conflict {
				cs.PrependReactor("update", "leases", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), "demo-primary", errors.New("changed"))
				})
			}
			k := &LeaseKeeper{Leases: cs.CoordinationV1(), Namespace: "db", Identity: "demo-0", PodUID: "uid-a"}
			ok, why, err := k.resume(t.Context(), "demo-primary")
			if ok != tc.want || !strings.Contains(why, tc.why) || (err != nil) != tc.conflict {
				t.Fatalf("resume: %v %q %v; want %v, a reason with %q, an error: %v", ok, why, err, tc.want, tc.why, tc.conflict)
			}
			held, _ := k.holds(4 * time.Second)
			if held != tc.want {
				t.Errorf("holds the lease after resume: %v, want %v", held, tc.want)
			}
			if !tc.want {
				return
			}
			l, _ := cs.CoordinationV1().Leases("db").Get(t.Context(), "demo-primary", metav1.GetOptions{})
			if !l.Spec.RenewTime.After(fresh.Time) || l.Annotations[api.LeaseHolderPodAnnotation] != "uid-a" {
				t.Errorf("the lease after resume: renewed %s, pod %q", l.Spec.RenewTime, l.Annotations[api.LeaseHolderPodAnnotation])
			}
		})
	}
}

// TestPromisesStandInForALeaseHeldBeforeARestart only until the lease is
// read and names another instance.
func TestPromisesStandInForALeaseHeldBeforeARestart(t *testing.T) {
	k := &LeaseKeeper{Identity: "demo-0"}
	if k.mayFailsafe() {
		t.Fatal("a new process that never held the lease may run on promises")
	}
	k.heldBeforeRestart()
	if !k.mayFailsafe() {
		t.Fatal("a primary resumed on promises after a restart may not go on with them")
	}
	k.holder = "demo-1" // read at last: handed over meanwhile
	if k.mayFailsafe() {
		t.Error("promises stand in for a lease that names another instance")
	}
}
