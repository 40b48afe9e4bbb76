package legacy

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v4"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

const testTimeout = 5 * time.Minute

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// freshDB returns the DSN of a new database with schema.sql loaded.
func freshDB(t testing.TB) string {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	if err := LoadSchema(testCtx(t), dsn); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// adminConn is a plain connection for fixtures and assertions.
func adminConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx := testCtx(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

type clientOpt func(*Config)

func withVersion(v Version) clientOpt { return func(c *Config) { c.Version = v } }
func withPageSize(n int) clientOpt    { return func(c *Config) { c.PageSize = n } }
func withPools(db, lock int32) clientOpt {
	return func(c *Config) { c.MaxConns, c.LockMaxConns = db, lock }
}

// newClient opens a deterministic, recording client on dsn.
func newClient(t testing.TB, dsn string, opts ...clientOpt) *Client {
	t.Helper()
	cfg := Config{
		DSN:      dsn,
		MaxConns: 4, LockMaxConns: 2,
		Clock:    NewStepClock(time.Date(2022, 6, 21, 12, 0, 0, 0, time.UTC), 250*time.Millisecond),
		UUIDs:    NewSeededUUIDs(1),
		Recorder: NewRecorder(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := Open(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// stmts returns the statement ids recorded since the last Reset.
func stmts(r *Recorder) []string {
	var out []string
	for _, o := range r.Outcomes() {
		out = append(out, o.Stmt)
	}
	return out
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
