package instance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// TestClientAgainstHandler checks the operator's client against the
// instance's real handler: the contract both sides rely on.
func TestClientAgainstHandler(t *testing.T) {
	dir := t.TempDir()
	m, c, base := serveAPI(t, Config{Name: "pg-0", DataDir: filepath.Join(dir, "pgdata")})

	r, err := c.Status(t.Context(), base, api.Wait{})
	if err != nil || r.Name != "pg-0" || r.Desired != nil {
		t.Fatalf("status = %+v, %v", r, err)
	}
	want := Desired{Role: postgres.Replica, PrimaryHost: "10.0.0.1", PrimaryPort: 5432, Epoch: 3}
	if err := c.Desire(t.Context(), base, want); err != nil {
		t.Fatalf("desire: %v", err)
	}
	m.mu.Lock()
	got := *m.desired
	m.mu.Unlock()
	if got.Role != want.Role || got.PrimaryHost != want.PrimaryHost || got.Epoch != 3 {
		t.Errorf("manager holds %+v, want %+v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "holdfast-desired.json")); err != nil {
		t.Errorf("accepted desired state not kept on disk: %v", err)
	}
	want.Epoch = 2
	if err := c.Desire(t.Context(), base, want); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("older epoch: %v, want 409", err)
	}
}

// TestStatusWaitsForAChange: a status request that waits answers once a
// milestone of the report changes, and at its time limit when none does.
func TestStatusWaitsForAChange(t *testing.T) {
	m, c, base := serveAPI(t, Config{Name: "pg-0", DataDir: filepath.Join(t.TempDir(), "pgdata")})
	r0, err := c.Status(t.Context(), base, api.Wait{})
	if err != nil {
		t.Fatal(err)
	}

	// No change: it answers after the time asked for, unchanged.
	asked := time.Now()
	r, err := c.Status(t.Context(), base, api.Wait{After: r0.Changes, For: 300 * time.Millisecond})
	if err != nil || r.Changes != r0.Changes {
		t.Fatalf("status = %+v, %v; want changes %d", r, err, r0.Changes)
	}
	if took := time.Since(asked); took < 300*time.Millisecond {
		t.Errorf("a wait with nothing changing answered after %s, before the 300ms asked for", took)
	}

	// A message is no milestone: it does not end the wait.
	m.setReport(func(r *Report) { r.Message = "still here" })
	if m.report.Changes != r0.Changes {
		t.Errorf("a new message counted as a change")
	}

	// A change while it waits ends the wait.
	type answer struct {
		r   Report
		err error
		at  time.Time
	}
	got := make(chan answer, 1)
	go func() {
		r, err := c.Status(t.Context(), base, api.Wait{After: r0.Changes, For: api.MaxStatusWait})
		got <- answer{r, err, time.Now()}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for m.statusWaiters.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never waited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	changed := time.Now()
	m.setReport(func(r *Report) { r.Running, r.Role = true, postgres.Replica })
	a := <-got
	if a.err != nil || a.r.Changes != r0.Changes+1 || !a.r.Running {
		t.Fatalf("status = %+v, %v; want the change", a.r, a.err)
	}
	if a.at.Sub(changed) >= api.MaxStatusWait {
		t.Errorf("the wait ended at its limit, not at the change")
	}

	// One that saw an older count answers at once, with the news.
	r, err = c.Status(t.Context(), base, api.Wait{After: r0.Changes, For: api.MaxStatusWait})
	if err != nil || r.Changes != r0.Changes+1 {
		t.Errorf("status = %+v, %v", r, err)
	}
}
