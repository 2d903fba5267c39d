package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// State that crosses a restart of the container: the data volume and the
// run folder (an emptyDir, which lives as long as the pod, not the
// container) keep what the previous manager and its postgres left. Nothing
// there is trusted as it is: docs/instance-manager.md lists each file and
// how start-up checks it.

// socketFile is the unix socket postgres listens on in the run folder.
func (m *Manager) socketFile() string {
	return filepath.Join(m.cfg.RunDir, fmt.Sprintf(".s.PGSQL.%d", m.cfg.Port))
}

// clearStaleLocks removes the lock files a postmaster that died without
// shutting down (SIGKILL, OOM, the container killed) left behind, while
// no postmaster of ours runs.
//
// postgres itself takes such a lock over only when the process it names
// is gone, or is postgres's own parent or grandparent. A new container has
// a new PID namespace, where the dead postmaster's number (a small one)
// soon belongs to some other live task, often one of this manager's
// threads: postgres then refuses to start, on every retry, for good.
// A lock is live only while it names a running postgres; any other holder
// means the postmaster that wrote it is gone.
func (m *Manager) clearStaleLocks() error {
	if m.server != nil && m.server.alive() {
		return nil
	}
	pid, err := runningPostmaster(m.cfg.DataDir)
	if err != nil {
		return err
	}
	if pid != 0 {
		return nil // an orphan runs on this data directory: stopOrphan's to stop
	}
	if err := m.removeStaleLock(filepath.Join(m.cfg.DataDir, "postmaster.pid"), isPostmasterOn(m.cfg.DataDir)); err != nil {
		return err
	}
	// The socket lock of a postgres on another data directory (a logical
	// restore's own server) is that server's, not stale.
	return m.removeStaleLock(m.socketFile()+".lock", isPostgres, m.socketFile())
}

// removeStaleLock removes the lock file at path, and the files it guards,
// unless the process it names is live by the holder test.
func (m *Manager) removeStaleLock(path string, live func(pid int) bool, guarded ...string) error {
	pid, err := lockHolder(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if pid > 0 && live(pid) {
		return nil
	}
	for _, f := range append(guarded, path) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the stale %s: %w", f, err)
		}
	}
	m.log.Info("removed a lock file its postmaster left behind", "file", path, "pid", pid)
	return nil
}

// lockHolder reads the PID on the first line of a postgres lock file
// (postmaster.pid, .s.PGSQL.<port>.lock); 0 when it names none.
func lockHolder(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", filepath.Base(path), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, nil // half written: its postmaster died writing it
	}
	return pid, nil
}

// isPostgres says whether pid is a live postgres process. By its binary,
// not its command line: the manager's and the watchdog's command lines
// may well name a folder called postgresql.
func isPostgres(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	// " (deleted)" follows the name once the package was upgraded under it.
	return err == nil && strings.HasPrefix(filepath.Base(exe), "postgres")
}

// isPostmasterOn makes a test of whether pid is a postgres running on
// dataDir: the postmaster and every backend work in their data directory.
func isPostmasterOn(dataDir string) func(pid int) bool {
	return func(pid int) bool {
		if !isPostgres(pid) {
			return false
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return false
		}
		want, err := filepath.EvalSymlinks(dataDir)
		if err != nil {
			want = dataDir
		}
		return filepath.Clean(cwd) == filepath.Clean(want)
	}
}

// clearLeftovers removes what a manager killed half-way left in the run
// folder and beside the data directory, at start-up, before anything
// reads it.
func (m *Manager) clearLeftovers() error {
	leftovers := []string{
		// initdb's password file holds the superuser's password; a
		// bootstrap cut short never ran its deferred removal.
		filepath.Join(m.cfg.RunDir, "initdb-pw"),
	}
	if !exists(filepath.Join(m.cfg.DataDir, "PG_VERSION")) {
		// The marker speaks of a data directory that was never moved into
		// place: the bootstrap that follows writes it again if it applies.
		leftovers = append(leftovers, m.foreignPasswordsMarker())
	}
	for _, f := range leftovers {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s, left by an earlier run: %w", f, err)
		}
	}
	return m.clearStaleLocks()
}
