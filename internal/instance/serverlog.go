package instance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// serverLog passes postgres's output on to this process's stderr (the pod
// log) and keeps its last FATAL or PANIC line: when postgres exits during
// start-up, that line says why, and the operator shows it in the cluster's
// status, so that nobody needs the pod log to learn it.
type serverLog struct {
	done chan struct{} // closed once every writer has closed the pipe

	mu    sync.Mutex
	fatal string
}

// attach points cmd's output at a pipe the log reads. The pipe is ours
// rather than exec's, whose Wait would also wait for every process that
// inherited it: backends may outlive a killed postmaster a while, and the
// manager must learn of the postmaster's exit at once.
func (l *serverLog) attach(cmd *exec.Cmd) (writeEnd *os.File, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("making a pipe for postgres's output: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	l.done = make(chan struct{})
	go l.copy(r, os.Stderr)
	return w, nil
}

func (l *serverLog) copy(r io.ReadCloser, to io.Writer) {
	defer close(l.done)
	defer r.Close()
	br := bufio.NewReader(r)
	lineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			_, _ = to.Write(chunk)
			if lineStart {
				l.note(string(chunk))
			}
			lineStart = chunk[len(chunk)-1] == '\n'
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// note keeps line if it reports a FATAL or PANIC error, without the
// prefix (log_line_prefix: time, PID) that would differ on every attempt.
func (l *serverLog) note(line string) {
	for _, level := range []string{"PANIC:", "FATAL:"} {
		if i := strings.Index(line, level); i >= 0 {
			l.mu.Lock()
			l.fatal = strings.Join(strings.Fields(line[i:]), " ")
			l.mu.Unlock()
			return
		}
	}
}

// lastFatal is the last FATAL or PANIC line postgres wrote, or "".
func (l *serverLog) lastFatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

// drain waits, at most timeout, for the output postgres wrote before it
// exited to be read. Children that outlive it keep the pipe open; their
// output goes on being copied, but is not waited for.
func (l *serverLog) drain(timeout time.Duration) {
	select {
	case <-l.done:
	case <-time.After(timeout):
	}
}
