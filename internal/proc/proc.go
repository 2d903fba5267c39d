// Package proc holds process helpers the instance manager and the sandbox share.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"time"
)

// WaitGone waits until no process has pid, for at most timeout, and says
// whether it is gone. It polls: a process that is not our child gives no
// other signal of its exit. A zombie counts as gone: it has exited, and
// its parent, which alone can reap it, may be unable to (frozen, say).
func WaitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if syscall.Kill(pid, 0) != nil || zombie(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// zombie: pid has exited and awaits its parent's wait.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
