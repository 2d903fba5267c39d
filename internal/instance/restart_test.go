package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// The container helper: this test binary, run again by startContainer as
// the first process of new PID and mount namespaces, plays
// `holdfast instance run` in a container.
const (
	containerEnv = "HOLDFAST_TEST_CONTAINER"      // the Config, in JSON
	holdPIDEnv   = "HOLDFAST_TEST_CONTAINER_HOLD" // a PID to keep busy first
	// firstPIDs is how many PIDs the first container uses up before its
	// manager starts: its postmaster's PID is then well above those the
	// next container's runtime threads take before holdPID runs.
	firstPIDs = 40
)

func TestMain(m *testing.M) {
	if os.Getenv(containerEnv) != "" {
		os.Exit(runContainer())
	}
	os.Exit(m.Run())
}

// runContainer runs an instance manager until killed, as PID 1 of its
// namespace, after placing a live process at the PID holdPIDEnv names.
func runContainer() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "container:", err)
		return 2
	}
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv(containerEnv)), &cfg); err != nil {
		return fail(err)
	}
	// Its own /proc, as a container has, so that PIDs read there are the
	// ones postgres writes in its lock files.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("making mounts private: %w", err))
	}
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fail(fmt.Errorf("mounting /proc: %w", err))
	}
	pid, _ := strconv.Atoi(os.Getenv(holdPIDEnv))
	if pid == 0 {
		pid = firstPIDs
	}
	if err := holdPID(pid, cfg.RunAs); err != nil {
		return fail(err)
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	m := NewManager(cfg, ctrl.Log.WithName(cfg.Name))
	if _, err := m.Listen(); err != nil {
		return fail(err)
	}
	if err := m.Run(context.Background()); err != nil {
		return fail(err)
	}
	return 0
}

// holdPID starts processes, as the user postgres runs as, until one has
// pid, and leaves that one running: a task postgres may signal (so that it
// counts as alive) and that is neither postgres nor its parent, like the
// manager's thread that held the dead postmaster's number in the report.
func holdPID(pid int, as *syscall.Credential) error {
	for {
		cmd := exec.Command("sleep", "3600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: as}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting a process to hold PID %d: %w", pid, err)
		}
		switch got := cmd.Process.Pid; {
		case got == pid:
			fmt.Fprintf(os.Stderr, "container: a live process holds PID %d\n", pid)
			go func() { _ = cmd.Wait() }()
			return nil
		case got > pid:
			_ = cmd.Process.Kill()
			return fmt.Errorf("PID %d went by before a process could hold it (got %d)", pid, got)
		default:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
}

// container is one run of the container helper.
type container struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startContainer runs n's instance manager in new PID and mount
// namespaces, first placing a live process at holdPID (at firstPIDs when
// it is 0).
func (h *harness) startContainer(n *node, holdPID int) *container {
	h.t.Helper()
	// The manager runs in another process, which cannot tell this one the
	// ports it bound: it is given fixed ones.
	for _, addr := range []*string{&n.statusAddr, &n.apiAddr} {
		if *addr == "127.0.0.1:0" {
			*addr = "127.0.0.1:" + strconv.Itoa(testutil.FreePort(h.t))
		}
	}
	cfg := h.config(n)
	b, err := json.Marshal(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), containerEnv+"="+string(b), holdPIDEnv+"="+strconv.Itoa(holdPID))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("starting the container: %v", err)
	}
	c := &container{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.exited) }()
	h.t.Cleanup(c.kill)
	return c
}

// kill SIGKILLs the container's first process; the kernel then kills
// every process in its PID namespace, postgres with them, as when a
// container runtime kills a container.
func (c *container) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// lockPID reads the PID a postgres lock file names.
func lockPID(t *testing.T, path string) int {
	t.Helper()
	pid, err := lockHolder(path)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestStaleLocksAfterAKilledContainer reproduces issue 14's race on
// purpose: a postmaster killed with its container leaves its lock files
// naming its PID; in the next container, a live process that is not
// postgres holds that PID, so postgres would refuse the locks, for good.
func TestStaleLocksAfterAKilledContainer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("new PID namespaces need root")
	}
	h := newHarness(t)
	n := h.newNode("pg-0")
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	testutil.Own(t, n.dir, 0o700, h.runAs)
	cfg := h.config(n)
	socketLock := filepath.Join(cfg.RunDir, fmt.Sprintf(".s.PGSQL.%d.lock", n.port))
	pidFile := filepath.Join(cfg.DataDir, "postmaster.pid")

	c := h.startContainer(n, 0)
	c.waitAPI(h, n)
	h.want(n, h.primary(n))
	h.waitFor(2*time.Minute, "primary up in the first container", h.ready(n, postgres.Primary))
	if err := h.exec(n, `CREATE TABLE t (v text); INSERT INTO t VALUES ('before the kill')`); err != nil {
		t.Fatal(err)
	}

	// restart kills the container, then starts the next one with a live
	// process at the dead postmaster's PID, and checks that postgres comes
	// up and holds its locks anew.
	restart := func(t *testing.T, keepPIDFile bool) {
		pid := h.report(n).PID
		c.kill()
		stale := []string{socketLock, pidFile}
		if !keepPIDFile {
			// pg_rewind first recovers a killed primary in single-user
			// mode, which takes postmaster.pid over and removes it; the
			// socket lock, which single-user mode does not touch, stays.
			if err := os.Remove(pidFile); err != nil {
				t.Fatal(err)
			}
			stale = stale[:1]
		}
		for _, f := range stale {
			if got := lockPID(t, f); got != pid {
				t.Fatalf("after the kill, %s names PID %d, want the killed postmaster's %d", f, got, pid)
			}
		}
		c = h.startContainer(n, pid)
		c.waitAPI(h, n)
		// A restarted primary waits for the operator's word.
		h.want(n, h.primary(n))
		h.waitFor(time.Minute, "primary up in the new container", h.ready(n, postgres.Primary))
		r := h.report(n)
		if r.StartError != "" || r.Restarts != 0 {
			t.Errorf("postgres came up only after failed starts: restarts %d, start error %q", r.Restarts, r.StartError)
		}
		if r.PID == pid {
			t.Fatalf("the new postmaster has the killed one's PID %d: the race was not set up", pid)
		}
		for _, f := range []string{socketLock, pidFile} {
			if got := lockPID(t, f); got != r.PID {
				t.Errorf("%s names PID %d, want the new postmaster's %d", f, got, r.PID)
			}
		}
		h.waitFor(10*time.Second, "rows kept", h.hasRows(n, "before the kill"))
	}
	t.Run("the socket lock alone, as after pg_rewind", func(t *testing.T) { restart(t, false) })
	t.Run("the socket lock and postmaster.pid", func(t *testing.T) { restart(t, true) })
}

// waitAPI waits for the manager in c to answer, and fails at once should
// the container end first (it could not hold the PID it was given, say).
func (c *container) waitAPI(h *harness, n *node) {
	h.t.Helper()
	h.waitFor(time.Minute, n.name+"'s manager answering", func() error {
		select {
		case <-c.exited:
			h.t.Fatalf("the container ended: %v", c.cmd.ProcessState)
		default:
		}
		resp, err := h.operator.Get(n.apiURL() + StatusPath)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
}

// TestStartAndConvergeErrorsAreReported: a postgres that cannot start
// says why in the report (its FATAL line), and so does a converge error
// that lasts.
func TestStartAndConvergeErrorsAreReported(t *testing.T) {
	h := newHarness(t)
	n := h.add("pg-0")
	h.want(n, h.primary(n))
	h.waitFor(2*time.Minute, "primary up", h.ready(n, postgres.Primary))

	// Settings the manager orders are checked before they are written;
	// ALTER SYSTEM's file is not, and postgres reads it last.
	auto := filepath.Join(n.dir, "pgdata", "postgresql.auto.conf")
	good, err := os.ReadFile(auto)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a postgres that fails to start reports its FATAL line", func(t *testing.T) {
		if err := os.WriteFile(auto, append(slices.Clone(good), "max_connections = 'many'\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(h.report(n).PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h.waitFor(time.Minute, "the start error reported", func() error {
			r := h.report(n)
			if !strings.HasPrefix(r.StartError, "FATAL: configuration file") || !strings.Contains(r.Message, r.StartError) {
				return fmt.Errorf("start error %q, message %q", r.StartError, r.Message)
			}
			return nil
		})
		if err := os.WriteFile(auto, good, 0o600); err != nil {
			t.Fatal(err)
		}
		h.waitFor(time.Minute, "postgres up again", h.ready(n, postgres.Primary))
		if r := h.report(n); r.StartError != "" {
			t.Errorf("the start error outlived a good start: %q", r.StartError)
		}
	})
	t.Run("a converge error that lasts is reported as failing", func(t *testing.T) {
		// The repository's credentials are not there: every step fails.
		d := h.primary(n)
		d.Archive = &ArchiveOrder{Stanza: "db", Location: objectstore.Location{Endpoint: "https://s3.invalid", Bucket: "b"}}
		h.want(n, d)
		start := time.Now()
		h.waitFor(time.Minute, "the error reported as failing", func() error {
			r := h.report(n)
			if r.Failing == "" || r.Failing != r.Error || !strings.Contains(r.Failing, "repository credentials") {
				return fmt.Errorf("error %q, failing %q", r.Error, r.Failing)
			}
			return nil
		})
		if took := time.Since(start); took < failingAfter {
			t.Errorf("failing after %s, before the %s a passing hitch gets", took, failingAfter)
		}
		h.want(n, h.primary(n))
		h.waitFor(30*time.Second, "failing cleared", func() error {
			if r := h.report(n); r.Failing != "" || r.Error != "" {
				return fmt.Errorf("error %q, failing %q", r.Error, r.Failing)
			}
			return nil
		})
	})
}

// TestRefusedSettingsLeaveTheLastInForce: settings postgres refuses are
// reported with postgres's words and never written, so that neither a
// reload nor the next start sees them; good ones apply at once.
func TestRefusedSettingsLeaveTheLastInForce(t *testing.T) {
	h := newHarness(t)
	n := h.add("pg-0")
	h.want(n, h.primary(n))
	h.waitFor(2*time.Minute, "primary up", h.ready(n, postgres.Primary))
	setting := func(name string) string {
		t.Helper()
		var v string
		h.superQuery(n, "postgres", "SELECT current_setting('"+name+"')", &v)
		return v
	}
	before := setting("work_mem")

	d := h.primary(n)
	d.Parameters = map[string]string{"max_connections": "50", "work_mem": "lots"}
	h.want(n, d)
	h.waitFor(30*time.Second, "the refusal reported", func() error {
		if r := h.report(n); !strings.Contains(r.InvalidParameters, `invalid value for parameter "work_mem": "lots"`) {
			return fmt.Errorf("invalid parameters %q", r.InvalidParameters)
		}
		return nil
	})
	if v := setting("work_mem"); v != before {
		t.Errorf("work_mem %s after a refused value, want %s still", v, before)
	}
	// The next start runs on the settings last accepted.
	killed := h.report(n).PID
	if err := syscall.Kill(killed, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitFor(time.Minute, "postgres up again after a crash", func() error {
		r := h.report(n)
		if r.StartError != "" || r.PID == killed {
			return fmt.Errorf("start error %q, pid %d", r.StartError, r.PID)
		}
		return h.ready(n, postgres.Primary)()
	})
	if r := h.report(n); !strings.Contains(r.InvalidParameters, "work_mem") {
		t.Errorf("after the restart the refusal is no longer reported: %q", r.InvalidParameters)
	}

	d.Parameters = map[string]string{"max_connections": "50", "work_mem": "8MB"}
	h.want(n, d)
	h.waitFor(30*time.Second, "the good value applied and the refusal cleared", func() error {
		if r := h.report(n); r.InvalidParameters != "" {
			return fmt.Errorf("invalid parameters %q", r.InvalidParameters)
		}
		if v := setting("work_mem"); v != "8MB" {
			return fmt.Errorf("work_mem %s", v)
		}
		return nil
	})
}

// TestClearStaleLocks: a lock counts as live only while a postgres holds
// it; whatever else holds its number, the lock goes.
func TestClearStaleLocks(t *testing.T) {
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })
	write := func(path string, pid int) {
		t.Helper()
		if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setup := func(t *testing.T, dataDir string) (*Manager, string, string) {
		m := NewManager(Config{DataDir: dataDir, RunDir: t.TempDir(), Port: 5432}, logr.Discard())
		return m, filepath.Join(dataDir, "postmaster.pid"), m.socketFile() + ".lock"
	}
	present := func(t *testing.T, want bool, files ...string) {
		t.Helper()
		for _, f := range files {
			if exists(f) != want {
				t.Errorf("%s: present %v, want %v", filepath.Base(f), !want, want)
			}
		}
	}

	t.Run("an orphan postmaster on this data directory keeps its locks", func(t *testing.T) {
		dataDir, pm, _ := fakePostmaster(t)
		m, pidFile, lock := setup(t, dataDir)
		write(lock, pm.Process.Pid)
		if err := m.clearStaleLocks(); err != nil {
			t.Fatal(err)
		}
		present(t, true, pidFile, lock)
	})
	t.Run("a live process that is not postgres holds nothing", func(t *testing.T) {
		m, pidFile, lock := setup(t, t.TempDir())
		write(pidFile, stranger.Process.Pid)
		write(lock, stranger.Process.Pid)
		write(m.socketFile(), 0)
		if err := m.clearStaleLocks(); err != nil {
			t.Fatal(err)
		}
		present(t, false, pidFile, lock, m.socketFile())
	})
	t.Run("a postgres on another data directory keeps the socket, not this postmaster.pid", func(t *testing.T) {
		_, other, _ := fakePostmaster(t)
		m, pidFile, lock := setup(t, t.TempDir())
		write(pidFile, other.Process.Pid)
		write(lock, other.Process.Pid)
		if err := m.clearStaleLocks(); err != nil {
			t.Fatal(err)
		}
		present(t, false, pidFile)
		present(t, true, lock)
	})
}

// TestLeftoversAreCheckedAtStartup: what a manager killed half-way left
// beside the data directory is checked, not trusted, when the next starts.
func TestLeftoversAreCheckedAtStartup(t *testing.T) {
	h := newHarness(t)
	n := h.add("pg-0")
	h.stop(n)
	cfg := h.config(n)
	for path, content := range map[string]string{
		cfg.desiredFile():                                  `{"role": "primary", "epo`, // a write the disk lost half of
		filepath.Join(cfg.RunDir, "initdb-pw"):             "superuser-password\n",
		filepath.Join(n.dir, "holdfast-foreign-passwords"): "",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.start(n)
	h.waitFor(10*time.Second, "waiting for the operator", func() error {
		if r := h.report(n); !strings.Contains(r.Message, "waiting for the operator") || r.Error != "" {
			return fmt.Errorf("message %q, error %q", r.Message, r.Error)
		}
		return nil
	})
	if !exists(cfg.desiredFile() + ".unreadable") {
		t.Error("the unreadable desired state was not kept aside")
	}
	for _, f := range []string{"run/initdb-pw", "holdfast-foreign-passwords"} {
		if exists(filepath.Join(n.dir, f)) {
			t.Errorf("%s outlived the start-up", f)
		}
	}
}
