package instance

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// TestAPromisedReplicaRefusesPromotion drives a replica's side of the
// failsafe through its real handler: it promises its primary, refuses a
// promotion order while the promise holds, promises nothing more once it
// has heard of the newer epoch, keeps the promise on disk for its next
// run, and takes the order once the promise has lapsed.
func TestAPromisedReplicaRefusesPromotion(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Name: "pg-1", DataDir: filepath.Join(dir, "pgdata")}
	m, c, base := serveAPI(t, cfg)
	ask := PromiseRequest{Primary: "pg-0", Epoch: 3, HoldMillis: 1500}

	if err := c.Promise(t.Context(), base, ask); err == nil || !strings.Contains(err.Error(), "not a replica") {
		t.Errorf("an instance with no orders promised: %v", err)
	}
	follow := Desired{Role: postgres.Replica, PrimaryHost: "10.0.0.1", PrimaryPort: 5432, Epoch: 3}
	if err := c.Desire(t.Context(), base, follow); err != nil {
		t.Fatal(err)
	}
	if err := c.Promise(t.Context(), base, ask); err != nil {
		t.Fatalf("a following replica refused its primary: %v", err)
	}
	promisedAt := time.Now()
	if r, err := c.Status(t.Context(), base, api.Wait{}); err != nil || r.Promise == nil || r.Promise.Primary != "pg-0" || r.Promise.RemainingMillis <= 0 {
		t.Errorf("the report does not show the promise: %+v, %v", r.Promise, err)
	}
	kept, err := cfg.loadPromise()
	if err != nil || kept == nil || kept.Primary != "pg-0" || kept.Epoch != 3 {
		t.Errorf("the promise kept on disk for the next run: %+v, %v", kept, err)
	}

	promote := Desired{Role: postgres.Primary, Epoch: 4, Lease: &LeaseTerms{Name: "pg", RenewDeadlineSeconds: 4}}
	err = c.Desire(t.Context(), base, promote)
	if !errors.Is(err, api.ErrPromiseHolds) || !strings.Contains(err.Error(), "promised pg-0") {
		t.Fatalf("a promotion while the promise holds: %v", err)
	}
	if d := m.currentDesired(); d.Role != postgres.Replica {
		t.Errorf("the refused order was taken: %+v", d)
	}
	if err := c.Promise(t.Context(), base, ask); err == nil || !strings.Contains(err.Error(), "heard of epoch 4") {
		t.Errorf("after refusing epoch 4, it promised epoch 3 again: %v", err)
	}

	// The operator sends the order again until it is taken: once the
	// promise lapses, and not before.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Desire(t.Context(), base, promote)
		if err == nil {
			break
		}
		if !errors.Is(err, api.ErrPromiseHolds) || time.Now().After(deadline) {
			t.Fatalf("sending the promotion again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(promisedAt); took < 1400*time.Millisecond {
		t.Errorf("the promotion was taken %s after a promise of 1.5s", took)
	}
	if d := m.currentDesired(); d.Role != postgres.Primary || d.Epoch != 4 {
		t.Errorf("after the lapse: %+v", d)
	}
}

// A primary counts on promises only while every replica it was told of
// has given one, and only while its lease fails to renew after it held it.
func TestFailsafeNeedsEveryReplica(t *testing.T) {
	m := NewManager(Config{Name: "pg-0", DataDir: filepath.Join(t.TempDir(), "pgdata")}, logr.Discard())
	m.lease = &LeaseKeeper{Identity: "pg-0"}
	d := &Desired{Role: postgres.Primary, Epoch: 3, Replicas: []string{"pg-1", "pg-2"},
		Lease: &LeaseTerms{Name: "pg", RenewDeadlineSeconds: 4, DurationSeconds: 6}}
	if ok, why := m.holdsLease(d); ok || !strings.Contains(why, "not been renewed") {
		t.Errorf("a lease never renewed: %v %q", ok, why)
	}
	// Renewed once, long ago: it lapsed.
	m.lease.renewed, m.lease.holder = monotonicNow()-10*time.Second, "pg-0"
	m.fs.tally.Promised("pg-1", monotonicNow(), 4*time.Second)
	if ok, why := m.holdsLease(d); ok || !strings.Contains(why, "no failsafe promise from pg-2") {
		t.Errorf("one replica of two promised: %v %q", ok, why)
	}
	m.fs.tally.Promised("pg-2", monotonicNow(), 4*time.Second)
	if ok, why := m.holdsLease(d); !ok {
		t.Errorf("both replicas promised: %v %q", ok, why)
	}
	m.lease.holder = "pg-1"
	if ok, why := m.holdsLease(d); ok || !strings.Contains(why, "held by pg-1") {
		t.Errorf("the lease names another instance; promises must not stand in: %v %q", ok, why)
	}
}
