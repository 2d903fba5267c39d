// Package proc holds process helpers the instance manager and the sandbox share.
package proc

import (
	"syscall"
	"time"
)

// WaitGone waits until no process has pid, for at most timeout, and says
// whether it is gone. It polls: a process that is not our child gives no
// other signal of its exit.
func WaitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
