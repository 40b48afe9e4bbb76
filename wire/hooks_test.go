package wire

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// hooked forwards every statement with a before hook that counts its calls,
// and refuses statements containing "refuse" in the hook.
type hooked struct{ calls atomic.Int32 }

func (h *hooked) Route(_ context.Context, _ *Session, sql string) (Handler, error) {
	return ForwardHooks(func(ctx context.Context, sess *Session) error {
		h.calls.Add(1)
		if sql == "SELECT 'refuse'" {
			return Errorf("0A000", "refused by the hook")
		}
		return nil
	}, nil), nil
}

// ForwardHooks runs its before function once right before each forwarded
// statement, in the simple and the extended protocol; a failing hook fails
// the statement without forwarding it.
func TestForwardHooksBefore(t *testing.T) {
	h := &hooked{}
	p := startProxy(t, Config{UpstreamDSN: testenv.PostgresAdminDSN(t)}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connect0(t, p.dsn("", ""))
	var n int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("extended: %d, %v", n, err)
	}
	if _, err := conn.PgConn().Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Fatalf("simple: %v", err)
	}
	if got := h.calls.Load(); got != 2 {
		t.Fatalf("before ran %d times for 2 statements", got)
	}
	_, err := conn.Exec(ctx, "SELECT 'refuse'")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "0A000" {
		t.Fatalf("refused statement: %v, want 0A000 from the hook", err)
	}
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 1).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after a refusal the session must go on: %d, %v", n, err)
	}
}

// execInInspect calls Upstream.Exec from an InspectFunc, which must fail
// with ErrExecInInspect rather than wait forever for the inspected result.
type execInInspect struct{ got chan error }

func (r execInInspect) Route(context.Context, *Session, string) (Handler, error) {
	return ForwardInspect(func(ctx context.Context, sess *Session, _ *Inspected) error {
		_, err := sess.Upstream().Exec(ctx, "SELECT 1")
		r.got <- err
		return nil
	}), nil
}

func TestUpstreamExecInsideInspectFails(t *testing.T) {
	r := execInInspect{got: make(chan error, 1)}
	p := startProxy(t, Config{UpstreamDSN: testenv.PostgresAdminDSN(t)}, r)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connect0(t, p.dsn("", ""))
	var n int
	if err := conn.QueryRow(ctx, "SELECT $1::int", 7).Scan(&n); err != nil || n != 7 {
		t.Fatalf("inspected statement: %d, %v", n, err)
	}
	if err := <-r.got; !errors.Is(err, ErrExecInInspect) {
		t.Fatalf("Upstream.Exec in an InspectFunc returned %v, want ErrExecInInspect", err)
	}
}
