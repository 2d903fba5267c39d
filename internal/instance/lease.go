package instance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/ptr"

	"holdfast.dev/holdfast/internal/instance/api"
)

// LeaseKeeper renews the primary's coordination.k8s.io Lease. The API
// server arbitrates it: the operator hands it to the primary before telling
// the primary so, and promotes another instance only once it has gone
// unrenewed for its whole duration. A primary that cannot renew it within
// its renew deadline stops postgres first, so that two primaries never take
// writes, even when this one is cut off from everything but its clients.
type LeaseKeeper struct {
	Leases    coordinationv1client.LeasesGetter
	Namespace string
	Identity  string // this instance's name, the Lease's holderIdentity when it is primary
	// PodUID is this pod's UID, written on the Lease with every renewal
	// (api.LeaseHolderPodAnnotation); empty, a restarted primary never
	// resumes on its own.
	PodUID string

	mu sync.Mutex
	// heldBefore: this instance was the primary when its last process
	// ended, and the lease could not be read since (Manager.resume).
	heldBefore bool
	// renewed is when this instance last renewed it, on its own
	// CLOCK_MONOTONIC, which the watchdog process reads too; 0: never.
	renewed   time.Duration
	holder    string // the holder it last read
	lastError string
}

// errNotHolder: the lease names another instance; this one must not take writes.
var errNotHolder = errors.New("the primary lease is held by another instance")

// renew renews the named lease if this instance holds it.
func (k *LeaseKeeper) renew(ctx context.Context, name string) error {
	l, holder, err := k.read(ctx, name)
	if err != nil {
		return err
	}
	if holder != k.Identity {
		k.failed(errNotHolder)
		return fmt.Errorf("%w (%s)", errNotHolder, holder)
	}
	return k.update(ctx, l)
}

// read reads the named lease and remembers whom it names.
func (k *LeaseKeeper) read(ctx context.Context, name string) (*coordinationv1.Lease, string, error) {
	l, err := k.Leases.Leases(k.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		k.failed(err)
		return nil, "", fmt.Errorf("reading lease %s: %w", name, err)
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	k.mu.Lock()
	k.holder = holder
	k.mu.Unlock()
	return l, holder, nil
}

// update writes a renewal of l, which this instance holds. It is
// conditional on l's resourceVersion: a lease the operator has handed to
// another instance since it was read is not renewed.
func (k *LeaseKeeper) update(ctx context.Context, l *coordinationv1.Lease) error {
	started := monotonicNow()
	now := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime = &now
	if k.PodUID != "" {
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[api.LeaseHolderPodAnnotation] = k.PodUID
	}
	if _, err := k.Leases.Leases(k.Namespace).Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		k.failed(err)
		return fmt.Errorf("renewing lease %s: %w", l.Name, err)
	}
	k.mu.Lock()
	// The renewal counts from before the request: the operator may have seen
	// it as soon as it was sent.
	k.renewed, k.holder, k.lastError = started, k.Identity, ""
	k.mu.Unlock()
	return nil
}

// resumeAfterStart is how long after it started a restarted primary waits
// before it renews its lease to take its role back. The operator tells a
// primary that came back from one that died by the renewal's time against
// the time its container finished, which the API keeps to the second
// (judgePrimary): a renewal at least a second after this process started
// is later than the old process's end, whatever the rounding.
const resumeAfterStart = time.Second

// resume renews the named lease for a primary that restarted, if the lease
// proves it still is the primary: it names this instance, was last renewed
// from this pod (its container restarted; a new pod may hold other data)
// and has not expired since. A lease that names it cannot have been handed
// to another instance, which must hold it before it is promoted; and the
// operator hands it over only when the renewal that resume writes is older
// than the death it judged by, or fails on the resourceVersion. The reason
// is why it does not resume.
func (k *LeaseKeeper) resume(ctx context.Context, name string) (bool, string, error) {
	l, holder, err := k.read(ctx, name)
	if err != nil {
		return false, "", err
	}
	duration := time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 0)) * time.Second
	switch pod := l.Annotations[api.LeaseHolderPodAnnotation]; {
	case holder != k.Identity:
		return false, fmt.Sprintf("the primary lease names %q", holder), nil
	case k.PodUID == "" || pod != k.PodUID:
		return false, fmt.Sprintf("the primary lease was last renewed from pod %q, not this one", pod), nil
	case l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) >= duration:
		return false, fmt.Sprintf("the primary lease has expired (renewed %s, lasts %s)", l.Spec.RenewTime, duration), nil
	}
	if err := k.update(ctx, l); err != nil {
		return false, "", err
	}
	return true, "", nil
}

// validFor is how long this instance may still take writes on its last
// renewal.
func (k *LeaseKeeper) validFor(deadline time.Duration) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return deadline - (monotonicNow() - k.renewed)
}

// renewedAt is the last renewal's start on CLOCK_MONOTONIC.
func (k *LeaseKeeper) renewedAt() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.renewed
}

func (k *LeaseKeeper) failed(err error) {
	k.mu.Lock()
	k.lastError = err.Error()
	k.mu.Unlock()
}

// holds says whether this instance may take writes as the primary: it
// renewed the lease within deadline, and the lease named it then.
func (k *LeaseKeeper) holds(deadline time.Duration) (bool, string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.holder != "" && k.holder != k.Identity:
		return false, fmt.Sprintf("the primary lease is held by %s", k.holder)
	case k.renewed == 0:
		return false, "the primary lease has not been renewed yet" + k.errSuffix()
	case monotonicNow()-k.renewed > deadline:
		return false, fmt.Sprintf("the primary lease was last renewed %s ago%s", (monotonicNow() - k.renewed).Round(100*time.Millisecond), k.errSuffix())
	}
	return true, ""
}

// mayFailsafe: the lease was renewed by this process and, when last read,
// named this instance; only its renewals fail since. Or this instance
// resumed as primary on promises after a restart and has not read the
// lease since. Promises may stand in for it then, never for a lease held
// by another.
func (k *LeaseKeeper) mayFailsafe() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.renewed != 0 && k.holder == k.Identity || k.heldBefore && (k.holder == "" || k.holder == k.Identity)
}

// heldBeforeRestart lets promises stand in for a lease this instance held
// before it restarted, until the lease is read.
func (k *LeaseKeeper) heldBeforeRestart() {
	k.mu.Lock()
	k.heldBefore = true
	k.mu.Unlock()
}

func (k *LeaseKeeper) errSuffix() string {
	if k.lastError == "" {
		return ""
	}
	return " (" + k.lastError + ")"
}

// keepLease renews the lease every second while the desired role is primary.
func (m *Manager) keepLease(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Renewals are tried once a second and may each take a second to fail:
	// the converge loop is woken at the renew deadline itself, so that the
	// manager stops postgres then, and not up to two seconds later.
	deadline := time.AfterFunc(time.Hour, m.poke)
	deadline.Stop()
	defer deadline.Stop()
	held := false
	for {
		m.mu.Lock()
		d := m.desired
		m.mu.Unlock()
		if d != nil && d.Role == "primary" && d.Lease != nil {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			err := m.lease.renew(rctx, d.Lease.Name)
			cancel()
			if err != nil {
				m.log.Info("primary lease not renewed", "error", err.Error())
			}
			renewDeadline := time.Duration(d.Lease.RenewDeadlineSeconds) * time.Second
			if err == nil {
				m.noteFailsafe(d, false)
				deadline.Reset(m.lease.validFor(renewDeadline) + 10*time.Millisecond)
				if m.watchdog != nil {
					m.watchdog.arm(m.lease.renewedAt() + renewDeadline + watchdogGrace)
				}
			} else if m.lease.mayFailsafe() && d.Lease.DurationSeconds > 0 {
				m.gatherPromises(ctx, d)
				switch until, _ := m.failsafeUntil(d); {
				case until > m.lease.renewedAt()+renewDeadline:
					m.noteFailsafe(d, true)
					deadline.Reset(until - monotonicNow() + 10*time.Millisecond)
					if m.watchdog != nil {
						m.watchdog.arm(until + watchdogGrace)
					}
				case until == 0:
					m.noteFailsafe(d, false) // lapsed: the converge loop fences
				}
			}
			ok, _ := m.holdsLease(d)
			if ok != held {
				// Losing it, the converge loop fences postgres; gaining it,
				// a promotion waiting for it goes ahead now, not at the
				// loop's next tick.
				m.poke()
			}
			held = ok
		} else {
			held = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.leaseWake:
		}
	}
}
