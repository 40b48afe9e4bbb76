package wire

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// waitStats polls the server's Stats until ok holds or the test's patience
// ends: a session's goroutine pools its upstream connection after the
// client has already gone.
func waitStats(t *testing.T, srv *Server, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := srv.Stats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func backendPID(t *testing.T, ctx context.Context, c *pgx.Conn) int {
	t.Helper()
	var pid int
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestUpstreamPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	up := testenv.PostgresDB(t)
	// With a Rerouter the relay follows the extended protocol (relayExt),
	// and the reset sends Sync only when a client left an exchange open.
	for _, m := range []struct {
		name   string
		noLoop bool
		router Router
	}{
		{"event loop", false, nil},
		{"goroutines", true, nil},
		{"event loop, tracked", false, benchPassRouter{}},
		{"goroutines, tracked", true, benchPassRouter{}},
	} {
		t.Run(m.name, func(t *testing.T) {
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop, UpstreamPoolSize: 2}, m.router)
			direct, err := pgx.Connect(ctx, up)
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close(ctx)
			var tz string
			if err := direct.QueryRow(ctx, "SHOW TimeZone").Scan(&tz); err != nil {
				t.Fatal(err)
			}
			other := "Asia/Tokyo"
			if tz == other {
				other = "America/Lima"
			}

			// A client leaves behind everything a session can hold.
			c1, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			pid1 := backendPID(t, ctx, c1)
			for _, sql := range []string{
				"SET TimeZone = '" + other + "'",
				"CREATE TEMP TABLE left_behind (x int)",
				"PREPARE left_behind AS SELECT 1",
				"LISTEN left_behind",
				"SELECT pg_advisory_lock(4242)",
			} {
				if _, err := c1.Exec(ctx, sql); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			if err := c1.Close(ctx); err != nil {
				t.Fatal(err)
			}
			waitStats(t, p.srv, "pooled after a clean Terminate", func(s Stats) bool { return s.UpstreamConnsIdle == 1 })

			// The next client gets the same backend, as new.
			c2, err := pgx.Connect(ctx, p.dsn("", ""))
			if err != nil {
				t.Fatal(err)
			}
			if pid := backendPID(t, ctx, c2); pid != pid1 {
				t.Fatalf("second client's backend %d, want the pooled %d", pid, pid1)
			}
			if got := c2.PgConn().ParameterStatus("TimeZone"); got != tz {
				t.Errorf("reported TimeZone %q, want the session default %q", got, tz)
			}
			var shown string
			if err := c2.QueryRow(ctx, "SHOW TimeZone").Scan(&shown); err != nil || shown != tz {
				t.Errorf("SHOW TimeZone = %q (%v), want %q", shown, err, tz)
			}
			var temp, prepared, channels int
			if err := c2.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class WHERE relname = 'left_behind' AND relpersistence = 't'),
				(SELECT count(*) FROM pg_prepared_statements WHERE name = 'left_behind'),
				(SELECT count(*) FROM pg_listening_channels())`).Scan(&temp, &prepared, &channels); err != nil {
				t.Fatal(err)
			}
			if temp+prepared+channels != 0 {
				t.Errorf("left behind: %d temp tables, %d prepared statements, %d channels", temp, prepared, channels)
			}
			var locked bool
			if err := direct.QueryRow(ctx, "SELECT pg_try_advisory_lock(4242)").Scan(&locked); err != nil || !locked {
				t.Errorf("advisory lock still held (%v)", err)
			}
			if _, err := direct.Exec(ctx, "SELECT pg_advisory_unlock(4242)"); err != nil {
				t.Fatal(err)
			}
			if st := p.srv.Stats(); st.UpstreamConnsReused != 1 || st.UpstreamConnsIdle != 0 {
				t.Errorf("stats %+v, want 1 reused and none idle", st)
			}

			// A client that leaves inside a transaction ends its backend.
			if _, err := c2.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			if err := c2.Close(ctx); err != nil {
				t.Fatal(err)
			}
			waitStats(t, p.srv, "closed after Terminate in a transaction", func(s Stats) bool { return s.UpstreamConns == 0 })
			if st := p.srv.Stats(); st.UpstreamConnsIdle != 0 {
				t.Errorf("a connection left in a transaction was pooled: %+v", st)
			}

			// Other startup parameters, another backend.
			a, err := pgx.Connect(ctx, p.dsn("", "application_name=a"))
			if err != nil {
				t.Fatal(err)
			}
			pidA := backendPID(t, ctx, a)
			a.Close(ctx)
			waitStats(t, p.srv, "pooled", func(s Stats) bool { return s.UpstreamConnsIdle == 1 })
			b, err := pgx.Connect(ctx, p.dsn("", "application_name=b"))
			if err != nil {
				t.Fatal(err)
			}
			if pid := backendPID(t, ctx, b); pid == pidA {
				t.Errorf("application_name=b got application_name=a's backend")
			}
			b.Close(ctx)
			waitStats(t, p.srv, "both pooled", func(s Stats) bool { return s.UpstreamConnsIdle == 2 })

			// A pooled backend that dies is not handed out.
			if _, err := direct.Exec(ctx, "SELECT pg_terminate_backend($1)", pidA); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			a2, err := pgx.Connect(ctx, p.dsn("", "application_name=a"))
			if err != nil {
				t.Fatal(err)
			}
			if pid := backendPID(t, ctx, a2); pid == pidA {
				t.Errorf("got the terminated backend %d", pid)
			}
			a2.Close(ctx)

			// The pool is bounded: it holds b's and a2's connections, so
			// these are closed.
			cs := make([]*pgx.Conn, 3)
			for i := range cs {
				if cs[i], err = pgx.Connect(ctx, p.dsn("", "application_name=c")); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range cs {
				c.Close(ctx)
			}
			st := waitStats(t, p.srv, "three sessions ended", func(s Stats) bool { return s.ClientConns == 0 && s.UpstreamConns == s.UpstreamConnsIdle })
			if st.UpstreamConnsIdle != 2 {
				t.Errorf("%d idle upstream connections, want the pool's size, 2", st.UpstreamConnsIdle)
			}

			// A client that leaves an extended-protocol exchange failed
			// and unsynced: the reset's Sync ends it, and the next client
			// gets a working backend.
			reused := p.srv.Stats().UpstreamConnsReused
			e, err := pgx.Connect(ctx, p.dsn("", "application_name=b"))
			if err != nil {
				t.Fatal(err)
			}
			pidE := backendPID(t, ctx, e)
			fe := e.PgConn().Frontend()
			fe.Send(&pgproto3.Parse{Name: "broken", Query: "SELEC 1"})
			fe.Send(&pgproto3.Flush{})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if msg, err := fe.Receive(); err != nil {
				t.Fatal(err)
			} else if er, ok := msg.(*pgproto3.ErrorResponse); !ok || er.Code != "42601" {
				t.Fatalf("Parse of bad SQL answered %#v", msg)
			}
			e.Close(ctx)
			waitStats(t, p.srv, "pooled after an unsynced error", func(s Stats) bool { return s.ClientConns == 0 && s.UpstreamConnsIdle == 2 })
			e2, err := pgx.Connect(ctx, p.dsn("", "application_name=b"))
			if err != nil {
				t.Fatal(err)
			}
			if pid := backendPID(t, ctx, e2); pid != pidE {
				t.Errorf("got backend %d, want the pooled %d", pid, pidE)
			}
			if got := p.srv.Stats().UpstreamConnsReused; got != reused+2 {
				t.Errorf("%d sessions reused a connection, want %d", got-reused, 2)
			}
			e2.Close(ctx)
		})
	}
}

func TestUpstreamPoolIdleTimeoutAndShutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	up := testenv.PostgresDB(t)
	p := startProxy(t, Config{UpstreamDSN: up, UpstreamPoolSize: 4, UpstreamIdleTimeout: 300 * time.Millisecond}, nil)
	open := func(app string) {
		c, err := pgx.Connect(ctx, p.dsn("", "application_name="+app))
		if err != nil {
			t.Fatal(err)
		}
		backendPID(t, ctx, c)
		c.Close(ctx)
	}
	open("x")
	waitStats(t, p.srv, "pooled", func(s Stats) bool { return s.UpstreamConnsIdle == 1 })
	waitStats(t, p.srv, "closed after the idle timeout", func(s Stats) bool { return s.UpstreamConns == 0 && s.UpstreamConnsIdle == 0 })

	open("y")
	waitStats(t, p.srv, "pooled again", func(s Stats) bool { return s.UpstreamConnsIdle == 1 })
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := p.srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if st := p.srv.Stats(); st.UpstreamConns != 0 || st.UpstreamConnsIdle != 0 {
		t.Errorf("after Shutdown: %+v, want no upstream connections", st)
	}
}

func TestPoolKey(t *testing.T) {
	a := poolKey(map[string]string{"user": "u1", "database": "d1", "application_name": "x", "TimeZone": "UTC"})
	b := poolKey(map[string]string{"TimeZone": "UTC", "application_name": "x", "user": "u2", "database": "d2"})
	if a != b {
		t.Errorf("keys differ by user and database only, which the upstream does not take from the client: %q, %q", a, b)
	}
	for _, other := range []map[string]string{
		{"application_name": "x"},
		{"application_name": "x", "TimeZone": "UTC", "search_path": "s"},
		{"application_name": "xTimeZone", "": "UTC"},
	} {
		if poolKey(other) == a {
			t.Errorf("%v has the key of different parameters", other)
		}
	}
}
