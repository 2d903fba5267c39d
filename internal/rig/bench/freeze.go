package bench

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

// FreezeFor is how long a FreezePrimary fault keeps the primary stopped.
const FreezeFor = 60 * time.Second

// StopProcesses stops pids (SIGSTOP) and gives what resumes them.
func StopProcesses(pids []int) (resume func() error, err error) {
	signal := func(sig syscall.Signal) error {
		var errs []error
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("signal %v to %d: %w", sig, pid, err))
			}
		}
		return errors.Join(errs...)
	}
	if err := signal(syscall.SIGSTOP); err != nil {
		_ = signal(syscall.SIGCONT)
		return nil, err
	}
	return func() error { return signal(syscall.SIGCONT) }, nil
}

// HeldSession is a client's session to the primary opened before it froze,
// as an application's pooled connection is: it is never reopened.
type HeldSession struct {
	conn  *pgx.Conn
	table string
}

// HoldSession opens a session with connString's credentials to host, and
// makes table for it to write to.
func HoldSession(ctx context.Context, connString, host, table string) (*HeldSession, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	// Only host: not the fallbacks of a multi-host string, nor a check
	// that would refuse a server that is no longer primary.
	cfg.Host, cfg.Fallbacks, cfg.ValidateConnect = host, nil, nil
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening a session to the primary at %s: %w", host, err)
	}
	if _, err := conn.Exec(cctx, "CREATE TABLE IF NOT EXISTS "+pgx.Identifier{table}.Sanitize()+" (at timestamptz)"); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("the held session's table: %w", err)
	}
	return &HeldSession{conn: conn, table: table}, nil
}

// TryWrite commits one row on the held session after the thaw, and says
// what happened. An acknowledged write here, once another instance has
// taken over, is a write the new primary's history lacks.
func (h *HeldSession) TryWrite(ctx context.Context) string {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := h.conn.Exec(wctx, "INSERT INTO "+pgx.Identifier{h.table}.Sanitize()+" VALUES (now())")
	took := time.Since(start).Round(10 * time.Millisecond)
	switch {
	case err == nil:
		return fmt.Sprintf("ACKNOWLEDGED a write on a session opened before the freeze (in %s)", took)
	case errors.Is(wctx.Err(), context.DeadlineExceeded):
		return "held session hung: no answer in 10s"
	default:
		return fmt.Sprintf("held session refused after %s: %v", took, err)
	}
}

// Close ends the session.
func (h *HeldSession) Close() { _ = h.conn.Close(context.Background()) }

// Thaw waits until FreezeFor has passed since s.At, resumes the frozen
// primary, writes on its held session and says what it did, and whether
// another instance (elsewhere) had taken writes by then.
func Thaw(ctx context.Context, s *Sample, w *loadcheck.Writer, resume func() error, held *HeldSession, elsewhere func(loadcheck.Ack) bool) (string, error) {
	select {
	case <-ctx.Done():
	case <-time.After(FreezeFor - time.Since(s.At)):
	}
	if err := resume(); err != nil {
		return "", err
	}
	before := "no other instance took writes during the freeze"
	for _, a := range w.History().Acks {
		if a.At.After(s.At) && elsewhere(a) {
			before = fmt.Sprintf("a new primary took writes %.1fs into the freeze", a.At.Sub(s.At).Seconds())
			break
		}
	}
	return before + "; the thawed primary: " + held.TryWrite(ctx), nil
}
