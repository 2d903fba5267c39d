package instance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"holdfast.dev/holdfast/internal/backup/pgbackrest"
	"holdfast.dev/holdfast/internal/objectstore"
	"holdfast.dev/holdfast/internal/postgres"
)

// pgbackrestConf is the configuration of the cluster's own repository.
func (m *Manager) pgbackrestConf() string { return filepath.Join(m.cfg.RunDir, "pgbackrest.conf") }

// restoreConf is the configuration of the repository a restore reads.
func (m *Manager) restoreConf() string { return filepath.Join(m.cfg.RunDir, "pgbackrest-restore.conf") }

// writeRepoConf writes a pgBackRest configuration for the stanza at loc,
// with the keys mounted in credDir, describing the server on dataDir.
func (m *Manager) writeRepoConf(path, credDir, stanza, dataDir string, loc objectstore.Location) error {
	cred, err := objectstore.ReadCredentials(credDir)
	if err != nil {
		return err
	}
	su, err := m.cfg.credentials("superuser")
	if err != nil {
		return err
	}
	conf, err := pgbackrest.Config(
		pgbackrest.Repo{Stanza: stanza, Location: loc, Cred: cred, CAFile: filepath.Join(credDir, objectstore.KeyCA)},
		pgbackrest.Server{DataDir: dataDir, SocketDir: m.cfg.RunDir, Port: m.cfg.Port, User: su.Username,
			SpoolDir: m.spoolDir(), LockDir: filepath.Join(m.cfg.RunDir, "pgbackrest-lock")})
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && string(old) == conf {
		return nil // written on every step; unchanged, it stays
	}
	return m.writeFile(path, []byte(conf), 0o600)
}

// spoolDir keeps the asynchronous archiver's queue, on the data volume.
func (m *Manager) spoolDir() string {
	return filepath.Join(filepath.Dir(m.cfg.DataDir), "pgbackrest-spool")
}

// pgbackrestTool runs pgbackrest with the configuration at conf, as the
// postgres user, able to connect to the local server.
func (m *Manager) pgbackrestTool(conf string) pgbackrest.Tool {
	return func(ctx context.Context, args ...string) *exec.Cmd {
		// pgbackrest is not one of postgres's programs: PATH finds it.
		cmd := m.commandAt(ctx, "pgbackrest", append([]string{"--config=" + conf}, args...)...)
		cmd.Stdout, cmd.Stderr = nil, nil
		return cmd
	}
}

// archiveCommand is the archive_command for d: pgBackRest when the cluster
// has a repository, else one that keeps no WAL. archive_mode is always on,
// so that adding a repository later needs a reload, not a restart.
func (m *Manager) archiveCommand(d *Desired) (string, error) {
	if d.Archive == nil {
		return "true", nil
	}
	if err := m.writeArchiveConf(d.Archive); err != nil {
		return "", err
	}
	return pgbackrest.ArchiveCommand(m.pgbackrestConf(), d.Archive.Stanza), nil
}

// restoreCommand is a replica's restore_command: pgBackRest's archive-get
// from the cluster's repository, which archiveCommand configured, so that a
// replica whose primary has recycled the WAL it needs fetches it from the
// archive rather than loop on the primary's refusal.
func (m *Manager) restoreCommand(d *Desired) string {
	if d.Archive == nil || d.Role != postgres.Replica {
		return ""
	}
	return pgbackrest.RestoreCommand(m.pgbackrestConf(), d.Archive.Stanza)
}

// writeArchiveConf writes the configuration of the cluster's own repository.
func (m *Manager) writeArchiveConf(a *ArchiveOrder) error {
	if err := m.writeRepoConf(m.pgbackrestConf(), m.cfg.RepositoryDir, a.Stanza, m.cfg.DataDir, a.Location); err != nil {
		return fmt.Errorf("configuring WAL archiving: %w", err)
	}
	return nil
}

// stanzaState is what the primary knows of its stanza.
type stanzaState struct {
	// run serialises attempts: pgBackRest refuses a second stanza-create
	// while one holds its lock.
	run sync.Mutex
	mu  sync.Mutex
	// made is the repository whose stanza this primary made; busy is set
	// while an attempt runs; retryAt delays the next after a failure,
	// whose error is failed (nil after a success) for the repository
	// failedFor: a failure against a repository the cluster has since left
	// says nothing about the one it archives to now.
	made      [32]byte
	busy      bool
	retryAt   time.Time
	failed    error
	failedFor [32]byte
}

// ensureStanza creates the primary's stanza once per repository, so that
// its WAL can be archived. It runs beside the converge loop, never in it: a
// repository that does not answer must hold up archiving, not the loop
// that fences, answers the probes and takes orders.
func (m *Manager) ensureStanza(d *Desired) {
	if d.Archive == nil {
		return
	}
	archive := *d.Archive
	s := &m.stanza
	s.mu.Lock()
	defer s.mu.Unlock()
	if stanzaKey(archive) == s.made || s.busy || time.Now().Before(s.retryAt) {
		return
	}
	s.busy = true
	go func() {
		ctx, cancel := context.WithTimeout(m.runCtx(), 2*time.Minute)
		defer cancel()
		err := m.makeStanza(ctx, archive)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.busy = false
		s.failed, s.failedFor = err, stanzaKey(archive)
		if err != nil {
			m.log.Error(err, "creating the pgBackRest stanza; WAL archiving waits", "stanza", archive.Stanza)
			s.retryAt = time.Now().Add(stanzaRetry)
		}
	}()
}

// stanzaBeforeStart creates a new primary's stanza from its data
// directory alone, before postgres first runs: the first WAL it archives
// (for a restored cluster, its new timeline's history) then finds the
// stanza there. Should the repository not answer, ensureStanza tries again
// once postgres runs, and the WAL waits in pg_wal until then.
func (m *Manager) stanzaBeforeStart(ctx context.Context, d *Desired, dataDir string) {
	if d.Archive == nil {
		return
	}
	if err := m.writeArchiveConf(d.Archive); err != nil {
		m.log.Error(err, "configuring pgBackRest before the first start")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s := &m.stanza
	s.run.Lock()
	defer s.run.Unlock()
	err := pgbackrest.StanzaCreateOffline(ctx, m.pgbackrestTool(m.pgbackrestConf()), d.Archive.Stanza, dataDir)
	s.mu.Lock()
	s.failed, s.failedFor = err, stanzaKey(*d.Archive)
	if err == nil {
		s.made = stanzaKey(*d.Archive)
	}
	s.mu.Unlock()
	if err != nil {
		m.log.Error(err, "creating the pgBackRest stanza before the first start; it is tried again once postgres runs")
		return
	}
	m.log.Info("pgBackRest stanza ready", "stanza", d.Archive.Stanza, "at", d.Archive.Location.String())
}

func stanzaKey(a ArchiveOrder) [32]byte {
	return sha256.Sum256([]byte(a.Stanza + "\x00" + a.Location.String() + "\x00" + a.Location.Prefix))
}

// makeStanza creates the stanza unless this process already has.
func (m *Manager) makeStanza(ctx context.Context, a ArchiveOrder) error {
	s := &m.stanza
	s.run.Lock()
	defer s.run.Unlock()
	s.mu.Lock()
	made := s.made == stanzaKey(a)
	s.mu.Unlock()
	if made {
		return nil
	}
	if err := pgbackrest.StanzaCreate(ctx, m.pgbackrestTool(m.pgbackrestConf()), a.Stanza); err != nil {
		return err
	}
	m.log.Info("pgBackRest stanza ready", "stanza", a.Stanza, "at", a.Location.String())
	s.mu.Lock()
	s.made, s.failed = stanzaKey(a), nil
	s.mu.Unlock()
	return nil
}

const stanzaRetry = 30 * time.Second

// physicalBackup takes a pgBackRest backup of this primary.
func (m *Manager) physicalBackup(ctx context.Context, o BackupOrder) (pgbackrest.Set, error) {
	d := m.currentDesired()
	if d == nil || d.Role != "primary" || d.Archive == nil {
		return pgbackrest.Set{}, errors.New("pgBackRest backups run on the primary of a cluster that archives its WAL")
	}
	if d.Archive.Stanza != o.Stanza || d.Archive.Location != o.Location {
		return pgbackrest.Set{}, fmt.Errorf("the backup is for stanza %s at %s, but this instance archives to stanza %s at %s",
			o.Stanza, o.Location, d.Archive.Stanza, d.Archive.Location)
	}
	tool := m.pgbackrestTool(m.pgbackrestConf())
	if err := m.makeStanza(ctx, *d.Archive); err != nil {
		return pgbackrest.Set{}, err
	}
	typ := o.Type
	if typ == "" {
		typ = "full"
	}
	return pgbackrest.Backup(ctx, tool, o.Stanza, typ, o.ID)
}

// restorePhysical restores a pgBackRest set into dir, set up to recover to
// the order's target and promote once postgres starts.
func (m *Manager) restorePhysical(ctx context.Context, dir string, o RestoreOrder) error {
	if err := m.writeRestoreConf(&o); err != nil {
		return err
	}
	if err := m.ensureDir(dir, 0o700); err != nil {
		return err
	}
	m.log.Info("restoring a pgBackRest backup", "from", o.Location.String(), "stanza", o.Stanza, "set", o.Set,
		"targetTime", o.Target.Time, "targetLSN", o.Target.LSN)
	start := time.Now()
	restoreCommand := pgbackrest.RestoreCommand(m.restoreConf(), o.Stanza)
	if err := pgbackrest.Restore(ctx, m.pgbackrestTool(m.restoreConf()), o.Stanza, o.Set, dir, restoreCommand, o.Target); err != nil {
		return fmt.Errorf("restoring from %s: %w", o.Location, err)
	}
	m.log.Info("pgBackRest restore done; postgres recovers to the target on start", "took", time.Since(start).String())
	// Kept beside the data directory, not in it, so that a clone of it
	// does not carry it.
	return m.writeFile(m.foreignPasswordsMarker(), nil, 0o600)
}

// foreignPasswordsMarker, while it exists, says the data directory holds
// the source cluster's role passwords (a physical restore), so the
// manager reaches postgres over its socket without one until ensureRoles
// has set this cluster's.
func (m *Manager) foreignPasswordsMarker() string {
	return filepath.Join(filepath.Dir(m.cfg.DataDir), "holdfast-foreign-passwords")
}

func (m *Manager) foreignPasswords() bool { return exists(m.foreignPasswordsMarker()) }

// writeRestoreConf writes the configuration the restore, and postgres's
// restore_command until recovery ends, read the source's archive with. It
// names the final data directory: the restore itself is told where the
// scratch copy is.
func (m *Manager) writeRestoreConf(o *RestoreOrder) error {
	return m.writeRepoConf(m.restoreConf(), m.cfg.RestoreRepositoryDir, o.Stanza, m.cfg.DataDir, o.Location)
}

// recovering says whether postgres is replaying a restored backup's WAL
// up to its target: it must not be promoted early, which would stop short.
func (m *Manager) recovering() bool {
	return exists(filepath.Join(m.cfg.DataDir, "recovery.signal"))
}

// clearRecoverySettings drops what a restore wrote into postgresql.auto.conf
// (restore_command, recovery targets) once the restored server is a
// primary: replicas clone that file, and the source's archive and target
// would send their recovery astray.
func (m *Manager) clearRecoverySettings(ctx context.Context) error {
	auto, err := os.ReadFile(filepath.Join(m.cfg.DataDir, "postgresql.auto.conf"))
	if err != nil || !strings.Contains(string(auto), "restore_command") {
		return nil
	}
	if err := m.exec(ctx, `ALTER SYSTEM RESET ALL`); err != nil {
		return fmt.Errorf("clearing the restore's recovery settings: %w", err)
	}
	if err := m.exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return fmt.Errorf("reloading after clearing the recovery settings: %w", err)
	}
	m.log.Info("cleared the restore's recovery settings")
	return nil
}

// adoptSnapshot takes over a data directory restored from another
// cluster's VolumeSnapshot, once: it holds that cluster's passwords until
// this one's are set. The volume came from a cleanly stopped replica, so
// postgres starts as a standby with nothing to follow and is promoted, on a
// new timeline.
func (m *Manager) adoptSnapshot() error {
	marker := filepath.Join(filepath.Dir(m.cfg.DataDir), "holdfast-adopted-by")
	if b, err := os.ReadFile(marker); err == nil && string(b) == m.cfg.Cluster {
		return nil
	}
	if !exists(filepath.Join(m.cfg.DataDir, "PG_VERSION")) {
		return errors.New("the claim restored from the VolumeSnapshot holds no data directory")
	}
	if err := m.writeFile(m.foreignPasswordsMarker(), nil, 0o600); err != nil {
		return err
	}
	m.log.Info("adopted a data directory restored from a VolumeSnapshot")
	return m.writeFile(marker, []byte(m.cfg.Cluster), 0o600)
}
