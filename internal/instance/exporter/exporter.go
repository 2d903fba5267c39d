// Package exporter serves an instance's Prometheus series: what its
// manager last saw of postgres (role, timeline, WAL positions, standbys,
// pending restart, fencing), what postgres's statistics views say when
// scraped, and how full its volume is.
//
// The statistics are read as the monitoring role, which holds pg_monitor
// and nothing more: a scrape must never run as the superuser.
package exporter

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	instanceapi "holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/postgres"
)

// Source is what the exporter reads from the instance manager.
type Source interface {
	// Report is the manager's latest report of its postgres.
	Report() instanceapi.Report
	// Monitor runs f on a connection as postgres.MonitorUser; it fails
	// when postgres is not running.
	Monitor(ctx context.Context, f func(*pgx.Conn) error) error
}

// Collector collects an instance's series at each scrape.
type Collector struct {
	src     Source
	version string
	timeout time.Duration
}

// New makes a collector of src's series; version is Holdfast's, for
// holdfast_build_info.
func New(src Source, version string) *Collector {
	return &Collector{src: src, version: version, timeout: 3 * time.Second}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	upDesc          = desc("holdfast_pg_up", "1 when postgres answered the scrape's queries.")
	inRecoveryDesc  = desc("holdfast_pg_in_recovery", "1 on a replica (postgres in recovery), 0 on the primary.")
	timelineDesc    = desc("holdfast_pg_timeline", "The timeline postgres is on.")
	lsnDesc         = desc("holdfast_pg_wal_lsn_bytes", "WAL positions as byte offsets: current (the primary's write position), received and replayed (a replica's).", "kind")
	lagBytesDesc    = desc("holdfast_pg_standby_replay_lag_bytes", "On the primary: how far each standby's replay is behind its write position.", "standby")
	lagSecondsDesc  = desc("holdfast_pg_standby_replay_lag_seconds", "On the primary: each standby's replay lag in time (pg_stat_replication.replay_lag); 0 when idle.", "standby")
	syncStateDesc   = desc("holdfast_pg_standby_sync_state", "On the primary: 1 for each standby's sync state (async, sync, quorum, potential).", "standby", "state")
	syncDesc        = desc("holdfast_pg_synchronous_standbys", "On the primary: standbys streaming as synchronous (sync or quorum).")
	syncNeededDesc  = desc("holdfast_pg_synchronous_standbys_required", "On the primary: how many synchronous standbys synchronous_standby_names needs; 0 when none.")
	slotDesc        = desc("holdfast_pg_slot_retained_wal_bytes", "WAL each replication slot keeps from being recycled.", "slot")
	readyDesc       = desc("holdfast_pg_archiver_ready_segments", "WAL segments waiting to be archived.")
	archivedDesc    = desc("holdfast_pg_archiver_archived_total", "WAL segments archived since the statistics were last reset.")
	failedDesc      = desc("holdfast_pg_archiver_failed_total", "Failed attempts to archive a WAL segment since the statistics were last reset.")
	lastArchDesc    = desc("holdfast_pg_archiver_last_archived_timestamp_seconds", "When the last WAL segment was archived (Unix seconds); absent when none was.")
	lastFailDesc    = desc("holdfast_pg_archiver_last_failed_timestamp_seconds", "When archiving last failed (Unix seconds); absent when it never did.")
	connDesc        = desc("holdfast_pg_connections", "Client connections by state.", "state")
	oldestXactDesc  = desc("holdfast_pg_oldest_transaction_age_seconds", "Age of the oldest open client transaction; 0 when none is open.")
	xidAgeDesc      = desc("holdfast_pg_xid_age", "The oldest database's transaction ID age (age(datfrozenxid)): wraparound comes at 2^31.")
	checkpointsDesc = desc("holdfast_pg_checkpoints_total", "Checkpoints, timed or requested.", "kind")
	pendingDesc     = desc("holdfast_pg_pending_restart", "1 when settings wait for a restart of postgres.")
	fencedDesc      = desc("holdfast_instance_fenced", "1 while the instance manager fences postgres (it takes no writes).")
	buildDesc       = desc("holdfast_build_info", "Holdfast's version, as a label; always 1.", "version")
	sizeDesc        = desc("holdfast_volume_size_bytes", "Size of the volume's filesystem.", "volume")
	usedDesc        = desc("holdfast_volume_used_bytes", "Bytes used on the volume's filesystem.", "volume")
	freeDesc        = desc("holdfast_volume_free_bytes", "Bytes free on the volume's filesystem for postgres (not counting blocks reserved for root).", "volume")
)

// Describe sends every series' description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, inRecoveryDesc, timelineDesc, lsnDesc, lagBytesDesc, lagSecondsDesc, syncStateDesc,
		syncDesc, syncNeededDesc, slotDesc, readyDesc, archivedDesc, failedDesc, lastArchDesc, lastFailDesc, connDesc,
		oldestXactDesc, xidAgeDesc, checkpointsDesc, pendingDesc, fencedDesc, buildDesc, sizeDesc, usedDesc, freeDesc} {
		ch <- d
	}
}

// Collect reads the series. A postgres that is down gives holdfast_pg_up 0
// and the series that do not need it.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(buildDesc, 1, c.version)
	rep := c.src.Report()
	gauge(fencedDesc, b2f(rep.Fenced))
	// The report's figures are the ones the operator grows claims by.
	for _, v := range rep.Volumes {
		gauge(sizeDesc, float64(v.CapacityBytes), v.Name)
		gauge(usedDesc, float64(v.UsedBytes), v.Name)
		gauge(freeDesc, float64(v.AvailableBytes), v.Name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var s stats
	err := c.src.Monitor(ctx, func(conn *pgx.Conn) error { return s.read(ctx, conn) })
	gauge(upDesc, b2f(err == nil))
	if err != nil {
		return
	}
	gauge(inRecoveryDesc, b2f(s.inRecovery))
	if pg := rep.Postgres; pg != nil {
		gauge(timelineDesc, float64(pg.Timeline))
		for kind, lsn := range map[string]string{"current": pg.CurrentLSN, "received": pg.ReceivedLSN, "replayed": pg.ReplayedLSN} {
			if at, err := postgres.ParseLSN(lsn); err == nil {
				gauge(lsnDesc, float64(at), kind)
			}
		}
		gauge(pendingDesc, b2f(len(pg.PendingRestart) > 0))
	}
	streamingSync := 0
	for _, sb := range s.standbys {
		gauge(lagBytesDesc, sb.lagBytes, sb.name)
		gauge(lagSecondsDesc, sb.lagSeconds, sb.name)
		gauge(syncStateDesc, 1, sb.name, sb.syncState)
		if sb.streaming && (sb.syncState == "sync" || sb.syncState == "quorum") {
			streamingSync++
		}
	}
	if !s.inRecovery {
		gauge(syncDesc, float64(streamingSync))
		gauge(syncNeededDesc, float64(SynchronousStandbysRequired(s.syncNames)))
	}
	for _, sl := range s.slots {
		gauge(slotDesc, sl.retained, sl.name)
	}
	gauge(readyDesc, float64(s.readySegments))
	counter(archivedDesc, float64(s.archived))
	counter(failedDesc, float64(s.failed))
	if s.lastArchived != nil {
		gauge(lastArchDesc, *s.lastArchived)
	}
	if s.lastFailed != nil {
		gauge(lastFailDesc, *s.lastFailed)
	}
	for state, n := range s.connections {
		gauge(connDesc, float64(n), state)
	}
	gauge(oldestXactDesc, s.oldestXact)
	gauge(xidAgeDesc, float64(s.xidAge))
	counter(checkpointsDesc, float64(s.checkpointsTimed), "timed")
	counter(checkpointsDesc, float64(s.checkpointsRequested), "requested")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var syncCount = regexp.MustCompile(`^\s*(?:(?i:ANY|FIRST)\s+)?(\d+)\s*\(`)

// SynchronousStandbysRequired reads how many synchronous standbys a
// synchronous_standby_names value needs: "ANY 1 (a, b)" and "2 (a, b, c)"
// say it; a bare list ("a, b") needs one; empty needs none.
func SynchronousStandbysRequired(names string) int {
	names = strings.TrimSpace(names)
	if names == "" {
		return 0
	}
	if m := syncCount.FindStringSubmatch(names); m != nil {
		n, err := strconv.Atoi(m[1])
		if err == nil {
			return n
		}
	}
	return 1
}

type standby struct {
	name, syncState      string
	streaming            bool
	lagBytes, lagSeconds float64
}

type slot struct {
	name     string
	retained float64
}

// stats is what one scrape reads from postgres's statistics views.
type stats struct {
	inRecovery                             bool
	syncNames                              string
	standbys                               []standby
	slots                                  []slot
	readySegments, archived, failed        int64
	lastArchived, lastFailed               *float64
	connections                            map[string]int64
	oldestXact                             float64
	xidAge                                 int64
	checkpointsTimed, checkpointsRequested int64
}

// read runs the scrape's queries, each one that pg_monitor may run.
func (s *stats) read(ctx context.Context, conn *pgx.Conn) error {
	var version int
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'),
		current_setting('server_version_num')::int`).Scan(&s.inRecovery, &s.syncNames, &version); err != nil {
		return fmt.Errorf("querying the recovery state: %w", err)
	}
	if !s.inRecovery {
		rows, err := conn.Query(ctx, `SELECT application_name, sync_state, state = 'streaming',
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8,
			coalesce(extract(epoch FROM replay_lag), 0)::float8
			FROM pg_stat_replication ORDER BY application_name`)
		if err != nil {
			return fmt.Errorf("querying standbys: %w", err)
		}
		for rows.Next() {
			var sb standby
			if err := rows.Scan(&sb.name, &sb.syncState, &sb.streaming, &sb.lagBytes, &sb.lagSeconds); err != nil {
				rows.Close()
				return fmt.Errorf("reading standbys: %w", err)
			}
			s.standbys = append(s.standbys, sb)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading standbys: %w", err)
		}
	}
	// A replica's slots are measured from what it has received.
	rows, err := conn.Query(ctx, `SELECT slot_name, pg_wal_lsn_diff(
			CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)::float8
		FROM pg_replication_slots WHERE restart_lsn IS NOT NULL ORDER BY slot_name`)
	if err != nil {
		return fmt.Errorf("querying replication slots: %w", err)
	}
	for rows.Next() {
		var sl slot
		var retained *float64
		if err := rows.Scan(&sl.name, &retained); err != nil {
			rows.Close()
			return fmt.Errorf("reading replication slots: %w", err)
		}
		if retained != nil {
			sl.retained = *retained
			s.slots = append(s.slots, sl)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading replication slots: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
			archived_count, failed_count,
			extract(epoch FROM last_archived_time)::float8, extract(epoch FROM last_failed_time)::float8
		FROM pg_stat_archiver`).Scan(&s.readySegments, &s.archived, &s.failed, &s.lastArchived, &s.lastFailed); err != nil {
		return fmt.Errorf("querying the WAL archiver: %w", err)
	}
	rows, err = conn.Query(ctx, `SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' GROUP BY 1`)
	if err != nil {
		return fmt.Errorf("querying connections: %w", err)
	}
	s.connections = map[string]int64{}
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			rows.Close()
			return fmt.Errorf("reading connections: %w", err)
		}
		s.connections[state] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading connections: %w", err)
	}
	if err := conn.QueryRow(ctx, `SELECT
			coalesce((SELECT extract(epoch FROM max(clock_timestamp() - xact_start)) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND xact_start IS NOT NULL), 0)::float8,
			(SELECT max(age(datfrozenxid)) FROM pg_database)::bigint`).Scan(&s.oldestXact, &s.xidAge); err != nil {
		return fmt.Errorf("querying transaction ages: %w", err)
	}
	// PostgreSQL 17 moved the checkpoint counts to pg_stat_checkpointer.
	checkpoints := `SELECT checkpoints_timed, checkpoints_req FROM pg_stat_bgwriter`
	if version >= 170000 {
		checkpoints = `SELECT num_timed, num_requested FROM pg_stat_checkpointer`
	}
	if err := conn.QueryRow(ctx, checkpoints).Scan(&s.checkpointsTimed, &s.checkpointsRequested); err != nil {
		return fmt.Errorf("querying checkpoints: %w", err)
	}
	return nil
}
