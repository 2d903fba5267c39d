package instance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"holdfast.dev/holdfast/internal/instance/api"
	"holdfast.dev/holdfast/internal/instance/failsafe"
	"holdfast.dev/holdfast/internal/postgres"
)

// Failsafe: a primary that cannot renew its Lease because the API server
// does not answer (not because the Lease names another instance) keeps
// taking writes only while every replica it was told of has promised to
// accept no promotion (package failsafe has the rules and why they are
// safe). The manager asks for the promises once a second while renewals
// fail; a replica keeps its promise on disk, so that a restart of its
// manager does not forget it, and refuses a promotion order until it lapses.

// promiseAskTimeout bounds one request for a promise: a replica that
// answers later is counted as not having promised.
const promiseAskTimeout = 700 * time.Millisecond

// ErrPromised refuses a promotion order while a promise holds.
var ErrPromised = errors.New("promised a primary to accept no promotion")

// errRefused wraps a replica's reason for giving no promise.
var errRefused = errors.New("no promise")

// failsafeState is the primary's side, guarded by Manager.mu.
type failsafeState struct {
	tally  failsafe.Tally
	report *FailsafeReport // the period under way, or the last one
}

// GivePromise answers a primary's request, as a replica.
func (m *Manager) GivePromise(req PromiseRequest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.desired
	self := failsafe.Replica{
		Following: d != nil && d.Role == postgres.Replica && m.report.Role != postgres.Primary,
		Epoch:     m.currentEpoch(),
	}
	p, err := failsafe.Grant(m.promise, failsafe.Request{Primary: req.Primary, Epoch: req.Epoch,
		Hold: time.Duration(req.HoldMillis) * time.Millisecond}, self, monotonicNow())
	if err != nil {
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	// Kept before it is given: the word must outlive this process.
	if err := m.cfg.savePromise(p); err != nil {
		return err
	}
	m.promise = &p
	return nil
}

// refusePromotion says why d, a promotion, must wait for a promise to
// lapse; "" when it need not. Called with m.mu held.
func (m *Manager) refusePromotion(d Desired) string {
	if d.Role != postgres.Primary || m.desired != nil && m.desired.Role == postgres.Primary {
		return ""
	}
	return failsafe.Blocks(m.promise, monotonicNow())
}

// promiseReport is the promise in force, for the Report; nil when none.
// Called with m.mu held.
func (m *Manager) promiseReport() *PromiseReport {
	now := monotonicNow()
	if failsafe.Blocks(m.promise, now) == "" {
		return nil
	}
	return &PromiseReport{Primary: m.promise.Primary, Epoch: m.promise.Epoch, RemainingMillis: (m.promise.Until - now).Milliseconds()}
}

// gatherPromises asks every replica of d for a promise, at once, and
// counts those given. sentAt is read before any request goes: the
// replica's promise runs from its answer, which is later.
func (m *Manager) gatherPromises(ctx context.Context, d *Desired) {
	creds, err := m.peerClient()
	if err != nil {
		m.log.Info("failsafe: no certificate to ask the replicas with", "error", err.Error())
		return
	}
	req := PromiseRequest{Primary: m.cfg.Name, Epoch: d.Epoch, HoldMillis: int64(d.Lease.DurationSeconds) * 1000}
	validFor := time.Duration(d.Lease.RenewDeadlineSeconds) * time.Second
	sentAt := monotonicNow()
	client := api.Client{HTTP: &http.Client{Timeout: promiseAskTimeout, Transport: &http.Transport{Proxy: nil, TLSClientConfig: creds, DisableKeepAlives: true}}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused []string
	for _, name := range d.Replicas {
		host := d.ReplicaHosts[name]
		if host == "" {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, promiseAskTimeout)
			defer cancel()
			if err := client.Promise(cctx, api.URL(host), req); err != nil {
				mu.Lock()
				refused = append(refused, name+": "+err.Error())
				mu.Unlock()
				return
			}
			m.mu.Lock()
			m.fs.tally.Promised(name, sentAt, validFor)
			m.mu.Unlock()
		})
	}
	wg.Wait()
	if len(refused) > 0 {
		m.log.Info("failsafe: replicas gave no promise", "replicas", strings.Join(refused, "; "))
	}
}

// failsafeUntil is until when (CLOCK_MONOTONIC) d's primary may take
// writes on promises, 0 when it may not, and the replicas it lacks.
func (m *Manager) failsafeUntil(d *Desired) (time.Duration, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fs.tally.Until(d.Replicas, monotonicNow())
}

// noteFailsafe records the start or the end of a failsafe period.
func (m *Manager) noteFailsafe(d *Desired, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.fs.report
	switch {
	case on && (r == nil || r.Ended != nil):
		m.fs.report = &FailsafeReport{Since: time.Now(), Epoch: d.Epoch, Promised: m.fs.tally.Holders(monotonicNow())}
		m.log.Info("failsafe: the API server does not answer; taking writes on the replicas' promises", "promised", m.fs.report.Promised)
	case on:
		// Sorted, each once: every replica that promised during the period.
		r.Promised = slices.Compact(slices.Sorted(slices.Values(append(r.Promised, m.fs.tally.Holders(monotonicNow())...))))
	case !on && r != nil && r.Ended == nil:
		now := time.Now()
		r.Ended = &now
		m.fs.tally.Reset()
		m.log.Info("failsafe: ended", "lasted", now.Sub(r.Since).Round(time.Millisecond).String())
	case !on:
		m.fs.tally.Reset()
	}
}

// promiseFile keeps a replica's promise beside its desired state.
func (c Config) promiseFile() string {
	return filepath.Join(filepath.Dir(c.DataDir), "holdfast-promise.json")
}

// savedPromise is a promise on disk. CLOCK_MONOTONIC restarts with the
// machine, so the boot it was read in goes with it.
type savedPromise struct {
	failsafe.Promise
	Boot string `json:"boot"`
}

func (c Config) savePromise(p failsafe.Promise) error {
	b, err := json.Marshal(savedPromise{Promise: p, Boot: bootID()})
	if err != nil {
		return err
	}
	return writeFileAtomic(c.promiseFile(), b, 0o600, nil)
}

// loadPromise reads a promise kept by an earlier run of this manager; nil
// when there is none, or it was made before the machine restarted (a
// restart takes longer than any promise holds).
func (c Config) loadPromise() (*failsafe.Promise, error) {
	b, err := os.ReadFile(c.promiseFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the promise kept: %w", err)
	}
	var s savedPromise
	if err := json.Unmarshal(b, &s); err != nil {
		// Written whole or not at all (writeFileAtomic): this is not a
		// torn promise but a damaged disk, which the operator must see.
		return nil, fmt.Errorf("reading the promise kept in %s: %w", c.promiseFile(), err)
	}
	if s.Boot != bootID() {
		return nil, nil
	}
	return &s.Promise, nil
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}
