package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/proc"
)

// server is one run of the postgres server, a child of this process.
type server struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has exited
	err     error         // its exit status, valid once exited is closed
	started time.Time
	log     serverLog
	// up is set once postgres answered: an exit before that is a failed
	// start, whose reason startError reports. Owned by the converge loop.
	up bool
}

// startError says why a postgres that exited before it ever answered did
// not start: its last FATAL line, else its exit status.
func (s *server) startError() string {
	// Its last words may still be in the pipe; a postmaster that failed to
	// start has no children to hold the pipe open, so this is short.
	s.log.drain(time.Second)
	if f := s.log.lastFatal(); f != "" {
		return f
	}
	return fmt.Sprintf("postgres exited during start-up: %v", s.err)
}

func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// command makes a postgres tool's command, run as cfg.RunAs.
func (m *Manager) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return m.commandAt(ctx, m.cfg.bin(name), args...)
}

// commandAt makes the command of the program at path (or found in PATH),
// run as cfg.RunAs with the password file to reach postgres.
func (m *Manager) commandAt(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), "PGPASSFILE="+m.passFile(), "PGCONNECT_TIMEOUT=5")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if m.cfg.RunAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.cfg.RunAs}
	}
	return cmd
}

// run runs a postgres tool to completion, with its output in the error.
func (m *Manager) run(ctx context.Context, name string, args ...string) error {
	cmd := m.command(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// startServer starts postgres on the data directory as it is.
func (m *Manager) startServer() error {
	if err := m.stopOrphan(); err != nil {
		return err
	}
	if err := m.clearStaleLocks(); err != nil {
		return err
	}
	cmd := m.command(context.Background(), "postgres", "-D", m.cfg.DataDir)
	s := &server{cmd: cmd, exited: make(chan struct{}), started: time.Now()}
	out, err := s.log.attach(cmd)
	if err != nil {
		return err
	}
	err = cmd.Start()
	out.Close() // postgres holds its own copy
	if err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
		m.poke()
	}()
	m.server = s
	return nil
}

// stopServer shuts postgres down fast (SIGINT: roll back clients, checkpoint)
// and escalates to an immediate stop, then a kill, if it takes too long.
func (m *Manager) stopServer() {
	s := m.server
	if s == nil || !s.alive() {
		m.server = nil
		return
	}
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, m.cfg.StopTimeout}, {syscall.SIGQUIT, 5 * time.Second}, {syscall.SIGKILL, time.Minute}} {
		_ = s.cmd.Process.Signal(step.sig)
		select {
		case <-s.exited:
			m.server = nil
			m.local.reset()
			return
		case <-time.After(step.wait):
			m.log.Info("postgres did not stop in time; escalating", "signal", step.sig)
		}
	}
}

// stopOrphan stops a postmaster left running by an earlier instance manager,
// which this process cannot supervise.
func (m *Manager) stopOrphan() error {
	pid, err := runningPostmaster(m.cfg.DataDir)
	if err != nil || pid == 0 {
		return err
	}
	m.log.Info("stopping a postmaster this manager did not start", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGINT)
	if !proc.WaitGone(pid, m.cfg.StopTimeout) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		proc.WaitGone(pid, 10*time.Second)
	}
	return nil
}

// runningPostmaster is the pid of the postmaster running on dataDir, or 0.
// postmaster.pid outlives a crash, and its number may since have gone to
// another process, or, in a new container, to one of this manager's own
// threads: only a postgres working in dataDir counts.
func runningPostmaster(dataDir string) (int, error) {
	pid, err := lockHolder(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if !isPostmasterOn(dataDir)(pid) {
		return 0, nil // clearStaleLocks removes the file
	}
	return pid, nil
}
