package instance

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"holdfast.dev/holdfast/internal/backup/logical"
	"holdfast.dev/holdfast/internal/backup/pgbackrest"
	"holdfast.dev/holdfast/internal/objectstore"
)

// ErrBusy refuses a backup while another one runs on this instance.
var ErrBusy = errors.New("another backup is running on this instance")

// backupJobs holds the backups this process ran or runs. They live in
// memory only: a restarted instance has forgotten them, which the operator
// reads as "the backup was interrupted".
type backupJobs struct {
	mu   sync.Mutex
	jobs map[string]*backupJob
}

// backupJob is one backup, as its order asked and as it went.
type backupJob struct {
	method string
	report BackupReport
	cancel context.CancelFunc
}

func (j *backupJobs) get(id string) (BackupReport, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	job, ok := j.jobs[id]
	if !ok {
		return BackupReport{}, false
	}
	return job.report, true
}

// dumping says whether a logical backup runs here now.
func (j *backupJobs) dumping() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, job := range j.jobs {
		if job.report.Phase == JobRunning && job.method == MethodLogical {
			return true
		}
	}
	return false
}

// StartBackup starts the backup o unless it is already known, and returns its state.
func (m *Manager) StartBackup(o BackupOrder) (BackupReport, error) {
	if o.ID == "" {
		return BackupReport{}, errors.New("a backup order needs an id")
	}
	if o.Method != MethodLogical && o.Method != MethodPGBackRest {
		return BackupReport{}, fmt.Errorf("backup method %q: this instance takes %q and %q backups", o.Method, MethodLogical, MethodPGBackRest)
	}
	j := &m.backups
	j.mu.Lock()
	defer j.mu.Unlock()
	if job, ok := j.jobs[o.ID]; ok {
		return job.report, nil
	}
	for _, job := range j.jobs {
		if job.report.Phase == JobRunning {
			return BackupReport{}, fmt.Errorf("%w (%s)", ErrBusy, job.report.ID)
		}
	}
	if j.jobs == nil {
		j.jobs = map[string]*backupJob{}
	}
	ctx, cancel := context.WithCancel(m.runCtx())
	job := &backupJob{method: o.Method, cancel: cancel,
		report: BackupReport{ID: o.ID, Phase: JobRunning, StartedAt: time.Now().UTC()}}
	j.jobs[o.ID] = job
	r := &job.report
	go func() {
		// Replay may go on again: the converge loop rewrites the settings.
		defer m.poke()
		defer cancel()
		var done func(r *BackupReport)
		var err error
		switch {
		case o.Method == MethodPGBackRest && o.Expire != "":
			err = pgbackrest.Expire(ctx, m.pgbackrestTool(m.pgbackrestConf()), o.Stanza, o.Expire)
			done = func(*BackupReport) {}
		case o.Method == MethodPGBackRest:
			var set pgbackrest.Set
			set, err = m.physicalBackup(ctx, o)
			done = func(r *BackupReport) {
				r.SizeBytes, r.DatabaseSize, r.Label = set.StoredSize, set.Size, set.Label
				r.BeginWAL, r.EndWAL, r.BeginLSN, r.EndLSN = set.BeginWAL, set.EndWAL, set.BeginLSN, set.EndLSN
			}
		default:
			var man logical.Manifest
			man, err = m.dump(ctx, o)
			done = func(r *BackupReport) {
				r.SizeBytes, r.ServerVersion = man.Size(), man.ServerVersion
				for _, db := range man.Databases {
					r.Databases = append(r.Databases, db.Name)
				}
			}
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		now := time.Now().UTC()
		r.StoppedAt = &now
		if err != nil {
			r.Phase, r.Error = JobFailed, err.Error()
			m.log.Error(err, "backup failed", "id", o.ID)
			return
		}
		r.Phase = JobCompleted
		done(r)
		m.log.Info("backup completed", "id", o.ID, "bytes", r.SizeBytes, "took", now.Sub(r.StartedAt).String())
	}()
	m.log.Info("backup started", "id", o.ID, "method", o.Method, "to", o.Location.String())
	m.poke()
	return *r, nil
}

// CancelBackup stops a running backup; the operator calls it past the deadline.
func (m *Manager) CancelBackup(id string) bool {
	j := &m.backups
	j.mu.Lock()
	defer j.mu.Unlock()
	job, ok := j.jobs[id]
	if ok {
		job.cancel()
	}
	return ok
}

// BackupState returns what became of a backup this process was asked for.
func (m *Manager) BackupState(id string) (BackupReport, bool) { return m.backups.get(id) }

func (m *Manager) dump(ctx context.Context, o BackupOrder) (logical.Manifest, error) {
	cred, err := objectstore.ReadCredentials(m.cfg.RepositoryDir)
	if err != nil {
		return logical.Manifest{}, err
	}
	store, err := objectstore.Open(o.Location, cred)
	if err != nil {
		return logical.Manifest{}, err
	}
	// An unreachable repository fails the backup before postgres does any work.
	if err := store.Check(ctx); err != nil {
		return logical.Manifest{}, err
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return logical.Manifest{}, err
	}
	var databases []string
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname`)
	if err == nil {
		for rows.Next() {
			var name string
			if err = rows.Scan(&name); err != nil {
				break
			}
			databases = append(databases, name)
		}
		rows.Close()
		err = errors.Join(err, rows.Err())
	}
	var version int
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version)
	}
	conn.Close(ctx)
	if err != nil {
		return logical.Manifest{}, fmt.Errorf("listing the databases: %w", err)
	}
	return logical.Dump(ctx, store, m.localTools(m.cfg.RunDir, m.cfg.Port), databases, version)
}

// localTools runs postgres client programs as the superuser against the
// server whose socket is in socketDir.
func (m *Manager) localTools(socketDir string, port int) logical.Tools {
	return func(ctx context.Context, name string, args ...string) *exec.Cmd {
		cmd := m.command(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = nil, nil
		su, err := m.cfg.credentials("superuser")
		if err == nil {
			cmd.Env = append(cmd.Env, "PGUSER="+su.Username)
		}
		cmd.Env = append(cmd.Env, "PGHOST="+socketDir, "PGPORT="+strconv.Itoa(port), "PGDATABASE=postgres",
			"PGAPPNAME=holdfast-backup")
		return cmd
	}
}

// logicalSource is a logical backup found in its repository.
type logicalSource struct {
	store    *objectstore.Store
	manifest logical.Manifest
}

// openLogicalSource opens the backup a logical restore reads, and fails when
// it is not there: before initdb, so that a missing backup costs nothing.
func (m *Manager) openLogicalSource(ctx context.Context, o RestoreOrder) (*logicalSource, error) {
	if o.Method != MethodLogical {
		return nil, fmt.Errorf("restore method %q: this instance restores %q backups here", o.Method, MethodLogical)
	}
	cred, err := objectstore.ReadCredentials(m.cfg.RestoreRepositoryDir)
	if err != nil {
		return nil, err
	}
	store, err := objectstore.Open(o.Location, cred)
	if err != nil {
		return nil, err
	}
	man, err := logical.ReadManifest(ctx, store)
	if err != nil {
		return nil, err
	}
	return &logicalSource{store: store, manifest: man}, nil
}

// restoreInto replays a logical backup into the freshly initialised data
// directory dir, on a server of its own that listens only on a socket, so
// no client sees the cluster half restored.
func (m *Manager) restoreInto(ctx context.Context, dir string, src *logicalSource) error {
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories='%s' -c port=%d", m.cfg.RunDir, m.cfg.Port)
	logFile := m.cfg.RunDir + "/restore-postgres.log"
	if err := m.run(ctx, "pg_ctl", "start", "--wait", "--timeout=300", "-D", dir, "-o", opts, "-l", logFile); err != nil {
		return fmt.Errorf("starting postgres to restore into: %w", err)
	}
	stop := func() error {
		return m.run(context.WithoutCancel(ctx), "pg_ctl", "stop", "--wait", "--timeout=300", "-m", "fast", "-D", dir)
	}
	from := src.store.Location()
	m.log.Info("restoring a logical backup", "from", from.String())
	start := time.Now()
	if err := logical.Restore(ctx, src.store, src.manifest, m.localTools(m.cfg.RunDir, m.cfg.Port)); err != nil {
		return errors.Join(fmt.Errorf("restoring from %s: %w", from, err), stop())
	}
	if err := stop(); err != nil {
		return fmt.Errorf("stopping postgres after the restore: %w", err)
	}
	m.log.Info("restore done", "databases", len(src.manifest.Databases), "took", time.Since(start).String())
	return nil
}
