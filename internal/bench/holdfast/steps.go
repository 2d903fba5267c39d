package holdfast

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"holdfast.dev/holdfast/internal/bench"
)

// sliceWatch records when the -rw Service's EndpointSlice changed, and to
// what: the moment the Service names the new primary.
type sliceWatch struct {
	mu      sync.Mutex
	changes []sliceChange
	cmd     *exec.Cmd
}

type sliceChange struct {
	at    time.Time
	ready []string // addresses of ready endpoints
}

func (r *run) watchSlices(ctx context.Context) (*sliceWatch, error) {
	w := &sliceWatch{}
	w.cmd = exec.CommandContext(ctx, filepath.Join(r.o.BinDir, "kubectl"), "--kubeconfig", r.sb.Kubeconfig, "-n", ns, "get", "endpointslices",
		"-l", "kubernetes.io/service-name=pg-rw", "-w", "-o", `jsonpath={range .endpoints[*]}{.addresses[0]}={.conditions.ready} {end}{"\n"}`)
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("watching the -rw EndpointSlice: %w", err)
	}
	go func() {
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			c := sliceChange{at: time.Now()}
			for _, f := range strings.Fields(lines.Text()) {
				if addr, ready, _ := strings.Cut(f, "="); ready == "true" {
					c.ready = append(c.ready, addr)
				}
			}
			w.mu.Lock()
			w.changes = append(w.changes, c)
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *sliceWatch) stop() {
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
}

// firstNaming is when, after t, the slice first named ip as ready.
func (w *sliceWatch) firstNaming(ip string, t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.at.After(t) && slices.Contains(c.ready, ip) {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// switchoverSteps breaks the time from asking for a switchover (at) to the
// first write the new primary acknowledged (acked) down, from the
// operation's record, the instances' logs and the EndpointSlice watch.
func (r *run) switchoverSteps(ctx context.Context, rw *sliceWatch, at, acked time.Time) []bench.Step {
	out, err := r.kubectl(ctx, "-n", ns, "get", "pgc", "pg", "-o", `jsonpath={.status.history[-1:].kind}|{.status.history[-1:].from}|{.status.history[-1:].to}|{.status.history[-1:].startedAt}|{.status.history[-1:].finishedAt}`)
	f := strings.Split(out, "|")
	if err != nil || len(f) != 5 || f[0] != "Switchover" {
		return nil
	}
	from, to := f[1], f[2]
	started, _ := time.Parse(time.RFC3339Nano, f[3])
	finished, _ := time.Parse(time.RFC3339Nano, f[4])
	ip, _ := r.kubectl(ctx, "-n", ns, "get", "pod", to, "-o", "jsonpath={.status.podIP}")
	named, _ := rw.firstNaming(ip, finished.Add(-time.Second))
	marks := []struct {
		name string
		at   time.Time
	}{
		{"asked", at},
		{"operator starts", started},
		{"old primary checkpointed and stopped", r.logged(ctx, from, "demoted: postgres stopped", at)},
		{"new primary told to promote", r.logged(ctx, to, "promoting", at)},
		{"operator sees it primary", finished},
		{"-rw EndpointSlice names it", named},
		{"first write acknowledged (kube-proxy, client)", acked},
	}
	var steps []bench.Step
	prev := marks[0]
	for _, m := range marks[1:] {
		if m.at.IsZero() || m.at.Before(prev.at) {
			continue
		}
		steps = append(steps, bench.Step{Name: m.name, Took: m.at.Sub(prev.at)})
		prev = m
	}
	return steps
}

// logged is when pod's instance manager last logged msg after t; zero when it did not.
func (r *run) logged(ctx context.Context, pod, msg string, t time.Time) time.Time {
	out, err := r.kubectl(ctx, "-n", ns, "logs", pod, "-c", "postgres")
	if err != nil {
		return time.Time{}
	}
	var when time.Time
	for line := range strings.SplitSeq(out, "\n") {
		var rec struct {
			TS  string `json:"ts"`
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != msg {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, rec.TS); err == nil && ts.After(t) {
			when = ts
		}
	}
	return when
}
