package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// WALSegment is the number of the segment that holds the byte at lsn.
// A replica that has read everything before lsn asks its primary for the
// segment that holds lsn itself, which at a segment boundary is the next
// one (pg_walfile_name would name the one before).
func WALSegment(lsn, segSize uint64) uint64 { return lsn / segSize }

// WALFileName names segment segno of timeline tli as pg_wal does.
func WALFileName(tli int, segno, segSize uint64) string {
	perID := uint64(1<<32) / segSize
	return fmt.Sprintf("%08X%08X%08X", tli, segno/perID, segno%perID)
}

// ParseWALFileName reads the segment number from a WAL segment's file
// name, whatever its timeline.
func ParseWALFileName(name string, segSize uint64) (uint64, error) {
	if len(name) != 24 {
		return 0, fmt.Errorf("WAL file name %q: want 24 hexadecimal digits", name)
	}
	log, err := strconv.ParseUint(name[8:16], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("WAL file name %q: %w", name, err)
	}
	seg, err := strconv.ParseUint(name[16:], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("WAL file name %q: %w", name, err)
	}
	return log*(uint64(1<<32)/segSize) + seg, nil
}

// OldestWAL is what a server still holds of its WAL: the lowest segment
// number in its pg_wal, of any timeline, and the segment size. A standby
// that needs an older segment can no longer stream from it. It needs a
// superuser or pg_monitor (pg_ls_waldir).
func OldestWAL(ctx context.Context, conn *pgx.Conn) (segno, segSize uint64, err error) {
	var oldest string
	if err := conn.QueryRow(ctx, `SELECT (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
		coalesce((SELECT min(substr(name, 9, 16)) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'), '')`).
		Scan(&segSize, &oldest); err != nil {
		return 0, 0, fmt.Errorf("listing the WAL segments kept: %w", err)
	}
	if oldest == "" || segSize == 0 {
		return 0, segSize, fmt.Errorf("no WAL segment in pg_wal (segment size %d)", segSize)
	}
	segno, err = ParseWALFileName("00000000"+oldest, segSize)
	return segno, segSize, err
}
