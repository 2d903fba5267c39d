package postgrescluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	holdfastv1 "holdfast.dev/holdfast/api/v1alpha1"
	instanceapi "holdfast.dev/holdfast/internal/instance/api"
)

// A new instance manager that missed its first call must still be heard:
// a silent pod gets the short timeout, but the whole one every
// patientEvery. (A pod once stayed unheard for eight minutes: every call
// after its first was cut at silentTimeout.)
func TestASilentInstanceIsStillAskedPatiently(t *testing.T) {
	var l answerLog
	if got := l.timeout("a", now); got != instanceTimeout {
		t.Fatalf("a pod never asked: timeout %s, want %s", got, instanceTimeout)
	}
	l.record("a", nil, errors.New("connection refused"), now)
	if got := l.timeout("a", now.Add(time.Second)); got != instanceTimeout {
		t.Errorf("the first call after a silence: timeout %s, want the whole %s", got, instanceTimeout)
	}
	l.record("a", nil, errors.New("deadline exceeded"), now.Add(time.Second))
	for _, after := range []time.Duration{2 * time.Second, 5 * time.Second} {
		if got := l.timeout("a", now.Add(after)); got != silentTimeout {
			t.Errorf("%s in, silent: timeout %s, want %s", after, got, silentTimeout)
		}
	}
	if got := l.timeout("a", now.Add(time.Second+patientEvery)); got != instanceTimeout {
		t.Errorf("%s after the last patient call: timeout %s, want %s", patientEvery, got, instanceTimeout)
	}
	l.record("a", &instanceapi.Report{}, nil, now.Add(7*time.Second))
	if got := l.timeout("a", now.Add(8*time.Second)); got != instanceTimeout {
		t.Errorf("answering again: timeout %s, want %s", got, instanceTimeout)
	}
}

func TestRecordSaysWhenAnInstanceTurns(t *testing.T) {
	var l answerLog
	if _, turned := l.record("a", nil, errors.New("refused"), now); turned {
		t.Error("the first call, unanswered, counted as falling silent")
	}
	if _, turned := l.record("a", &instanceapi.Report{}, nil, now.Add(time.Second)); !turned {
		t.Error("the first answer after silence not noticed")
	}
	if _, turned := l.record("a", &instanceapi.Report{}, nil, now.Add(2*time.Second)); turned {
		t.Error("a second answer counted as a change")
	}
	if _, turned := l.record("a", nil, errors.New("timeout"), now.Add(3*time.Second)); !turned {
		t.Error("falling silent not noticed")
	}
}

func TestAnInstanceNeverHeardFromDegradesTheCluster(t *testing.T) {
	c := &holdfastv1.PostgresCluster{ObjectMeta: metav1.ObjectMeta{Name: "pitr"}, Spec: holdfastv1.PostgresClusterSpec{Instances: 2},
		Status: holdfastv1.PostgresClusterStatus{Phase: holdfastv1.PhaseCreating}}
	running := pod("pitr-0", false, func(p *corev1.Pod) {
		p.UID, p.Status.PodIP = "uid-0", "10.244.0.11"
		p.CreationTimestamp = metav1.NewTime(now.Add(-10 * time.Minute))
	})
	pods := []corev1.Pod{running}
	var l answerLog
	l.record("uid-0", nil, errors.New("context deadline exceeded"), now.Add(-startGrace+time.Second))

	// The StatefulSet still has a pod to make: the cluster is progressing,
	// which alone would hide the silent one.
	st := computeStatus(c, settled(1), pods, nil, nil)
	noteUnanswered(&st, c, pods, nil, &l, now)
	if st.Phase != holdfastv1.PhaseCreating {
		t.Fatalf("unheard for less than %s: phase %s, want Creating", startGrace, st.Phase)
	}

	l.record("uid-0", nil, errors.New("context deadline exceeded"), now.Add(-time.Second))
	st = computeStatus(c, settled(1), pods, nil, nil)
	noteUnanswered(&st, c, pods, nil, &l, now.Add(2*time.Second))
	d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded)
	if st.Phase != holdfastv1.PhaseDegraded || d.Reason != ReasonInstanceUnreachable ||
		!strings.Contains(d.Message, "pitr-0") || !strings.Contains(d.Message, "context deadline exceeded") {
		t.Errorf("unheard for longer than %s: phase %s, Degraded %+v; want Degraded, naming the pod and the error", startGrace, st.Phase, d)
	}
	if msg := st.Instances[0].Message; !strings.Contains(msg, "no answer from its instance manager") {
		t.Errorf("the instance's message %q does not say it is unheard", msg)
	}

	// Once it has answered, a later silence is the failover's to judge.
	l.record("uid-0", &instanceapi.Report{}, nil, now.Add(3*time.Second))
	l.record("uid-0", nil, errors.New("timeout"), now.Add(4*time.Second))
	st = computeStatus(c, settled(1), pods, nil, nil)
	noteUnanswered(&st, c, pods, nil, &l, now.Add(5*time.Minute))
	if d := meta.FindStatusCondition(st.Conditions, holdfastv1.ConditionDegraded); d.Reason == ReasonInstanceUnreachable {
		t.Errorf("an instance that answered before is reported unheard: %+v", d)
	}
}
