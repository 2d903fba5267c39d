// Package controlplane runs the processes of a Kubernetes control plane
// from the pinned binaries (hack/build-k8s.sh): started, supervised and
// stopped with the process that owns them. It stays free of envtest, which
// the holdfast binary must not carry (its init writes to /tmp).
package controlplane

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ComponentFlags connect kube-controller-manager or kube-scheduler to the
// API server with kubeconfig, alone (no leader election) and without a
// serving port of its own.
func ComponentFlags(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	}
}

// Process is one control-plane process started from the pinned binaries.
type Process struct {
	Name   string
	exited chan struct{} // closed once the process has exited for good, with err set
	err    error

	mu      sync.Mutex
	cmd     *exec.Cmd     // the current run
	stopped chan struct{} // closed by Stop, so that a supervised process is not started again
	stop    sync.Once
}

// StartProcess starts bin with args, its output to out. The process dies
// with this one's thread (PR_SET_PDEATHSIG), so a crashed parent leaves no
// control plane behind.
func StartProcess(name, bin string, args []string, out io.Writer) (*Process, error) {
	p, err := newProcess(name, bin, args, out)
	if err != nil {
		return nil, err
	}
	cmd := p.cmd
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// newProcess starts the first run of a Process.
func newProcess(name, bin string, args []string, out io.Writer) (*Process, error) {
	if out == nil {
		out = io.Discard
	}
	cmd, err := startCmd(name, bin, args, out)
	if err != nil {
		return nil, err
	}
	return &Process{Name: name, cmd: cmd, exited: make(chan struct{}), stopped: make(chan struct{})}, nil
}

func startCmd(name, bin string, args []string, out io.Writer) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return cmd, nil
}

// Restart says how Supervise restarts a process that exits.
type Restart struct {
	// Delay is the pause between an exit and the next start.
	Delay time.Duration
	// Limit is how many starts Window may hold: a process that exits
	// again after Limit starts within Window stays down, and Exited closes.
	Limit  int
	Window time.Duration
	// AfterStop, if set, runs once the process is down for good (after
	// Stop, or past the limit), before Exited closes.
	AfterStop func()
}

// Supervise starts bin like StartProcess and starts it again whenever it
// exits, as the kubelet restarts a DaemonSet's pod, until Stop or until it
// exits too often (r.Limit). Exited closes only then.
func Supervise(name, bin string, args []string, out io.Writer, r Restart) (*Process, error) {
	if out == nil {
		out = io.Discard
	}
	p, err := newProcess(name, bin, args, out)
	if err != nil {
		return nil, err
	}
	cmd := p.cmd
	go func() {
		defer close(p.exited)
		if r.AfterStop != nil {
			defer r.AfterStop()
		}
		starts := []time.Time{time.Now()}
		for {
			err := cmd.Wait()
			select {
			case <-p.stopped:
				p.err = err
				return
			default:
			}
			for len(starts) > 0 && time.Since(starts[0]) > r.Window {
				starts = starts[1:]
			}
			if len(starts) >= r.Limit {
				p.err = fmt.Errorf("exited %d times within %s, last: %v", len(starts), r.Window, err)
				return
			}
			fmt.Fprintf(out, "holdfast: %s exited (%v); starting it again in %s\n", name, err, r.Delay)
			select {
			case <-p.stopped:
				p.err = err
				return
			case <-time.After(r.Delay):
			}
			p.mu.Lock()
			select {
			case <-p.stopped:
				p.mu.Unlock()
				p.err = err
				return
			default:
			}
			next, startErr := startCmd(name, bin, args, out)
			if startErr != nil {
				p.mu.Unlock()
				p.err = startErr
				return
			}
			p.cmd, cmd = next, next
			p.mu.Unlock()
			starts = append(starts, time.Now())
		}
	}()
	return p, nil
}

// Exited is closed when the process has exited (for a supervised process:
// for good).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the exit status, once Exited is closed.
func (p *Process) Err() error { return p.err }

// Stop asks the process to stop and kills it if it takes over 10 seconds.
func (p *Process) Stop() {
	p.mu.Lock()
	p.stop.Do(func() { close(p.stopped) })
	cmd := p.cmd
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-p.exited
	}
}

// WaitAny blocks until ctx ends (nil) or one of ps exits (an error naming it).
func WaitAny(ctx context.Context, ps []*Process) error {
	exited := make(chan *Process, len(ps))
	for _, p := range ps {
		go func() {
			select {
			case <-p.exited:
				exited <- p
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case p := <-exited:
		return fmt.Errorf("%s exited: %w", p.Name, p.err)
	}
}
