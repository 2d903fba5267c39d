package loadcheck

import (
	"context"
	"fmt"
	"testing"
	"time"

	"holdfast.dev/holdfast/internal/rig/testutil"
)

func TestWriterAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real postgres server")
	}
	s := testutil.NewPostgres(t, "--auth=trust")
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", s.Port)
	w := &Writer{ConnString: conn, Interval: time.Millisecond}
	ctx := context.Background()
	if err := w.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()

	first, err := w.WaitAck(timeoutCtx(t, 10*time.Second), time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A crash: the writer records failures, reconnects, and goes on.
	s.Stop()
	crash := time.Now()
	time.Sleep(200 * time.Millisecond)
	s.Start()
	if _, err := w.WaitAck(timeoutCtx(t, 10*time.Second), crash, nil); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	h := w.History()
	if len(h.Failures) == 0 {
		t.Error("no failure recorded across a crash")
	}
	if first.Server != fmt.Sprintf("127.0.0.1:%d", s.Port) || first.Timeline != 1 || first.LSN == 0 {
		t.Errorf("first ack: %+v", first)
	}
	final, err := ReadFinal(ctx, conn, "loadcheck")
	if err != nil {
		t.Fatal(err)
	}
	r := Check(h, final)
	if !r.OK() || r.Acked < 2 {
		t.Errorf("check: %s", r)
	}
	if d, ok := w.FirstAckAfter(crash); !ok || d < 200*time.Millisecond {
		t.Errorf("FirstAckAfter(crash) = %s, %v: the server was down for 200ms", d, ok)
	}

	// A second Writer on the same table numbers on.
	w2 := &Writer{ConnString: conn}
	if err := w2.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if w2.next < final.Seqs[len(final.Seqs)-1] {
		t.Errorf("second writer starts at %d, table holds up to %d", w2.next, final.Seqs[len(final.Seqs)-1])
	}
}

func timeoutCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
