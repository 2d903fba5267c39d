package instance

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// localConn is one connection to this instance's own postgres, kept open
// for the short queries asked several times a second: the converge loop's
// status, the operator's look during a switchover, the wait for a
// promotion. A new connection each time is a fork and a SCRAM exchange,
// and on a busy node that is what a switchover spends its time on.
// Long statements (CHECKPOINT) take connections of their own, so that
// they never hold a status query up.
type localConn struct {
	sem  chan struct{} // held while the connection is in use
	conn *pgx.Conn
}

func newLocalConn() *localConn { return &localConn{sem: make(chan struct{}, 1)} }

// do runs f on the kept connection, dialling one when there is none. A
// connection that fails is dropped, and f is tried once more on a fresh
// one: the failure may be only that postgres restarted since it was
// opened. ctx bounds the wait for the connection as well as f.
func (l *localConn) do(ctx context.Context, dial func(context.Context) (*pgx.Conn, error), f func(*pgx.Conn) error) error {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.sem }()
	for {
		fresh := false
		if l.conn == nil || l.conn.IsClosed() {
			c, err := dial(ctx)
			if err != nil {
				return err
			}
			l.conn, fresh = c, true
		}
		err := f(l.conn)
		if err == nil {
			return nil
		}
		l.closeLocked()
		if fresh || ctx.Err() != nil {
			return err
		}
	}
}

// reset drops the kept connection: postgres is stopping or starting.
func (l *localConn) reset() {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	l.closeLocked()
}

func (l *localConn) closeLocked() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = l.conn.Close(ctx)
	l.conn = nil
}
