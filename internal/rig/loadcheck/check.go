package loadcheck

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/postgres"
)

// Final is what the surviving primary holds once the faults are over.
type Final struct {
	// Seqs of the rows in the table.
	Seqs []int64
	// Timeline of the primary.
	Timeline uint32
	// History is the primary's timeline history file (0000000N.history),
	// empty on timeline 1 or when it could not be read.
	History string
}

// ReadFinal reads the table and the timeline history from the primary
// connString reaches. Reading the history file takes a superuser (or
// pg_read_server_files); without it History stays empty and the Checker
// skips the checks that need it.
func ReadFinal(ctx context.Context, connString, table string) (Final, error) {
	w := Writer{ConnString: connString, Table: table}
	conn, err := w.connect(ctx)
	if err != nil {
		return Final{}, err
	}
	defer conn.Close(context.Background())
	var f Final
	rows, err := conn.Query(ctx, `SELECT seq FROM `+pgx.Identifier{w.table()}.Sanitize()+` ORDER BY seq`)
	if err != nil {
		return Final{}, fmt.Errorf("reading table %s: %w", w.table(), err)
	}
	if f.Seqs, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
		return Final{}, fmt.Errorf("reading table %s: %w", w.table(), err)
	}
	var walFile string
	if err := conn.QueryRow(ctx, `SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)`).Scan(&walFile); err != nil {
		return Final{}, fmt.Errorf("reading the timeline: %w", err)
	}
	if _, err := fmt.Sscanf(walFile, "%x", &f.Timeline); err != nil {
		return Final{}, fmt.Errorf("timeline of WAL file %q: %w", walFile, err)
	}
	if f.Timeline > 1 {
		// Best effort: an unprivileged caller only loses the history check.
		_ = conn.QueryRow(ctx, `SELECT pg_read_file($1)`, fmt.Sprintf("pg_wal/%08X.history", f.Timeline)).Scan(&f.History)
	}
	return f, nil
}

// Report is the verdict on one run.
type Report struct {
	// Acked and Failed count the writes acknowledged and the attempts not.
	Acked, Failed int
	// InDoubt counts rows in the table whose insert was never acknowledged:
	// committed, but the acknowledgement was lost with the connection.
	InDoubt int
	// Lost are acknowledged seqs the table does not hold.
	Lost []int64
	// SplitBrain describes each piece of evidence that two servers took
	// writes at the same time.
	SplitBrain []string
	// Spans are the stretches in which one server on one timeline
	// acknowledged writes, in order.
	Spans []Span
}

// Span is a run of acknowledgements by one server on one timeline.
type Span struct {
	Server      string
	Timeline    uint32
	First, Last time.Time
	Acks        int
}

// OK says whether the run kept every acknowledged write and never had two
// writable servers.
func (r Report) OK() bool { return len(r.Lost) == 0 && len(r.SplitBrain) == 0 }

func (r Report) String() string {
	s := fmt.Sprintf("%d acknowledged, %d failed attempts, %d in doubt, %d lost, %d split-brain findings",
		r.Acked, r.Failed, r.InDoubt, len(r.Lost), len(r.SplitBrain))
	if len(r.Lost) > 0 {
		s += fmt.Sprintf("; lost seqs %v", head(r.Lost, 20))
	}
	for _, e := range head(r.SplitBrain, 5) {
		s += "; " + e
	}
	return s
}

func head[T any](s []T, n int) []T { return s[:min(len(s), n)] }

// Check compares what was acknowledged with what survived.
//
// Split brain shows three ways. A server writes on the timeline of its
// promotion, and each promotion makes a new timeline, so (1) two servers
// taking turns on the same timeline, or the second taking a write below
// the first one's last position on it, were both primaries without a
// promotion between them (one server handing a timeline to another at a
// later position is a primary restarted at a new address, as a pod
// recreated in place is); (2) a write acknowledged on timeline n after
// another was acknowledged on a later timeline came from a server that was
// still taking writes after it had been replaced (acks are ordered by the
// client's clock, one writer making one write at a time); (3) a write
// acknowledged on timeline n beyond the point where the final history left
// n was taken by a server already cut off from the history that survived.
func Check(h History, final Final) Report {
	r := Report{Acked: len(h.Acks), Failed: len(h.Failures)}
	present := make(map[int64]bool, len(final.Seqs))
	for _, s := range final.Seqs {
		present[s] = true
	}
	acked := make(map[int64]bool, len(h.Acks))
	for _, a := range h.Acks {
		acked[a.Seq] = true
		if !present[a.Seq] {
			r.Lost = append(r.Lost, a.Seq)
		}
	}
	for _, s := range final.Seqs {
		if !acked[s] {
			r.InDoubt++
		}
	}
	slices.Sort(r.Lost)

	acks := slices.Clone(h.Acks)
	sort.SliceStable(acks, func(i, j int) bool { return acks[i].At.Before(acks[j].At) })
	last := map[uint32]Ack{}             // the latest ack on each timeline
	left := map[uint32]map[string]bool{} // the servers that handed each timeline on
	var latest Ack                       // the ack on the highest timeline so far
	for i, a := range acks {
		if o, ok := last[a.Timeline]; ok && o.Server != a.Server {
			if left[a.Timeline][a.Server] || a.LSN <= o.LSN {
				r.SplitBrain = append(r.SplitBrain, fmt.Sprintf("timeline %d: %s acknowledged seq %d at %s (%X/%X), then %s acknowledged seq %d at %s (%X/%X)",
					a.Timeline, o.Server, o.Seq, stamp(o.At), o.LSN>>32, uint32(o.LSN), a.Server, a.Seq, stamp(a.At), a.LSN>>32, uint32(a.LSN)))
			}
			if left[a.Timeline] == nil {
				left[a.Timeline] = map[string]bool{}
			}
			left[a.Timeline][o.Server] = true
		}
		last[a.Timeline] = a
		if i > 0 && a.Timeline < latest.Timeline {
			r.SplitBrain = append(r.SplitBrain, fmt.Sprintf("%s acknowledged seq %d on timeline %d at %s, after %s acknowledged seq %d on timeline %d at %s",
				a.Server, a.Seq, a.Timeline, stamp(a.At), latest.Server, latest.Seq, latest.Timeline, stamp(latest.At)))
		}
		if i == 0 || a.Timeline > latest.Timeline {
			latest = a
		}
		if n := len(r.Spans); n > 0 && r.Spans[n-1].Server == a.Server && r.Spans[n-1].Timeline == a.Timeline {
			r.Spans[n-1].Last = a.At
			r.Spans[n-1].Acks++
		} else {
			r.Spans = append(r.Spans, Span{Server: a.Server, Timeline: a.Timeline, First: a.At, Last: a.At, Acks: 1})
		}
		if final.History != "" && a.Timeline < final.Timeline {
			end, ok, err := postgres.SwitchPoint(final.History, int(a.Timeline))
			if err == nil && ok && a.LSN > end {
				r.SplitBrain = append(r.SplitBrain, fmt.Sprintf("%s acknowledged seq %d on timeline %d at %X/%X, past %X/%X where the surviving history left that timeline",
					a.Server, a.Seq, a.Timeline, a.LSN>>32, uint32(a.LSN), end>>32, uint32(end)))
			}
		}
	}
	return r
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }
