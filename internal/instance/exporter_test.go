package instance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// scrape reads n's metrics endpoint as Prometheus would.
func (h *harness) scrape(n *node) testutil.Metrics {
	h.t.Helper()
	m, err := testutil.Scrape("http://" + n.metricsAddr + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func TestInstanceMetrics(t *testing.T) {
	h := newHarness(t)
	p, r := h.add("pg-0"), h.add("pg-1")
	primary := h.primary(p, r)
	primary.SyncQuorum = 1
	h.want(p, primary)
	h.waitFor(60*time.Second, "primary ready", h.ready(p, postgres.Primary))
	h.want(r, h.replica(p))
	h.waitFor(60*time.Second, "replica ready", h.ready(r, postgres.Replica))

	t.Run("scrapes read as the monitoring role, which is no superuser", func(t *testing.T) {
		var user string
		var super bool
		err := p.mgr.Monitor(t.Context(), func(c *pgx.Conn) error {
			return c.QueryRow(t.Context(), `SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&user, &super)
		})
		if err != nil || user != postgres.MonitorUser || super {
			t.Errorf("scrapes run as %q (superuser %v, %v); want %s, not a superuser", user, super, err, postgres.MonitorUser)
		}
		// It is refused over the network, where peer authentication does
		// not exist: the socket inside the pod is its only way in.
		err = h.exec(p, "SELECT 1") // the app user over TCP works …
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, h.dsn(p, postgres.MonitorUser, "", "postgres")); err == nil {
			c.Close(ctx)
			t.Errorf("%s logged in over TCP", postgres.MonitorUser)
		}
	})

	t.Run("the primary's series", func(t *testing.T) {
		testutil.Eventually(t, 100*time.Millisecond, 30*time.Second, "the synchronous standby in the primary's series", func(context.Context) error {
			m := h.scrape(p)
			for _, want := range []struct {
				name   string
				labels []string
				check  func(float64) bool
			}{
				{"holdfast_pg_up", nil, func(v float64) bool { return v == 1 }},
				{"holdfast_pg_in_recovery", nil, func(v float64) bool { return v == 0 }},
				{"holdfast_pg_timeline", nil, func(v float64) bool { return v >= 1 }},
				{"holdfast_pg_wal_lsn_bytes", []string{"kind", "current"}, func(v float64) bool { return v > 0 }},
				{"holdfast_pg_standby_replay_lag_bytes", []string{"standby", "pg-1"}, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_standby_replay_lag_seconds", []string{"standby", "pg-1"}, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_synchronous_standbys_required", nil, func(v float64) bool { return v == 1 }},
				{"holdfast_pg_synchronous_standbys", nil, func(v float64) bool { return v == 1 }},
				{"holdfast_pg_slot_retained_wal_bytes", []string{"slot", postgres.SlotName("pg-1")}, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_archiver_ready_segments", nil, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_archiver_archived_total", nil, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_archiver_failed_total", nil, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_connections", nil, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_oldest_transaction_age_seconds", nil, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_xid_age", nil, func(v float64) bool { return v > 0 }},
				{"holdfast_pg_checkpoints_total", []string{"kind", "timed"}, func(v float64) bool { return v >= 0 }},
				{"holdfast_pg_pending_restart", nil, func(v float64) bool { return v == 0 }},
				{"holdfast_instance_fenced", nil, func(v float64) bool { return v == 0 }},
				{"holdfast_volume_size_bytes", []string{"volume", "data"}, func(v float64) bool { return v > 0 }},
				{"holdfast_volume_used_bytes", []string{"volume", "data"}, func(v float64) bool { return v > 0 }},
				{"holdfast_volume_free_bytes", []string{"volume", "data"}, func(v float64) bool { return v >= 0 }},
				{"holdfast_build_info", nil, func(v float64) bool { return v == 1 }},
			} {
				v, ok := m.Value(want.name, want.labels...)
				if !ok || !want.check(v) {
					return fmt.Errorf("%s%v = %v (present %v)", want.name, want.labels, v, ok)
				}
			}
			return nil
		})
	})

	t.Run("the replica's series, and positions that move with writes", func(t *testing.T) {
		m := h.scrape(r)
		if v, ok := m.Value("holdfast_pg_in_recovery"); !ok || v != 1 {
			t.Errorf("replica: holdfast_pg_in_recovery = %v (present %v), want 1", v, ok)
		}
		if _, ok := m.Value("holdfast_pg_synchronous_standbys_required"); ok {
			t.Error("a replica reports how many synchronous standbys it needs: only a primary has any")
		}
		before, _ := h.scrape(p).Value("holdfast_pg_wal_lsn_bytes", "kind", "current")
		if err := h.exec(p, `CREATE TABLE IF NOT EXISTS filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g`); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 100*time.Millisecond, 10*time.Second, "the primary's WAL position to move on", func(context.Context) error {
			after, _ := h.scrape(p).Value("holdfast_pg_wal_lsn_bytes", "kind", "current")
			if after <= before {
				return fmt.Errorf("current LSN %v, was %v", after, before)
			}
			return nil
		})
		testutil.Eventually(t, 100*time.Millisecond, 10*time.Second, "the replica to replay it", func(context.Context) error {
			primary, _ := h.scrape(p).Value("holdfast_pg_wal_lsn_bytes", "kind", "current")
			replayed, _ := h.scrape(r).Value("holdfast_pg_wal_lsn_bytes", "kind", "replayed")
			if replayed < primary {
				return fmt.Errorf("replayed %v, primary at %v", replayed, primary)
			}
			return nil
		})
	})
}
