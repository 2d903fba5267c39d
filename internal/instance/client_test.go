package instance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"holdfast.dev/holdfast/internal/postgres"
)

// TestClientAgainstHandler checks the operator's client against the
// instance's real handler: the contract both sides rely on.
func TestClientAgainstHandler(t *testing.T) {
	dir := t.TempDir()
	m, c, base := serveAPI(t, Config{Name: "pg-0", DataDir: filepath.Join(dir, "pgdata")})

	r, err := c.Status(t.Context(), base)
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
