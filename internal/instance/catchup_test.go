package instance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// TestReplicaWhoseWALIsGoneRejoins replays issue 14's steps on two
// instances: a replica stops, the primary drops its slot (the cluster was
// scaled down), writes and recycles its WAL past what the replica needs,
// and the replica comes back (scaled up again). Without a repository it
// must clone the primary afresh, keeping its old data aside; with one, it
// must fetch the missing WAL from the archive and keep its data.
func TestReplicaWhoseWALIsGoneRejoins(t *testing.T) {
	t.Run("without a repository the replica is cloned afresh", func(t *testing.T) {
		h := newHarness(t)
		p, r := h.add("pg-0"), h.add("pg-1")
		need := h.recycleBehind(p, r, nil, func() { h.stop(r) })

		start := time.Now()
		h.start(r)
		// A WAL receiver refused by the primary reports itself streaming
		// for an instant, every retry: ready alone proves nothing.
		h.waitFor(2*time.Minute, "pg-1 re-cloned and streaming", h.rejoined(r))
		t.Logf("from restart to streaming: %s", time.Since(start).Round(time.Millisecond))
		h.recloned(p, r, need)
		if _, err := os.Stat(filepath.Join(r.dir, "pgdata"+recloneAside, "PG_VERSION")); err != nil {
			t.Errorf("the old data directory was not kept aside: %v", err)
		}
	})

	t.Run("a running replica cut off while the WAL is recycled is cloned afresh", func(t *testing.T) {
		// The same, found on a running replica: it was pointed at a port
		// where no primary listens, as a network cut would leave it.
		h := newHarness(t)
		p, r := h.add("pg-0"), h.add("pg-1")
		need := h.recycleBehind(p, r, nil, func() {
			d := h.replica(p)
			d.PrimaryPort = testutil.FreePort(t)
			h.want(r, d)
		})
		pid := h.report(r).PID
		start := time.Now()
		h.want(r, h.replica(p))
		h.waitFor(2*time.Minute, "pg-1 re-cloned and streaming", h.rejoined(r))
		t.Logf("from reconnecting to streaming: %s", time.Since(start).Round(time.Millisecond))
		h.recloned(p, r, need)
		if h.report(r).PID == pid {
			t.Errorf("postgres was not restarted on a fresh clone (pid %d)", pid)
		}
	})

	t.Run("with a repository the replica fetches the WAL from the archive", func(t *testing.T) {
		h := newHarness(t)
		loc, cred := testutil.S3Server(t)
		h.writeRepositoryCredentials(cred)
		archive := &ArchiveOrder{Stanza: "pg", Location: loc.Join("pg", "pgbackrest")}
		p, r := h.add("pg-0"), h.add("pg-1")
		need := h.recycleBehind(p, r, archive, func() { h.stop(r) })
		system := h.report(p).Postgres.SystemIdentifier

		start := time.Now()
		h.start(r)
		h.waitFor(2*time.Minute, "pg-1 streams again", h.rejoined(r))
		t.Logf("from restart to streaming: %s", time.Since(start).Round(time.Millisecond))
		h.waitFor(30*time.Second, "every row on pg-1", h.hasRows(r, h.rowsWritten(p)...))

		// The primary had recycled the segment, so only the archive could
		// have given it; a clone would have moved the old data aside.
		if _, err := os.Stat(filepath.Join(r.dir, "pgdata"+recloneAside)); err == nil {
			t.Errorf("pg-1 was cloned afresh though the archive holds the WAL it needed (%s)", need.first)
		}
		rep := h.report(r)
		if j := rep.Rejoin; j == nil || j.How != RejoinArchive || !need.holds(j.Segment) ||
			!strings.Contains(j.Message, "fetching WAL from the repository's archive: the primary no longer has WAL segment "+j.Segment) {
			t.Errorf("report's rejoin %+v; want the archive, because the primary lacks a segment from %s on", j, need.first)
		}
		if rep.Postgres.SystemIdentifier != system {
			t.Errorf("pg-1 runs system %s, the primary %s", rep.Postgres.SystemIdentifier, system)
		}
		var restore string
		h.superQuery(r, "postgres", `SELECT current_setting('restore_command')`, &restore)
		if !strings.Contains(restore, "archive-get") || !strings.Contains(restore, "--stanza=pg") {
			t.Errorf("pg-1's restore_command %q; want pgBackRest's archive-get from stanza pg", restore)
		}
	})
}

// recycleBehind sets up p as primary and r as its streaming replica, cuts
// r off from p with away, takes away its slot as a scale-down does, writes and
// switches WAL until p has removed the segment r needs next, and tells p
// to keep a slot for r again, as a scale-up does. It returns the name of
// the segments r needs that p no longer has. With archive, both archive
// there, and every segment is archived before p may remove it.
func (h *harness) recycleBehind(p, r *node, archive *ArchiveOrder, away func()) missingWAL {
	h.t.Helper()
	h.epoch = 1
	primary := func(replicas ...*node) Desired {
		d := h.primary(p, replicas...)
		d.Archive = archive
		return d
	}
	h.want(p, primary(r))
	h.waitFor(2*time.Minute, "primary ready", h.ready(p, postgres.Primary))
	rd := h.replica(p)
	rd.Archive = archive
	h.want(r, rd)
	h.waitFor(2*time.Minute, "replica streaming", h.ready(r, postgres.Replica))
	if err := h.exec(p, `CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('before')`); err != nil {
		h.t.Fatal(err)
	}
	h.waitFor(30*time.Second, "row on the replica", h.hasRows(r, "before"))

	// Nothing is written meanwhile: where it stops is where it resumes.
	var replayed string
	h.superQuery(r, "postgres", `SELECT pg_last_wal_replay_lsn()::text`, &replayed)
	away()
	pos, err := postgres.ParseLSN(replayed)
	if err != nil {
		h.t.Fatal(err)
	}
	h.want(p, primary())
	h.waitFor(30*time.Second, "the replica's slot dropped", h.hasSlots(p, ""))

	// wal_keep_size keeps 256MB (16 segments): switch well past that.
	for i := range 40 {
		if err := h.exec(p, `INSERT INTO t VALUES ($1)`, fmt.Sprintf("w%02d", i)); err != nil {
			h.t.Fatal(err)
		}
		h.superExec(p, "postgres", `SELECT pg_switch_wal()`)
	}
	if archive != nil {
		h.archiveNow(p)
	}
	var segSize, oldest uint64
	var need string
	h.waitFor(time.Minute, "the primary removes the WAL the replica needs", func() error {
		h.superExec(p, "postgres", `CHECKPOINT`)
		ctx := h.t.Context()
		conn, err := p.mgr.connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		oldest, segSize, err = postgres.OldestWAL(ctx, conn)
		if err != nil {
			return err
		}
		seg := postgres.WALSegment(pos, segSize)
		need = postgres.WALFileName(1, seg, segSize)
		if seg >= oldest {
			return fmt.Errorf("the primary still holds %s (oldest segment %d)", need, oldest)
		}
		return nil
	})
	h.want(p, primary(r))
	return missingWAL{first: need, from: postgres.WALSegment(pos, segSize), to: oldest, segSize: segSize}
}

// missingWAL is the segments a replica needs that its primary has removed:
// numbers from up to (not including) to; first names the one at from.
type missingWAL struct {
	first             string
	from, to, segSize uint64
}

// holds says whether segment name is one of them. The instance names the
// first it finds missing, which depends on how it looked: from the
// running replica's position, or before starting, past its own pg_wal.
func (w missingWAL) holds(name string) bool {
	seg, err := postgres.ParseWALFileName(name, w.segSize)
	return err == nil && seg >= w.from && seg < w.to
}

// rejoined: n streams, and has streamed long enough for its report to
// say so (see catchUp.streamed).
func (h *harness) rejoined(n *node) func() error {
	return func() error {
		if err := h.ready(n, postgres.Replica)(); err != nil {
			return err
		}
		if r := h.report(n); r.NotStreamingSince != nil {
			return fmt.Errorf("%s: not streaming since %s: %s", n.name, r.NotStreamingSince, r.Message)
		}
		return nil
	}
}

// recloned checks that r holds every row of p and reports a re-clone for
// one of the segments p lacks.
func (h *harness) recloned(p, r *node, need missingWAL) {
	h.t.Helper()
	h.waitFor(30*time.Second, "every row on "+r.name, h.hasRows(r, h.rowsWritten(p)...))
	rep := h.report(r)
	if j := rep.Rejoin; j == nil || j.How != RejoinReclone || !need.holds(j.Segment) ||
		!strings.Contains(j.Message, "re-cloning: the primary no longer has WAL segment "+j.Segment) {
		h.t.Errorf("report's rejoin %+v; want a re-clone because the primary lacks a segment from %s on", rep.Rejoin, need.first)
	}
}

// rowsWritten lists the rows of t on n, sorted as hasRows wants them.
func (h *harness) rowsWritten(n *node) []string {
	h.t.Helper()
	rows, err := h.rows(n)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(rows) != 41 {
		h.t.Fatalf("%s has %d rows, want 41", n.name, len(rows))
	}
	return rows
}
