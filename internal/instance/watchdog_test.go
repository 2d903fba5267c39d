package instance

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// fakePostmaster runs sleep under the name postgres, in a fresh data
// directory whose postmaster.pid names it.
func fakePostmaster(t *testing.T) (dataDir string, cmd *exec.Cmd, exited chan struct{}) {
	t.Helper()
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(dir, "postgres")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "60")
	cmd.Dir = dir // as a postmaster works in its data directory
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cmd, exited
}

func startWatchdog(t *testing.T, dataDir string) io.Writer {
	t.Helper()
	r, w := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWatchdog(ctx, r, dataDir, logr.Discard()) }()
	t.Cleanup(func() { cancel(); _ = w.Close(); <-done })
	return w
}

func arm(t *testing.T, w io.Writer, in time.Duration) {
	t.Helper()
	if _, err := fmt.Fprintf(w, "arm %d\n", int64(monotonicNow()+in)); err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogStopsPostgresWhenNotRearmed(t *testing.T) {
	dataDir, _, exited := fakePostmaster(t)
	w := startWatchdog(t, dataDir)

	// Re-armed in time, it leaves postgres alone.
	for range 8 {
		arm(t, w, 300*time.Millisecond)
		select {
		case <-exited:
			t.Fatal("postgres stopped although the watchdog was re-armed in time")
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Left alone, it stops postgres at the deadline.
	armed := time.Now()
	select {
	case <-exited:
		if waited := time.Since(armed); waited < 150*time.Millisecond {
			t.Errorf("postgres stopped %s after the last arming, before its deadline", waited)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("postgres still runs 5 s after the watchdog's deadline")
	}
}

func TestWatchdogDisarmed(t *testing.T) {
	dataDir, _, exited := fakePostmaster(t)
	w := startWatchdog(t, dataDir)
	arm(t, w, 200*time.Millisecond)
	if _, err := io.WriteString(w, "disarm\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatal("a disarmed watchdog stopped postgres")
	case <-time.After(time.Second):
	}
}

func TestWatchdogLeavesAStrangerAlone(t *testing.T) {
	// postmaster.pid outlives postgres; its number may be reused.
	stranger := exec.Command("sleep", "60")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = stranger.Wait(); close(exited) }()
	t.Cleanup(func() { _ = stranger.Process.Kill(); <-exited })
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte(strconv.Itoa(stranger.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := startWatchdog(t, dataDir)
	arm(t, w, 0)
	select {
	case <-exited:
		t.Fatal("the watchdog killed a process that is not postgres")
	case <-time.After(time.Second):
	}
}
