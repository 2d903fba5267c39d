package e2e

import (
	"context"
	"crypto/md5"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/backup/logical"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/rig/sandbox"
	"holdfast.dev/holdfast/internal/rig/sandbox/faults"
	"holdfast.dev/holdfast/internal/rig/sandbox/network"
)

// TestBackupAndRestoreInSandbox runs logical backups of a cluster into the
// sandbox's S3 store (versitygw) and restores one into a new cluster.
func TestBackupAndRestoreInSandbox(t *testing.T) {
	e := startSandbox(t)
	e.installOperator()
	e.mustKubectl("", "create", "namespace", ns)
	repo := e.s3Repository(t)
	s3, err := sandbox.ReadS3(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	e.mustKubectl(clusterManifest("src", 2, "")+repo, "apply", "-f", "-")
	e.waitReady(t, "src", 2, 6*time.Minute)
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}
	rw := e.serviceIP(t, "src-rw")
	e.sqlAs(t, "src", rw, `CREATE TABLE e2e (id int PRIMARY KEY, note text);
		INSERT INTO e2e SELECT g, md5(g::text) FROM generate_series(1, 5000) g`)
	// The backup reads a replica: wait until it has every row.
	e.waitRowAs(t, "src", e.podIP(t, "src-1"), 5000, md5hex(5000))
	atBackup := e.tableDigest(t, "src", rw)

	var path string
	t.Run("a logical backup completes from the replica", func(t *testing.T) {
		e.mustKubectl(backupManifest("b1", "src"), "apply", "-f", "-")
		status := e.waitBackup(t, "b1", "Completed")
		if status["instance"] != "src-1" {
			t.Errorf("backup read %s; want the replica src-1 (target prefer-standby)", status["instance"])
		}
		if n, _ := strconv.Atoi(status["size"]); n < 10000 {
			t.Errorf("backup size %s bytes; 5000 rows take more", status["size"])
		}
		path = status["path"]
		if !strings.HasPrefix(path, "e2e/"+ns+"/src/logical/b1-") {
			t.Errorf("backup path %q, want under e2e/%s/src/logical/", path, ns)
		}
	})
	if t.Failed() {
		e.dumpState(t)
		t.FailNow()
	}

	t.Run("holdfast backup create --wait takes a backup and exits when it completes", func(t *testing.T) {
		out, err := exec.Command(e.holdfast, "backup", "create", "src", "--method", "logical", "--wait", "--timeout", "5m",
			"-n", ns, "--kubeconfig", e.kubeconfig).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfast backup create --wait: %v\n%s", err, out)
		}
		created := regexp.MustCompile(`created Backup ` + ns + `/(src-[a-z0-9]+) of cluster src`).FindSubmatch(out)
		if created == nil || !strings.Contains(string(out), "backup "+string(created[1])+" completed: ") {
			t.Fatalf("holdfast backup create --wait says:\n%s", out)
		}
		if phase := e.mustKubectl("", "-n", ns, "get", "backup", string(created[1]), "-o", "jsonpath={.status.phase}"); phase != "Completed" {
			t.Errorf("Backup %s is %s once holdfast backup create --wait returned", created[1], phase)
		}
	})
	e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (5001, 'after the backup')`)

	t.Run("a restore into a new cluster holds exactly what the backup saw", func(t *testing.T) {
		dst := clusterManifest("dst", 2, "") + `
  bootstrap:
    restore:
      backup:
        name: b1`
		e.mustKubectl(dst, "apply", "-f", "-")
		e.waitReady(t, "dst", 2, 6*time.Minute)
		if got := e.tableDigest(t, "dst", e.serviceIP(t, "dst-rw")); got != atBackup {
			t.Errorf("restored table: %s; at the backup: %s", got, atBackup)
		}
		// The replica cloned the restored primary.
		e.waitRowAs(t, "dst", e.podIP(t, "dst-1"), 5000, md5hex(5000))
		if e.secretValue(ns, "dst-app", "password") == e.secretValue(ns, "src-app", "password") {
			t.Error("the restored cluster shares the source's app password; it must have its own credentials")
		}
	})

	t.Run("a backup to an unreachable repository fails and the cluster keeps serving", func(t *testing.T) {
		e.mustKubectl("", "-n", ns, "patch", "pgc", "src", "--type=merge", "-p",
			`{"spec":{"backup":{"repository":{"s3":{"endpoint":"https://nowhere.`+ns+`.svc.cluster.local"}}}}}`)
		e.mustKubectl(backupManifest("b2", "src"), "apply", "-f", "-")
		status := e.waitBackup(t, "b2", "Failed")
		if status["reason"] != "BackupError" || !strings.Contains(status["message"], "reaching s3://") {
			t.Errorf("failed backup says %s: %q; want BackupError naming the repository", status["reason"], status["message"])
		}
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (5002, 'while the repository is away')`)
		e.waitReady(t, "src", 2, time.Minute)
		e.mustKubectl("", "-n", ns, "patch", "pgc", "src", "--type=merge", "-p",
			`{"spec":{"backup":{"repository":{"s3":{"endpoint":"`+s3.Endpoint+`"}}}}}`)
	})

	t.Run("a schedule takes a backup every minute and retention prunes them", func(t *testing.T) {
		e.mustKubectl(fmt.Sprintf(`apiVersion: holdfast.dev/v1alpha1
kind: BackupSchedule
metadata:
  name: minutely
  namespace: %s
spec:
  cluster:
    name: src
  schedule: "* * * * *"
  retention:
    keepLast: 2
`, ns), "apply", "-f", "-")
		var pruned []string
		seen := map[string]string{}
		poll(t, 6*time.Minute, "three scheduled backups completed and the oldest pruned", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "backups", "-l", "holdfast.dev/backup-schedule=minutely", "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.path}{"\n"}{end}`)
			if err != nil {
				return err
			}
			now := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 3 && f[1] == "Completed" {
					seen[f[0]] = f[2]
				}
				if len(f) > 0 {
					now[f[0]] = true
				}
			}
			pruned = pruned[:0]
			for name := range seen {
				if !now[name] {
					pruned = append(pruned, name)
				}
			}
			st := e.mustKubectl("", "-n", ns, "get", "backupschedule", "minutely", "-o", "jsonpath={.status.pruned}")
			if len(seen) < 3 || len(pruned) == 0 || len(now) > 3 {
				return fmt.Errorf("completed %d, pruned %v (status says %s), present %d", len(seen), pruned, st, len(now))
			}
			return nil
		})
		// The pruned backups' files are gone from the store.
		store := func(path string) *objectstore.Store {
			s, err := objectstore.Open(objectstore.Location{Endpoint: s3.HostEndpoint, Bucket: s3.Bucket, Region: s3.Region, Prefix: path},
				objectstore.Credentials{AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, CA: []byte(s3.CACert)})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		for _, name := range pruned {
			if _, err := logical.ReadManifest(t.Context(), store(seen[name])); err == nil || !strings.Contains(err.Error(), "holds no finished logical backup") {
				t.Errorf("pruned backup %s: its files are still in the store (%v)", name, err)
			}
		}
		if _, err := logical.ReadManifest(t.Context(), store(path)); err != nil {
			t.Errorf("b1, not the schedule's, lost its files: %v", err)
		}
		e.mustKubectl("", "-n", ns, "patch", "backupschedule", "minutely", "--type=merge", "-p", `{"spec":{"suspend":true}}`)
	})

	t.Run("a pgBackRest backup restores to a point in time", func(t *testing.T) {
		e.mustKubectl(backupManifest("p1", "src")+"  method: pgbackrest\n", "apply", "-f", "-")
		status := e.waitBackup(t, "p1", "Completed")
		if primary := e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o", "jsonpath={.status.currentPrimary}"); status["instance"] != primary {
			t.Errorf("pgbackrest backup read %s; it runs on the primary, %s", status["instance"], primary)
		}
		label := e.mustKubectl("", "-n", ns, "get", "backup", "p1", "-o", "jsonpath={.status.pgbackrest.label}")
		if !strings.HasSuffix(label, "F") {
			t.Errorf("set label %q; want a full backup's (…F)", label)
		}
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (6001, 'before the target')`)
		var target string
		e.superQuery(t, "src", rw, `SELECT pg_current_wal_insert_lsn()::text`, &target)
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (6002, 'after the target')`)
		e.wantArchiving(t, "src")
		e.mustKubectl(clusterManifest("pitr", 2, "")+`
  bootstrap:
    restore:
      backup:
        name: p1
      target:
        lsn: "`+target+`"`, "apply", "-f", "-")
		e.waitReady(t, "pitr", 2, 6*time.Minute)
		pitrRW := e.serviceIP(t, "pitr-rw")
		e.waitRowAs(t, "pitr", pitrRW, 6001, "before the target")
		var after int
		e.superQuery(t, "pitr", pitrRW, `SELECT count(*) FROM e2e WHERE id = 6002`, &after)
		if after != 0 {
			t.Error("the row written after the target is in the restored cluster")
		}
		e.waitRowAs(t, "pitr", e.podIP(t, "pitr-1"), 6001, "before the target")
		if tl := e.mustKubectl("", "-n", ns, "get", "pgc", "pitr", "-o", "jsonpath={.status.instances[0].timeline}"); tl == "" || tl == "1" {
			t.Errorf("restored primary on timeline %q; want a new one", tl)
		}
	})

	// The form docs/backups.md shows: RFC 3339 with no fractional seconds.
	// Such an object once blinded the operator to every cluster.
	t.Run("a pgBackRest backup restores to a time written as the docs show it", func(t *testing.T) {
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (6003, 'before the time')`)
		var target string
		// The next whole second after the row committed: the row is before
		// it, and the next one is written after it.
		e.superQuery(t, "src", rw, `SELECT to_char(date_trunc('second', clock_timestamp() AT TIME ZONE 'UTC') + interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`, &target)
		poll(t, 10*time.Second, "the server's clock past "+target, func() error {
			var past bool
			e.superQuery(t, "src", rw, `SELECT clock_timestamp() > '`+target+`'::timestamptz + interval '100 milliseconds'`, &past)
			if !past {
				return errorString("not yet")
			}
			return nil
		})
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (6004, 'after the time')`)
		e.wantArchiving(t, "src")
		e.mustKubectl(clusterManifest("pitr-time", 1, "")+`
  bootstrap:
    restore:
      backup: {name: p1}
      target: {time: "`+target+`"}`, "apply", "-f", "-")
		e.waitReady(t, "pitr-time", 1, 6*time.Minute)
		at := e.serviceIP(t, "pitr-time-rw")
		e.waitRowAs(t, "pitr-time", at, 6003, "before the time")
		var after int
		e.superQuery(t, "pitr-time", at, `SELECT count(*) FROM e2e WHERE id = 6004`, &after)
		if after != 0 {
			t.Errorf("the row written after %s is in the restored cluster", target)
		}
		// The operator kept managing every other cluster meanwhile.
		if got := e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o", "jsonpath={.status.phase}"); got != "Healthy" {
			t.Errorf("src is %s while pitr-time restored", got)
		}
	})

	t.Run("deleting a pgBackRest Backup expires its set", func(t *testing.T) {
		// pgBackRest keeps at least one full set: take a second, then drop the first.
		e.mustKubectl(backupManifest("p2", "src")+"  method: pgbackrest\n", "apply", "-f", "-")
		e.waitBackup(t, "p2", "Completed")
		label := e.mustKubectl("", "-n", ns, "get", "backup", "p1", "-o", "jsonpath={.status.pgbackrest.label}")
		repoPath := e.mustKubectl("", "-n", ns, "get", "backup", "p1", "-o", "jsonpath={.status.path}")
		setFiles := func() int {
			s, err := objectstore.Open(objectstore.Location{Endpoint: s3.HostEndpoint, Bucket: s3.Bucket, Region: s3.Region,
				Prefix: repoPath + "/backup/src/" + label},
				objectstore.Credentials{AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, CA: []byte(s3.CACert)})
			if err != nil {
				t.Fatal(err)
			}
			names, err := s.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return len(names)
		}
		if setFiles() == 0 {
			t.Fatalf("set %s has no files in the store before its Backup is deleted", label)
		}
		e.mustKubectl("", "-n", ns, "delete", "backup", "p1", "--timeout=2m")
		if n := setFiles(); n != 0 {
			t.Errorf("set %s still has %d files after its Backup was deleted", label, n)
		}
	})

	t.Run("archiving to a stopped S3 store counts failures, says pgBackRest's message, and recovers", func(t *testing.T) {
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o", "jsonpath={.status.currentPrimary}")
		failures := func() float64 {
			v, ok := e.instanceMetrics(t, primary).Value("holdfast_pg_archiver_failed_total")
			if !ok {
				t.Fatalf("%s serves no holdfast_pg_archiver_failed_total", primary)
			}
			return v
		}
		before := failures()
		// The primary's connections to the store are reset, as a stopped
		// server's are; every other pod still reaches it.
		store := e.mustKubectl("", "-n", "holdfast-system", "get", "service", "s3", "-o", "jsonpath={.spec.clusterIP}")
		uid := e.mustKubectl("", "-n", ns, "get", "pod", primary, "-o", "jsonpath={.metadata.uid}")
		heal, err := faults.Refuse(network.Namespace(uid), store)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = heal() })
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (6901, 'while the store is stopped')`)
		var segment string
		e.superQuery(t, "src", rw, `SELECT pg_walfile_name(pg_switch_wal())`, &segment)
		poll(t, 3*time.Minute, "archive failures counted and ContinuousArchiving=False with pgBackRest's message", func() error {
			if now := failures(); now <= before {
				return fmt.Errorf("holdfast_pg_archiver_failed_total %v, was %v", now, before)
			}
			if c := e.clusterCondition(t, "src", "ContinuousArchiving"); !strings.HasPrefix(c, "False ArchivingFailed: WAL segment ") || !strings.Contains(c, "could not be archived: ") {
				return fmt.Errorf("condition %q", c)
			}
			return nil
		})
		if err := heal(); err != nil {
			t.Fatal(err)
		}
		e.wantArchiving(t, "src")
	})

	t.Run("a VolumeSnapshot of a stopped replica restores into a new cluster", func(t *testing.T) {
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (7001, 'before the snapshot')`)
		e.waitRowAs(t, "src", e.podIP(t, "src-1"), 7001, "before the snapshot")
		atSnapshot := e.tableDigest(t, "src", rw)
		primary := e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o", "jsonpath={.status.currentPrimary}")
		e.mustKubectl(backupManifest("s1", "src")+"  method: volumeSnapshot\n", "apply", "-f", "-")
		status := e.waitBackup(t, "s1", "Completed")
		if status["instance"] == primary || status["instance"] == "" {
			t.Errorf("the snapshot stopped %q; it must stop a replica, never the primary %s", status["instance"], primary)
		}
		// The replica was stopped by an operation of the cluster, asked for
		// on the cluster and released there once the copy was made.
		poll(t, time.Minute, "the fence recorded in src's history and its request withdrawn", func() error {
			out := e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o",
				`jsonpath={.metadata.annotations.holdfast\.dev/fence-for-backup}|{range .status.history[?(@.kind=="Fence")]}{.outcome} {.request}{end}`)
			if out != "|Succeeded "+status["instance"]+"@s1" {
				return errorString(out)
			}
			return nil
		})
		if ready := e.mustKubectl("", "-n", ns, "get", "volumesnapshot", "s1", "-o", "jsonpath={.status.readyToUse}"); ready != "true" {
			t.Errorf("VolumeSnapshot s1 readyToUse %q", ready)
		}
		// The replica is let go and rejoins; writes went on meanwhile.
		e.sqlAs(t, "src", rw, `INSERT INTO e2e VALUES (7002, 'after the snapshot')`)
		e.waitRowAs(t, "src", e.podIP(t, status["instance"]), 7002, "after the snapshot")
		e.waitReady(t, "src", 2, 2*time.Minute)

		restore := clusterManifest("snap", 2, "") + `
  bootstrap:
    restore:
      backup:
        name: s1`
		// A claim smaller than the snapshot would never be provisioned, and
		// could not shrink back: refused before any is made, and growing
		// the size to fit goes on.
		e.mustKubectl(strings.Replace(restore, "size: 1Gi", "size: 512Mi", 1), "apply", "-f", "-")
		poll(t, time.Minute, "snap says its storage is smaller than the snapshot", func() error {
			if c := e.clusterCondition(t, "snap", "Ready"); !strings.HasPrefix(c, "False RestoreTargetTooSmall: ") || !strings.Contains(c, "set spec.storage.size to at least 1Gi") {
				return errorString(c)
			}
			return nil
		})
		if out, _ := e.kubectl("", "-n", ns, "get", "pvc", "-l", "holdfast.dev/cluster=snap", "-o", "name"); out != "" {
			t.Errorf("a restore refused for its size made claims: %s", out)
		}
		e.mustKubectl(restore, "apply", "-f", "-")
		e.waitReady(t, "snap", 2, 6*time.Minute)
		if got := e.tableDigest(t, "snap", e.serviceIP(t, "snap-rw")); got != atSnapshot {
			t.Errorf("restored table: %s; at the snapshot: %s", got, atSnapshot)
		}
		e.waitRowAs(t, "snap", e.podIP(t, "snap-1"), 7001, "before the snapshot")
		srcTL, _ := strconv.Atoi(e.mustKubectl("", "-n", ns, "get", "pgc", "src", "-o", "jsonpath={.status.instances[0].timeline}"))
		if tl, _ := strconv.Atoi(e.mustKubectl("", "-n", ns, "get", "pgc", "snap", "-o", "jsonpath={.status.instances[0].timeline}")); tl <= srcTL {
			t.Errorf("restored primary on timeline %d, the source's is %d; a restore opens a new one", tl, srcTL)
		}
	})

	t.Run("a restore from a missing backup is refused with a clear status", func(t *testing.T) {
		e.mustKubectl(clusterManifest("ghost", 1, "")+`
  bootstrap:
    restore:
      backup:
        name: no-such-backup`, "apply", "-f", "-")
		poll(t, time.Minute, "ghost says its source is missing", func() error {
			out, err := e.kubectl("", "-n", ns, "get", "pgc", "ghost", "-o",
				`jsonpath={.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}`)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(out, "RestoreSourceMissing: ") || !strings.Contains(out, "no-such-backup does not exist") {
				return errorString(out)
			}
			return nil
		})
		if out, _ := e.kubectl("", "-n", ns, "get", "pods", "-l", "holdfast.dev/cluster=ghost", "-o", "name"); out != "" {
			t.Errorf("a cluster with no restore source started pods: %s", out)
		}
	})
}

func backupManifest(name, cluster string) string {
	return fmt.Sprintf(`apiVersion: holdfast.dev/v1alpha1
kind: Backup
metadata:
  name: %s
  namespace: %s
spec:
  cluster:
    name: %s
`, name, ns, cluster)
}

// waitBackup waits for the Backup to reach phase and returns its status fields.
func (e *sandboxEnv) waitBackup(t *testing.T, name, phase string) map[string]string {
	t.Helper()
	fields := []string{"phase", "reason", "instance", "size", "path", "message"}
	var got map[string]string
	poll(t, 3*time.Minute, "Backup "+name+" "+phase, func() error {
		out, err := e.kubectl("", "-n", ns, "get", "backup", name, "-o",
			`jsonpath={.status.phase}|{.status.reason}|{.status.instance}|{.status.sizeBytes}|{.status.path}|{.status.message}`)
		if err != nil {
			return err
		}
		parts := strings.SplitN(out, "|", len(fields))
		got = map[string]string{}
		for i, f := range fields {
			if i < len(parts) {
				got[f] = parts[i]
			}
		}
		if got["phase"] != phase {
			return errorString(out)
		}
		return nil
	})
	return got
}

// connectTo connects as the app user of cluster at host.
func (e *sandboxEnv) connectTo(ctx context.Context, cluster, host string) (*pgx.Conn, error) {
	return e.connectAs(ctx, host, e.secretValue(ns, cluster+"-app", "username"), e.secretValue(ns, cluster+"-app", "password"))
}

func (e *sandboxEnv) connectAs(ctx context.Context, host, user, password string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=5432 dbname=app sslmode=require connect_timeout=5", host))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	return pgx.ConnectConfig(ctx, cfg)
}

// withConn polls f on a fresh connection as cluster's app user (or its
// superuser) at host until it succeeds.
func (e *sandboxEnv) withConn(t *testing.T, what, cluster, host string, superuser bool, f func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	poll(t, time.Minute, what+" at "+host, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var conn *pgx.Conn
		var err error
		if superuser {
			conn, err = e.connectAs(ctx, host, "postgres", e.secretValue(ns, cluster+"-superuser", "password"))
		} else {
			conn, err = e.connectTo(ctx, cluster, host)
		}
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return f(ctx, conn)
	})
}

// sqlAs runs statements at host as cluster's app user, retrying until the Service routes there.
func (e *sandboxEnv) sqlAs(t *testing.T, cluster, host, statements string) {
	t.Helper()
	e.withConn(t, "running SQL", cluster, host, false, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, statements)
		return err
	})
}

// waitRowAs waits until host serves row id with note, as cluster's app user.
func (e *sandboxEnv) waitRowAs(t *testing.T, cluster, host string, id int, note string) {
	t.Helper()
	e.withConn(t, fmt.Sprintf("row %d", id), cluster, host, false, func(ctx context.Context, conn *pgx.Conn) error {
		var got string
		if err := conn.QueryRow(ctx, "SELECT note FROM e2e WHERE id = $1", id).Scan(&got); err != nil {
			return err
		}
		if got != note {
			return errorString("note " + got)
		}
		return nil
	})
}

// tableDigest is the row count and an md5 over every row of e2e, in order:
// two tables with equal digests hold the same rows.
func (e *sandboxEnv) tableDigest(t *testing.T, cluster, host string) string {
	t.Helper()
	var digest string
	e.withConn(t, "digest of e2e", cluster, host, false, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT count(*) || ' rows, md5 ' || md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM e2e`).Scan(&digest)
	})
	return digest
}

// superQuery scans the one row sql returns, run at host as cluster's superuser.
func (e *sandboxEnv) superQuery(t *testing.T, cluster, host, sql string, dest ...any) {
	t.Helper()
	e.withConn(t, sql, cluster, host, true, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql).Scan(dest...)
	})
}

// md5hex is md5(id::text), the note the test's rows carry.
func md5hex(id int) string {
	return fmt.Sprintf("%x", md5.Sum([]byte(strconv.Itoa(id))))
}
