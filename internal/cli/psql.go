package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/streaming/pkg/httpstream"
	"sigs.k8s.io/controller-runtime/pkg/client"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/resources"
)

// exitProcess ends the command with psql's exit code; tests replace it.
var exitProcess = os.Exit

func newPsqlCmd() *cobra.Command {
	var (
		flags   clusterFlags
		replica bool
		dbname  string
	)
	cmd := &cobra.Command{
		Use:   "psql CLUSTER [--replica] [--dbname DB] [-- PSQL_ARGS...]",
		Short: "Run psql as the superuser inside the primary's pod (or a replica's)",
		Long: `psql runs psql in the postgres container of the cluster's primary (status.currentPrimary), or with
--replica of a ready replica, through the API server as kubectl exec does: no port is opened and
no password is shown. It connects as the postgres superuser over the pod's socket, with the
password file the instance manager keeps. The arguments after -- go to psql; the database is
--dbname (psql's own -d would take the place of the connection settings). On a terminal psql
gets one; the command exits with psql's exit code.`,
		Example: `  holdfast psql mydb
  holdfast psql mydb -- -c 'SELECT now()'
  holdfast psql mydb --replica -- -Atc 'SELECT pg_last_wal_replay_lsn()'
  holdfast psql mydb --dbname app < script.sql`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("psql needs the cluster's name")
			}
			if len(args) > 1 && cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("psql %v: give psql's arguments after --, as in holdfast psql %s -- -c 'SELECT 1'", args, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := flags.connectKube()
			if err != nil {
				return err
			}
			code, err := runPsql(cmd.Context(), k, args[0], replica, psqlCommand(dbname, args[1:]),
				cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if code != 0 {
				// psql said why on stderr; the code is for scripts.
				exitProcess(code)
			}
			return nil
		},
	}
	flags.addConnection(cmd)
	cmd.Flags().BoolVar(&replica, "replica", false, "connect to a ready replica instead of the primary")
	cmd.Flags().StringVar(&dbname, "dbname", "postgres", "the database to connect to")
	return cmd
}

// psqlCommand is the command run in the pod: psql connecting as the
// superuser over the socket, with the password file, then the user's
// arguments.
func psqlCommand(dbname string, args []string) []string {
	conn := postgres.ConnInfo(map[string]string{
		"host":     resources.RunMountPath,
		"port":     strconv.Itoa(postgres.Port),
		"user":     postgres.SuperUser,
		"dbname":   dbname,
		"passfile": resources.RunMountPath + "/pgpass",
	})
	return append([]string{"psql", conn}, args...)
}

// runPsql runs command in the postgres container of the pod psql picks,
// and gives its exit code: a non-zero exit is psql's answer, not an error
// of the command's.
func runPsql(ctx context.Context, k *kube, cluster string, replica bool, command []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	var pgc holdfastv1.PostgresCluster
	if err := k.client.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: cluster}, &pgc); err != nil {
		return 0, fmt.Errorf("reading cluster %s/%s: %w", k.namespace, cluster, err)
	}
	var pods corev1.PodList
	if err := k.client.List(ctx, &pods, client.InNamespace(k.namespace), client.MatchingLabels(resources.SelectorLabels(&pgc))); err != nil {
		return 0, fmt.Errorf("listing the pods of %s: %w", cluster, err)
	}
	pod, err := pickPod(&pgc, pods.Items, replica)
	if err != nil {
		return 0, err
	}

	// A terminal gets a terminal in the pod, so that psql edits lines and
	// pages; a pipe or a file gets plain streams, and stderr apart.
	in, isFile := stdin.(*os.File)
	tty := isFile && term.IsTerminal(int(in.Fd()))
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr, Tty: tty}
	if tty {
		fd := int(in.Fd())
		state, err := term.MakeRaw(fd)
		if err != nil {
			return 0, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer func() { _ = term.Restore(fd, state) }()
		sizes := newTerminalSizes(ctx, fd)
		defer sizes.stop()
		// A terminal merges the two streams, as it does locally.
		opts.Stderr = nil
		opts.TerminalSizeQueue = sizes
	}

	req := k.clientset.CoreV1().RESTClient().Post().Resource("pods").Namespace(k.namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: resources.ContainerPostgres,
			Command:   command,
			Stdin:     true,
			Stdout:    true,
			Stderr:    !tty,
			TTY:       tty,
		}, scheme.ParameterCodec)
	exec, err := podExecutor(k.config, req.URL())
	if err != nil {
		return 0, err
	}
	err = exec.StreamWithContext(ctx, opts)
	var exit utilexec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return exit.ExitStatus(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("running psql in %s: %w", pod, err)
	}
	return 0, nil
}

// podExecutor speaks the websocket protocol of current API servers, and
// falls back to SPDY for older ones, as kubectl exec does.
func podExecutor(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return nil, fmt.Errorf("preparing the exec: %w", err)
	}
	// RFC 6455: a websocket opens with GET.
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	if err != nil {
		return nil, fmt.Errorf("preparing the exec: %w", err)
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
}

// pickPod names the pod psql runs in: the primary (status.currentPrimary),
// or the first ready replica by name.
func pickPod(pgc *holdfastv1.PostgresCluster, pods []corev1.Pod, replica bool) (string, error) {
	if pgc.Status.Phase == holdfastv1.PhaseHibernated {
		return "", fmt.Errorf("%s is hibernated: no instance runs (holdfast hibernate %s off)", pgc.Name, pgc.Name)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return resources.Ordinal(a.Name) - resources.Ordinal(b.Name) })
	if !replica {
		primary := pgc.Status.CurrentPrimary
		if primary == "" {
			return "", fmt.Errorf("%s has no primary yet (phase %s)", pgc.Name, pgc.Status.Phase)
		}
		for i := range pods {
			if p := &pods[i]; p.Name == primary {
				if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
					return "", fmt.Errorf("the primary %s is not running (pod %s)", primary, p.Status.Phase)
				}
				return primary, nil
			}
		}
		return "", fmt.Errorf("the primary %s has no pod", primary)
	}
	for i := range pods {
		p := &pods[i]
		if p.Labels[resources.LabelRole] == string(holdfastv1.RoleReplica) && p.DeletionTimestamp == nil && podReady(p) {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("%s has no ready replica", pgc.Name)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// terminalSizes tells the pod's terminal the local one's size: first as
// it is, then each time the window changes.
type terminalSizes struct {
	fd      int
	changed chan os.Signal
	done    chan struct{}
	once    sync.Once
	sent    bool
}

func newTerminalSizes(ctx context.Context, fd int) *terminalSizes {
	t := &terminalSizes{fd: fd, changed: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(t.changed, syscall.SIGWINCH)
	go func() {
		select {
		case <-ctx.Done():
			t.stop()
		case <-t.done:
		}
	}()
	return t
}

func (t *terminalSizes) stop() {
	t.once.Do(func() {
		signal.Stop(t.changed)
		close(t.done)
	})
}

// Next blocks until the size changes; nil ends the queue.
func (t *terminalSizes) Next() *remotecommand.TerminalSize {
	if t.sent {
		select {
		case <-t.changed:
		case <-t.done:
			return nil
		}
	}
	t.sent = true
	w, h, err := term.GetSize(t.fd)
	if err != nil {
		return nil
	}
	return &remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)}
}
