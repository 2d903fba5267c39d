package instance

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
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
