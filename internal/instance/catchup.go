package instance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"holdfast.dev/holdfast/internal/postgres"
)

// How long a replica whose primary no longer has the WAL it needs may go
// without replaying anything before it is cloned afresh. With a
// repository its restore_command may be fetching the WAL from the archive,
// which takes a while per segment from a slow store; without one nothing
// can bring that WAL back, and the wait only rules out a replica still
// replaying what it holds in its own pg_wal.
const (
	archiveStallLimit = 30 * time.Second
	streamStallLimit  = 5 * time.Second
)

// The suffixes of the old data directories a fresh clone keeps aside.
const (
	rewindAside  = ".before-rewind"
	recloneAside = ".before-reclone"
)

// catchUp follows a replica that runs without streaming, to tell a pause
// (its primary restarting, a network blip) from a replica that cannot
// catch up because its primary has recycled the WAL it needs, which
// postgres retries for ever. Owned by the converge loop.
type catchUp struct {
	// notStreamingSince is when the replica was first seen running without
	// streaming; zero while it streams or is not a replica.
	notStreamingSince time.Time
	// streamed is set when the last look saw the replica stream: a WAL
	// receiver says it streams from the moment it asks, so a primary's
	// refusal shows as streaming for an instant, every retry.
	streamed bool
	// replayed is the replay position last seen, movedAt when it last changed.
	replayed string
	movedAt  time.Time
	// fromArchive is set once the archive's part in this episode is said.
	fromArchive bool
	last        *Rejoin
}

// observe notes what a running server says; st is nil when it does not answer.
func (c *catchUp) observe(d *Desired, st *postgres.Status, now time.Time) {
	if st == nil {
		return // a server starting or stopped says nothing either way
	}
	if st.ReplayedLSN != c.replayed || c.movedAt.IsZero() {
		c.replayed, c.movedAt = st.ReplayedLSN, now
	}
	switch {
	case d == nil || d.Role != postgres.Replica || !st.InRecovery:
		c.notStreamingSince, c.fromArchive, c.streamed = time.Time{}, false, false
	case st.Streaming && c.streamed:
		c.notStreamingSince, c.fromArchive = time.Time{}, false
	case st.Streaming:
		c.streamed = true
	default:
		c.streamed = false
		if c.notStreamingSince.IsZero() {
			c.notStreamingSince = now
		}
	}
}

// since is notStreamingSince for the report: nil while streaming.
func (c *catchUp) since() *time.Time {
	if c.notStreamingSince.IsZero() {
		return nil
	}
	t := c.notStreamingSince
	return &t
}

func (c *catchUp) rejoined(how, segment, msg string) {
	c.last = &Rejoin{At: time.Now(), How: how, Segment: segment, Message: msg}
}

// catchUpOrReclone handles a replica that runs but does not stream and
// whose history has not diverged from its primary's: when the primary no
// longer has the WAL it needs, it lets the archive supply it, if the
// cluster has one and replay moves; otherwise it clones the primary afresh.
func (m *Manager) catchUpOrReclone(ctx context.Context, d *Desired, st postgres.Status) (string, error) {
	c := &m.catch
	c.observe(d, &st, time.Now())
	gone, err := m.walGone(ctx, d, st)
	if err != nil {
		return "not streaming: " + err.Error(), nil
	}
	if gone == "" {
		return "not streaming yet", nil
	}
	why := "the primary no longer has WAL segment " + gone
	stalled := time.Since(c.movedAt)
	if d.Archive != nil && stalled < archiveStallLimit {
		if c.movedAt.After(c.notStreamingSince) && !c.fromArchive {
			c.fromArchive = true
			m.log.Info("replaying WAL from the repository's archive: the primary no longer has it", "segment", gone)
			c.rejoined(RejoinArchive, gone, "fetching WAL from the repository's archive: "+why)
		}
		return "fetching WAL from the repository's archive: " + why, nil
	}
	if d.Archive == nil && stalled < streamStallLimit {
		return "not streaming: " + why, nil
	}
	if m.backups.dumping() {
		// The dump reads a snapshot, which a stale replica serves as well
		// as any; stopping postgres would fail it.
		return "not streaming: " + why + "; re-cloning once the running dump ends", nil
	}

	if d.Archive != nil {
		why += fmt.Sprintf(", and replay has not moved for %s with the archive", stalled.Round(time.Second))
	}
	m.stopServer()
	return m.reclone(ctx, d, gone, why)
}

// reclone clones the primary afresh for a stopped replica that cannot
// follow it, because of why, and says so.
func (m *Manager) reclone(ctx context.Context, d *Desired, gone, why string) (string, error) {
	c := &m.catch
	msg := "re-cloning: " + why + "; the old data directory is kept aside as " + aside(m.cfg.DataDir, recloneAside)
	m.log.Info("this replica cannot catch up: cloning the primary afresh", "segment", gone, "why", why)
	c.rejoined(RejoinReclone, gone, msg)
	// The clone takes a while, and the converge loop reports nothing meanwhile.
	m.publish(ctx, d, msg, nil)
	if err := m.cloneAfresh(ctx, d, recloneAside); err != nil {
		return "", fmt.Errorf("re-cloning because %s: %w", why, err)
	}
	c.replayed, c.movedAt = "", time.Now()
	return "re-cloned: " + why, nil
}

// rejoinBeforeStart looks, before a replica's postgres starts on its data
// directory, whether the primary has recycled the WAL that follows what
// this replica holds in its own pg_wal. Then it cannot stream from where it
// stopped: with a repository, restore_command fetches that WAL from the
// archive, and this says so; without one, it clones the primary at once
// rather than start a server that would loop on the primary's refusal, or,
// stopped before it was consistent, never even answer. It returns a
// message when it did the step's work; an error to reach the primary
// leaves the start to go ahead, and the running replica to be looked at.
func (m *Manager) rejoinBeforeStart(ctx context.Context, d *Desired) (string, error) {
	gone, err := m.walGoneBeforeStart(ctx, d)
	if err != nil {
		m.log.V(1).Info("could not compare this replica's WAL with the primary's before starting", "error", err.Error())
		return "", nil
	}
	if gone == "" {
		return "", nil
	}
	why := "the primary no longer has WAL segment " + gone
	if d.Archive != nil {
		m.log.Info("starting to replay WAL from the repository's archive: the primary no longer has it", "segment", gone)
		m.catch.fromArchive = true
		m.catch.rejoined(RejoinArchive, gone, "fetching WAL from the repository's archive: "+why)
		return "", nil
	}
	return m.reclone(ctx, d, gone, why)
}

// walGoneBeforeStart returns the segment that follows the newest in this
// replica's pg_wal when the primary holds nothing that old any more, else
// "". The newest local segment may be a recycled one named ahead of the
// replica's WAL, which can only hide a gap, never invent one; and the
// replica may need the newest local segment whole again, so a gap counts
// only past the one after it.
func (m *Manager) walGoneBeforeStart(ctx context.Context, d *Desired) (string, error) {
	oldest, segSize, err := m.primaryOldestWAL(ctx, d)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(filepath.Join(m.cfg.DataDir, "pg_wal"))
	if err != nil {
		return "", fmt.Errorf("listing this replica's WAL: %w", err)
	}
	var newest uint64
	var tli int64
	found := false
	for _, e := range entries {
		seg, err := postgres.ParseWALFileName(e.Name(), segSize)
		if err != nil || (found && seg <= newest) {
			continue
		}
		t, err := strconv.ParseInt(e.Name()[:8], 16, 32)
		if err != nil {
			continue
		}
		newest, tli, found = seg, t, true
	}
	if !found || oldest <= newest+1 {
		return "", nil
	}
	return postgres.WALFileName(int(tli), newest+1, segSize), nil
}

// walGone asks the primary for the oldest WAL it still holds and returns
// the name of the segment this replica needs next when the primary no
// longer has it, else "".
func (m *Manager) walGone(ctx context.Context, d *Desired, st postgres.Status) (string, error) {
	pos, err := st.WALPosition()
	if err != nil || pos == 0 {
		return "", err // nothing replayed yet: nothing to compare
	}
	oldest, segSize, err := m.primaryOldestWAL(ctx, d)
	if err != nil {
		return "", err
	}
	need := postgres.WALSegment(pos, segSize)
	if need >= oldest {
		return "", nil
	}
	return postgres.WALFileName(st.Timeline, need, segSize), nil
}

// primaryOldestWAL is postgres.OldestWAL of the primary.
func (m *Manager) primaryOldestWAL(ctx context.Context, d *Desired) (segno, segSize uint64, err error) {
	conn, err := m.connectPrimary(ctx, d)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	return postgres.OldestWAL(ctx, conn)
}

func aside(dataDir, suffix string) string { return filepath.Base(dataDir) + suffix }

// cloneAfresh clones the primary anew and keeps the old data directory
// aside under suffix, for a look should the clone's data be wrong. One
// old copy at most: an earlier one, of either kind, goes first, so that
// the volume holds two data directories at most.
func (m *Manager) cloneAfresh(ctx context.Context, d *Desired, suffix string) error {
	for _, s := range []string{rewindAside, recloneAside} {
		if err := os.RemoveAll(m.cfg.DataDir + s); err != nil {
			return fmt.Errorf("clearing %s: %w", m.cfg.DataDir+s, err)
		}
	}
	if err := os.Rename(m.cfg.DataDir, m.cfg.DataDir+suffix); err != nil {
		return fmt.Errorf("moving the old data directory aside: %w", err)
	}
	return m.bootstrap(ctx, d)
}
