package instance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/instance/failsafe"
	"holdfast.dev/holdfast/internal/postgres"
	"holdfast.dev/holdfast/internal/postgres/catalog"
)

// failingAfter is how long converge steps fail in a row before the
// instance reports itself failing (and the cluster Degraded): long enough
// to ride out a failover's moments without a primary.
const failingAfter = 10 * time.Second

// Manager runs and supervises postgres in one instance and converges it to
// the Desired state the operator sends.
type Manager struct {
	cfg Config
	log logr.Logger

	mu      sync.Mutex // guards desired, epochFloor, report, promise and fs
	desired *Desired
	// promise is the promise this replica gave a primary (failsafe.go).
	promise *failsafe.Promise
	// fs is this primary's failsafe period, if it has had one.
	fs failsafeState
	// epochFloor is the epoch of a primary role held before a restart and
	// not yet confirmed: nothing older is accepted.
	epochFloor int64
	report     Report

	wake chan struct{}

	// apiCreds serve the instance API and call peers' (apitls.go).
	apiCreds *apiCredentials

	// ctx is Run's context, which backup jobs run under.
	ctx     atomic.Pointer[context.Context]
	backups backupJobs

	// lease, when set, must be held for this instance to act as primary.
	lease     *LeaseKeeper
	watchdog  *watchdogLink // nil without a lease
	leaseWake chan struct{}

	// Owned by the converge loop.
	server       *server
	crashes      int
	nextStart    time.Time
	appliedConf  [32]byte
	stanza       stanzaState
	rolesApplied [32]byte
	// rolesReady: the running primary has the application's roles, set
	// since it started or replicated before its promotion. Until then it
	// is not ready: a client would be refused for a role still missing.
	rolesReady  bool
	beenReady   bool
	demotedAt   int64  // see Report.DemotedAtEpoch
	demotedLSN  string // see Report.DemotedAtLSN
	needRewind  bool
	startErr    string // see Report.StartError
	params      paramState
	errorsSince time.Time // when the steps began to fail; zero while they succeed
	catch       catchUp

	// lastLoop is when the converge loop last ran, in Unix nanoseconds;
	// the liveness probe reads it from another goroutine.
	lastLoop atomic.Int64
	// postgresAt is when report.Postgres was read; guarded by mu.
	postgresAt time.Time
	// local serves the status queries.
	local *localConn
	// monitor is the kept connection scrapes read statistics on, as the
	// monitoring role: a scrape never waits behind the converge loop.
	monitor *localConn
	// changed is closed, and replaced, when report.Changes counts a
	// change; guarded by mu.
	changed chan struct{}
	// statusWaiters counts status requests waiting for a change.
	statusWaiters atomic.Int32
}

// NewManager makes a manager; Run starts it.
func NewManager(cfg Config, log logr.Logger) *Manager {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.MaxLagBytes == 0 {
		cfg.MaxLagBytes = 16 << 20
	}
	return &Manager{cfg: cfg, log: log, wake: make(chan struct{}, 1), leaseWake: make(chan struct{}, 1), report: Report{Name: cfg.Name},
		apiCreds: newAPICredentials(cfg.SecretsDir), local: newLocalConn(), monitor: newLocalConn(),
		changed: make(chan struct{})}
}

// UseLease makes the primary role depend on holding the cluster's Lease
// (call before Run). Without it, as outside Kubernetes, the operator's word
// alone makes a primary.
// It also starts the watchdog that fences postgres should this process
// freeze while primary.
func (m *Manager) UseLease(k *LeaseKeeper) {
	m.lease = k
	m.watchdog = &watchdogLink{dataDir: m.cfg.DataDir, log: m.log.WithName("watchdog")}
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// SetDesired accepts a new desired state unless it is older than the current one.
func (m *Manager) SetDesired(d Desired) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if m.cfg.otherIncarnation(d.Incarnation) {
		return fmt.Errorf("the order is for incarnation %s of the cluster; this instance belongs to %s", d.Incarnation, m.cfg.Incarnation)
	}
	m.mu.Lock()
	if m.desired != nil && reflect.DeepEqual(*m.desired, d) {
		// The operator sends its order again until the report shows it
		// taken, which it does only once the step under way ends: a
		// demotion is then not held up by writing the same state again.
		m.mu.Unlock()
		return nil
	}
	if cur := m.currentEpoch(); d.Epoch < cur {
		m.mu.Unlock()
		return fmt.Errorf("%w: epoch %d is older than %d", ErrStale, d.Epoch, cur)
	}
	if why := m.refusePromotion(d); why != "" {
		// Having heard of the new epoch, it promises the old primary
		// nothing more: the promise lapses, and the order is taken when
		// the operator sends it again.
		m.epochFloor = max(m.epochFloor, d.Epoch)
		m.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrPromised, why)
	}
	m.desired = &d
	m.mu.Unlock()
	if m.watchdog != nil {
		// A primary told to step down stops postgres and restarts it as a
		// replica, which the watchdog must not then fence.
		m.watchdog.follow(d.Role)
	}
	if err := m.cfg.saveDesired(d); err != nil {
		return err
	}
	// A new primary renews its lease at once rather than at the next tick.
	select {
	case m.leaseWake <- struct{}{}:
	default:
	}
	m.poke()
	return nil
}

// holdsLease says whether this instance may take writes as the primary
// (it holds the lease, or no lease applies, as outside Kubernetes), and
// if not, why.
func (m *Manager) holdsLease(d *Desired) (bool, string) {
	if m.lease == nil || d.Lease == nil {
		return true, ""
	}
	ok, why := m.lease.holds(time.Duration(d.Lease.RenewDeadlineSeconds) * time.Second)
	if ok || !m.lease.mayFailsafe() {
		return ok, why
	}
	if until, missing := m.failsafeUntil(d); until == 0 {
		return false, fmt.Sprintf("%s, and no failsafe promise from %s", why, strings.Join(missing, ", "))
	}
	return true, ""
}

// currentEpoch is the epoch a new desired state must not be older than.
func (m *Manager) currentEpoch() int64 {
	if m.desired != nil {
		return max(m.desired.Epoch, m.epochFloor)
	}
	return m.epochFloor
}

// ErrStale refuses a desired state older than the one in force.
var ErrStale = errors.New("stale desired state")

// Report returns the latest report.
func (m *Manager) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.report
	r.Promise = m.promiseReport()
	if f := m.fs.report; f != nil {
		c := *f
		r.Failsafe = &c
	}
	return r
}

// reportWithVolumes is the report with the data volume's usage read now:
// for the operator and the exporter, not the probes, which need no statfs.
func (m *Manager) reportWithVolumes() Report {
	r := m.Report()
	r.Volumes = m.volumeUsage()
	return r
}

// volumeUsage reads the data volume's filesystem; a volume statfs cannot
// read is left out rather than reported empty.
func (m *Manager) volumeUsage() []VolumeUsage {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(m.cfg.DataDir), &fs); err != nil {
		return nil
	}
	bs := int64(fs.Bsize)
	return []VolumeUsage{{
		Name:           DataVolume,
		CapacityBytes:  int64(fs.Blocks) * bs,
		UsedBytes:      int64(fs.Blocks-fs.Bfree) * bs,
		AvailableBytes: int64(fs.Bavail) * bs,
	}}
}

// StatusReport is the report the operator reads, with a replica's WAL
// positions read from postgres if the converge loop read them more than
// positionsFresh ago. The loop reads them once a second when nothing else
// wakes it, and a switchover's promotion waits for the target to show it
// has received the old primary's last record: a second's staleness there
// is a second without a primary.
func (m *Manager) StatusReport(ctx context.Context) Report {
	m.mu.Lock()
	was, at := m.report.Postgres, m.postgresAt
	m.mu.Unlock()
	if was != nil && was.InRecovery && time.Since(at) > positionsFresh {
		ctx, cancel := context.WithTimeout(ctx, positionsTimeout)
		st, err := m.status(ctx)
		cancel()
		// A change of role is the converge loop's to report, with the rest
		// of what goes with it.
		if err == nil && st.InRecovery {
			m.setReport(func(r *Report) {
				if r.Postgres != nil && r.Postgres.InRecovery {
					r.Postgres, m.postgresAt = &st, time.Now()
				}
			})
		}
	}
	return m.reportWithVolumes()
}

const (
	positionsFresh   = 50 * time.Millisecond
	positionsTimeout = 300 * time.Millisecond
)

// Run converges until ctx ends, then shuts postgres down cleanly.
func (m *Manager) Run(ctx context.Context) error {
	started := time.Now()
	promise, err := m.cfg.loadPromise()
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.promise = promise
	m.mu.Unlock()
	d, foreign, err := m.cfg.loadDesired()
	if errors.Is(err, errUnreadableDesired) {
		m.log.Error(err, "waiting for the operator's word instead")
		if err := os.Rename(m.cfg.desiredFile(), m.cfg.desiredFile()+".unreadable"); err != nil {
			return fmt.Errorf("setting the unreadable desired state aside: %w", err)
		}
	} else if err != nil {
		return err
	}
	m.ctx.Store(&ctx)
	if d != nil && d.Role == postgres.Primary {
		m.mu.Lock()
		m.epochFloor = d.Epoch
		m.mu.Unlock()
	}
	resumed := m.resume(ctx, d, started)
	m.mu.Lock()
	switch {
	case m.desired != nil:
	case d != nil && d.Role == postgres.Primary && resumed != "":
		m.desired = d
		// Said together with the role it resumed, not a loop later.
		m.report.Desired, m.report.Resumed = d, &Resumption{At: time.Now(), On: resumed}
	case d != nil && d.Role == postgres.Primary:
		// A primary that restarts may have been replaced meanwhile (its pod
		// looked dead, so a replica was promoted at once): unless its
		// Lease proves otherwise, it takes no write until the operator
		// says again that it is the primary. Replicas resume at once;
		// they take no writes anyway.
		m.log.Info("restarted as primary: waiting for the operator to confirm the role", "epoch", d.Epoch)
	default:
		m.desired = d
	}
	waiting := m.desired == nil
	m.mu.Unlock()
	if waiting {
		// Otherwise a new pod that never hears from the operator logs nothing.
		m.log.Info("waiting for the operator to say what this instance is")
	}
	for _, dir := range []string{m.cfg.RunDir, filepath.Dir(m.cfg.DataDir)} {
		if err := m.ensureDir(dir, 0o700); err != nil {
			return err
		}
	}
	if err := m.clearLeftovers(); err != nil {
		return err
	}
	if err := m.adoptData(foreign); err != nil {
		return err
	}

	if m.lease != nil {
		go m.keepLease(ctx)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		m.converge(ctx)
		select {
		case <-ctx.Done():
			m.stopServer()
			m.setReport(func(r *Report) { r.Running, r.Ready, r.Role = false, false, "" })
			return nil
		case <-tick.C:
		case <-m.wake:
		}
	}
}

// resume says how a primary that restarted may take its role back
// without the operator, "" when it may not: on its Lease, which still
// proves it the primary (LeaseKeeper.resume), renewed resumeAfterStart
// after started; or, when the Lease cannot be read, on promises from
// every replica, as in a failsafe period.
func (m *Manager) resume(ctx context.Context, d *Desired, started time.Time) string {
	if d == nil || d.Role != postgres.Primary || d.Lease == nil || m.lease == nil {
		return ""
	}
	select {
	case <-ctx.Done():
		return ""
	case <-time.After(time.Until(started.Add(resumeAfterStart))):
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, why, err := m.lease.resume(rctx, d.Lease.Name)
	switch {
	case ok:
		m.log.Info("restarted as primary: resuming on the primary lease, which still names this pod", "epoch", d.Epoch)
		return ResumedOnLease
	case err == nil:
		m.log.Info("restarted as primary: not resuming on the lease", "reason", why)
		return ""
	case d.Lease.DurationSeconds <= 0 || len(d.Replicas) == 0:
		m.log.Info("restarted as primary: the lease cannot be read, and no replica can promise", "error", err.Error())
		return ""
	}
	// The API server does not answer. A replica promised to accept no
	// promotion cannot be promoted; one that has been ordered to, or is
	// primary already, or has heard of a newer epoch, promises nothing.
	// So promises from all of them prove that none took the role.
	m.gatherPromises(ctx, d)
	if until, missing := m.failsafeUntil(d); until == 0 {
		m.log.Info("restarted as primary: the lease cannot be read and not every replica promised", "error", err.Error(), "missing", missing)
		return ""
	}
	m.lease.heldBeforeRestart()
	m.noteFailsafe(d, true)
	m.log.Info("restarted as primary: resuming on the replicas' promises; the lease cannot be read", "error", err.Error(), "epoch", d.Epoch)
	return ResumedOnPromises
}

// currentDesired is a copy of the desired state in force, or nil.
func (m *Manager) currentDesired() *Desired {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.desired == nil {
		return nil
	}
	d := *m.desired
	return &d
}

// runCtx is Run's context, or the background before Run.
func (m *Manager) runCtx() context.Context {
	if c := m.ctx.Load(); c != nil {
		return *c
	}
	return context.Background()
}

func (m *Manager) setReport(f func(r *Report)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := milestones(&m.report)
	f(&m.report)
	if milestones(&m.report) != was {
		m.report.Changes++
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

// milestone is what of a report a switchover or failover waits on (see
// Report.Changes).
type milestone struct {
	role                   string
	running, ready, fenced bool
	demotedAt, epoch       int64
}

func milestones(r *Report) milestone {
	ms := milestone{role: string(r.Role), running: r.Running, ready: r.Ready, fenced: r.Fenced, demotedAt: r.DemotedAtEpoch}
	if r.Desired != nil {
		ms.epoch = r.Desired.Epoch
	}
	return ms
}

// awaitChange returns once the report's Changes differs from after, after
// wait, or when ctx ends, whichever comes first.
func (m *Manager) awaitChange(ctx context.Context, after int64, wait time.Duration) {
	m.mu.Lock()
	changes, changed := m.report.Changes, m.changed
	m.mu.Unlock()
	if changes != after || wait <= 0 {
		return
	}
	m.statusWaiters.Add(1)
	defer m.statusWaiters.Add(-1)
	t := time.NewTimer(min(wait, api.MaxStatusWait))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Alive reports whether the converge loop ran recently.
func (m *Manager) Alive() bool {
	return time.Since(time.Unix(0, m.lastLoop.Load())) < 30*time.Second
}

func (m *Manager) converge(ctx context.Context) {
	m.lastLoop.Store(time.Now().UnixNano())

	m.mu.Lock()
	var d *Desired
	if m.desired != nil {
		dd := *m.desired
		d = &dd
	}
	m.mu.Unlock()

	msg, err := m.step(ctx, d)
	switch {
	case err == nil:
		m.errorsSince = time.Time{}
	case m.errorsSince.IsZero():
		m.errorsSince = time.Now()
	}
	m.publish(ctx, d, msg, err)
}

// publish refreshes the report the operator reads. converge publishes
// after every step; a step publishes early after a role change, because
// the operator waits for that report before the next move of a
// switchover or failover, and every moment it waits no instance takes writes.
func (m *Manager) publish(ctx context.Context, d *Desired, msg string, err error) {
	var st *postgres.Status
	if m.server != nil && m.server.alive() {
		if s, qerr := m.status(ctx); qerr == nil {
			st = &s
		} else if err == nil {
			msg = "postgres is not answering yet: " + qerr.Error()
		}
	}
	m.catch.observe(d, st, time.Now())
	if d != nil && d.Role == postgres.Primary && st != nil && !st.InRecovery && !m.rolesReady {
		m.poke() // the next step sets the roles up at once, not a tick later
	}
	archiving := m.archiving(d, st)
	m.setReport(func(r *Report) {
		r.Desired = d
		r.NotStreamingSince, r.Rejoin = m.catch.since(), m.catch.last
		r.Running = m.server != nil && m.server.alive()
		r.PID = 0
		if r.Running {
			r.PID = m.server.cmd.Process.Pid
		}
		r.Fenced = d != nil && d.Fenced
		r.Postgres, m.postgresAt = st, time.Now()
		r.Archiving = archiving
		r.Restarts = m.crashes
		r.DemotedAtEpoch, r.DemotedAtLSN = m.demotedAt, m.demotedLSN
		r.Message = msg
		r.Error, r.Failing = "", ""
		if err != nil {
			r.Error = err.Error()
			m.log.Error(err, "converging")
			if !m.errorsSince.IsZero() && time.Since(m.errorsSince) > failingAfter {
				r.Failing = r.Error
			}
		}
		r.StartError = m.startErr
		r.InvalidParameters = m.params.refused
		r.Role = ""
		if st != nil {
			r.Role = postgres.Primary
			if st.InRecovery {
				r.Role = postgres.Replica
			}
		}
		r.Ready = m.ready(d, st)
		if r.Ready {
			m.beenReady = true
		}
		r.Started = m.beenReady || (st != nil && d != nil && r.Role == d.Role)
		r.BeenReady = m.beenReady
	})
}

// ready: a primary while it takes writes; a replica while it streams
// within the lag bound.
func (m *Manager) ready(d *Desired, st *postgres.Status) bool {
	if d == nil || d.Fenced || st == nil {
		return false
	}
	if d.Role == postgres.Primary {
		return !st.InRecovery && m.rolesReady
	}
	return st.InRecovery && st.Streaming && st.LagBytes <= m.cfg.MaxLagBytes
}

// step does the next thing that brings the instance closer to d, and says what.
func (m *Manager) step(ctx context.Context, d *Desired) (string, error) {
	if d == nil {
		return "waiting for the operator to say what this instance should be", nil
	}
	if d.Fenced {
		m.stopServer()
		m.startErr = "" // it is not trying to start
		return "fenced: postgres is stopped until the operator unfences it", nil
	}

	if s := m.server; s != nil && !s.alive() {
		if !s.up {
			m.startErr = s.startError()
		}
		m.crashes++
		backoff := min(time.Duration(1<<min(m.crashes-1, 5))*time.Second, 30*time.Second)
		if time.Since(s.started) > time.Minute {
			backoff = 0 // it ran a good while: restart at once
		}
		m.nextStart = time.Now().Add(backoff)
		m.log.Info("postgres exited; restarting", "status", fmt.Sprint(s.err), "startError", m.startErr, "backoff", backoff.String())
		m.server = nil
	}

	if r := d.Restore; r != nil && r.Method == MethodVolumeSnapshot && d.Role == postgres.Primary {
		if err := m.adoptSnapshot(); err != nil {
			return "", err
		}
	}
	if !exists(filepath.Join(m.cfg.DataDir, "PG_VERSION")) {
		if err := m.bootstrap(ctx, d); err != nil {
			return "", err
		}
	}

	// Read once per step: the lease keeper renews it in the background.
	leaseOK, why := m.holdsLease(d)
	if m.server != nil {
		st, err := m.status(ctx)
		if err != nil && d.Role == postgres.Primary && !leaseOK {
			// It may be taking writes, it does not say, and it may no
			// longer: stop it rather than wait to find out.
			m.log.Info("self-fencing: stopping postgres, which does not answer", "reason", why, "error", err.Error())
			m.stopServer()
			return "self-fenced, taking no writes: " + why, nil
		}
		if err != nil {
			return "starting: " + err.Error(), nil
		}
		m.server.up, m.startErr = true, ""
		switch {
		case d.Role == postgres.Primary && !st.InRecovery && !leaseOK:
			// It can no longer renew its hold on the primary role: another
			// instance may be promoted once the lease expires, so it stops
			// taking writes first.
			m.log.Info("self-fencing: stopping postgres", "reason", why)
			m.stopServer()
			return "self-fenced, taking no writes: " + why, nil
		case d.Role == postgres.Primary && st.InRecovery && m.recovering():
			// A restored backup replays its WAL up to the target, then
			// promotes itself; promoting it now would stop short.
			return "recovering the restored backup up to its target", nil
		case d.Role == postgres.Primary && st.InRecovery && !leaseOK:
			return "waiting for the primary lease before promoting: " + why, nil
		case d.Role == postgres.Primary && st.InRecovery:
			m.log.Info("promoting")
			// A standby's configuration names no synchronous standbys: a
			// server promoted on it would acknowledge commits that no
			// standby has, until the primary's is in force. So the
			// primary's goes first.
			if err := m.writeConfig(ctx, d, true); err != nil {
				return "", err
			}
			if err := m.awaitSetting(ctx, "synchronous_standby_names", postgres.SyncStandbyNames(d.SyncQuorum, d.Replicas)); err != nil {
				return "", err
			}
			if err := m.promote(ctx); err != nil {
				return "", err
			}
			m.rolesReady = true // replicated from the primary it followed
			// The replicas, already told to follow this instance, need
			// their slots to stream; and until one streams, no commit
			// under synchronous replication is acknowledged.
			if err := m.ensureSlots(ctx, d); err != nil {
				return "", err
			}
			m.publish(ctx, d, "promoted; checkpointing", nil)
			// The end-of-recovery checkpoint runs in the background; until it
			// is done the control file still names the old timeline, and
			// pg_rewind against this server would see nothing to rewind.
			if err := m.exec(ctx, `CHECKPOINT`); err != nil {
				return "", fmt.Errorf("checkpoint after promotion: %w", err)
			}
			return "promoted", m.writeConfig(ctx, d, true)
		case d.Role == postgres.Replica && !st.InRecovery:
			m.log.Info("demoting: stopping the primary to rejoin as a replica")
			// A checkpoint now leaves the shutdown checkpoint little to do,
			// which shortens the time no instance takes writes.
			if err := m.exec(ctx, `CHECKPOINT`); err != nil {
				m.log.Info("checkpoint before demotion failed; stopping anyway", "error", err.Error())
			}
			// A clean shutdown sends every WAL record to the standbys that
			// are connected: the new primary must be one of them.
			if d.Handover {
				m.awaitStreaming(ctx, d.PrimaryHost)
			}
			m.stopServer()
			m.demotedAt, m.demotedLSN = d.Epoch, m.shutdownCheckpoint(ctx)
			m.log.Info("demoted: postgres stopped")
			// The new primary is promoted once this one says it has
			// stopped: say so before rewinding.
			m.publish(ctx, d, "stopped to rejoin as a replica", nil)
		case d.Role == postgres.Replica && !st.Streaming:
			if err := m.writeConfig(ctx, d, true); err != nil {
				return "", err
			}
			diverged, err := m.diverged(ctx, d, st)
			if err != nil {
				return "not streaming: " + err.Error(), nil
			}
			if !diverged {
				return m.catchUpOrReclone(ctx, d, st)
			}
			m.log.Info("this replica's history diverged from the primary's; stopping to rewind")
			m.stopServer()
			m.needRewind = true
		default:
			if err := m.writeConfig(ctx, d, true); err != nil {
				return "", err
			}
			if d.Role == postgres.Primary {
				// Before anything can clone this primary.
				if err := m.clearRecoverySettings(ctx); err != nil {
					return "", err
				}
				// Slots first: the standbys need them to stream at all.
				if err := m.ensureSlots(ctx, d); err != nil {
					return "", err
				}
				m.ensureStanza(d)
				return "running", m.ensureRoles(ctx)
			}
			return "running", m.passwordsReplayed()
		}
	}

	if time.Now().Before(m.nextStart) {
		if m.startErr != "" {
			return fmt.Sprintf("postgres failed to start (%s); trying again in %s", m.startErr, time.Until(m.nextStart).Round(time.Second)), nil
		}
		return fmt.Sprintf("postgres crashed; restarting in %s", time.Until(m.nextStart).Round(time.Second)), nil
	}
	standby := filepath.Join(m.cfg.DataDir, "standby.signal")
	if d.Role == postgres.Replica && (!exists(standby) || m.needRewind) {
		// This data directory was a primary's, or followed one past the
		// point where the new primary's history forked.
		if err := m.rewind(ctx, d); err != nil {
			return "", err
		}
		m.needRewind = false
	} else if d.Role == postgres.Replica {
		if msg, err := m.rejoinBeforeStart(ctx, d); msg != "" || err != nil {
			return msg, err
		}
	}
	if err := m.writeConfig(ctx, d, false); err != nil {
		return "", err
	}
	switch {
	case d.Role == postgres.Replica:
		if err := m.writeFile(standby, nil, 0o600); err != nil {
			return "", err
		}
	case exists(standby):
		// A standby wanted as primary starts as a standby and is promoted
		// once running: promotion opens a new timeline, while starting it
		// without the signal file would go on writing the old one, which
		// the former primary's WAL also extends.
	case !leaseOK:
		return "not starting as primary without the primary lease: " + why, nil
	}
	m.log.Info("starting postgres", "role", d.Role)
	return "starting postgres", m.startServer()
}

// bootstrap fills an empty data directory: initdb for the first primary, a
// clone of the primary for a replica. Both write to a scratch directory and
// rename it into place, so a crash never leaves half a data directory.
func (m *Manager) bootstrap(ctx context.Context, d *Desired) error {
	scratch := m.cfg.DataDir + ".new"
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("clearing %s: %w", scratch, err)
	}
	m.rolesApplied, m.rolesReady = [32]byte{}, false
	if err := m.writePassFile(); err != nil {
		return err
	}
	if d.Role == postgres.Primary && d.Restore != nil && d.Restore.Method == MethodPGBackRest {
		if err := m.restorePhysical(ctx, scratch, *d.Restore); err != nil {
			return err
		}
	} else if d.Role == postgres.Primary {
		var src *logicalSource
		if d.Restore != nil {
			var err error
			if src, err = m.openLogicalSource(ctx, *d.Restore); err != nil {
				return err
			}
		}
		su, err := m.cfg.credentials("superuser")
		if err != nil {
			return err
		}
		pwfile := filepath.Join(m.cfg.RunDir, "initdb-pw")
		if err := m.writeFile(pwfile, []byte(su.Password+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pwfile)
		m.log.Info("initdb")
		if err := m.run(ctx, "initdb", "-D", scratch, "--data-checksums", "--auth=scram-sha-256",
			"--username="+su.Username, "--pwfile="+pwfile, "--encoding=UTF8", "--locale=C.UTF-8"); err != nil {
			return err
		}
		if src != nil {
			if err := m.restoreInto(ctx, scratch, src); err != nil {
				return err
			}
		}
	} else {
		m.log.Info("cloning the primary", "host", d.PrimaryHost)
		if err := m.clone(ctx, d, scratch); err != nil {
			return err
		}
		// A clone is a standby from birth; without the signal file it would
		// look like a former primary that needs pg_rewind.
		if err := m.writeFile(filepath.Join(scratch, "standby.signal"), nil, 0o600); err != nil {
			return err
		}
	}
	if d.Role == postgres.Primary {
		m.stanzaBeforeStart(ctx, d, scratch)
	}
	if err := os.Rename(scratch, m.cfg.DataDir); err != nil {
		return fmt.Errorf("moving the new data directory into place: %w", err)
	}
	return nil
}

func (m *Manager) clone(ctx context.Context, d *Desired, dest string) error {
	repl, err := m.cfg.credentials("replication")
	if err != nil {
		return err
	}
	return m.run(ctx, "pg_basebackup", "-D", dest, "--dbname="+m.primaryConnInfo(d, repl.Username, nil),
		"--no-password", "--wal-method=stream", "--checkpoint=fast")
}

// rewind turns a former primary's data directory into one that can follow
// the new primary; when pg_rewind cannot, it clones the primary afresh and
// keeps the old directory aside.
func (m *Manager) rewind(ctx context.Context, d *Desired) error {
	if err := m.writePassFile(); err != nil {
		return err
	}
	su, err := m.cfg.credentials("superuser")
	if err != nil {
		return err
	}
	source := m.primaryConnInfo(d, su.Username, map[string]string{"dbname": "postgres"})
	// A primary promoted a moment ago may not have checkpointed its new
	// timeline yet; pg_rewind reads the timeline from the control file.
	if primary, err := m.connectPrimary(ctx, d); err == nil {
		_, _ = primary.Exec(ctx, `CHECKPOINT`)
		primary.Close(ctx)
	}
	start := time.Now()
	err = m.run(ctx, "pg_rewind", "--target-pgdata="+m.cfg.DataDir, "--source-server="+source)
	if err == nil {
		m.log.Info("pg_rewind done", "took", time.Since(start).String())
		return nil
	}
	m.log.Error(err, "pg_rewind failed; cloning the primary afresh")
	return m.cloneAfresh(ctx, d, rewindAside)
}

// writeConfig writes postgresql.conf, pg_hba.conf and the password file,
// and reloads a running server when its settings changed.
func (m *Manager) writeConfig(ctx context.Context, d *Desired, running bool) error {
	if err := m.writePassFile(); err != nil {
		return err
	}
	repl, err := m.cfg.credentials("replication")
	if err != nil {
		return err
	}
	archive, err := m.archiveCommand(d)
	if err != nil {
		return err
	}
	if r := d.Restore; r != nil && r.Method == MethodPGBackRest && m.recovering() {
		// The run folder does not outlive the pod, recovery may.
		if err := m.writeRestoreConf(r); err != nil {
			return err
		}
	}
	hba := filepath.Join(m.cfg.DataDir, "pg_hba.conf")
	server := postgres.ServerConf{
		Name: m.cfg.Name, ListenAddresses: m.cfg.ListenAddresses, Port: m.cfg.Port, SocketDir: m.cfg.RunDir, HBAFile: hba,
		Role: d.Role,
		PrimaryConnInfo: m.primaryConnInfo(d, repl.Username, map[string]string{
			"application_name": m.cfg.Name, "connect_timeout": "5",
		}),
		SlotName:     postgres.SlotName(m.cfg.Name),
		SyncStandbys: d.Replicas, SyncQuorum: d.SyncQuorum,
		ArchiveCommand: archive,
		RestoreCommand: m.restoreCommand(d),
		HoldReplay:     m.backups.dumping(),
	}
	server.Parameters = m.acceptedParameters(ctx, server, d.Parameters)
	var certs []byte
	server.TLS, certs = m.serverTLS()
	conf := postgres.RenderConf(server)
	hbaText, identText := postgres.RenderHBA(m.foreignPasswords(), repl.Username), postgres.RenderIdent()
	sum := sha256.Sum256(slices.Concat([]byte(conf+hbaText+identText), certs))
	if running && sum == m.appliedConf {
		return nil
	}
	if err := m.writeFile(filepath.Join(m.cfg.DataDir, "postgresql.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := m.writeFile(hba, []byte(hbaText), 0o600); err != nil {
		return err
	}
	// Where postgres looks for it when ident_file is not set.
	if err := m.writeFile(filepath.Join(m.cfg.DataDir, "pg_ident.conf"), []byte(identText), 0o600); err != nil {
		return err
	}
	if running {
		if err := m.execLocal(ctx, `SELECT pg_reload_conf()`); err != nil {
			return fmt.Errorf("reloading the configuration: %w", err)
		}
		m.log.Info("configuration reloaded")
	}
	m.appliedConf = sum
	return nil
}

func (m *Manager) passFile() string { return filepath.Join(m.cfg.RunDir, "pgpass") }

func (m *Manager) writePassFile() error {
	var b strings.Builder
	for _, role := range []string{"replication", "superuser"} {
		c, err := m.cfg.credentials(role)
		if err != nil {
			return err
		}
		esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
		fmt.Fprintf(&b, "*:*:*:%s:%s\n", esc.Replace(c.Username), esc.Replace(c.Password))
	}
	return m.writeFile(m.passFile(), []byte(b.String()), 0o600)
}

// ensureRoles creates the replication role, the application owner and its
// database, and sets every password from the mounted Secrets. It runs once
// per change of the Secrets, so that a password rotated in a Secret reaches
// the database.
func (m *Manager) ensureRoles(ctx context.Context) error {
	repl, err := m.cfg.credentials("replication")
	if err != nil {
		return err
	}
	app, err := m.cfg.credentials("app")
	if err != nil {
		return err
	}
	su, err := m.cfg.credentials("superuser")
	if err != nil {
		return err
	}
	// rolesVersion is in the sum, so that roles added in a later release
	// are created on clusters made before it.
	sum := sha256.Sum256([]byte(strings.Join([]string{rolesVersion, repl.Username, repl.Password, app.Username, app.Password, su.Password, m.cfg.Database, m.cfg.Owner}, "\x00")))
	if sum == m.rolesApplied {
		m.rolesReady = true
		return nil
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	stmts, err := roleStatements(repl, su, app, m.cfg.Owner)
	if err != nil {
		return err
	}
	ident := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("setting up roles: %w", err)
		}
	}
	if m.cfg.Database != "" {
		var found bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, m.cfg.Database).Scan(&found); err != nil {
			return fmt.Errorf("looking for database %s: %w", m.cfg.Database, err)
		}
		if !found {
			if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, ident(m.cfg.Database), ident(m.cfg.Owner))); err != nil {
				return fmt.Errorf("creating database %s: %w", m.cfg.Database, err)
			}
		}
	}
	m.rolesApplied, m.rolesReady = sum, true
	if m.foreignPasswords() {
		// This cluster's passwords are in: the socket asks for them again.
		if err := os.Remove(m.foreignPasswordsMarker()); err != nil {
			return fmt.Errorf("clearing the restored-passwords marker: %w", err)
		}
		m.log.Info("set this cluster's passwords over the restored cluster's")
	}
	return nil
}

// roleStatements set up the roles every cluster has. Passwords go as
// SCRAM verifiers, so that none reaches the server's statement log
// (log_statement = ddl logs ALTER ROLE as written) or its statistics.
func roleStatements(repl, su, app Credentials, owner string) ([]string, error) {
	ident := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	var replPW, suPW, appPW string
	for _, p := range []struct {
		to       *string
		password string
	}{{&replPW, repl.Password}, {&suPW, su.Password}, {&appPW, app.Password}} {
		var err error
		if *p.to, err = catalog.PasswordLiteral(p.password); err != nil {
			return nil, err
		}
	}
	stmts := []string{
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s REPLICATION LOGIN; END IF; END$$`, lit(repl.Username), ident(repl.Username)),
		fmt.Sprintf(`ALTER ROLE %s WITH REPLICATION LOGIN PASSWORD %s`, ident(repl.Username), replPW),
		fmt.Sprintf(`ALTER ROLE %s WITH PASSWORD %s`, ident(su.Username), suPW),
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s LOGIN; END IF; END$$`, lit(postgres.MonitorUser), ident(postgres.MonitorUser)),
		fmt.Sprintf(`GRANT pg_monitor TO %s`, ident(postgres.MonitorUser)),
	}
	if owner != "" {
		stmts = append(stmts,
			fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s LOGIN; END IF; END$$`, lit(owner), ident(owner)),
			fmt.Sprintf(`ALTER ROLE %s WITH LOGIN PASSWORD %s`, ident(app.Username), appPW))
	}
	return stmts, nil
}

// ensureSlots keeps one physical slot per replica and drops Holdfast's
// slots of instances that are gone, so their WAL is not kept forever.
func (m *Manager) ensureSlots(ctx context.Context, d *Desired) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name LIKE 'holdfast\_%'`)
	if err != nil {
		return fmt.Errorf("listing slots: %w", err)
	}
	have := map[string]bool{}
	var name string
	var active bool
	_, err = pgx.ForEachRow(rows, []any{&name, &active}, func() error { have[name] = active; return nil })
	if err != nil {
		return fmt.Errorf("reading slots: %w", err)
	}
	want := map[string]bool{}
	for _, r := range d.Replicas {
		if r != m.cfg.Name {
			want[postgres.SlotName(r)] = true
		}
	}
	for slot := range want {
		if _, ok := have[slot]; !ok {
			if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, slot); err != nil {
				return fmt.Errorf("creating slot %s: %w", slot, err)
			}
		}
	}
	for slot, active := range have {
		if !want[slot] && !active {
			if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
				return fmt.Errorf("dropping slot %s: %w", slot, err)
			}
		}
	}
	return nil
}

// rolesVersion changes when ensureRoles makes roles it did not before.
const rolesVersion = "2: holdfast_monitor"

// Monitor runs f on the kept connection as the monitoring role, over the
// socket, for the exporter.
func (m *Manager) Monitor(ctx context.Context, f func(*pgx.Conn) error) error {
	return m.monitor.do(ctx, m.connectMonitor, f)
}

func (m *Manager) connectMonitor(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = m.cfg.RunDir, uint16(m.cfg.Port), postgres.MonitorUser, "postgres"
	cfg.ConnectTimeout = 3 * time.Second
	cfg.RuntimeParams["application_name"] = "holdfast-exporter"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres as %s: %w", postgres.MonitorUser, err)
	}
	return conn, nil
}

// connect connects to this instance's postgres as the superuser, over its socket.
func (m *Manager) connect(ctx context.Context) (*pgx.Conn, error) {
	su, err := m.cfg.credentials("superuser")
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Database = m.cfg.RunDir, uint16(m.cfg.Port), su.Username, "postgres"
	return m.connectAs(ctx, cfg, su.Password)
}

// connectPrimary connects to the primary as the superuser, over TLS.
func (m *Manager) connectPrimary(ctx context.Context, d *Desired) (*pgx.Conn, error) {
	su, err := m.cfg.credentials("superuser")
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(m.primaryConnInfo(d, su.Username, map[string]string{"dbname": "postgres"}))
	if err != nil {
		return nil, fmt.Errorf("the primary's connection settings: %w", err)
	}
	return m.connectAs(ctx, cfg, su.Password)
}

// primaryConnInfo is how this instance reaches its primary: over TLS,
// verifying that the server holds a certificate of the cluster's CA and
// presenting the replication certificate, which is how the replication
// role authenticates (pg_hba's cert method). The primary is dialled at
// its pod's address, which no certificate names: verify-ca, not
// verify-full. Passwords, for the superuser, come from the password file.
// The certificates are copied first: a clone runs before any
// configuration is written.
func (m *Manager) primaryConnInfo(d *Desired, user string, extra map[string]string) string {
	m.serverTLS()
	cert, key, ca := m.tls().replication()
	kv := map[string]string{
		"host": d.PrimaryHost, "port": strconv.Itoa(d.PrimaryPort), "user": user, "passfile": m.passFile(),
		"sslmode": "verify-ca", "sslrootcert": ca, "sslcert": cert, "sslkey": key,
	}
	maps.Copy(kv, extra)
	return postgres.ConnInfo(kv)
}

// connectAs connects as the manager does, with cfg and the superuser's password.
func (m *Manager) connectAs(ctx context.Context, cfg *pgx.ConnConfig, password string) (*pgx.Conn, error) {
	host, port := cfg.Host, cfg.Port
	cfg.Password = password
	cfg.ConnectTimeout = 3 * time.Second
	cfg.RuntimeParams["application_name"] = "holdfast-instance-" + m.cfg.Name
	// The manager's own writes (roles, slots) must not wait for synchronous
	// standbys: the standbys may need those very slots to connect.
	cfg.RuntimeParams["synchronous_commit"] = "local"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to postgres at %s:%d: %w", host, port, err)
	}
	return conn, nil
}

// diverged asks the primary for its timeline history and tells whether this
// replica holds WAL the primary's history does not.
func (m *Manager) diverged(ctx context.Context, d *Desired, st postgres.Status) (bool, error) {
	conn, err := m.connectPrimary(ctx, d)
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	pst, err := postgres.QueryStatus(ctx, conn)
	if err != nil {
		return false, err
	}
	if pst.InRecovery {
		return false, errors.New("the server named as primary is in recovery")
	}
	if pst.SystemIdentifier != st.SystemIdentifier {
		return true, nil // another cluster's data: rewind fails and a clone follows
	}
	if pst.Timeline == st.Timeline {
		return false, nil
	}
	var history string
	if pst.Timeline > 1 {
		if err := conn.QueryRow(ctx, `SELECT pg_read_file(format('pg_wal/%s.history', lpad(upper(to_hex($1::int)), 8, '0')))`, pst.Timeline).Scan(&history); err != nil {
			return false, fmt.Errorf("reading the primary's timeline history: %w", err)
		}
	}
	pos, err := st.WALPosition()
	if err != nil {
		return false, err
	}
	return postgres.Diverged(st.Timeline, pos, pst.Timeline, history)
}

// promote promotes this standby and waits until it takes writes.
// pg_promote's own wait looks every 100 ms; every moment of that is a
// moment without a primary.
func (m *Manager) promote(ctx context.Context) error {
	if err := m.execLocal(ctx, `SELECT pg_promote(false)`); err != nil {
		return fmt.Errorf("promoting: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, promoteWait)
	defer cancel()
	for {
		var recovering bool
		err := m.local.do(ctx, m.connect, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&recovering)
		})
		switch {
		case err != nil:
			return fmt.Errorf("waiting for the promotion to end: %w", err)
		case !recovering:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the promotion did not end within %s", promoteWait)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// promoteWait bounds the wait for a promotion to end, as pg_promote's own
// default does.
const promoteWait = 60 * time.Second

// awaitSetting waits until postgres has reloaded its configuration with
// name set to value: pg_reload_conf only signals the postmaster, which
// then signals every process. The kept connection's backend hears of it
// after the postmaster and the checkpointer (which tells the backends
// whether commits wait for synchronous standbys) were told.
func (m *Manager) awaitSetting(ctx context.Context, name, value string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		var got string
		err := m.local.do(ctx, m.connect, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&got)
		})
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %s to be reloaded: %w", name, err)
		case got == value:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is %q, not the %q reloaded", name, got, value)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// execLocal runs a short statement on the kept connection.
func (m *Manager) execLocal(ctx context.Context, sql string) error {
	return m.local.do(ctx, m.connect, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql)
		return err
	})
}

func (m *Manager) exec(ctx context.Context, sql string) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func (m *Manager) status(ctx context.Context) (postgres.Status, error) {
	// Bounded: the converge loop that asks is also the one that fences.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var st postgres.Status
	err := m.local.do(ctx, m.connect, func(conn *pgx.Conn) (err error) {
		st, err = postgres.QueryStatus(ctx, conn)
		return err
	})
	return st, err
}

func (m *Manager) writeFile(path string, data []byte, mode os.FileMode) error {
	return writeFileAtomic(path, data, mode, m.cfg.RunAs)
}

func (m *Manager) ensureDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	if m.cfg.RunAs != nil {
		if err := os.Chown(dir, int(m.cfg.RunAs.Uid), int(m.cfg.RunAs.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// demoteWait bounds how long a primary being demoted waits for the new
// primary to stream from it before it stops anyway: the operator then
// promotes the new one only once it has received what this one wrote
// (Report.DemotedAtLSN), from wherever it can.
const demoteWait = 5 * time.Second

// awaitStreaming waits, up to demoteWait, until the standby at host
// streams from this primary.
func (m *Manager) awaitStreaming(ctx context.Context, host string) {
	deadline := time.Now().Add(demoteWait)
	for {
		conn, err := m.connect(ctx)
		if err == nil {
			var streaming bool
			err = conn.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_replication WHERE client_addr = $1::inet AND state = 'streaming'`, host).Scan(&streaming)
			conn.Close(ctx)
			if err == nil && streaming {
				return
			}
		}
		if time.Now().After(deadline) {
			m.log.Info("the new primary does not stream from this one; stopping anyway", "host", host, "error", fmt.Sprint(err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shutdownCheckpoint is the location of the checkpoint a stopped server
// wrote last, "" when it cannot be read.
func (m *Manager) shutdownCheckpoint(ctx context.Context) string {
	cmd := m.command(ctx, "pg_controldata", m.cfg.DataDir)
	cmd.Env = append(cmd.Env, "LC_ALL=C")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		m.log.Error(err, "reading the shutdown checkpoint", "output", out.String())
		return ""
	}
	lsn, err := postgres.CheckpointLocation(out.String())
	if err != nil {
		m.log.Error(err, "reading the shutdown checkpoint")
	}
	return lsn
}
