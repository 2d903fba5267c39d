package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/testutil"
)

func TestSuperviseRestartsUntilTheLimit(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "starts")
	var cleaned atomic.Bool
	p, err := Supervise("flaky", "/bin/sh", []string{"-c", "echo x >> " + count + "; exit 3"}, nil,
		Restart{Delay: 10 * time.Millisecond, Limit: 3, Window: time.Minute, AfterStop: func() { cleaned.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("a process that always fails was restarted without end")
	}
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "exited 3 times") {
		t.Errorf("Err = %v, want the restart limit", err)
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n != 3 {
		t.Errorf("started %d times, want 3", n)
	}
	if !cleaned.Load() {
		t.Error("AfterStop did not run")
	}
}

func TestSuperviseStop(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "starts")
	var cleaned atomic.Bool
	// Exits once at once, then runs until stopped.
	script := "echo x >> " + count + "; [ $(wc -l < " + count + ") -ge 2 ] && exec sleep 60; exit 1"
	p, err := Supervise("once", "/bin/sh", []string{"-c", script}, nil,
		Restart{Delay: 10 * time.Millisecond, Limit: 5, Window: time.Minute, AfterStop: func() { cleaned.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Millisecond, 10*time.Second, "a second start after the first exit", func(context.Context) error {
		b, _ := os.ReadFile(count)
		if n := strings.Count(string(b), "x"); n != 2 {
			return fmt.Errorf("%d starts", n)
		}
		return nil
	})
	select {
	case <-p.Exited():
		t.Fatalf("Exited closed while the process runs: %v", p.Err())
	default:
	}
	start := time.Now()
	p.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}
	select {
	case <-p.Exited():
	default:
		t.Error("Exited not closed after Stop")
	}
	if !cleaned.Load() {
		t.Error("AfterStop did not run")
	}
}
