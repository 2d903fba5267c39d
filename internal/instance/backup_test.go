package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/backup/pgbackrest"
	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/rig/testutil"
)

// writeRepositoryCredentials puts the keys where the pod would mount the Secret.
func (h *harness) writeRepositoryCredentials(cred objectstore.Credentials) {
	dir := filepath.Join(h.base, "repository")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	for k, v := range map[string][]byte{objectstore.KeyAccessKeyID: []byte(cred.AccessKeyID),
		objectstore.KeySecretAccessKey: []byte(cred.SecretAccessKey), objectstore.KeyCA: cred.CA} {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
}

// backup orders a backup through the API and waits for its end.
func (h *harness) backup(n *node, o BackupOrder) BackupReport {
	h.t.Helper()
	c := api.Client{HTTP: h.operator}
	if _, err := c.StartBackup(h.t.Context(), n.apiURL(), o); err != nil {
		h.t.Fatalf("ordering backup %s: %v", o.ID, err)
	}
	var r BackupReport
	h.waitFor(2*time.Minute, "backup "+o.ID+" ends", func() error {
		var err error
		r, err = c.BackupState(h.t.Context(), n.apiURL(), o.ID)
		if err != nil {
			return err
		}
		if r.Phase == JobRunning {
			return errors.New("still running")
		}
		return nil
	})
	return r
}

// TestLogicalBackupAndRestore backs up a primary with rows in two
// databases into a real S3 server, writes more, and restores into a new
// instance: it must hold exactly what the backup saw, with the roles, and
// its own passwords.
func TestLogicalBackupAndRestore(t *testing.T) {
	h := newHarness(t)
	loc, cred := testutil.S3Server(t)
	h.writeRepositoryCredentials(cred)

	src := h.add("src-0")
	h.want(src, h.primary(src))
	h.waitFor(time.Minute, "the source primary is ready", h.ready(src, "primary"))
	for _, sql := range []string{
		`CREATE TABLE t (v text PRIMARY KEY)`,
		`INSERT INTO t VALUES ('before-1'), ('before-2')`,
	} {
		if err := h.exec(src, sql); err != nil {
			t.Fatal(err)
		}
	}
	h.superExec(src, "postgres", `CREATE ROLE reporting LOGIN`)
	h.superExec(src, "postgres", `CREATE DATABASE metrics OWNER reporting`)
	h.superExec(src, "metrics", `CREATE TABLE m (k int PRIMARY KEY, v text); INSERT INTO m SELECT g, md5(g::text) FROM generate_series(1, 1000) g; ALTER TABLE m OWNER TO reporting`)

	at := loc.Join("src", "b1")
	r := h.backup(src, BackupOrder{ID: "b1", Method: MethodLogical, Location: at})
	if r.Phase != JobCompleted {
		t.Fatalf("backup: %s: %s", r.Phase, r.Error)
	}
	if got := strings.Join(r.Databases, ","); got != "app,metrics,postgres" {
		t.Errorf("databases backed up: %s, want app,metrics,postgres", got)
	}
	if r.SizeBytes <= 0 || r.ServerVersion < 150000 {
		t.Errorf("report: size %d, server version %d", r.SizeBytes, r.ServerVersion)
	}
	if err := h.exec(src, `INSERT INTO t VALUES ('after')`); err != nil {
		t.Fatal(err)
	}

	t.Run("restore into a new instance", func(t *testing.T) {
		dst := h.add("dst-0")
		d := h.primary(dst)
		d.Restore = &RestoreOrder{Method: MethodLogical, Location: at}
		h.want(dst, d)
		h.waitFor(2*time.Minute, "the restored primary is ready", h.ready(dst, "primary"))
		h.waitFor(10*time.Second, "the restored rows are those of the backup", h.hasRows(dst, "before-1", "before-2"))
		var n int
		var owner string
		h.superQuery(dst, "metrics", `SELECT count(*), (SELECT tableowner FROM pg_tables WHERE tablename = 'm') FROM m`, &n, &owner)
		if n != 1000 || owner != "reporting" {
			t.Errorf("metrics.m: %d rows owned by %s, want 1000 owned by reporting", n, owner)
		}
		if dst.mgr.Report().Postgres.SystemIdentifier == src.mgr.Report().Postgres.SystemIdentifier {
			t.Error("the restored instance shares the source's system identifier: it is a copy, not a new cluster")
		}
	})

	t.Run("a backup to an unreachable repository fails and says so", func(t *testing.T) {
		bad := objectstore.Location{Endpoint: fmt.Sprintf("https://127.0.0.1:%d", testutil.FreePort(t)), Bucket: "test-backups"}
		r := h.backup(src, BackupOrder{ID: "unreachable", Method: MethodLogical, Location: bad})
		if r.Phase != JobFailed || !strings.Contains(r.Error, "reaching s3://test-backups") {
			t.Fatalf("backup to nowhere: phase %s, error %q; want failed, naming the repository", r.Phase, r.Error)
		}
		h.waitFor(10*time.Second, "the primary still serves", h.ready(src, "primary"))
	})

	t.Run("a restore from a missing backup fails with a clear error", func(t *testing.T) {
		dst := h.add("missing-0")
		d := h.primary(dst)
		d.Restore = &RestoreOrder{Method: MethodLogical, Location: loc.Join("nothing", "here")}
		h.want(dst, d)
		h.waitFor(time.Minute, "the instance reports the missing backup", func() error {
			if r := h.report(dst); !strings.Contains(r.Error, "holds no finished logical backup") {
				return fmt.Errorf("error %q", r.Error)
			}
			return nil
		})
		if _, err := os.Stat(filepath.Join(dst.dir, "pgdata", "PG_VERSION")); err == nil {
			t.Error("a failed restore left a data directory in place")
		}
	})
}

// archiveNow closes n's current WAL segment and waits until it is archived.
func (h *harness) archiveNow(n *node) {
	h.t.Helper()
	var seg string
	h.superQuery(n, "postgres", `SELECT pg_walfile_name(pg_switch_wal())`, &seg)
	h.waitFor(time.Minute, "segment "+seg+" is archived", func() error {
		var last string
		h.superQuery(n, "postgres", `SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver`, &last)
		if last < seg {
			return fmt.Errorf("last archived %q, want %s", last, seg)
		}
		return nil
	})
}

// superConn connects as the superuser to database db, over TCP.
func (h *harness) superConn(ctx context.Context, n *node, db string) *pgx.Conn {
	h.t.Helper()
	pw, _ := os.ReadFile(filepath.Join(h.secrets, "superuser", "password"))
	c, err := pgx.Connect(ctx, h.dsn(n, "postgres", string(pw), db))
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// superExec runs sql as the superuser in database db.
func (h *harness) superExec(n *node, db, sql string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	c := h.superConn(ctx, n, db)
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// superQuery scans the one row sql returns, as the superuser in database db.
func (h *harness) superQuery(n *node, db, sql string, dest ...any) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	c := h.superConn(ctx, n, db)
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, sql).Scan(dest...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// TestPGBackRestBackupAndPointInTimeRestore archives a primary's WAL with
// pgBackRest into a real S3 server, takes a full backup, writes on, and
// restores into a new instance up to an LSN between two writes: the first
// must be there, the second not, on a new timeline.
func TestPGBackRestBackupAndPointInTimeRestore(t *testing.T) {
	h := newHarness(t)
	loc, cred := testutil.S3Server(t)
	h.writeRepositoryCredentials(cred)
	repo := loc.Join("src", "pgbackrest")

	src := h.add("src-0")
	d := h.primary(src)
	d.Archive = &ArchiveOrder{Stanza: "src", Location: repo}
	h.want(src, d)
	h.waitFor(time.Minute, "the source primary is ready", h.ready(src, "primary"))
	if err := h.exec(src, `CREATE TABLE t (v text PRIMARY KEY); INSERT INTO t VALUES ('in-backup')`); err != nil {
		t.Fatal(err)
	}
	r := h.backup(src, BackupOrder{ID: "full-1", Method: MethodPGBackRest, Location: repo, Stanza: "src", Type: "full"})
	if r.Phase != JobCompleted {
		t.Fatalf("backup: %s: %s", r.Phase, r.Error)
	}
	if !strings.HasSuffix(r.Label, "F") || r.BeginWAL == "" || r.EndLSN == "" || r.SizeBytes <= 0 || r.DatabaseSize <= r.SizeBytes {
		t.Errorf("backup report: %+v", r)
	}

	// Two writes with the archive between them: the target is the LSN
	// after the first.
	if err := h.exec(src, `INSERT INTO t VALUES ('before-target')`); err != nil {
		t.Fatal(err)
	}
	var target string
	h.superQuery(src, "postgres", `SELECT pg_current_wal_insert_lsn()::text`, &target)
	if err := h.exec(src, `INSERT INTO t VALUES ('after-target')`); err != nil {
		t.Fatal(err)
	}
	// Close the segment so the archive holds both writes.
	h.archiveNow(src)

	// An incremental set on top of the full one, and a target in time
	// between two more writes, for the second restore below.
	incr := h.backup(src, BackupOrder{ID: "incr-1", Method: MethodPGBackRest, Location: repo, Stanza: "src", Type: "incr"})
	if incr.Phase != JobCompleted || !strings.HasSuffix(incr.Label, "I") || !strings.HasPrefix(incr.Label, r.Label+"_") {
		t.Errorf("incremental backup: %+v; want a set labelled %s_…I", incr, r.Label)
	}
	if err := h.exec(src, `INSERT INTO t VALUES ('before-time')`); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	h.superQuery(src, "postgres", `SELECT clock_timestamp()`, &at)
	if err := h.exec(src, `INSERT INTO t VALUES ('after-time')`); err != nil {
		t.Fatal(err)
	}
	h.archiveNow(src)

	// The new cluster has passwords of its own, as its Secrets would.
	h2 := newHarness(t)
	for _, role := range []string{"superuser", "replication", "app"} {
		if err := os.WriteFile(filepath.Join(h2.secrets, role, "password"), []byte(role+"-new-cluster"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h2.writeRepositoryCredentials(cred)
	dst := h2.add("dst-0")
	dd := h2.primary(dst)
	dd.Restore = &RestoreOrder{Method: MethodPGBackRest, Location: repo, Stanza: "src", Set: r.Label, Target: pgbackrest.Target{LSN: target}}
	dd.Archive = &ArchiveOrder{Stanza: "dst", Location: loc.Join("dst", "pgbackrest")}
	h2.want(dst, dd)
	h2.waitFor(2*time.Minute, "the restored primary is ready", h2.ready(dst, "primary"))
	h2.waitFor(10*time.Second, "the restore stopped at the target, and the app role has the new password", h2.hasRows(dst, "before-target", "in-backup"))
	if tl := h2.report(dst).Postgres.Timeline; tl < 2 {
		t.Errorf("restored primary on timeline %d; a point-in-time restore must open a new one", tl)
	}
	var leftover string
	h2.superQuery(dst, "postgres", `SELECT current_setting('restore_command')`, &leftover)
	if leftover != "" {
		t.Errorf("restore_command %q left set after the restore; replicas would inherit it", leftover)
	}
	h2.waitFor(10*time.Second, "pg_hba.conf asks for passwords again once the new ones are set", func() error {
		if hba, _ := os.ReadFile(filepath.Join(dst.dir, "pgdata", "pg_hba.conf")); strings.Contains(string(hba), "trust") {
			return fmt.Errorf("pg_hba.conf still trusts the socket:\n%s", hba)
		}
		return nil
	})
	// From the incremental set, to a time between two writes.
	byTime := h2.add("dst-time-0")
	dt := h2.primary(byTime)
	dt.Restore = &RestoreOrder{Method: MethodPGBackRest, Location: repo, Stanza: "src", Set: incr.Label,
		Target: pgbackrest.Target{Time: at.UTC().Format("2006-01-02 15:04:05.999999") + "+00"}}
	h2.want(byTime, dt)
	h2.waitFor(2*time.Minute, "the primary restored to a time is ready", h2.ready(byTime, "primary"))
	h2.waitFor(10*time.Second, "the restore stopped at the time",
		h2.hasRows(byTime, "after-target", "before-target", "before-time", "in-backup"))

	// The restored cluster archives into its own stanza.
	h2.waitFor(time.Minute, "the restored primary archives its WAL", func() error {
		var archived int
		h2.superQuery(dst, "postgres", `SELECT archived_count FROM pg_stat_archiver`, &archived)
		if archived == 0 {
			h2.superExec(dst, "postgres", `SELECT pg_switch_wal()`)
			return errors.New("nothing archived yet")
		}
		return nil
	})
}
