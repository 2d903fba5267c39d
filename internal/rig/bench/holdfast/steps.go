package holdfast

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"holdfast.dev/holdfast/internal/rig/bench"
)

// sliceWatch records when the -rw Service's EndpointSlice changed, and to
// what: the moment the Service names the new primary.
type sliceWatch struct {
	mu      sync.Mutex
	changes []sliceChange
	cancel  context.CancelFunc
}

type sliceChange struct {
	at    time.Time
	ready []string // addresses of ready endpoints
}

func (r *run) watchSlices(ctx context.Context) (*sliceWatch, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", r.sb.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading the sandbox's kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &sliceWatch{cancel: cancel}
	watcher, err := cs.DiscoveryV1().EndpointSlices(ns).Watch(wctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=pg-rw"})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching the -rw EndpointSlice: %w", err)
	}
	go func() {
		defer watcher.Stop()
		for ev := range watcher.ResultChan() {
			slice, ok := ev.Object.(*discoveryv1.EndpointSlice)
			if !ok {
				continue
			}
			c := sliceChange{at: time.Now()}
			for _, ep := range slice.Endpoints {
				if len(ep.Addresses) > 0 && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
					c.ready = append(c.ready, ep.Addresses[0])
				}
			}
			w.mu.Lock()
			w.changes = append(w.changes, c)
			w.mu.Unlock()
		}
	}()
	return w, nil
}

func (w *sliceWatch) stop() { w.cancel() }

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
