package instance

import (
	"testing"

	"holdfast.dev/holdfast/internal/postgres"
)

// TestPrimaryReadyOnlyWithItsRoles: a primary that takes connections but
// has not yet set up the application's roles is not ready, or a client
// sent to it would be refused for a role that does not exist yet.
func TestPrimaryReadyOnlyWithItsRoles(t *testing.T) {
	primary := &Desired{Role: postgres.Primary}
	writable := &postgres.Status{}
	for _, tc := range []struct {
		name       string
		rolesReady bool
		want       bool
	}{
		{"before its roles are set up", false, false},
		{"once they are", true, true},
	} {
		m := &Manager{rolesReady: tc.rolesReady}
		if got := m.ready(primary, writable); got != tc.want {
			t.Errorf("%s: ready = %v, want %v", tc.name, got, tc.want)
		}
	}
	replica := &Desired{Role: postgres.Replica}
	streaming := &postgres.Status{InRecovery: true, Streaming: true}
	if !(&Manager{}).ready(replica, streaming) {
		t.Error("a streaming replica is ready whatever its roles: it takes them from the primary")
	}
}
