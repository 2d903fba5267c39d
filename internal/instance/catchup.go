package instance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"holdfast.dev/holdfast/internal/postgres"
)

// Rejoin is what a replica did on its own to follow its primary again
// once the primary no longer had the WAL it needed: the operator
// announces each with an Event.
type Rejoin struct {
	At time.Time `json:"at"`
	// How is RejoinArchive or RejoinReclone.
	How string `json:"how"`
	// Segment is the WAL segment the primary no longer had.
	Segment string `json:"segment"`
	Message string `json:"message"`
}

const (
	// RejoinArchive: the replica replays WAL that its restore_command
	// fetches from the cluster's repository.
	RejoinArchive = "archive"
	// RejoinReclone: the replica cloned the primary afresh, its old data
	// directory kept aside.
	RejoinReclone = "reclone"
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

	msg := "re-cloning: " + why
	if d.Archive != nil {
		msg += fmt.Sprintf(", and replay has not moved for %s with the archive", stalled.Round(time.Second))
	}
	msg += "; the old data directory is kept aside as " + aside(m.cfg.DataDir, recloneAside)
	m.log.Info("this replica cannot catch up: cloning the primary afresh", "segment", gone, "replayed", st.ReplayedLSN)
	c.rejoined(RejoinReclone, gone, msg)
	m.stopServer()
	// The clone takes a while, and the converge loop reports nothing meanwhile.
	m.publish(ctx, d, msg, nil)
	if err := m.cloneAfresh(ctx, d, recloneAside); err != nil {
		return "", fmt.Errorf("re-cloning because %s: %w", why, err)
	}
	c.replayed, c.movedAt = "", time.Now()
	return "re-cloned: " + why, nil
}

// walGone asks the primary for the oldest WAL it still holds and returns
// the name of the segment this replica needs next when the primary no
// longer has it, else "".
func (m *Manager) walGone(ctx context.Context, d *Desired, st postgres.Status) (string, error) {
	pos, err := st.WALPosition()
	if err != nil || pos == 0 {
		return "", err // nothing replayed yet: nothing to compare
	}
	conn, err := m.connectPrimary(ctx, d)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	oldest, segSize, err := postgres.OldestWAL(ctx, conn)
	if err != nil {
		return "", err
	}
	need := postgres.WALSegment(pos, segSize)
	if need >= oldest {
		return "", nil
	}
	return postgres.WALFileName(st.Timeline, need, segSize), nil
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
