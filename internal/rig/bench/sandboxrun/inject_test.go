package sandboxrun

import (
	"strings"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/loadcheck"
)

func TestWritesResumeElsewhereOrOnTheOldPrimaryAfterAFailure(t *testing.T) {
	at := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	s := func(d float64) time.Time { return at.Add(time.Duration(d * float64(time.Second))) }
	onOld := func(a loadcheck.Ack) bool { return strings.HasPrefix(a.Server, "10.0.0.1:") }
	old := func(seq int64, d float64) loadcheck.Ack {
		return loadcheck.Ack{Seq: seq, At: s(d), Server: "10.0.0.1:5432"}
	}
	other := func(seq int64, d float64) loadcheck.Ack {
		return loadcheck.Ack{Seq: seq, At: s(d), Server: "10.0.0.2:5432"}
	}

	for _, tt := range []struct {
		name         string
		h            loadcheck.History
		sameMay      bool
		wantSeq      int64
		wantCameBack bool
		wantNotYet   bool
	}{
		{name: "an ack in flight at the fault proves nothing",
			h: loadcheck.History{Acks: []loadcheck.Ack{old(1, 0.01)}}, sameMay: true, wantNotYet: true},
		{name: "a new primary's ack ends it",
			h: loadcheck.History{Acks: []loadcheck.Ack{old(1, 0.01), other(3, 5)}, Failures: []loadcheck.Failure{{Seq: 2, At: s(1)}}}, sameMay: true, wantSeq: 3},
		{name: "the old primary after a failure ends it, when it may come back",
			h: loadcheck.History{Acks: []loadcheck.Ack{old(1, 0.01), old(3, 4), other(4, 9)}, Failures: []loadcheck.Failure{{Seq: 2, At: s(1)}}}, sameMay: true, wantSeq: 3, wantCameBack: true},
		{name: "the old primary after a failure does not end a switchover",
			h: loadcheck.History{Acks: []loadcheck.Ack{old(1, 0.01), old(3, 4), other(4, 9)}, Failures: []loadcheck.Failure{{Seq: 2, At: s(1)}}}, wantSeq: 4},
		{name: "the old primary with no failure since the fault is still the one it was",
			h: loadcheck.History{Acks: []loadcheck.Ack{old(1, 0.01), old(2, 3)}}, sameMay: true, wantNotYet: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, cameBack, ok := resumed(tt.h, at, onOld, tt.sameMay)
			if tt.wantNotYet {
				if ok {
					t.Fatalf("resumed at %v (came back %v); want not yet", a, cameBack)
				}
				return
			}
			if !ok || a.Seq != tt.wantSeq || cameBack != tt.wantCameBack {
				t.Fatalf("resumed %v, came back %v, found %v; want seq %d, came back %v", a, cameBack, ok, tt.wantSeq, tt.wantCameBack)
			}
		})
	}
}
