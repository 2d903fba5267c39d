package proc

import (
	"os/exec"
	"testing"
	"time"
)

func TestWaitGone(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	if WaitGone(sleeper.Process.Pid, 200*time.Millisecond) {
		t.Fatal("a running process counted as gone")
	}

	// An exited child that nobody reaps is a zombie: gone all the same.
	quick := exec.Command("true")
	if err := quick.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = quick.Wait() })
	if !WaitGone(quick.Process.Pid, 5*time.Second) {
		t.Fatal("an exited, unreaped child did not count as gone")
	}
}
