// Package loadcheck writes through a database endpoint while faults are
// injected, records every write the server acknowledged, and afterwards
// checks the history: no acknowledged write lost, never two servers taking
// writes at once. Failover benchmarks and end-to-end fault tests share it,
// for Holdfast and for the clusters it is compared with.
package loadcheck

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"holdfast.dev/holdfast/internal/postgres"
)

// Ack is one insert the server acknowledged: from then on the client may
// rely on it.
type Ack struct {
	Seq int64
	// At is the client's clock when the acknowledgement arrived.
	At time.Time
	// Latency is from sending the insert to its acknowledgement.
	Latency time.Duration
	// Server identifies the instance that answered (IdentityQuery).
	Server string
	// Timeline is the server's timeline when it took the write.
	Timeline uint32
	// LSN is the server's WAL insert position just after the row went in:
	// the write's commit record lies beyond it.
	LSN uint64
}

// Failure is an attempt that was not acknowledged: the connection could not
// be made (Seq 0), or the insert failed or timed out. An insert that failed
// may still have committed; the Checker treats it as in doubt.
type Failure struct {
	Seq int64
	At  time.Time
	Err string
}

// DefaultIdentityQuery names the server by the address and port it answered
// on, which is what differs between instances of one cluster.
const DefaultIdentityQuery = `SELECT coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port(), 0)`

// InstanceNameQuery names the server by its cluster_name, which Holdfast
// sets to the instance (pod) name. Use it where a server may restart in
// place on a new address: the same instance on the same volume and
// timeline is one server, not two primaries.
const InstanceNameQuery = `SELECT current_setting('cluster_name')`

// Writer inserts rows one at a time through ConnString until its context
// ends, reconnecting after any error, and records what happened. Use one
// Writer per table: it numbers rows itself.
type Writer struct {
	// ConnString is a libpq connection string or URL. Several hosts and
	// target_session_attrs=read-write make it follow the primary the way
	// libpq clients do.
	ConnString string
	// Table is created if missing; default "loadcheck".
	Table string
	// ConnectTimeout bounds each host's connection attempt; default 1s, so
	// that an unreachable host does not hide a reachable primary for long.
	ConnectTimeout time.Duration
	// WriteTimeout bounds each insert; default 2s. A partitioned server
	// never answers, and only a deadline gets the client unstuck.
	WriteTimeout time.Duration
	// Interval is the pause after each acknowledged insert; default 10ms,
	// which is also the resolution of the measured outage times.
	Interval time.Duration
	// RetryDelay is the pause after a failure; default 50ms.
	RetryDelay time.Duration
	// IdentityQuery returns one text value naming the server; default
	// DefaultIdentityQuery. Run once per connection.
	IdentityQuery string

	mu       sync.Mutex
	acks     []Ack
	failures []Failure
	next     int64
}

func (w *Writer) table() string {
	if w.Table == "" {
		return "loadcheck"
	}
	return w.Table
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Setup creates the table if missing and continues numbering after the
// rows it holds, so a second run against the same table adds to it.
func (w *Writer) Setup(ctx context.Context) error {
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	t := pgx.Identifier{w.table()}.Sanitize()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t+` (
		seq bigint PRIMARY KEY,
		at timestamptz NOT NULL DEFAULT now(),
		server text NOT NULL)`); err != nil {
		return fmt.Errorf("creating table %s: %w", w.table(), err)
	}
	var maxSeq int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM `+t).Scan(&maxSeq); err != nil {
		return fmt.Errorf("reading table %s: %w", w.table(), err)
	}
	w.mu.Lock()
	w.next = max(w.next, maxSeq)
	w.mu.Unlock()
	return nil
}

func (w *Writer) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(w.ConnString)
	if err != nil {
		return nil, fmt.Errorf("parsing connection string: %w", err)
	}
	cfg.ConnectTimeout = orDefault(w.ConnectTimeout, time.Second)
	// On a deadline, drop the connection instead of sending a cancel
	// request: a cancelled wait for synchronous replication reports
	// success for a commit that no standby has, which is no acknowledgement.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.ConnectTimeout*time.Duration(1+len(cfg.Fallbacks)))
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	return conn, nil
}

// Run writes until ctx ends; it returns nil then. Errors of single writes
// are recorded, not returned.
func (w *Writer) Run(ctx context.Context) error {
	t := pgx.Identifier{w.table()}.Sanitize()
	insert := `INSERT INTO ` + t + ` (seq, server) VALUES ($1, $2)
		RETURNING pg_current_wal_insert_lsn()::text, substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)`
	identity := w.IdentityQuery
	if identity == "" {
		identity = DefaultIdentityQuery
	}
	var conn *pgx.Conn
	var server string
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	fail := func(seq int64, err error) {
		w.mu.Lock()
		w.failures = append(w.failures, Failure{Seq: seq, At: time.Now(), Err: err.Error()})
		w.mu.Unlock()
		if conn != nil {
			conn.Close(context.Background())
			conn = nil
		}
		sleep(ctx, orDefault(w.RetryDelay, 50*time.Millisecond))
	}
	for ctx.Err() == nil {
		if conn == nil {
			c, err := w.connect(ctx)
			if err != nil {
				if ctx.Err() == nil {
					fail(0, err)
				}
				continue
			}
			conn = c
			if err := conn.QueryRow(ctx, identity).Scan(&server); err != nil {
				fail(0, fmt.Errorf("identity query: %w", err))
				continue
			}
		}
		w.mu.Lock()
		w.next++
		seq := w.next
		w.mu.Unlock()

		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, orDefault(w.WriteTimeout, 2*time.Second))
		var lsn, walFile string
		err := conn.QueryRow(wctx, insert, seq, server).Scan(&lsn, &walFile)
		cancel()
		at := time.Now()
		if err != nil {
			fail(seq, fmt.Errorf("insert %d on %s: %w", seq, server, err))
			continue
		}
		ack, err := newAck(seq, at, at.Sub(start), server, lsn, walFile)
		if err != nil {
			fail(seq, err)
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, ack)
		w.mu.Unlock()
		sleep(ctx, orDefault(w.Interval, 10*time.Millisecond))
	}
	return nil
}

func newAck(seq int64, at time.Time, latency time.Duration, server, lsn, walFile string) (Ack, error) {
	pos, err := postgres.ParseLSN(lsn)
	if err != nil {
		return Ack{}, err
	}
	// A WAL file name starts with the timeline in 8 hex digits, read from
	// the server's current insert timeline: unlike pg_control_checkpoint(),
	// it is right from the moment of promotion.
	tli, err := strconv.ParseUint(walFile, 16, 32)
	if err != nil {
		return Ack{}, fmt.Errorf("timeline of WAL file %q: %w", walFile, err)
	}
	return Ack{Seq: seq, At: at, Latency: latency, Server: server, Timeline: uint32(tli), LSN: pos}, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// History returns a copy of what the Writer has recorded so far.
func (w *Writer) History() History {
	w.mu.Lock()
	defer w.mu.Unlock()
	return History{Acks: append([]Ack(nil), w.acks...), Failures: append([]Failure(nil), w.failures...)}
}

// FirstAckAfter is History().FirstAckAfter.
func (w *Writer) FirstAckAfter(t time.Time) (time.Duration, bool) {
	return w.History().FirstAckAfter(t)
}

// LastAck returns the latest acknowledgement, if any.
func (w *Writer) LastAck() (Ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acks) == 0 {
		return Ack{}, false
	}
	return w.acks[len(w.acks)-1], true
}

// WaitAck waits until an acknowledgement after t satisfies ok (nil: any)
// and returns it, or fails when ctx ends first.
func (w *Writer) WaitAck(ctx context.Context, t time.Time, ok func(Ack) bool) (Ack, error) {
	return w.WaitFor(ctx, t, func(h History) (Ack, bool) { return h.FirstAckAfterWhere(t, ok) })
}

// WaitFor waits until find, given what the Writer has recorded so far,
// finds an acknowledgement, and returns it; it fails when ctx ends first,
// naming t as the time after which none was found.
func (w *Writer) WaitFor(ctx context.Context, t time.Time, find func(History) (Ack, bool)) (Ack, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if a, found := find(w.History()); found {
			return a, nil
		}
		select {
		case <-ctx.Done():
			return Ack{}, fmt.Errorf("no acknowledged write after %s: %w", t.Format(time.TimeOnly), context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// History is what a Writer recorded, in the order it happened.
type History struct {
	Acks     []Ack
	Failures []Failure
}

// FirstAckAfter returns how long after t the first write was acknowledged.
func (h History) FirstAckAfter(t time.Time) (time.Duration, bool) {
	a, ok := h.FirstAckAfterWhere(t, nil)
	return a.At.Sub(t), ok
}

// FirstAckAfterWhere returns the first acknowledgement after t that
// satisfies ok (nil: any). A failover benchmark asks for the first one
// from a server other than the old primary, since acks of writes already
// in flight when the fault struck are no sign of recovery.
func (h History) FirstAckAfterWhere(t time.Time, ok func(Ack) bool) (Ack, bool) {
	for _, a := range h.Acks {
		if a.At.After(t) && (ok == nil || ok(a)) {
			return a, true
		}
	}
	return Ack{}, false
}

// LongestGap returns the longest time within [from, to] during which no
// write was acknowledged: the write unavailability of a switchover
// requested at from and over by to.
func (h History) LongestGap(from, to time.Time) time.Duration {
	var longest time.Duration
	prev := from
	for _, a := range h.Acks {
		if !a.At.After(from) {
			continue
		}
		if a.At.After(to) {
			break
		}
		longest = max(longest, a.At.Sub(prev))
		prev = a.At
	}
	return max(longest, to.Sub(prev))
}
