package instance

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// TestClientAgainstHandler checks the operator's client against the
// instance's real handler: the contract both sides rely on.
func TestClientAgainstHandler(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewManager(Config{Name: "pg-0", DataDir: filepath.Join(dir, "pgdata"), TokenFile: tokenFile}, logr.Discard())
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	c := api.Client{HTTP: srv.Client()}

	r, err := c.Status(t.Context(), srv.URL)
	if err != nil || r.Name != "pg-0" || r.Desired != nil {
		t.Fatalf("status = %+v, %v", r, err)
	}
	want := Desired{Role: postgres.Replica, PrimaryHost: "10.0.0.1", PrimaryPort: 5432, Epoch: 3}
	if err := c.Desire(t.Context(), srv.URL, "s3cret", want); err != nil {
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
	if err := c.Desire(t.Context(), srv.URL, "wrong", want); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: %v, want 401", err)
	}
	want.Epoch = 2
	if err := c.Desire(t.Context(), srv.URL, "s3cret", want); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("older epoch: %v, want 409", err)
	}
	if code := get(t, srv.URL+ReadinessPath); code != http.StatusServiceUnavailable {
		t.Errorf("readyz of an instance that runs nothing: %d", code)
	}
}

func get(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
