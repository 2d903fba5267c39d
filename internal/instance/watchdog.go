package instance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/proc"
)

// The watchdog fences a primary whose instance manager cannot: a manager
// that is frozen (SIGSTOP, a hung kernel call, a stuck runtime) renews no
// lease and stops no postgres, yet postgres, its child, goes on taking
// writes from the clients already connected. The watchdog is a second,
// tiny process that the manager arms with a deadline after each renewal
// of the primary lease; if no new deadline comes in time it stops postgres
// itself.
//
// Deadlines are read on CLOCK_MONOTONIC, which every process on the
// machine shares, so a late message cannot stretch one.

// watchdogGrace is how long after the renew deadline the watchdog acts.
// The manager fences itself at the renew deadline; the watchdog acts only
// when it did not. The API's validation keeps the lease duration at least
// two seconds longer than the renew deadline, so postgres is stopped a
// second before the operator may promote another instance.
const watchdogGrace = time.Second

// monotonicNow reads CLOCK_MONOTONIC.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("reading CLOCK_MONOTONIC: %v", err))
	}
	return time.Duration(ts.Nano())
}

// watchdogLink is the manager's end: a pipe to the watchdog process.
type watchdogLink struct {
	dataDir string
	log     logr.Logger

	mu      sync.Mutex
	primary bool // the desired role is primary: only then may it be armed
	pipe    io.WriteCloser
}

// start runs this binary's watchdog subcommand as a child.
func (w *watchdogLink) start() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary for the watchdog: %w", err)
	}
	cmd := exec.Command(self, "instance", "watchdog", "--data-dir", w.dataDir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	pipe, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("the watchdog's pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the watchdog: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	w.pipe = pipe
	return nil
}

// send writes one order, restarting the watchdog if it went away. The
// caller holds w.mu.
func (w *watchdogLink) send(order string) {
	for attempt := 0; attempt < 2; attempt++ {
		if w.pipe == nil {
			if err := w.start(); err != nil {
				w.log.Error(err, "the watchdog is not running")
				return
			}
		}
		if _, err := io.WriteString(w.pipe, order+"\n"); err == nil {
			return
		}
		_ = w.pipe.Close()
		w.pipe = nil
	}
}

// arm tells the watchdog to stop postgres at deadline (CLOCK_MONOTONIC)
// unless armed again before. It does nothing unless the desired role is
// primary: a renewal that raced with an order to step down must not arm
// it over the replica postgres is about to become.
func (w *watchdogLink) arm(deadline time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.primary {
		w.send("arm " + strconv.FormatInt(int64(deadline), 10))
	}
}

// follow records the desired role; any other than primary disarms it.
func (w *watchdogLink) follow(role postgres.Role) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.primary = role == postgres.Primary
	if !w.primary && w.pipe != nil {
		w.send("disarm")
	}
}

// RunWatchdog reads orders from orders until it ends (the manager is
// gone, and the container with it) and stops the postmaster of dataDir
// when a deadline passes unrenewed.
func RunWatchdog(ctx context.Context, orders io.Reader, dataDir string, log logr.Logger) error {
	deadlines := make(chan time.Duration)
	done := make(chan error, 1)
	go func() {
		s := bufio.NewScanner(orders)
		for s.Scan() {
			verb, arg, _ := strings.Cut(s.Text(), " ")
			switch verb {
			case "arm":
				n, err := strconv.ParseInt(arg, 10, 64)
				if err != nil {
					log.Info("ignoring a malformed order", "order", s.Text())
					continue
				}
				deadlines <- time.Duration(n)
			case "disarm":
				deadlines <- 0
			}
		}
		done <- s.Err()
	}()
	var deadline time.Duration // 0: disarmed
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if deadline != 0 {
			timer.Reset(max(deadline-monotonicNow(), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			return err
		case deadline = <-deadlines:
			timer.Stop()
		case <-timer.C:
			if deadline == 0 || monotonicNow() < deadline {
				continue
			}
			deadline = 0
			log.Info("fencing: the instance manager has not renewed the primary lease in time; stopping postgres")
			if err := stopPostmaster(dataDir); err != nil {
				log.Error(err, "fencing")
			}
		}
	}
}

// stopPostmaster stops the postmaster of dataDir at once: SIGQUIT makes
// it and every backend quit without completing anything (no commit is
// acknowledged after it), and SIGKILL follows if it lingers.
func stopPostmaster(dataDir string) error {
	pid, err := runningPostmaster(dataDir)
	if err != nil || pid == 0 {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		return fmt.Errorf("SIGQUIT to postmaster %d: %w", pid, err)
	}
	if !proc.WaitGone(pid, 2*time.Second) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}
