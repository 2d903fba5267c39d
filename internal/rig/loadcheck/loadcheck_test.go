package loadcheck

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func ack(seq int64, ms int, server string, tli uint32, lsn uint64) Ack {
	return Ack{Seq: seq, At: t0.Add(time.Duration(ms) * time.Millisecond), Server: server, Timeline: tli, LSN: lsn}
}

func TestCheckCleanFailover(t *testing.T) {
	h := History{Acks: []Ack{
		ack(1, 0, "a", 1, 0x100), ack(2, 10, "a", 1, 0x200),
		ack(4, 3000, "b", 2, 0x400), ack(5, 3010, "b", 2, 0x500),
		// a rejoined and, after b failed, was promoted again: a later timeline.
		ack(7, 9000, "a", 3, 0x700),
	}, Failures: []Failure{{Seq: 3, At: t0.Add(20 * time.Millisecond), Err: "EOF"}, {Seq: 6, At: t0.Add(4 * time.Second)}}}
	final := Final{Seqs: []int64{1, 2, 3, 4, 5, 7}, Timeline: 3,
		History: "1\t0/300\tno recovery target specified\n\n2\t0/600\tno recovery target specified\n"}
	r := Check(h, final)
	if !r.OK() {
		t.Fatalf("clean failover reported a problem: %s", r)
	}
	if r.Acked != 5 || r.Failed != 2 || r.InDoubt != 1 || len(r.Spans) != 3 {
		t.Errorf("counts: %+v", r)
	}
}

func TestCheckFindsLostWrite(t *testing.T) {
	h := History{Acks: []Ack{ack(1, 0, "a", 1, 0x100), ack(2, 10, "a", 1, 0x200), ack(3, 3000, "b", 2, 0x400)}}
	r := Check(h, Final{Seqs: []int64{1, 3}, Timeline: 2})
	if len(r.Lost) != 1 || r.Lost[0] != 2 {
		t.Fatalf("want seq 2 lost, got %s", r)
	}
	if r.OK() {
		t.Error("a lost write must not be OK")
	}
}

func TestCheckFindsInterleavedAcks(t *testing.T) {
	// b was promoted while a kept taking writes: a's ack on timeline 1
	// comes after b's on timeline 2.
	h := History{Acks: []Ack{ack(1, 0, "a", 1, 0x100), ack(2, 100, "b", 2, 0x400), ack(3, 200, "a", 1, 0x300)}}
	r := Check(h, Final{Seqs: []int64{1, 2, 3}, Timeline: 2})
	if len(r.SplitBrain) == 0 {
		t.Fatalf("interleaved acks not reported: %s", r)
	}
	if !strings.Contains(r.SplitBrain[0], "a acknowledged seq 3 on timeline 1") {
		t.Errorf("finding: %q", r.SplitBrain[0])
	}
}

func TestCheckFindsTwoServersOnOneTimeline(t *testing.T) {
	for _, tt := range []struct {
		name     string
		acks     []Ack
		findings int
	}{
		{"the second writes below the first one's position", []Ack{ack(1, 0, "a", 2, 0x200), ack(2, 100, "b", 2, 0x100)}, 1},
		{"they take turns", []Ack{ack(1, 0, "a", 2, 0x100), ack(2, 100, "b", 2, 0x200), ack(3, 200, "a", 2, 0x300)}, 1},
		// A primary's pod recreated in place gets a new address and goes on
		// with its own WAL: no second primary.
		{"a primary back at a new address, further on", []Ack{ack(1, 0, "a", 2, 0x100), ack(2, 100, "b", 2, 0x200), ack(3, 200, "b", 2, 0x300)}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seqs := []int64{}
			for _, a := range tt.acks {
				seqs = append(seqs, a.Seq)
			}
			if r := Check(History{Acks: tt.acks}, Final{Seqs: seqs, Timeline: 2}); len(r.SplitBrain) != tt.findings {
				t.Fatalf("want %d findings, got %s: %v", tt.findings, r, r.SplitBrain)
			}
		})
	}
}

func TestCheckFindsWriteBeyondSwitchPoint(t *testing.T) {
	// Acked on timeline 1 past where timeline 2 forked: the row cannot be in
	// the surviving history even if a same-numbered row got there later.
	h := History{Acks: []Ack{ack(1, 0, "a", 1, 0x100), ack(2, 10, "a", 1, 0x900), ack(3, 3000, "b", 2, 0x1000)}}
	r := Check(h, Final{Seqs: []int64{1, 2, 3}, Timeline: 2, History: "1\t0/800\tno recovery target specified\n"})
	if len(r.SplitBrain) != 1 || !strings.Contains(r.SplitBrain[0], "past 0/800") {
		t.Fatalf("want one finding past 0/800, got %s", r)
	}
}

func TestFirstAckAfterAndGap(t *testing.T) {
	h := History{Acks: []Ack{ack(1, 0, "a", 1, 0), ack(2, 10, "a", 1, 0), ack(3, 20, "a", 1, 0), ack(4, 2520, "b", 2, 0), ack(5, 2530, "b", 2, 0)}}
	fault := t0.Add(15 * time.Millisecond)
	if d, ok := h.FirstAckAfter(fault); !ok || d != 5*time.Millisecond {
		t.Errorf("FirstAckAfter = %s, %v", d, ok)
	}
	a, ok := h.FirstAckAfterWhere(fault, func(a Ack) bool { return a.Server != "a" })
	if !ok || a.Seq != 4 {
		t.Fatalf("first ack elsewhere = %+v, %v", a, ok)
	}
	if g := h.LongestGap(fault, a.At); g != 2500*time.Millisecond {
		t.Errorf("LongestGap = %s", g)
	}
	if _, ok := h.FirstAckAfter(t0.Add(time.Hour)); ok {
		t.Error("an ack after the last one")
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 20; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Second)
	}
	s := Summarize(ds)
	if s.N != 20 || s.Median != 10*time.Second || s.P95 != 19*time.Second || s.Max != 20*time.Second {
		t.Errorf("Summarize = %+v", s)
	}
	if ds[0] != 20*time.Second {
		t.Error("Summarize sorted its input")
	}
	if Percentile(nil, 50) != 0 || Percentile([]time.Duration{time.Second}, 95) != time.Second {
		t.Error("edge cases")
	}
}

func TestNewAckReadsTimeline(t *testing.T) {
	a, err := newAck(1, t0, 0, "x", "1/A0", "0000000A")
	if err != nil || a.Timeline != 10 || a.LSN != 1<<32|0xA0 {
		t.Fatalf("newAck = %+v, %v", a, err)
	}
	if _, err := newAck(1, t0, 0, "x", "bogus", "00000001"); err == nil {
		t.Error("bad LSN accepted")
	}
}
