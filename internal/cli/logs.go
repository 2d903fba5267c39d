package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"holdfast.dev/holdfast/internal/resources"
)

// logsOptions are logs's flags.
type logsOptions struct {
	follow, pretty bool
	since          time.Duration
	tail           int64
}

func newLogsCmd() *cobra.Command {
	var (
		flags clusterFlags
		opts  logsOptions
	)
	cmd := &cobra.Command{
		Use:   "logs CLUSTER",
		Short: "Print the logs of every instance of a cluster, each line prefixed with its pod",
		Long: `logs prints the postgres container's log of each instance pod of the cluster (the instance
manager's JSON lines and postgres's own), each line prefixed with the pod's name: one pod after
the other, or with --follow all at once as they come, until interrupted. While following, pods
that appear later (a replica added, a pod replaced, a cluster woken) and containers that restart
are followed too.

--pretty renders the instance manager's JSON lines as TIME LEVEL [logger] message key=value...
and leaves other lines as they are.`,
		Example: `  holdfast logs mydb --tail 50
  holdfast logs mydb --follow --pretty
  holdfast logs mydb --since 10m | grep -i error`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := flags.connectKube()
			if err != nil {
				return err
			}
			// Interrupting --follow is how it ends: an exit like any other.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := &prefixWriter{w: cmd.OutOrStdout(), pretty: opts.pretty}
			return streamLogs(ctx, k.clientset, k.namespace, args[0], opts, out, cmd.ErrOrStderr())
		},
	}
	flags.addConnection(cmd)
	cmd.Flags().BoolVarP(&opts.follow, "follow", "f", false, "keep printing new lines, from every pod, until interrupted")
	cmd.Flags().BoolVar(&opts.pretty, "pretty", false, "render JSON log lines for reading")
	cmd.Flags().DurationVar(&opts.since, "since", 0, "only lines newer than this (5s, 2m, 3h)")
	cmd.Flags().Int64Var(&opts.tail, "tail", -1, "only the last N lines of each pod (-1: all)")
	return cmd
}

// followPoll is how often logs --follow looks for new pods and restarted
// containers.
var followPoll = 2 * time.Second

// streamLogs prints the postgres container's log of each pod of cluster.
func streamLogs(ctx context.Context, cs kubernetes.Interface, namespace, cluster string, opts logsOptions, out *prefixWriter, warn io.Writer) error {
	selector := labels.SelectorFromSet(map[string]string{resources.LabelCluster: cluster}).String()
	list := func() ([]corev1.Pod, error) {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, fmt.Errorf("listing the pods of %s: %w", cluster, err)
		}
		slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return resources.Ordinal(a.Name) - resources.Ordinal(b.Name) })
		return pods.Items, nil
	}
	pods, err := list()
	if err != nil {
		return err
	}
	first := podLogOptions(opts)
	if !opts.follow {
		if len(pods) == 0 {
			return fmt.Errorf("%s/%s has no pods (no such cluster, or hibernated?)", namespace, cluster)
		}
		var failed []error
		for _, p := range pods {
			if err := copyPodLog(ctx, cs, namespace, p.Name, first, out); err != nil {
				fmt.Fprintf(warn, "%s: %v\n", p.Name, err)
				failed = append(failed, err)
			}
		}
		if len(failed) == len(pods) {
			return fmt.Errorf("no pod's log could be read: %w", errors.Join(failed...))
		}
		return nil
	}

	// Following: one stream per run of a container, all at once. A run is
	// the pod's UID and the container's restart count: a pod replaced, or
	// a container restarted, is a new run whose log starts afresh.
	var wg sync.WaitGroup
	defer wg.Wait()
	started := map[string]bool{}
	// --tail and --since are about what was there when logs started: the
	// first run streamed of each pod there then. A later run is printed
	// whole.
	limited := map[string]bool{}
	for _, p := range pods {
		limited[string(p.UID)] = true
	}
	for {
		for _, p := range pods {
			run, ok := containerRun(&p, resources.ContainerPostgres)
			if !ok || started[run] {
				continue
			}
			o := &corev1.PodLogOptions{Container: resources.ContainerPostgres, Follow: true}
			if limited[string(p.UID)] {
				o = first
				delete(limited, string(p.UID))
			}
			started[run] = true
			wg.Add(1)
			go func(name string) {
				defer wg.Done()
				if err := copyPodLog(ctx, cs, namespace, name, o, out); err != nil && ctx.Err() == nil {
					fmt.Fprintf(warn, "%s: %v\n", name, err)
				}
			}(p.Name)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		if pods, err = list(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintln(warn, err)
		}
	}
}

// containerRun names the current run of a pod's container, false while
// it has not started (its log cannot be read yet).
func containerRun(p *corev1.Pod, container string) (string, bool) {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container && (s.State.Running != nil || s.State.Terminated != nil) {
			return string(p.UID) + "/" + strconv.Itoa(int(s.RestartCount)), true
		}
	}
	return "", false
}

func podLogOptions(opts logsOptions) *corev1.PodLogOptions {
	o := &corev1.PodLogOptions{Container: resources.ContainerPostgres, Follow: opts.follow}
	if opts.tail >= 0 {
		o.TailLines = &opts.tail
	}
	if opts.since > 0 {
		s := int64(opts.since.Round(time.Second) / time.Second)
		o.SinceSeconds = &s
	}
	return o
}

// copyPodLog copies a container's log to out, line by line.
func copyPodLog(ctx context.Context, cs kubernetes.Interface, namespace, pod string, o *corev1.PodLogOptions, out *prefixWriter) error {
	r, err := cs.CoreV1().Pods(namespace).GetLogs(pod, o).Stream(ctx)
	if err != nil {
		return fmt.Errorf("reading the log of %s: %w", o.Container, err)
	}
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			out.line(pod, strings.TrimSuffix(line, "\n"))
		}
		if errors.Is(err, io.EOF) || err != nil && ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the log of %s: %w", o.Container, err)
		}
	}
}

// prefixWriter writes whole lines, each after its pod's name, from any
// number of goroutines.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	pretty bool
}

func (p *prefixWriter) line(pod, line string) {
	if p.pretty {
		line = prettyLogLine(line)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A rendered line may span several (a stack trace): each is prefixed,
	// so that grep on the pod's name finds them all.
	for l := range strings.SplitSeq(line, "\n") {
		fmt.Fprintf(p.w, "[%s] %s\n", pod, l)
	}
}

// logField is one key of a JSON log line, in its order there.
type logField struct {
	key   string
	value json.RawMessage
}

// prettyLogLine renders a JSON line of the instance manager's (zap's:
// level, ts, logger, msg, then fields) as TIME LEVEL [logger] msg
// key=value..., a stack trace on lines of its own. Any other line (one of
// postgres's own) comes back as it is.
func prettyLogLine(line string) string {
	fields, ok := parseLogJSON(line)
	if !ok {
		return line
	}
	var ts, level, logger, msg, stack string
	var rest []logField
	hasMsg := false
	for _, f := range fields {
		switch f.key {
		case "ts":
			ts = logTime(f.value)
		case "level":
			level = strings.ToUpper(jsonText(f.value))
		case "logger":
			logger = jsonText(f.value)
		case "msg":
			msg, hasMsg = jsonText(f.value), true
		case "stacktrace":
			stack = jsonText(f.value)
		default:
			rest = append(rest, f)
		}
	}
	if !hasMsg {
		return line
	}
	var b strings.Builder
	if ts != "" {
		b.WriteString(ts + " ")
	}
	if level != "" {
		fmt.Fprintf(&b, "%-5s ", level)
	}
	if logger != "" {
		b.WriteString("[" + logger + "] ")
	}
	b.WriteString(msg)
	for _, f := range rest {
		b.WriteString(" " + f.key + "=" + logValue(f.value))
	}
	if stack != "" {
		b.WriteString("\n\t" + strings.ReplaceAll(stack, "\n", "\n\t"))
	}
	return b.String()
}

// parseLogJSON reads a line that is one JSON object, keeping its keys' order.
func parseLogJSON(line string) ([]logField, bool) {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "{") {
		return nil, false
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var fields []logField
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, ok := tok.(string)
		if !ok {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		fields = append(fields, logField{key, v})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false // more after the object: not one JSON line
	}
	return fields, true
}

// logTime renders zap's ts, an ISO 8601 string (NewLogger's) or seconds
// since the epoch (zap's default), to the millisecond.
func logTime(v json.RawMessage) string {
	const out = "2006-01-02T15:04:05.000Z07:00"
	var s string
	if json.Unmarshal(v, &s) == nil {
		for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", time.RFC3339Nano} {
			if t, err := time.Parse(layout, s); err == nil {
				return t.Format(out)
			}
		}
		return s
	}
	var f float64
	if json.Unmarshal(v, &f) == nil {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC().Format(out)
	}
	return string(v)
}

// jsonText is a string value unquoted, any other value as JSON.
func jsonText(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// logValue is a field's value as key=value shows it: a string bare when
// that reads back unambiguously, else quoted; anything else as compact
// JSON.
func logValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		if s == "" || strings.ContainsAny(s, " \t\n\"=\\") {
			return strconv.Quote(s)
		}
		return s
	}
	var b bytes.Buffer
	if json.Compact(&b, v) == nil {
		return b.String()
	}
	return string(v)
}
