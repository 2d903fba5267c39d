// Package backups is the backup benchmark of issue 6: backup and restore
// throughput of each method Holdfast serves, on a pgbench database of at
// least 1 GiB in the sandbox, beside the same tools run by hand.
//
// Holdfast's times run from `kubectl apply` of the Backup (or of the
// restored cluster) to its end as the API reports it (phase Completed;
// one instance ready), so they include the operator's and the pod's
// overheads. By hand, the tools run on this machine's shell against the
// same database (pg_dump), or against a server of the same pgbench scale
// started by hand (pgBackRest needs its data directory local), into the
// same S3 store.
package backups

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"holdfast.dev/holdfast/internal/backup/pgbackrest"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/rig/bench"
	"holdfast.dev/holdfast/internal/rig/bench/sandboxrun"
	"holdfast.dev/holdfast/internal/rig/sandbox"
)

// Options say what to run.
type Options struct {
	Holdfast string // the holdfast binary
	BinDir   string // the pinned Kubernetes binaries
	Manifest string // kustomize folder of the operator
	Scale    int    // pgbench scale: 70 is about 1.05 GiB
	Log      io.Writer
	Keep     bool
}

// Measure is one timed operation.
type Measure struct {
	Method   string // logical, pgbackrest, volumeSnapshot
	Op       string // backup, restore
	Who      string // holdfast, by hand
	Took     time.Duration
	DBBytes  int64 // the database's size, which throughput divides
	Stored   int64 // bytes in the repository, when known
	Describe string
}

// MBps is the throughput over the database's size, in MB (10^6 bytes) per second.
func (m Measure) MBps() float64 { return float64(m.DBBytes) / 1e6 / m.Took.Seconds() }

const (
	ns      = "bench"
	pgBin   = "/usr/lib/postgresql/15/bin"
	cluster = "pg"
)

// Run measures every method once each way.
func Run(ctx context.Context, o Options) ([]Measure, error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	sb, err := sandboxrun.Up(ctx, o.Holdfast, o.BinDir)
	if err != nil {
		return nil, err
	}
	defer sb.Down(o.Keep, o.Log)
	if err := sb.InstallOperator(ctx, o.Manifest, ns); err != nil {
		return nil, err
	}
	s3, err := sandbox.ReadS3(sb.Dir)
	if err != nil {
		return nil, err
	}
	if _, err := sb.Kubectl(ctx, "-n", ns, "create", "secret", "generic", "backup-s3",
		"--from-literal=accessKeyId="+s3.AccessKeyID, "--from-literal=secretAccessKey="+s3.SecretAccessKey,
		"--from-literal=ca.crt="+s3.CACert); err != nil {
		return nil, err
	}
	r := &run{o: o, sb: sb, s3: s3}
	fmt.Fprintf(o.Log, "backups: loading pgbench scale %d\n", o.Scale)
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	var out []Measure
	for _, step := range []func(context.Context) ([]Measure, error){r.holdfast, r.byHandSnapshot, r.byHandLogical, r.byHandPGBackRest} {
		ms, err := step(ctx)
		out = append(out, ms...)
		for _, m := range ms {
			fmt.Fprintf(o.Log, "backups: %s %s %s: %s, %.1f MB/s\n", m.Who, m.Method, m.Op, m.Took.Round(time.Millisecond), m.MBps())
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

type run struct {
	o       Options
	sb      *sandboxrun.Sandbox
	s3      sandbox.S3Info
	dbBytes int64
}

func (r *run) repo() string {
	return fmt.Sprintf(`
  backup:
    repository:
      s3: {endpoint: %s, bucket: %s, path: bench, credentialsSecret: backup-s3}`, r.s3.Endpoint, r.s3.Bucket)
}

func clusterYAML(name string, instances int, extra string) string {
	return fmt.Sprintf(`apiVersion: holdfast.dev/v1alpha1
kind: PostgresCluster
metadata: {name: %s, namespace: %s}
spec:
  instances: %d
  postgresVersion: 15
  storage: {size: 8Gi}
  resources: {requests: {memory: 256Mi}}
  postgresql:
    parameters: {max_wal_size: 4GB, shared_buffers: 128MB, maintenance_work_mem: 256MB}%s
`, name, ns, instances, extra)
}

// load makes a 2-instance cluster with a repository and fills it with pgbench.
func (r *run) load(ctx context.Context) error {
	if _, err := r.sb.KubectlIn(ctx, clusterYAML(cluster, 2, r.repo()), "apply", "-f", "-"); err != nil {
		return err
	}
	if err := r.waitReady(ctx, cluster, 2, 6*time.Minute); err != nil {
		return err
	}
	rw, err := r.sb.Kubectl(ctx, "-n", ns, "get", "service", cluster+"-rw", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return err
	}
	// Server-side generation (G): the rows are made by postgres, not sent.
	cmd := exec.CommandContext(ctx, filepath.Join(pgBin, "pgbench"), "-i", "-s", strconv.Itoa(r.o.Scale), "-I", "dtGvp", "-q",
		"-h", rw, "-U", r.sb.Secret(ns, cluster+"-app", "username"), "app")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.sb.Secret(ns, cluster+"-app", "password"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	size, err := r.sql(ctx, cluster, rw, `SELECT pg_database_size('app')`)
	if err != nil {
		return err
	}
	r.dbBytes, _ = strconv.ParseInt(size, 10, 64)
	// The backup reads the replica: let it catch up first. Asked of the
	// primary: the cluster's status refreshes positions only with other news.
	return bench.Poll(ctx, 5*time.Minute, func() error {
		lag, err := r.sql(ctx, cluster, rw, `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), -1) FROM pg_stat_replication`)
		if err != nil {
			return err
		}
		if lag != "0" {
			return fmt.Errorf("replica replay lag %s bytes", lag)
		}
		return nil
	})
}

// holdfast times each method's Backup and a restore of it into a new
// one-instance cluster.
func (r *run) holdfast(ctx context.Context) ([]Measure, error) {
	var out []Measure
	for _, method := range []string{"logical", "pgbackrest", "volumeSnapshot"} {
		name := "b-" + strings.ToLower(method)
		start := time.Now()
		if _, err := r.sb.KubectlIn(ctx, fmt.Sprintf("apiVersion: holdfast.dev/v1alpha1\nkind: Backup\nmetadata: {name: %s, namespace: %s}\nspec: {cluster: {name: %s}, method: %s, deadlineSeconds: 3600}\n",
			name, ns, cluster, method), "apply", "-f", "-"); err != nil {
			return out, err
		}
		var stored int64
		if err := bench.Poll(ctx, time.Hour, func() error {
			st, err := r.sb.Kubectl(ctx, "-n", ns, "get", "backup", name, "-o", "jsonpath={.status.phase} {.status.sizeBytes} {.status.message}")
			if err != nil {
				return err
			}
			f := strings.Fields(st)
			if len(f) > 0 && f[0] == "Failed" {
				return bench.Permanent(fmt.Errorf("backup %s failed: %s", name, st))
			}
			if len(f) < 2 || f[0] != "Completed" {
				return fmt.Errorf("backup %s: %s", name, st)
			}
			stored, _ = strconv.ParseInt(f[1], 10, 64)
			return nil
		}); err != nil {
			return out, err
		}
		if method == "volumeSnapshot" {
			stored = 0 // its size is the claim's, not what the copy takes
		}
		out = append(out, Measure{Method: method, Op: "backup", Who: "holdfast", Took: time.Since(start), DBBytes: r.dbBytes, Stored: stored,
			Describe: "kubectl apply of a Backup to phase Completed"})

		restored := "r-" + strings.ToLower(method)
		start = time.Now()
		if _, err := r.sb.KubectlIn(ctx, clusterYAML(restored, 1, "\n  bootstrap:\n    restore:\n      backup: {name: "+name+"}"), "apply", "-f", "-"); err != nil {
			return out, err
		}
		if err := r.waitReady(ctx, restored, 1, time.Hour); err != nil {
			return out, err
		}
		out = append(out, Measure{Method: method, Op: "restore", Who: "holdfast", Took: time.Since(start), DBBytes: r.dbBytes,
			Describe: "kubectl apply of a 1-instance cluster restoring the Backup to 1/1 ready"})
		// Free the machine for the next measurement.
		if _, err := r.sb.Kubectl(ctx, "-n", ns, "delete", "pgc", restored, "--wait=true", "--timeout=5m"); err != nil {
			return out, err
		}
	}
	return out, nil
}

// byHandSnapshot takes a VolumeSnapshot of the replica's claim directly,
// as a user would with kubectl, without stopping it (so its copy is only
// crash-consistent): the snapshotter's own time, which Holdfast's adds the
// replica's stop and restart to.
func (r *run) byHandSnapshot(ctx context.Context) ([]Measure, error) {
	start := time.Now()
	if _, err := r.sb.KubectlIn(ctx, fmt.Sprintf("apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: by-hand, namespace: %s}\nspec: {source: {persistentVolumeClaimName: pgdata-%s-1}}\n",
		ns, cluster), "apply", "-f", "-"); err != nil {
		return nil, err
	}
	if err := bench.Poll(ctx, time.Hour, func() error {
		ready, err := r.sb.Kubectl(ctx, "-n", ns, "get", "volumesnapshot", "by-hand", "-o", "jsonpath={.status.readyToUse}")
		if err != nil {
			return err
		}
		if ready != "true" {
			return fmt.Errorf("VolumeSnapshot by-hand ready: %q", ready)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return []Measure{{Method: "volumeSnapshot", Op: "backup", Who: "by hand", Took: time.Since(start), DBBytes: r.dbBytes,
		Describe: "kubectl apply of a VolumeSnapshot of the running replica's claim to readyToUse"}}, nil
}

// byHandLogical runs pg_dump -Fc from the same replica to a file here,
// and pg_restore of that file into a server started by hand.
func (r *run) byHandLogical(ctx context.Context) ([]Measure, error) {
	work, runAs, err := workDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	replica, err := r.sb.Kubectl(ctx, "-n", ns, "get", "pod", cluster+"-1", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return nil, err
	}
	dump := filepath.Join(work, "app.dump")
	env := []string{"PGPASSWORD=" + r.sb.Secret(ns, cluster+"-superuser", "password")}
	start := time.Now()
	if err := runTool(ctx, env, nil, filepath.Join(pgBin, "pg_dump"), "-Fc", "-h", replica, "-U", "postgres", "-d", "app", "-f", dump); err != nil {
		return nil, err
	}
	backup := Measure{Method: "logical", Op: "backup", Who: "by hand", Took: time.Since(start), DBBytes: r.dbBytes, Describe: "pg_dump -Fc from the replica to a local file"}
	if fi, err := os.Stat(dump); err == nil {
		backup.Stored = fi.Size()
	}
	if err := os.Chown(dump, int(runAs.Uid), int(runAs.Gid)); err != nil {
		return []Measure{backup}, err
	}
	srv, err := startServer(ctx, work, runAs)
	if err != nil {
		return []Measure{backup}, err
	}
	defer srv.stop()
	start = time.Now()
	if err := runTool(ctx, nil, runAs, filepath.Join(pgBin, "pg_restore"), "--create", "--no-owner", "--exit-on-error", "-h", work, "-p", srv.port, "-d", "postgres", dump); err != nil {
		return []Measure{backup}, err
	}
	return []Measure{backup, {Method: "logical", Op: "restore", Who: "by hand", Took: time.Since(start), DBBytes: r.dbBytes,
		Describe: "pg_restore --create of that file into a server started by hand"}}, nil
}

// byHandPGBackRest loads a server started by hand with the same pgbench
// scale, and times pgbackrest backup and restore (to the end of its
// archive, postgres recovering and promoting) against the sandbox's S3 store.
func (r *run) byHandPGBackRest(ctx context.Context) ([]Measure, error) {
	work, runAs, err := workDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	conf := filepath.Join(work, "pgbackrest.conf")
	data := filepath.Join(work, "data")
	srv, err := startServerWith(ctx, work, runAs, "archive_mode=on",
		"archive_command=pgbackrest --config="+conf+" --stanza=hand archive-push %p", "max_wal_size=4GB")
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	// The same configuration the instances write, but through the store's
	// address: this host does not resolve the name its certificate holds.
	storageHost, storagePort, _ := strings.Cut(strings.TrimPrefix(r.s3.HostEndpoint, "https://"), ":")
	port, _ := strconv.Atoi(srv.port)
	text, err := pgbackrest.Config(
		pgbackrest.Repo{Stanza: "hand", StorageHost: storageHost,
			Location: objectstore.Location{Endpoint: "https://" + sandbox.S3Host + ":" + storagePort, Bucket: r.s3.Bucket, Region: r.s3.Region, Prefix: "bench-by-hand"},
			Cred:     objectstore.Credentials{AccessKeyID: r.s3.AccessKeyID, SecretAccessKey: r.s3.SecretAccessKey}},
		pgbackrest.Server{DataDir: data, SocketDir: work, Port: port, User: "postgres",
			SpoolDir: filepath.Join(work, "spool"), LockDir: filepath.Join(work, "lock")})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	if err := os.Chown(conf, int(runAs.Uid), int(runAs.Gid)); err != nil {
		return nil, err
	}
	pgbr := func(args ...string) error {
		return runTool(ctx, nil, runAs, "pgbackrest", append([]string{"--config=" + conf, "--stanza=hand"}, args...)...)
	}
	// Before the load, and again while the archiver's first pushes (which
	// fail until it exists) hold pgBackRest's archive lock.
	if err := bench.Poll(ctx, 2*time.Minute, func() error { return pgbr("stanza-create") }); err != nil {
		return nil, err
	}
	if err := runTool(ctx, nil, runAs, filepath.Join(pgBin, "pgbench"), "-i", "-s", strconv.Itoa(r.o.Scale), "-I", "dtGvp", "-q", "-h", work, "-p", srv.port, "postgres"); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := pgbr("--type=full", "backup"); err != nil {
		return nil, err
	}
	backup := Measure{Method: "pgbackrest", Op: "backup", Who: "by hand", Took: time.Since(start), DBBytes: r.dbBytes,
		Describe: "pgbackrest backup --type=full of a server of the same scale, to the same store"}
	srv.stop()
	restored := filepath.Join(work, "restored")
	if err := os.Mkdir(restored, 0o700); err != nil {
		return []Measure{backup}, err
	}
	if err := os.Chown(restored, int(runAs.Uid), int(runAs.Gid)); err != nil {
		return []Measure{backup}, err
	}
	start = time.Now()
	if err := pgbr("--pg1-path="+restored, "restore"); err != nil {
		return []Measure{backup}, err
	}
	rs, err := startOn(ctx, work, restored, runAs)
	if err != nil {
		return []Measure{backup}, err
	}
	defer rs.stop()
	if err := bench.Poll(ctx, time.Hour, func() error {
		out, err := exec.CommandContext(ctx, filepath.Join(pgBin, "psql"), "-h", work, "-p", rs.port, "-U", "postgres", "-Atc", "SELECT pg_is_in_recovery()", "postgres").Output()
		if err != nil || strings.TrimSpace(string(out)) != "f" {
			return fmt.Errorf("still recovering (%v)", err)
		}
		return nil
	}); err != nil {
		return []Measure{backup}, err
	}
	return []Measure{backup, {Method: "pgbackrest", Op: "restore", Who: "by hand", Took: time.Since(start), DBBytes: r.dbBytes,
		Describe: "pgbackrest restore of that backup, then postgres recovering to the end of the archive and promoting"}}, nil
}

func (r *run) waitReady(ctx context.Context, name string, n int, timeout time.Duration) error {
	return bench.Poll(ctx, timeout, func() error {
		out, err := r.sb.Kubectl(ctx, "-n", ns, "get", "pgc", name, "-o", "jsonpath={.status.readyInstances} {.status.phase}")
		if err != nil {
			return err
		}
		if out != fmt.Sprintf("%d Healthy", n) {
			return fmt.Errorf("%s: %s", name, out)
		}
		return nil
	})
}

func (r *run) sql(ctx context.Context, cluster, host, query string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(pgBin, "psql"), "-h", host, "-U", "postgres", "-Atc", query, "app")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.sb.Secret(ns, cluster+"-superuser", "password"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %v: %s", query, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// workDir is a folder the postgres user can use, and that user: postgres
// refuses to run as root.
func workDir() (string, *syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return "", nil, fmt.Errorf("the by-hand runs need a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	dir, err := os.MkdirTemp("", "holdfast-bench-byhand-")
	if err != nil {
		return "", nil, err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return "", nil, err
	}
	return dir, cred, nil
}

func runTool(ctx context.Context, env []string, runAs *syscall.Credential, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if runAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: runAs}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, lastLines(string(out)))
	}
	return nil
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

// server is a postgres started by hand, on a socket in its work folder.
type server struct {
	port string
	stop func()
}

func startServer(ctx context.Context, work string, runAs *syscall.Credential) (*server, error) {
	return startServerWith(ctx, work, runAs)
}

// startServerWith initdbs work/data and starts it with the settings given.
func startServerWith(ctx context.Context, work string, runAs *syscall.Credential, settings ...string) (*server, error) {
	data := filepath.Join(work, "data")
	if err := runTool(ctx, nil, runAs, filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"); err != nil {
		return nil, err
	}
	conf := "\nlisten_addresses = ''\nunix_socket_directories = '" + work + "'\nshared_buffers = 128MB\nmaintenance_work_mem = 256MB\n"
	for _, s := range settings {
		k, v, _ := strings.Cut(s, "=")
		conf += k + " = '" + strings.ReplaceAll(v, "'", "''") + "'\n"
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return nil, err
	}
	return startOn(ctx, work, data, runAs)
}

// startOn starts postgres on data, on a free port, and waits until it takes connections.
func startOn(ctx context.Context, work, data string, runAs *syscall.Credential) (*server, error) {
	port := strconv.Itoa(50000 + os.Getpid()%10000)
	if err := runTool(ctx, nil, runAs, filepath.Join(pgBin, "pg_ctl"), "start", "-w", "-t", "3600", "-D", data,
		"-o", "-p "+port+" -c listen_addresses='' -c unix_socket_directories='"+work+"'", "-l", filepath.Join(work, "postgres.log")); err != nil {
		return nil, err
	}
	stopped := false
	return &server{port: port, stop: func() {
		if !stopped {
			stopped = true
			_ = runTool(context.WithoutCancel(ctx), nil, runAs, filepath.Join(pgBin, "pg_ctl"), "stop", "-m", "fast", "-D", data)
		}
	}}, nil
}

// Table prints the measurements and, per method and operation, Holdfast's
// throughput over the tool's by hand.
func Table(ms []Measure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%14s  %7s  %8s  %9s  %9s  %10s  %s\n", "method", "op", "who", "time", "MB/s", "stored MB", "what was timed")
	for _, m := range ms {
		stored := "-"
		if m.Stored > 0 {
			stored = fmt.Sprintf("%.1f", float64(m.Stored)/1e6)
		}
		fmt.Fprintf(&b, "%14s  %7s  %8s  %8.2fs  %9.1f  %10s  %s\n", m.Method, m.Op, m.Who, m.Took.Seconds(), m.MBps(), stored, m.Describe)
	}
	b.WriteString("\nratios (holdfast MB/s / by hand MB/s; 1.0 means as fast as the tool alone):\n")
	for _, h := range ms {
		if h.Who != "holdfast" {
			continue
		}
		for _, o := range ms {
			if o.Who == "by hand" && o.Method == h.Method && o.Op == h.Op {
				fmt.Fprintf(&b, "%14s  %7s  %.2f\n", h.Method, h.Op, h.MBps()/o.MBps())
			}
		}
	}
	return b.String()
}
