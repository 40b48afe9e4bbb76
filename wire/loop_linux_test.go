//go:build linux && cgo

package wire

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// A passthrough session over plain TCP is relayed by the event loop,
// although both its connections are wrapped for raw I/O (internal/rawnet):
// the loop must still find their descriptors, or every session would fall
// back to the slower goroutine relay without a word.
func TestPlainTCPSessionRunsOnEventLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := startProxy(t, Config{UpstreamDSN: testenv.PostgresDB(t)}, nil)
	conn, err := pgx.Connect(ctx, p.dsn("", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	inLoop := func() (n int) {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		for sess := range p.srv.sessions {
			sess.mu.Lock()
			if sess.loopSess != nil {
				n++
			}
			sess.mu.Unlock()
		}
		return n
	}
	for i := 0; i < 3; i++ {
		var got int
		if err := conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&got); err != nil || got != i {
			t.Fatalf("SELECT %d = %d, %v", i, got, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for inLoop() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions on the event loop, want 1", inLoop())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The relay thread logs what the phase-switch tracking follows, and the
// session's goroutine drains the log while the session runs (here a few
// times: each Sync and ReadyForQuery take 12 bytes of a 64 KiB log that is
// drained when half full). Statements prepared before and after the drains
// are all known when the session is re-routed.
func TestRerouteAfterLogDrains(t *testing.T) {
	r := newPhaseRouter(phaseRelay)
	p := startProxy(t, Config{UpstreamDSN: testenv.PostgresDB(t)}, r)
	ctx := ctxT(t)
	conn := connect0(t, p.dsn("", ""))
	prepare := func(name string) {
		if _, err := conn.Prepare(ctx, name, "SELECT $1::int8 AS "+name); err != nil {
			t.Fatal(err)
		}
	}
	prepare("before")
	for i := 0; i < 8000; i++ {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	prepare("after")
	r.set(phaseLocal)
	for _, name := range []string{"before", "after"} {
		var v int64
		if err := conn.QueryRow(ctx, name, 8).Scan(&v); err != nil || v != want(phaseLocal, 8) {
			t.Fatalf("%s after the switch: %d %v, want %d", name, v, err, want(phaseLocal, 8))
		}
	}
	if got := r.reroutes.Load(); got != 1 {
		t.Fatalf("%d re-routes, want 1", got)
	}
}

// The relay thread pauses before waiting only while many sessions are busy
// at once: a session busy alone never waits for the pause (its latency is
// the case to protect), and 48 sessions querying together make the threads
// pause and batch, with every answer still right.
func TestRelayCoalescesOnlyWhenManySessionsAreBusy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := startProxy(t, Config{UpstreamDSN: testenv.PostgresDB(t), RelayCoalesce: 30 * time.Microsecond}, nil)
	pauses := func() (n uint64) {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		for _, l := range p.srv.loops {
			n += l.pauses()
		}
		return n
	}
	query := func(conn *pgx.Conn, i int) error {
		var got int
		if err := conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&got); err != nil {
			return err
		}
		if got != i {
			return fmt.Errorf("SELECT %d = %d", i, got)
		}
		return nil
	}
	alone, err := pgx.Connect(ctx, p.dsn("", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close(ctx)
	for i := range 500 {
		if err := query(alone, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := pauses(); n != 0 {
		t.Fatalf("%d pauses with one session busy, want none", n)
	}

	const sessions = 48 // over GOMAXPROCS threads, at least 16 each
	g, gctx := errgroup.WithContext(ctx)
	busy, stop := make(chan struct{}, sessions), make(chan struct{})
	for range sessions {
		g.Go(func() error {
			conn, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			for i := 0; ; i++ {
				if err := query(conn, i); err != nil {
					return err
				}
				if i == 10 {
					busy <- struct{}{}
				}
				select {
				case <-stop:
					return nil
				default:
				}
			}
		})
	}
	for range sessions {
		select {
		case <-busy:
		case <-gctx.Done(): // a session failed, or the test timed out
			close(stop)
			t.Fatalf("sessions did not start: %v", g.Wait())
		}
	}
	for pauses() == 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if pauses() == 0 {
		t.Fatalf("no pause with %d sessions busy", sessions)
	}
}
