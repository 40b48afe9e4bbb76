//go:build linux

package wire

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
			if sess.inLoop != nil {
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
