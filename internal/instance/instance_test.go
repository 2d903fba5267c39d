package instance

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/pki"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

const pgBinDir = testutil.PostgresBinDir

// node is one instance manager with its postgres, as a pod would hold it.
type node struct {
	name string
	port int
	dir  string
	mgr  *Manager
	// statusAddr and apiAddr are where the manager serves its probes and
	// its API; srv, while it runs.
	statusAddr, apiAddr, metricsAddr string
	srv                              *Servers
	cancel                           context.CancelFunc
	done                             chan error
}

type harness struct {
	t       *testing.T
	base    string
	secrets string
	runAs   *syscall.Credential
	nodes   []*node
	epoch   int64
	// incarnation is the cluster UID the instances started next belong to.
	incarnation string
	// params are the settings primary and replica orders carry.
	params map[string]string
	// ca issued the certificates mounted for every instance, as the
	// operator does; caFile holds its certificate for clients.
	ca     *pki.CA
	caFile string
	// operator calls the instance APIs as the operator does.
	operator *http.Client
}

func newHarness(t *testing.T) *harness {
	if testing.Short() {
		t.Skip("starts real postgres servers")
	}
	h := &harness{t: t}
	h.runAs, h.base = testutil.PostgresHost(t)
	h.secrets = filepath.Join(h.base, "secrets")
	for role, user := range map[string]string{"superuser": "postgres", "replication": "streaming_replica", "app": "app"} {
		dir := filepath.Join(h.secrets, role)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "username"), []byte(user), 0o600)
		os.WriteFile(filepath.Join(dir, "password"), []byte(role+"-pw-"+strconv.Itoa(os.Getpid())), 0o600)
	}
	h.mountCertificates()
	h.operator = h.apiClient(api.OperatorClientName)
	// Many servers run side by side: each takes few connections' memory.
	h.params = map[string]string{"max_connections": "50"}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	return h
}

func (h *harness) add(name string) *node {
	n := h.newNode(name)
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		h.t.Fatal(err)
	}
	testutil.Own(h.t, n.dir, 0o700, h.runAs)
	h.nodes = append(h.nodes, n)
	h.start(n)
	h.t.Cleanup(func() { h.stop(n) })
	return n
}

// config is n's instance manager's configuration, as a pod's flags give it.
func (h *harness) config(n *node) Config {
	return Config{
		Name: n.name, DataDir: filepath.Join(n.dir, "pgdata"), RunDir: filepath.Join(n.dir, "run"),
		PGBinDir: pgBinDir, Port: n.port, SecretsDir: h.secrets, StatusAddr: n.statusAddr, APIAddr: n.apiAddr, MetricsAddr: "127.0.0.1:0",
		Database: "app", Owner: "app",
		RepositoryDir: filepath.Join(h.base, "repository"), RestoreRepositoryDir: filepath.Join(h.base, "repository"),
		StopTimeout: 30 * time.Second, RunAs: h.runAs, Incarnation: h.incarnation,
	}
}

func (h *harness) start(n *node) {
	n.mgr = NewManager(h.config(n), ctrl.Log.WithName(n.name))
	srv, err := n.mgr.Listen()
	if err != nil {
		h.t.Fatal(err)
	}
	n.srv = srv
	n.statusAddr, n.apiAddr, n.metricsAddr = srv.Probes.String(), srv.API.String(), srv.Metrics.String()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- n.mgr.Run(ctx) }()
}

// stop is what SIGTERM does to `holdfast instance run`: cancel the manager's context.
func (h *harness) stop(n *node) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		h.t.Errorf("%s: manager: %v", n.name, err)
	}
	n.srv.Close()
	n.cancel = nil
	// A node started again listens at the same address: a kept-alive
	// connection to the old server would fail the next PUT with EOF
	// (Go retries only idempotent methods without a body on it).
	h.operator.CloseIdleConnections()
}

// put sends d to n's API with the operator's certificate.
func (h *harness) put(n *node, d Desired) (int, string) {
	return h.putAs(h.operator, n, d)
}

func (h *harness) putAs(c *http.Client, n *node, d Desired) (int, string) {
	body, _ := json.Marshal(d)
	req, _ := http.NewRequest(http.MethodPut, n.apiURL()+DesiredPath, bytes.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, resp.Status)
	return resp.StatusCode, b.String()
}

func (h *harness) want(n *node, d Desired) {
	h.t.Helper()
	if code, status := h.put(n, d); code != http.StatusAccepted {
		h.t.Fatalf("PUT desired %+v to %s: %s", d, n.name, status)
	}
}

func (h *harness) primary(n *node, replicas ...*node) Desired {
	d := Desired{Role: postgres.Primary, Epoch: h.epoch, Parameters: h.params}
	for _, r := range replicas {
		d.Replicas = append(d.Replicas, r.name)
	}
	return d
}

func (h *harness) replica(of *node) Desired {
	return Desired{Role: postgres.Replica, PrimaryHost: "127.0.0.1", PrimaryPort: of.port, Epoch: h.epoch, Parameters: h.params}
}

func (h *harness) report(n *node) Report {
	resp, err := h.operator.Get(n.apiURL() + StatusPath)
	if err != nil {
		h.t.Fatalf("GET status of %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	var r Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		h.t.Fatalf("decoding status of %s: %v", n.name, err)
	}
	return r
}

func (h *harness) probe(n *node, path string) int {
	resp, err := http.Get("http://" + n.statusAddr + path)
	if err != nil {
		h.t.Fatalf("GET %s of %s: %v", path, n.name, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls check until it returns nil, and returns how long that took.
func (h *harness) waitFor(timeout time.Duration, what string, check func() error) time.Duration {
	h.t.Helper()
	return testutil.Eventually(h.t, 50*time.Millisecond, timeout, what, func(context.Context) error { return check() })
}

func (h *harness) ready(n *node, role postgres.Role) func() error {
	return func() error {
		r := h.report(n)
		if !r.Ready || r.Role != role {
			return fmt.Errorf("%s: ready=%v role=%q message=%q error=%q", n.name, r.Ready, r.Role, r.Message, r.Error)
		}
		if code := h.probe(n, ReadinessPath); code != http.StatusOK {
			return fmt.Errorf("%s: /readyz %d", n.name, code)
		}
		return nil
	}
}

// conn connects as the application owner over TCP, as a client would.
func (h *harness) conn(ctx context.Context, n *node) (*pgx.Conn, error) {
	pw, _ := os.ReadFile(filepath.Join(h.secrets, "app", "password"))
	return pgx.Connect(ctx, h.dsn(n, "app", string(pw), "app"))
}

// dsn is how a client connects to n over TCP: with TLS, verifying the
// server by the CA and the address it dials.
func (h *harness) dsn(n *node, user, password, db string) string {
	return postgres.ConnInfo(map[string]string{"host": "127.0.0.1", "port": strconv.Itoa(n.port), "user": user, "password": password,
		"dbname": db, "sslmode": "verify-full", "sslrootcert": h.caFile, "connect_timeout": "3"})
}

func (h *harness) exec(n *node, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second)
	defer cancel()
	c, err := h.conn(ctx, n)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// query is the one value sql returns on n, failing the test if it cannot.
func (h *harness) query(n *node, sql string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second)
	defer cancel()
	c, err := h.conn(ctx, n)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
		h.t.Fatalf("%s on %s: %v", sql, n.name, err)
	}
	return v
}

func (h *harness) rows(n *node) ([]string, error) {
	ctx, cancel := context.WithTimeout(h.t.Context(), 10*time.Second)
	defer cancel()
	c, err := h.conn(ctx, n)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT v FROM t ORDER BY v`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func (h *harness) hasRows(n *node, want ...string) func() error {
	return func() error {
		got, err := h.rows(n)
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("%s has rows %v, want %v", n.name, got, want)
		}
		return nil
	}
}

// hasSlots checks the replication slots on n, filtered by where.
func (h *harness) hasSlots(n *node, where string, want ...string) func() error {
	return func() error {
		ctx := h.t.Context()
		c, err := n.mgr.connect(ctx)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		rows, err := c.Query(ctx, `SELECT slot_name FROM pg_replication_slots `+where+` ORDER BY 1`)
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("%s has slots %v, want %v", n.name, got, want)
		}
		return nil
	}
}

func controlState(t *testing.T, n *node) string {
	out, err := exec.Command(filepath.Join(pgBinDir, "pg_controldata"), filepath.Join(n.dir, "pgdata")).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Database cluster state:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestInstanceLifecycle(t *testing.T) {
	h := newHarness(t)
	n0, n1, n2 := h.add("pg-0"), h.add("pg-1"), h.add("pg-2")

	if r := h.report(n0); r.Ready || r.Running {
		t.Fatalf("an instance told nothing runs nothing: %+v", r)
	}

	t.Run("bootstrap a primary and two replicas", func(t *testing.T) {
		h.epoch = 1
		h.want(n0, h.primary(n0, n1, n2))
		took := h.waitFor(2*time.Minute, "primary ready", h.ready(n0, postgres.Primary))
		t.Logf("initdb and first start: %s", took)
		h.want(n1, h.replica(n0))
		h.want(n2, h.replica(n0))
		for _, n := range []*node{n1, n2} {
			took := h.waitFor(2*time.Minute, n.name+" streaming", h.ready(n, postgres.Replica))
			t.Logf("%s cloned and streaming: %s", n.name, took)
		}
		// Reports are refreshed once a second: the primary's may still
		// predate its replicas.
		h.waitFor(10*time.Second, "primary reports both standbys streaming", func() error {
			r := h.report(n0)
			if r.Postgres == nil || len(r.Postgres.Standbys) != 2 {
				return fmt.Errorf("standbys %+v", r.Postgres)
			}
			for _, sb := range r.Postgres.Standbys {
				if sb.State != "streaming" {
					return fmt.Errorf("standby %s is %s", sb.Name, sb.State)
				}
			}
			return nil
		})
		r := h.report(n0)
		if r.Postgres.SystemIdentifier == "" || r.Postgres.SystemIdentifier != h.report(n1).Postgres.SystemIdentifier {
			t.Errorf("system identifiers differ: a replica is not a clone of the primary")
		}
	})

	t.Run("a row written on the primary is read on both replicas", func(t *testing.T) {
		if err := h.exec(n0, `CREATE TABLE t (v text PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		if err := h.exec(n0, `INSERT INTO t VALUES ('a')`); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*node{n1, n2} {
			h.waitFor(30*time.Second, "row on "+n.name, h.hasRows(n, "a"))
		}
		if err := h.exec(n1, `INSERT INTO t VALUES ('x')`); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("a replica accepted a write (err %v)", err)
		}
	})

	t.Run("the primary keeps a slot per replica", func(t *testing.T) {
		h.waitFor(30*time.Second, "slots", h.hasSlots(n0, "WHERE active", "holdfast_pg_1", "holdfast_pg_2"))
	})

	t.Run("the API takes orders only from the operator's certificate of the cluster's CA", func(t *testing.T) {
		other, err := pki.NewCA("another-ca")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			what   string
			client *http.Client
			want   string // in the transport's error; "" for an answer
			code   int
		}{
			{"no client certificate", &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.pool(), MinVersion: tls.VersionTLS12}}},
				"certificate required", 0},
			{"a certificate of another CA", h.apiClientOf(other, api.OperatorClientName), "unknown certificate authority", 0},
			{"the replication certificate", h.apiClient(postgres.ReplicationUser), "", http.StatusForbidden},
		} {
			code, status := h.putAs(c.client, n1, h.primary(n1))
			if code != c.code || !strings.Contains(status, c.want) {
				t.Errorf("PUT with %s: %d %q, want %d %q", c.what, code, status, c.code, c.want)
			}
		}
		if code := h.probe(n1, ReadinessPath); code != http.StatusOK {
			t.Errorf("the readiness probe, plain HTTP with no certificate: %d", code)
		}
		if resp, err := http.Get("http://" + n1.statusAddr + StatusPath); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("the probe port serves the status document: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		if code, _ := h.put(n1, Desired{Role: "leader", Epoch: h.epoch}); code != http.StatusBadRequest {
			t.Errorf("PUT with a bad role: %d, want 400", code)
		}
		if r := h.report(n1); r.Role != postgres.Replica {
			t.Errorf("refused requests changed the instance: %+v", r)
		}
	})

	t.Run("a crashed postgres is restarted", func(t *testing.T) {
		pid := h.report(n1).PID
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		took := h.waitFor(time.Minute, "replica back after SIGKILL", func() error {
			if r := h.report(n1); r.Restarts != 1 {
				return fmt.Errorf("restarts %d", r.Restarts)
			}
			return h.ready(n1, postgres.Replica)()
		})
		t.Logf("restart after crash: %s (from SIGKILL to streaming again)", took)
	})

	t.Run("a fenced primary refuses writes until unfenced", func(t *testing.T) {
		d := h.primary(n0, n1, n2)
		d.Fenced = true
		h.want(n0, d)
		// Writes sent before the fence takes effect are legitimately
		// accepted; once the instance reports itself fenced, none may be.
		took := h.waitFor(time.Minute, "fenced", func() error {
			if r := h.report(n0); r.Running || r.Ready || !r.Fenced {
				return fmt.Errorf("report %+v", r)
			}
			return nil
		})
		t.Logf("fence: %s", took)
		if err := h.exec(n0, `INSERT INTO t VALUES ('fenced')`); err == nil {
			t.Fatalf("a fenced primary accepted a write")
		}
		if code := h.probe(n0, ReadinessPath); code != http.StatusServiceUnavailable {
			t.Errorf("fenced /readyz %d, want 503", code)
		}
		if code := h.probe(n0, LivenessPath); code != http.StatusOK {
			t.Errorf("fenced /healthz %d, want 200: a fenced instance is alive", code)
		}
		h.want(n0, h.primary(n0, n1, n2))
		h.waitFor(time.Minute, "unfenced", h.ready(n0, postgres.Primary))
		if err := h.exec(n0, `INSERT INTO t VALUES ('b')`); err != nil {
			t.Fatalf("write after unfencing: %v", err)
		}
		for _, n := range []*node{n1, n2} {
			h.waitFor(30*time.Second, "row b on "+n.name, h.hasRows(n, "a", "b"))
		}
	})

	t.Run("promote a replica, then rejoin the diverged old primary with pg_rewind", func(t *testing.T) {
		h.epoch = 2
		// A replica that has not gone past the fork follows the new primary
		// by a reload: the same postgres process, a new primary_conninfo.
		pid := h.report(n2).PID
		start := time.Now()
		promoted := h.primary(n1, n0, n2)
		promoted.SyncQuorum = 1
		h.want(n1, promoted)
		h.want(n2, h.replica(n1))
		// Commits wait for a synchronous standby from the first moment the
		// instance says it is primary: a standby's configuration names
		// none, and a server promoted on it acknowledges what no standby has.
		h.waitFor(time.Minute, "n1 reports itself primary", func() error {
			if r := h.report(n1); r.Role != postgres.Primary {
				return fmt.Errorf("role %q", r.Role)
			}
			return nil
		})
		if got := h.query(n1, `SHOW synchronous_standby_names`); got != `ANY 1 ("pg-0", "pg-2")` {
			t.Errorf("synchronous_standby_names = %q once promoted: commits are acknowledged without a standby", got)
		}
		h.waitFor(time.Minute, "write on the promoted replica", func() error {
			return h.exec(n1, `INSERT INTO t VALUES ('c')`)
		})
		t.Logf("promote: %s (from the request to the first write accepted)", time.Since(start))
		h.waitFor(10*time.Second, "promoted instance reports timeline 2", func() error {
			if r := h.report(n1); r.Postgres == nil || r.Postgres.Timeline != 2 {
				return fmt.Errorf("report %+v", r.Postgres)
			}
			return nil
		})
		start = time.Now()
		h.waitFor(time.Minute, "n2 follows the new primary", func() error {
			if r := h.report(n2); r.Postgres == nil || r.Postgres.Timeline != 2 {
				return fmt.Errorf("n2 not on timeline 2 yet: %+v", r.Postgres)
			}
			return h.ready(n2, postgres.Replica)()
		})
		t.Logf("replica switched to the new primary: %s", time.Since(start))
		if h.report(n2).PID != pid {
			t.Errorf("following the new primary restarted postgres")
		}
		// The old primary was never told: it still takes writes, so its
		// history now diverges from the new primary's.
		if err := h.exec(n0, `INSERT INTO t VALUES ('lost')`); err != nil {
			t.Fatalf("write on the old primary: %v", err)
		}

		// The path taken, not only the outcome: a failed rewind falls back
		// to a fresh clone, which would rejoin just as well. A rewind keeps
		// the data directory itself; a clone makes a new one and keeps the
		// old one aside.
		before := inode(t, filepath.Join(n0.dir, "pgdata"))
		start = time.Now()
		h.want(n0, h.replica(n1))
		h.waitFor(2*time.Minute, "old primary streams from the new one", h.ready(n0, postgres.Replica))
		t.Logf("rewind and rejoin: %s", time.Since(start))
		if r := h.report(n0); r.DemotedAtEpoch != 2 || r.DemotedAtLSN == "" {
			t.Errorf("the demoted primary does not say where its writes end: epoch %d, LSN %q", r.DemotedAtEpoch, r.DemotedAtLSN)
		}
		if _, err := os.Stat(filepath.Join(n0.dir, "pgdata.before-rewind")); err == nil {
			t.Errorf("n0 rejoined by a fresh clone (its old data is aside), not by pg_rewind")
		}
		if after := inode(t, filepath.Join(n0.dir, "pgdata")); after != before {
			t.Errorf("n0's data directory is a new one (inode %d, was %d): it was cloned, not rewound", after, before)
		}
		if err := h.exec(n1, `INSERT INTO t VALUES ('d')`); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*node{n0, n2} {
			h.waitFor(30*time.Second, "new primary's rows on "+n.name, h.hasRows(n, "a", "b", "c", "d"))
		}
		h.waitFor(10*time.Second, "rejoined instance reports timeline 2", func() error {
			if r := h.report(n0); r.Postgres == nil || r.Postgres.Timeline != 2 {
				return fmt.Errorf("report %+v", r.Postgres)
			}
			return nil
		})
	})

	t.Run("a stale desired state is refused", func(t *testing.T) {
		if code, _ := h.put(n0, Desired{Role: postgres.Primary, Epoch: 1}); code != http.StatusConflict {
			t.Errorf("epoch 1 after epoch 2: %d, want 409", code)
		}
		if r := h.report(n0); r.Role != postgres.Replica {
			t.Errorf("stale request changed the instance: %+v", r)
		}
	})

	t.Run("a setting that needs a restart is reported, not applied", func(t *testing.T) {
		pid := h.report(n1).PID
		d := *h.report(n1).Desired
		d.Parameters = map[string]string{"max_connections": "60", "work_mem": "8MB"}
		h.want(n1, d)
		h.waitFor(30*time.Second, "pending restart reported", func() error {
			r := h.report(n1)
			if r.Postgres == nil || strings.Join(r.Postgres.PendingRestart, ",") != "max_connections" {
				return fmt.Errorf("pending %+v", r.Postgres)
			}
			return nil
		})
		if h.report(n1).PID != pid {
			t.Errorf("postgres was restarted behind the operator's back")
		}
		if err := h.exec(n1, `DO $$BEGIN IF current_setting('work_mem') <> '8MB' THEN RAISE 'work_mem %', current_setting('work_mem'); END IF; END$$`); err != nil {
			t.Errorf("reloadable setting not applied: %v", err)
		}
	})

	t.Run("SIGTERM leaves cleanly shut-down data directories", func(t *testing.T) {
		for _, n := range []*node{n0, n2, n1} {
			h.stop(n)
		}
		if s := controlState(t, n1); s != "shut down" {
			t.Errorf("primary state %q, want shut down", s)
		}
		for _, n := range []*node{n0, n2} {
			if s := controlState(t, n); s != "shut down in recovery" {
				t.Errorf("%s state %q, want shut down in recovery", n.name, s)
			}
		}
	})

	t.Run("a restarted replica resumes its role; a restarted primary waits for the operator", func(t *testing.T) {
		h.start(n1)
		h.start(n0)
		// The primary may have been replaced while it was down: it must not
		// take writes on its own word.
		h.waitFor(30*time.Second, "the primary waiting for the operator", func() error {
			if r := h.report(n1); r.Running || r.Desired != nil || !strings.Contains(r.Message, "waiting for the operator") {
				return fmt.Errorf("running %v desired %+v message %q", r.Running, r.Desired, r.Message)
			}
			return nil
		})
		if code, _ := h.put(n1, Desired{Role: postgres.Primary, Epoch: h.epoch - 1}); code != http.StatusConflict {
			t.Errorf("an older epoch than the one held before the restart: %d, want 409", code)
		}
		h.want(n1, h.primary(n1, n0))
		h.waitFor(time.Minute, "primary back", h.ready(n1, postgres.Primary))
		h.waitFor(10*time.Second, "rows kept", h.hasRows(n1, "a", "b", "c", "d"))
		h.waitFor(time.Minute, "replica back without new orders", h.ready(n0, postgres.Replica))
	})

	t.Run("the primary drops the slot of an instance that is gone", func(t *testing.T) {
		h.want(n1, h.primary(n1, n0))
		h.waitFor(30*time.Second, "slot of pg-2 dropped", h.hasSlots(n1, "", "holdfast_pg_0"))
	})

	t.Run("a data directory that cannot be rewound is cloned afresh and kept aside", func(t *testing.T) {
		// Another cluster's data directory shares no history with pg-1's:
		// pg_rewind refuses it, and the instance must clone instead.
		h.stop(n2)
		os.RemoveAll(filepath.Join(n2.dir, "pgdata"))
		os.Remove(filepath.Join(n2.dir, "holdfast-desired.json"))
		h.start(n2)
		h.epoch = 3
		h.want(n2, h.primary(n2))
		h.waitFor(2*time.Minute, "pg-2 a primary of its own", h.ready(n2, postgres.Primary))
		h.want(n1, h.primary(n1, n0, n2))
		h.want(n2, h.replica(n1))
		h.waitFor(2*time.Minute, "pg-2 cloned from pg-1", h.ready(n2, postgres.Replica))
		h.waitFor(30*time.Second, "pg-1's rows on pg-2", h.hasRows(n2, "a", "b", "c", "d"))
		if _, err := os.Stat(filepath.Join(n2.dir, "pgdata.before-rewind", "PG_VERSION")); err != nil {
			t.Errorf("the old data directory was not kept aside: %v", err)
		}
	})

	t.Run("a stopped standby wanted as primary is promoted onto a new timeline", func(t *testing.T) {
		// Started without its standby.signal it would go on writing the
		// timeline the old primary's WAL also extends: two histories under
		// one timeline, which no rewind could tell apart.
		before := h.report(n2).Postgres
		if before == nil || !before.InRecovery {
			t.Fatalf("pg-2 is not a running standby: %+v", before)
		}
		h.stop(n2)
		// Without a saved role it stays down until told: then it is told primary.
		os.Remove(filepath.Join(n2.dir, "holdfast-desired.json"))
		h.start(n2)
		h.epoch = 4
		h.want(n2, h.primary(n2))
		h.waitFor(time.Minute, "pg-2 promoted", h.ready(n2, postgres.Primary))
		if after := h.report(n2).Postgres; after.Timeline <= before.Timeline {
			t.Errorf("pg-2 is primary on timeline %d, was a standby on %d: it was not promoted", after.Timeline, before.Timeline)
		}
	})
}

// inode is path's inode number: a directory replaced by another has a new one.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
