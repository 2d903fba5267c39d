package patroni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/rig/bench"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// The benchmark's own network, apart from the sandbox's 10.244.0.0/16 and
// its hfbr0, so both can run on one machine. etcd listens on the gateway.
var bridge = network.Bridge{Name: "hfbench0", Gateway: &net.IPNet{IP: net.IPv4(10, 250, 0, 1), Mask: net.CIDRMask(24, 32)}}

const (
	etcdClientPort = 23790
	etcdPeerPort   = 23800
	pgPort         = 5432
	apiPort        = 8008
	members        = 3
	pgBin          = "/usr/lib/postgresql/15/bin"
)

// nsID names member i's network namespace (network.Namespace adds "hf-");
// the sandbox only removes namespaces named after pod UIDs, so it leaves
// these alone.
func nsID(i int) string { return fmt.Sprintf("bench-patroni-%d", i+1) }

type member struct {
	name string
	ns   string
	ip   net.IP
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func (m *member) addr() string { return net.JoinHostPort(m.ip.String(), strconv.Itoa(pgPort)) }

type cluster struct {
	dir      string
	settings Settings
	etcdBin  string
	etcd     *exec.Cmd
	members  []*member
	uid, gid uint32
	log      io.Writer
}

// removeStale undoes what a killed run may have left: processes in our
// namespaces, the namespaces and the bridge.
func removeStale() {
	for i := range members {
		ns := network.Namespace(nsID(i))
		if _, err := os.Stat(network.NamespacePath(ns)); err == nil {
			killNamespace(ns)
			_ = bridge.RemovePod(ns)
		}
	}
	_ = bridge.Remove()
	// etcd runs in the host namespace; it and anything else of ours is
	// known by our folder in its command line.
	killUsing(filepath.Join(os.TempDir(), tempPrefix))
	// Folders of runs that were killed; -keep marks the ones to keep.
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range old {
		if _, err := os.Stat(filepath.Join(dir, "kept")); err != nil {
			_ = os.RemoveAll(dir)
		}
	}
}

const tempPrefix = "holdfast-bench-patroni-"

// start brings up etcd and three Patroni members, and waits for a leader
// and two streaming replicas.
func start(ctx context.Context, s Settings, etcdBin string, log io.Writer) (c *cluster, err error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres user (postgres refuses to run as root): %w", err)
	}
	uid, _ := strconv.ParseUint(pg.Uid, 10, 32)
	gid, _ := strconv.ParseUint(pg.Gid, 10, 32)
	// Under /tmp, not a root-private folder: the postgres user must reach it.
	removeStale()
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return nil, err
	}
	c = &cluster{dir: dir, settings: s, etcdBin: etcdBin, uid: uint32(uid), gid: uint32(gid), log: log}
	defer func() {
		if err != nil {
			c.stop(false)
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return c, err
	}
	if err := bridge.Ensure(); err != nil {
		return c, err
	}
	if err := c.startEtcd(ctx); err != nil {
		return c, err
	}
	for i := range members {
		m := &member{name: fmt.Sprintf("m%d", i+1), ns: network.Namespace(nsID(i)), ip: net.IPv4(10, 250, 0, byte(11+i)), dir: filepath.Join(dir, fmt.Sprintf("m%d", i+1))}
		c.members = append(c.members, m)
		if err := bridge.AddPod(m.ns, m.ip); err != nil {
			return c, err
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return c, err
		}
		if err := os.Chown(m.dir, int(uid), int(gid)); err != nil {
			return c, err
		}
		if err := c.writeConfig(m); err != nil {
			return c, err
		}
		if err := c.startMember(m); err != nil {
			return c, err
		}
		if i == 0 {
			// One member bootstraps; the others then clone it, instead of
			// all three racing for the initialize key on two cores.
			if _, err := c.waitLeader(ctx, 2*time.Minute); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

func (c *cluster) startEtcd(ctx context.Context) error {
	gw := bridge.Gateway.IP.String()
	client := fmt.Sprintf("http://%s:%d", gw, etcdClientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	cmd := exec.Command(c.etcdBin, "--name", "bench", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--listen-metrics-urls", "")
	logf, err := os.Create(filepath.Join(c.dir, "etcd.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	c.etcd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return bench.Poll(ctx, 30*time.Second, func() error {
		select {
		case <-exited:
			// Whatever answers on the port is not ours.
			return fmt.Errorf("etcd exited: %s", cmd.ProcessState)
		default:
		}
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd health: %s", resp.Status)
		}
		return nil
	})
}

// config is a Patroni configuration file. JSON is YAML, so encoding/json
// writes it.
func (c *cluster) writeConfig(m *member) error {
	s := c.settings
	dcs := map[string]any{
		"ttl": s.TTL, "loop_wait": s.LoopWait, "retry_timeout": s.RetryTimeout,
		// Synchronous, like the Holdfast clusters it is compared with, so
		// that losing an acknowledged write is a finding, not a given.
		"synchronous_mode":        true,
		"maximum_lag_on_failover": 1 << 20,
		"postgresql": map[string]any{
			"use_pg_rewind": true,
			"use_slots":     true,
			"parameters": map[string]any{
				"max_connections": 100, "shared_buffers": "64MB", "wal_level": "replica",
				"hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": 10,
				"max_replication_slots": 10, "wal_keep_size": "128MB",
			},
		},
	}
	if s.PrimaryStartTimeout != nil {
		dcs["primary_start_timeout"] = *s.PrimaryStartTimeout
	}
	if s.FailsafeMode {
		dcs["failsafe_mode"] = true
	}
	cidr := (&net.IPNet{IP: bridge.Gateway.IP.Mask(bridge.Gateway.Mask), Mask: bridge.Gateway.Mask}).String()
	cfg := map[string]any{
		"scope": "bench",
		"name":  m.name,
		"log":   map[string]any{"level": "INFO"},
		"restapi": map[string]any{
			"listen":          net.JoinHostPort(m.ip.String(), strconv.Itoa(apiPort)),
			"connect_address": net.JoinHostPort(m.ip.String(), strconv.Itoa(apiPort)),
		},
		"etcd3": map[string]any{"hosts": []string{fmt.Sprintf("%s:%d", bridge.Gateway.IP, etcdClientPort)}},
		"bootstrap": map[string]any{
			"dcs":    dcs,
			"initdb": []any{map[string]string{"encoding": "UTF8"}, "data-checksums"},
			"pg_hba": []string{
				"local all all trust",
				"host all all 127.0.0.1/32 trust",
				// The benchmark's private bridge exists only on this machine.
				"host replication all " + cidr + " trust",
				"host all all " + cidr + " trust",
			},
		},
		"postgresql": map[string]any{
			"listen":          fmt.Sprintf("%s,127.0.0.1:%d", m.ip, pgPort),
			"connect_address": m.addr(),
			"data_dir":        filepath.Join(m.dir, "data"),
			"bin_dir":         pgBin,
			"pgpass":          filepath.Join(m.dir, "pgpass"),
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": "postgres", "password": "bench"},
				"replication": map[string]string{"username": "replicator", "password": "bench"},
			},
			"parameters": map[string]any{"unix_socket_directories": m.dir},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(m.dir, "patroni.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return err
	}
	return os.Chown(path, int(c.uid), int(c.gid))
}

// startMember starts Patroni as postgres inside the member's namespace; it
// starts postgres itself.
func (c *cluster) startMember(m *member) error {
	logf, err := os.OpenFile(filepath.Join(m.dir, "patroni.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("patroni", filepath.Join(m.dir, "patroni.yml"))
	cmd.Dir = m.dir
	cmd.Env = []string{"HOME=" + m.dir, "PATH=" + pgBin + ":/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid},
		Setpgid:    true,
	}
	// A child forked on a thread inside the namespace starts there.
	if err := network.InNamespace(m.ns, cmd.Start); err != nil {
		return fmt.Errorf("starting patroni %s: %w", m.name, err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(m.done) }()
	return nil
}

// namespaceProcs lists the processes in network namespace ns: every process
// of the member, however Patroni started it (postgres leaves Patroni's
// process group).
func namespaceProcs(ns string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(network.NamespacePath(ns), &want); err != nil {
		return nil
	}
	target := fmt.Sprintf("net:[%d]", want.Ino)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && link == target {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killNamespace SIGKILLs every process in ns until none is left (Patroni
// could fork between listing and killing).
func killNamespace(ns string) {
	for range 50 {
		pids := namespaceProcs(ns)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killUsing SIGKILLs the processes with an argument under dir.
func killUsing(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for arg := range strings.SplitSeq(string(cmdline), "\x00") {
			if strings.HasPrefix(arg, dir) || strings.Contains(arg, "="+dir) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

// partition cuts the member's namespace off the bridge, silently, as a
// broken network does: packets are dropped, not refused.
func (m *member) partition(cut bool) error {
	var cmds [][]string
	if cut {
		cmds = [][]string{{"-I", "INPUT", "-i", "eth0", "-j", "DROP"}, {"-I", "OUTPUT", "-o", "eth0", "-j", "DROP"}}
	} else {
		cmds = [][]string{{"-F", "INPUT"}, {"-F", "OUTPUT"}}
	}
	for _, args := range cmds {
		full := append([]string{"netns", "exec", m.ns, "iptables", "-w"}, args...)
		if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(full, " "), err, out)
		}
	}
	return nil
}

// stop kills every process, removes the namespaces, the bridge and, unless
// keep, the folder with the data and logs.
func (c *cluster) stop(keep bool) {
	for _, m := range c.members {
		killNamespace(m.ns)
		if err := bridge.RemovePod(m.ns); err != nil {
			fmt.Fprintf(c.log, "removing %s: %v\n", m.ns, err)
		}
	}
	if c.etcd != nil && c.etcd.Process != nil {
		_ = syscall.Kill(-c.etcd.Process.Pid, syscall.SIGKILL)
	}
	if err := bridge.Remove(); err != nil {
		fmt.Fprintf(c.log, "removing bridge %s: %v\n", bridge.Name, err)
	}
	if keep {
		_ = os.WriteFile(filepath.Join(c.dir, "kept"), nil, 0o644)
		fmt.Fprintf(c.log, "kept %s\n", c.dir)
		return
	}
	if err := os.RemoveAll(c.dir); err != nil {
		fmt.Fprintf(c.log, "removing %s: %v\n", c.dir, err)
	}
}

// clusterState is what GET /cluster says.
type clusterState struct {
	Members []struct {
		Name     string `json:"name"`
		Role     string `json:"role"`
		State    string `json:"state"`
		Timeline int    `json:"timeline"`
		Lag      any    `json:"lag"`
	} `json:"members"`
}

var httpClient = &http.Client{Timeout: time.Second}

// state asks the members in turn for the cluster's state.
func (c *cluster) state() (clusterState, error) {
	var errs []error
	for _, m := range c.members {
		resp, err := httpClient.Get(fmt.Sprintf("http://%s:%d/cluster", m.ip, apiPort))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var s clusterState
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
	}
	return clusterState{}, errors.Join(errs...)
}

// waitLeader waits until the DCS names a running leader.
func (c *cluster) waitLeader(ctx context.Context, timeout time.Duration) (*member, error) {
	var leader *member
	err := bench.Poll(ctx, timeout, func() error {
		s, err := c.state()
		if err != nil {
			return err
		}
		for _, sm := range s.Members {
			if sm.Role == "leader" && sm.State == "running" {
				leader = c.member(sm.Name)
				return nil
			}
		}
		return fmt.Errorf("no running leader in %+v", s.Members)
	})
	return leader, err
}

func (c *cluster) member(name string) *member {
	for _, m := range c.members {
		if m.name == name {
			return m
		}
	}
	return nil
}

// waitHealthy waits until a leader has both others streaming from it, one
// of them synchronous, and returns the leader.
func (c *cluster) waitHealthy(ctx context.Context, timeout time.Duration) (*member, error) {
	var leader *member
	err := bench.Poll(ctx, timeout, func() error {
		l, err := c.waitLeader(ctx, time.Second)
		if err != nil {
			return err
		}
		leader = l
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=1", l.ip, pgPort))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var streaming, sync int
		if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'streaming'), count(*) FILTER (WHERE sync_state IN ('sync', 'quorum'))
			FROM pg_stat_replication`).Scan(&streaming, &sync); err != nil {
			return err
		}
		if streaming < members-1 || sync < 1 {
			return fmt.Errorf("leader %s: %d streaming, %d synchronous", l.name, streaming, sync)
		}
		// Patroni records the synchronous standby in the DCS up to a
		// loop_wait after postgres has it, and in synchronous_mode only that
		// standby may be promoted: until then a lost leader is not replaced.
		s, err := c.state()
		if err != nil {
			return err
		}
		running, syncStandbys := 0, 0
		for _, m := range s.Members {
			if m.State == "running" {
				running++
				if m.Role == "sync_standby" {
					syncStandbys++
				}
			}
		}
		if running < members || syncStandbys < 1 {
			return fmt.Errorf("patroni: %d members running, %d synchronous standbys recorded", running, syncStandbys)
		}
		return nil
	})
	return leader, err
}

// switchover asks the leader's REST API for a planned switchover; the
// answer comes once it is done.
func (c *cluster) switchover(ctx context.Context, leader *member) error {
	body := strings.NewReader(fmt.Sprintf(`{"leader": %q}`, leader.name))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s:%d/switchover", leader.ip, apiPort), body)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("switchover from %s: %w", leader.name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("switchover from %s: %s: %s", leader.name, resp.Status, msg)
	}
	return nil
}

// rollingUpdate is Patroni's runbook for changing every member (a new
// image, say): restart each replica's member in turn, each back streaming
// before the next, then switch over, then restart the old leader's member.
// A member restarts as a pod does: Patroni stops postgres on SIGTERM and
// exits, and starts it again when started.
func (c *cluster) rollingUpdate(ctx context.Context, leader *member) error {
	restart := func(m *member) error {
		if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("stopping %s: %w", m.name, err)
		}
		select {
		case <-m.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := c.startMember(m); err != nil {
			return err
		}
		_, err := c.waitHealthy(ctx, 3*time.Minute)
		return err
	}
	for _, m := range c.members {
		if m != leader {
			if err := restart(m); err != nil {
				return err
			}
		}
	}
	if err := c.switchover(ctx, leader); err != nil {
		return err
	}
	if _, err := c.waitHealthy(ctx, 3*time.Minute); err != nil {
		return err
	}
	return restart(leader)
}

// tail returns the end of a member's Patroni log, for error messages.
func (m *member) tail() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "patroni.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
