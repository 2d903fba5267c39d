package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Outcome is what became of one subject's steps.
type Outcome struct {
	// Done says what the steps that ran did, in their order.
	Done []string
	// Err is the first step that failed, in postgres's words; the
	// subject's later steps were skipped.
	Err error
}

// Apply runs the steps in order, each on a connection to its database. A
// failed step skips the later steps of its subject only: one role that
// cannot be dropped holds nothing else back.
func Apply(ctx context.Context, connect Connector, steps []Step) map[Subject]*Outcome {
	out := map[Subject]*Outcome{}
	conns := map[string]*connection{}
	defer func() {
		for _, c := range conns {
			if c.conn != nil {
				_ = c.conn.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	for _, st := range steps {
		o := out[st.Subject]
		if o == nil {
			o = &Outcome{}
			out[st.Subject] = o
		}
		if o.Err != nil {
			continue
		}
		c := conns[st.Database]
		if c == nil {
			c = &connection{}
			c.conn, c.err = connect(ctx, st.Database)
			conns[st.Database] = c
		}
		if c.err != nil {
			o.Err = fmt.Errorf("%s: %w", st.Says, c.err)
			continue
		}
		if _, err := c.conn.Exec(ctx, st.SQL); err != nil {
			// The step's description, not its SQL: that may hold a
			// password's verifier.
			o.Err = fmt.Errorf("%s: %w", st.Says, err)
			continue
		}
		o.Done = append(o.Done, st.Says)
	}
	return out
}

type connection struct {
	conn *pgx.Conn
	err  error
}
