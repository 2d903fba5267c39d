package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Status is what a running server says about itself.
type Status struct {
	InRecovery       bool   `json:"inRecovery"`
	Timeline         int    `json:"timeline"`
	SystemIdentifier string `json:"systemIdentifier"`
	// CurrentLSN is the primary's write position.
	CurrentLSN string `json:"currentLSN,omitempty"`
	// ReceivedLSN and ReplayedLSN are a replica's.
	ReceivedLSN string `json:"receivedLSN,omitempty"`
	ReplayedLSN string `json:"replayedLSN,omitempty"`
	// Streaming is whether a replica's WAL receiver streams from its primary.
	Streaming bool `json:"streaming"`
	// LagBytes is how far a replica's replay is behind the primary's last
	// reported position.
	LagBytes       int64           `json:"lagBytes"`
	PendingRestart []string        `json:"pendingRestart,omitempty"`
	Standbys       []StandbyStatus `json:"standbys,omitempty"`
	// Archiver is a primary's WAL archiving, from pg_stat_archiver.
	Archiver *ArchiverStatus `json:"archiver,omitempty"`
}

// ArchiverStatus is what pg_stat_archiver tells of archive_command.
type ArchiverStatus struct {
	LastArchivedWAL string `json:"lastArchivedWAL,omitempty"`
	LastFailedWAL   string `json:"lastFailedWAL,omitempty"`
	// Failing: the last attempt failed, later than the last success.
	Failing bool `json:"failing"`
}

// StandbyStatus is one standby as its primary sees it.
type StandbyStatus struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	SyncState string `json:"syncState"`
	ReplayLSN string `json:"replayLSN"`
	LagBytes  int64  `json:"lagBytes"`
}

// QueryStatus asks a running server for its Status.
func QueryStatus(ctx context.Context, conn *pgx.Conn) (Status, error) {
	var s Status
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), system_identifier::text FROM pg_control_system()`).
		Scan(&s.InRecovery, &s.SystemIdentifier); err != nil {
		return s, fmt.Errorf("querying recovery state: %w", err)
	}
	if !s.InRecovery {
		var walfile string
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())`).
			Scan(&s.CurrentLSN, &walfile); err != nil {
			return s, fmt.Errorf("querying WAL position: %w", err)
		}
		tli, err := strconv.ParseInt(walfile[:8], 16, 32)
		if err != nil {
			return s, fmt.Errorf("parsing timeline of %s: %w", walfile, err)
		}
		s.Timeline = int(tli)
		rows, err := conn.Query(ctx, `SELECT application_name, state, sync_state,
			coalesce(replay_lsn::text, ''), coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint
			FROM pg_stat_replication ORDER BY application_name`)
		if err != nil {
			return s, fmt.Errorf("querying standbys: %w", err)
		}
		s.Standbys, err = pgx.CollectRows(rows, pgx.RowToStructByPos[StandbyStatus])
		if err != nil {
			return s, fmt.Errorf("reading standbys: %w", err)
		}
		var a ArchiverStatus
		if err := conn.QueryRow(ctx, `SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''),
			coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) FROM pg_stat_archiver`).
			Scan(&a.LastArchivedWAL, &a.LastFailedWAL, &a.Failing); err != nil {
			return s, fmt.Errorf("querying the WAL archiver: %w", err)
		}
		s.Archiver = &a
	} else {
		if err := conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, ''),
			coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
			coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint())),
			coalesce((SELECT pg_wal_lsn_diff(latest_end_lsn, pg_last_wal_replay_lsn()) FROM pg_stat_wal_receiver), 0)::bigint`).
			Scan(&s.ReceivedLSN, &s.ReplayedLSN, &s.Streaming, &s.Timeline, &s.LagBytes); err != nil {
			return s, fmt.Errorf("querying replication state: %w", err)
		}
		if s.LagBytes < 0 {
			s.LagBytes = 0
		}
	}
	rows, err := conn.Query(ctx, `SELECT name FROM pg_settings WHERE pending_restart ORDER BY name`)
	if err != nil {
		return s, fmt.Errorf("querying pending restarts: %w", err)
	}
	s.PendingRestart, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return s, fmt.Errorf("reading pending restarts: %w", err)
	}
	return s, nil
}
