package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"holdfast.dev/holdfast/internal/resources"
)

func TestPrettyLogLine(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{{
		name: "an instance manager's line",
		in:   `{"level":"info","ts":"2026-12-05T09:16:19.123Z","logger":"instance","msg":"promoted","timeline":3,"lsn":"0/5000138","took":"1.2s"}`,
		want: `2026-12-05T09:16:19.123Z INFO  [instance] promoted timeline=3 lsn=0/5000138 took=1.2s`,
	}, {
		name: "the fields in their order; strings with spaces quoted, objects as JSON",
		in:   `{"level":"error","ts":"2026-12-05T09:16:19.123+0100","msg":"query failed","error":"connection refused: no such file","zeta":{"a":1, "b":[true]},"alpha":""}`,
		want: `2026-12-05T09:16:19.123+01:00 ERROR query failed error="connection refused: no such file" zeta={"a":1,"b":[true]} alpha=""`,
	}, {
		name: "zap's default epoch time",
		in:   `{"level":"debug","ts":1796461779.5,"msg":"tick"}`,
		want: `2026-12-05T09:09:39.500Z DEBUG tick`,
	}, {
		name: "a stack trace on lines of its own",
		in:   `{"level":"error","msg":"boom","stacktrace":"main.f\n\t/src/f.go:1"}`,
		want: "ERROR boom\n\tmain.f\n\t\t/src/f.go:1",
	}, {
		name: "postgres's own line",
		in:   `2026-12-05 09:16:19.123 UTC [42] LOG:  database system is ready to accept connections`,
		want: `2026-12-05 09:16:19.123 UTC [42] LOG:  database system is ready to accept connections`,
	}, {
		name: "JSON that is not a log record",
		in:   `{"checkpoint": "done"}`,
		want: `{"checkpoint": "done"}`,
	}, {
		name: "a line that only starts like JSON",
		in:   `{"level":"info","msg":"cut short`,
		want: `{"level":"info","msg":"cut short`,
	}, {
		name: "two objects on one line",
		in:   `{"level":"info","msg":"a"}{"level":"info","msg":"b"}`,
		want: `{"level":"info","msg":"a"}{"level":"info","msg":"b"}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := prettyLogLine(tc.in); got != tc.want {
				t.Errorf("prettyLogLine:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPrefixWriterPrefixesEveryLine(t *testing.T) {
	var b bytes.Buffer
	w := &prefixWriter{w: &b, pretty: true}
	w.line("verbs-0", `{"level":"error","msg":"boom","stacktrace":"main.f"}`)
	w.line("verbs-1", "plain")
	if want := "[verbs-0] ERROR boom\n[verbs-0] \tmain.f\n[verbs-1] plain\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

// logPod is an instance pod whose postgres container runs.
func logPod(name string, uid types.UID, restarts int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "db", UID: uid, Labels: map[string]string{resources.LabelCluster: "verbs"}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: resources.ContainerPostgres, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	}
}

// logRequests records the log requests of a fake clientset, and answers
// each with a line that says its options.
type logRequests struct {
	mu   sync.Mutex
	opts []corev1.PodLogOptions
}

func (l *logRequests) react(a k8stesting.Action) (bool, runtime.Object, error) {
	if a.GetSubresource() != "log" {
		return false, nil, nil
	}
	o := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
	l.mu.Lock()
	l.opts = append(l.opts, *o)
	l.mu.Unlock()
	line := "all"
	if o.TailLines != nil {
		line = "tail"
	}
	return true, &runtime.Unknown{Raw: []byte(`{"level":"info","msg":"` + line + `"}` + "\nlast line without a newline")}, nil
}

func TestLogsPrefixesEachPodsLines(t *testing.T) {
	other := logPod("other-0", "c", 0)
	other.Labels[resources.LabelCluster] = "other"
	cs := k8sfake.NewClientset(logPod("verbs-1", "b", 0), logPod("verbs-0", "a", 0), other)
	var reqs logRequests
	cs.PrependReactor("get", "pods", reqs.react)
	var out, warn bytes.Buffer
	err := streamLogs(t.Context(), cs, "db", "verbs", logsOptions{tail: 20, since: 90 * time.Second}, &prefixWriter{w: &out}, &warn)
	if err != nil {
		t.Fatal(err)
	}
	want := `[verbs-0] {"level":"info","msg":"tail"}
[verbs-0] last line without a newline
[verbs-1] {"level":"info","msg":"tail"}
[verbs-1] last line without a newline
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	for _, o := range reqs.opts {
		if o.Container != resources.ContainerPostgres || *o.TailLines != 20 || *o.SinceSeconds != 90 || o.Follow {
			t.Errorf("log options %+v", o)
		}
	}
	if err := streamLogs(t.Context(), cs, "db", "nosuch", logsOptions{tail: -1}, &prefixWriter{w: &out}, &warn); err == nil {
		t.Error("logs of a cluster with no pods: no error")
	}
}

func TestLogsFollowPicksUpNewPodsAndRestarts(t *testing.T) {
	defer func(p time.Duration) { followPoll = p }(followPoll)
	followPoll = 5 * time.Millisecond
	cs := k8sfake.NewClientset(logPod("verbs-0", "a", 0))
	var reqs logRequests
	cs.PrependReactor("get", "pods", reqs.react)
	var out syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- streamLogs(ctx, cs, "db", "verbs", logsOptions{follow: true, tail: 5}, &prefixWriter{w: &out}, &out)
	}()
	waitFor(t, func() bool { return strings.Count(out.String(), "[verbs-0]") == 2 })
	// A new pod, and verbs-0's container restarted.
	if _, err := cs.CoreV1().Pods("db").Create(ctx, logPod("verbs-1", "b", 0), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("db").Update(ctx, logPod("verbs-0", "a", 1), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return strings.Count(out.String(), "[verbs-1]") == 2 && strings.Count(out.String(), "[verbs-0]") == 4
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("interrupted: %v", err)
	}
	// Each run once: --tail for what was there at the start, the new
	// ones whole.
	var got []string
	for _, o := range reqs.opts {
		if !o.Follow {
			t.Errorf("not following: %+v", o)
		}
		got = append(got, map[bool]string{true: "tail", false: "all"}[o.TailLines != nil])
	}
	if strings.Join(got, " ") != "tail all all" {
		t.Errorf("log requests %v, want the first with --tail and the later two whole", got)
	}
	if strings.Count(out.String(), `"msg":"tail"`) != 1 {
		t.Errorf("output:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
