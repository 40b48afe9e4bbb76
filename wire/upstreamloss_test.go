package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pgx4 "github.com/jackc/pgx/v4"
	pgxpool4 "github.com/jackc/pgx/v4/pgxpool"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

// optRouter is testRouter opted in to surviving upstream loss.
type optRouter struct {
	*testRouter
	opt atomic.Bool
}

func (r *optRouter) UpstreamOptional(*Session) bool { return r.opt.Load() }

// passOptional relays every session but would keep routed ones.
type passOptional struct{ passRouter }

func (*passOptional) UpstreamOptional(*Session) bool { return true }

func newOptRouter() *optRouter {
	r := &optRouter{testRouter: &testRouter{}}
	r.opt.Store(true)
	return r
}

// lossObserver counts lost upstreams.
type lossObserver struct{ lost atomic.Int64 }

func (*lossObserver) ClientConnOpened()         {}
func (*lossObserver) ClientConnClosed()         {}
func (*lossObserver) ClientConnRejected(string) {}
func (*lossObserver) UpstreamConnOpened()       {}
func (*lossObserver) UpstreamConnClosed()       {}
func (o *lossObserver) UpstreamConnLost()       { o.lost.Add(1) }

// lossClient is a pgx v4 or v5 connection with its statement cache.
type lossClient struct {
	name     string
	queryInt func(ctx context.Context, sql string, args ...any) (int64, error)
	exec     func(ctx context.Context, sql string) error
}

func lossV5(t *testing.T, name, dsn string) (*lossClient, *pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return &lossClient{name: name,
		queryInt: func(ctx context.Context, sql string, args ...any) (int64, error) {
			var v int64
			err := c.QueryRow(ctx, sql, args...).Scan(&v)
			return v, err
		},
		exec: func(ctx context.Context, sql string) error { _, err := c.Exec(ctx, sql); return err },
	}, c, nil
}

func lossV4(t *testing.T, name, dsn string) (*lossClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx4.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return &lossClient{name: name,
		queryInt: func(ctx context.Context, sql string, args ...any) (int64, error) {
			var v int64
			err := c.QueryRow(ctx, sql, args...).Scan(&v)
			return v, err
		},
		exec: func(ctx context.Context, sql string) error { _, err := c.Exec(ctx, sql); return err },
	}, nil
}

const (
	fwdPlusOne = `SELECT $1::int8 + 1`
	fwdPID     = `SELECT pg_backend_pid()::int8`
)

// checkLocal runs local statements (extended, prepared; and simple, in a
// transaction the Router owns).
func (c *lossClient) checkLocal(ctx context.Context, i int64) error {
	if err := c.exec(ctx, `/*local*/ BEGIN`); err != nil {
		return fmt.Errorf("%s: local BEGIN: %w", c.name, err)
	}
	v, err := c.queryInt(ctx, `/*local*/ ECHO $1`, i)
	if err != nil {
		return fmt.Errorf("%s: local ECHO: %w", c.name, err)
	}
	if v != i {
		return fmt.Errorf("%s: local ECHO %d returned %d", c.name, i, v)
	}
	if err := c.exec(ctx, `/*local*/ SELECT 42`); err != nil {
		return fmt.Errorf("%s: local SELECT 42: %w", c.name, err)
	}
	if err := c.exec(ctx, `/*local*/ COMMIT`); err != nil {
		return fmt.Errorf("%s: local COMMIT: %w", c.name, err)
	}
	return nil
}

// checkForward runs a forwarded prepared statement and returns the
// upstream backend's pid.
func (c *lossClient) checkForward(ctx context.Context, i int64) (int64, error) {
	v, err := c.queryInt(ctx, fwdPlusOne, i)
	if err != nil {
		return 0, fmt.Errorf("%s: forwarded: %w", c.name, err)
	}
	if v != i+1 {
		return 0, fmt.Errorf("%s: forwarded %d+1 returned %d", c.name, i, v)
	}
	pid, err := c.queryInt(ctx, fwdPID)
	if err != nil {
		return 0, fmt.Errorf("%s: forwarded pid: %w", c.name, err)
	}
	return pid, nil
}

// TestUpstreamRestart restarts a private PostgreSQL under an opted-in
// routed proxy (and a proxy whose Router does not opt in, on the same
// server) while pgx v4 and v5 clients run locally answered statements.
func TestUpstreamRestart(t *testing.T) {
	pg := testenv.StartPrivatePostgres(t)
	{
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := pgx.Connect(ctx, pg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Exec(ctx, `CREATE TABLE outbox (id serial PRIMARY KEY, v text)`)
		c.Close(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	obs := &lossObserver{}
	opt := startProxy(t, Config{UpstreamDSN: pg.DSN, Observer: obs}, newOptRouter())
	// Sessions that keep today's behaviour: a Router without the
	// interface, one that says no, and relayed sessions of one that says
	// yes.
	optOff := newOptRouter()
	optOff.opt.Store(false)
	plains := []struct {
		name string
		p    *proxy
		conn *pgx.Conn
	}{
		{name: "no-interface", p: startProxy(t, Config{UpstreamDSN: pg.DSN}, &testRouter{})},
		{name: "optional-false", p: startProxy(t, Config{UpstreamDSN: pg.DSN}, optOff)},
		{name: "passthrough", p: startProxy(t, Config{UpstreamDSN: pg.DSN}, &passOptional{})},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var clients []*lossClient
	for i := 0; i < 2; i++ {
		c5, _, err := lossV5(t, fmt.Sprintf("v5-%d", i), opt.dsn("", ""))
		if err != nil {
			t.Fatal(err)
		}
		c4, err := lossV4(t, fmt.Sprintf("v4-%d", i), opt.dsn("", ""))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c5, c4)
	}
	pids := map[*lossClient]int64{}
	for _, c := range clients {
		pid, err := c.checkForward(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		pids[c] = pid
		if err := c.checkLocal(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	serverVersion := ""
	_, txConn, err := lossV5(t, "v5-tx", opt.dsn("", ""))
	if err != nil {
		t.Fatal(err)
	}
	serverVersion = txConn.PgConn().ParameterStatus("server_version")
	// A client changed a reported parameter: a new upstream connection
	// must keep it.
	if err := clients[2].exec(ctx, `SET TimeZone = 'Asia/Tokyo'`); err != nil {
		t.Fatal(err)
	}
	// A transaction open upstream, idle when the upstream goes away.
	_, idleConn, err := lossV5(t, "v5-idle-tx", opt.dsn("", ""))
	if err != nil {
		t.Fatal(err)
	}
	idleTx, err := idleConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idleTx.Exec(ctx, `INSERT INTO outbox(v) VALUES ('lost')`); err != nil {
		t.Fatal(err)
	}
	// Extended protocol in a transaction lost while idle.
	raw := dialRaw(t, opt.addr)
	_ = raw.conn.SetDeadline(time.Now().Add(5 * time.Minute))
	raw.startup()
	if got, st := raw.exchange(&pgproto3.Query{String: "BEGIN"}); got != "CZ" || st != 'T' {
		t.Fatalf("raw BEGIN: %q %c", got, st)
	}
	for i := range plains {
		plains[i].conn = connect0(t, plains[i].p.dsn("", ""))
		if _, err := plains[i].conn.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}

	// Clients 0 and 1 (v5, v4) run local statements without pause until
	// after the restart: not one error is allowed.
	var ops atomic.Int64
	var loadErr error
	var loadMu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// And pools, as lakeFS uses them (pgx v4), and pgx v5's (which pings
	// connections idle for more than a second before handing them out).
	pool5, err := pgxpool.New(ctx, opt.dsn("", "pool_max_conns=3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool5.Close)
	pool4, err := pgxpool4.Connect(ctx, opt.dsn("", "pool_max_conns=3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool4.Close)
	load := append([]*lossClient{}, clients[:2]...)
	for i := 0; i < 3; i++ {
		load = append(load, &lossClient{name: fmt.Sprintf("pool-v5-%d", i),
			queryInt: func(ctx context.Context, sql string, args ...any) (int64, error) {
				var v int64
				err := pool5.QueryRow(ctx, sql, args...).Scan(&v)
				return v, err
			},
			exec: func(ctx context.Context, sql string) error { _, err := pool5.Exec(ctx, sql); return err },
		}, &lossClient{name: fmt.Sprintf("pool-v4-%d", i),
			queryInt: func(ctx context.Context, sql string, args ...any) (int64, error) {
				var v int64
				err := pool4.QueryRow(ctx, sql, args...).Scan(&v)
				return v, err
			},
			exec: func(ctx context.Context, sql string) error { _, err := pool4.Exec(ctx, sql); return err },
		})
	}
	for _, c := range load {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(2); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.checkLocal(ctx, i); err != nil {
					loadMu.Lock()
					if loadErr == nil {
						loadErr = err
					}
					loadMu.Unlock()
					return
				}
				ops.Add(1)
			}
		}()
	}

	// A forwarded statement in flight inside a transaction when the
	// upstream goes down.
	tx, err := txConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error, 1)
	go func() {
		_, err := tx.Exec(ctx, `SELECT pg_sleep(60)`)
		inflight <- err
	}()
	// And one in the extended protocol (Bind/Execute/Sync), no transaction.
	extClient, err := lossV4(t, "v4-inflight", opt.dsn("", ""))
	if err != nil {
		t.Fatal(err)
	}
	extInflight := make(chan error, 1)
	go func() {
		_, err := extClient.queryInt(ctx, `SELECT 1::int8 FROM pg_sleep($1::float8)`, 60.0)
		extInflight <- err
	}()
	waitSleeping(t, ctx, pg.DSN, 2)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}

	t.Run("in-flight", func(t *testing.T) {
		err := <-inflight
		if sqlState(err) != CodeConnectionFailure {
			t.Fatalf("in-flight statement: %v, want SQLSTATE %s", err, CodeConnectionFailure)
		}
		if got := txConn.PgConn().TxStatus(); got != 'E' {
			t.Fatalf("transaction status after the loss %q, want E (the upstream transaction is gone)", got)
		}
		if _, err := tx.Exec(ctx, `SELECT 1`); sqlState(err) != CodeInFailedTransaction {
			t.Fatalf("statement in the lost transaction: %v, want %s", err, CodeInFailedTransaction)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatalf("rollback of the lost transaction: %v", err)
		}
		var v int64
		if err := txConn.QueryRow(ctx, `/*local*/ ECHO $1`, 5).Scan(&v); err != nil || v != 5 || txConn.IsClosed() {
			t.Fatalf("local statement after the loss: %d %v (closed %v)", v, err, txConn.IsClosed())
		}
		if err := <-extInflight; sqlState(err) != CodeConnectionFailure {
			t.Fatalf("in-flight extended statement: %v, want SQLSTATE %s", err, CodeConnectionFailure)
		}
		if err := extClient.checkLocal(ctx, 5); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("idle-transaction", func(t *testing.T) {
		// Local statements are the Router's; the upstream part is gone, so
		// COMMIT reports ROLLBACK, as PostgreSQL for a failed transaction.
		if _, err := idleTx.Exec(ctx, `/*local*/ SELECT 42`); err != nil {
			t.Fatal(err)
		}
		if got := idleConn.PgConn().TxStatus(); got != 'E' {
			t.Fatalf("status %q after the loss, want E", got)
		}
		if err := idleTx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("commit of the lost transaction: %v, want ErrTxCommitRollback", err)
		}
		if got := idleConn.PgConn().TxStatus(); got != 'I' {
			t.Fatalf("status %q after the rollback, want I", got)
		}
	})

	t.Run("extended-lost-transaction", func(t *testing.T) {
		// As PostgreSQL in a failed transaction: Parse of ROLLBACK is
		// accepted, anything else gets 25P02; ROLLBACK ends it.
		got, st := raw.exchange(&pgproto3.Parse{Name: "r", Query: "ROLLBACK"}, &pgproto3.Parse{Name: "x", Query: "SELECT 1"}, &pgproto3.Sync{})
		if got != "1EZ" || st != 'E' {
			t.Fatalf("Parse in the lost transaction: %q %c, want \"1EZ\" E", got, st)
		}
		got, st = raw.exchange(&pgproto3.Describe{ObjectType: 'S', Name: "r"}, &pgproto3.Bind{PreparedStatement: "r"},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
		if got != "tn2nCZ" || st != 'I' {
			t.Fatalf("ROLLBACK of the lost transaction: %q %c, want \"tn2nCZ\" I", got, st)
		}
		if got, st := raw.exchange(&pgproto3.Query{String: "/*local*/ SELECT 42"}); got != "TDCZ" || st != 'I' {
			t.Fatalf("local after the rollback: %q %c", got, st)
		}
	})

	t.Run("exec-while-down", func(t *testing.T) {
		// Upstream().Exec from a local statement fails like a forwarded one.
		_, err := idleConn.Exec(ctx, `/*local*/ OUTBOX $1`, "down")
		if code := sqlState(err); code != CodeConnectionFailure && code != CodeCannotConnectNow {
			t.Fatalf("Exec while down: %v, want 08006 or 57P03", err)
		}
		var v int64
		if err := idleConn.QueryRow(ctx, `/*local*/ ECHO $1`, 6).Scan(&v); err != nil || v != 6 {
			t.Fatalf("local after the failed Exec: %d %v", v, err)
		}
	})

	t.Run("forwarded-while-down", func(t *testing.T) {
		for _, c := range clients[2:] {
			_, err := c.queryInt(ctx, fwdPlusOne, 3)
			if code := sqlState(err); code != CodeConnectionFailure && code != CodeCannotConnectNow {
				t.Fatalf("%s: forwarded while down: %v, want 08006 or 57P03", c.name, err)
			}
			if err := c.checkLocal(ctx, 3); err != nil {
				t.Fatalf("after the failed forward: %v", err)
			}
		}
	})

	var late []*lossClient
	outer := t // the connections outlive the subtest
	t.Run("connect-while-down", func(t *testing.T) {
		c5, conn5, err := lossV5(outer, "v5-late", opt.dsn("", "application_name=late"))
		if err != nil {
			t.Fatalf("v5 connect while the upstream is down: %v", err)
		}
		if got := conn5.PgConn().ParameterStatus("server_version"); got != serverVersion {
			t.Fatalf("server_version %q while down, want the last seen %q", got, serverVersion)
		}
		if got := conn5.PgConn().ParameterStatus("application_name"); got != "late" {
			t.Fatalf("application_name %q, want late", got)
		}
		c4, err := lossV4(outer, "v4-late", opt.dsn("", ""))
		if err != nil {
			t.Fatalf("v4 connect while the upstream is down: %v", err)
		}
		for _, c := range []*lossClient{c5, c4} {
			if err := c.checkLocal(ctx, 4); err != nil {
				t.Fatal(err)
			}
		}
		late = append(late, c5, c4)
	})

	t.Run("not-opted-in", func(t *testing.T) {
		// Today's behaviour: the session ends with its upstream, and a new
		// one cannot start without it.
		for _, pl := range plains {
			t.Run(pl.name, func(t *testing.T) {
				_, err := pl.conn.Exec(ctx, `SELECT 1`)
				if err == nil || !pl.conn.IsClosed() {
					t.Fatalf("session after the upstream stopped: err %v, closed %v", err, pl.conn.IsClosed())
				}
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				defer ccancel()
				c, err := pgx.Connect(cctx, pl.p.dsn("", ""))
				if err == nil {
					c.Close(ctx)
					t.Fatal("proxy accepted a session without its upstream")
				}
				if code := sqlState(err); code != CodeUnableToConnect && code != CodeCannotConnectNow {
					t.Fatalf("connect while down: %v, want 08001 or 57P03", err)
				}
			})
		}
	})

	time.Sleep(time.Second)
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if loadErr != nil {
		t.Fatalf("client error while the upstream restarted: %v", loadErr)
	}
	if ops.Load() == 0 {
		t.Fatal("the load ran no statement")
	}
	t.Logf("%d local round trips during the restart", ops.Load())

	t.Run("after-restart", func(t *testing.T) {
		for _, c := range clients {
			pid, err := c.checkForward(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if pid == pids[c] {
				t.Fatalf("%s: upstream backend pid %d unchanged after the restart", c.name, pid)
			}
		}
		// The statement parsed while the transaction was lost is prepared
		// upstream when first forwarded.
		if got, st := raw.exchange(&pgproto3.Bind{PreparedStatement: "r"}, &pgproto3.Execute{}, &pgproto3.Sync{}); got != "2NCZ" || st != 'I' {
			t.Fatalf("ROLLBACK forwarded after the restart: %q %c, want \"2NCZ\" I", got, st)
		}
		if _, err := extClient.checkForward(ctx, 12); err != nil {
			t.Fatal(err)
		}
		for _, c := range late {
			if _, err := c.checkForward(ctx, 11); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := txConn.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
		if tz, err := clients[2].queryInt(ctx, `SELECT (current_setting('TimeZone') = 'Asia/Tokyo')::int::int8`); err != nil || tz != 1 {
			t.Fatalf("TimeZone set before the restart not kept: %d %v", tz, err)
		}
		if _, err := idleConn.Exec(ctx, `/*local*/ OUTBOX $1`, "up"); err != nil {
			t.Fatalf("Exec after the restart: %v", err)
		}
		var vals []string
		rows, err := idleConn.Query(ctx, `SELECT v FROM outbox ORDER BY id`)
		if err == nil {
			vals, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil || len(vals) != 1 || vals[0] != "up" {
			t.Fatalf("outbox %v %v, want [up] (the lost transaction's row must not exist)", vals, err)
		}
		if got := opt.srv.Stats().UpstreamConnsLost; got < 5 || obs.lost.Load() != got {
			t.Fatalf("UpstreamConnsLost %d (observer %d), want >= 5 and equal", got, obs.lost.Load())
		}
	})

	t.Run("cancel-after-reconnect", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			waitSleeping(t, ctx, pg.DSN, 1)
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			errc <- txConn.PgConn().CancelRequest(cctx)
		}()
		_, err := txConn.Exec(ctx, `SELECT pg_sleep(60)`)
		if cerr := <-errc; cerr != nil {
			t.Fatal(cerr)
		}
		if sqlState(err) != CodeQueryCanceled {
			t.Fatalf("cancelled forwarded statement: %v, want %s", err, CodeQueryCanceled)
		}
	})
}

// exchange sends msgs and reads up to ReadyForQuery: the message types and
// the transaction status.
func (r *rawConn) exchange(msgs ...pgproto3.FrontendMessage) (string, byte) {
	r.t.Helper()
	if err := r.send(msgs...); err != nil {
		r.t.Fatal(err)
	}
	seen, z := r.untilMsg('Z')
	return string(seen), z.(*pgproto3.ReadyForQuery).TxStatus
}

// send sends msgs and flushes them.
func (r *rawConn) send(msgs ...pgproto3.FrontendMessage) error {
	for _, m := range msgs {
		r.fe.Send(m)
	}
	return r.fe.Flush()
}

// exchangeUntil sends msgs and reads up to a message of type typ.
func (r *rawConn) exchangeUntil(typ byte, msgs ...pgproto3.FrontendMessage) (string, error) {
	r.t.Helper()
	if err := r.send(msgs...); err != nil {
		return "", err
	}
	return string(r.until(typ)), nil
}

// waitSleeping waits until n statements run pg_sleep on the server at dsn,
// so that they are in flight there.
func waitSleeping(t *testing.T, ctx context.Context, dsn string, n int) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close(context.Background())
	for {
		var got int
		err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(%' AND pid <> pg_backend_pid()`).Scan(&got)
		if err != nil {
			t.Error(err)
			return
		}
		if got >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTxExit(t *testing.T) {
	cases := []struct {
		sql            string
		exit, rollback bool
	}{
		{"commit", true, false},
		{"COMMIT;", true, false},
		{"  End Transaction ", true, false},
		{"rollback", true, true},
		{"ROLLBACK WORK;", true, true},
		{"abort", true, true},
		{"ROLLBACK TO SAVEPOINT s", false, false},
		{"COMMIT AND CHAIN", false, false},
		{"COMMIT PREPARED 'x'", false, false},
		{"SELECT 1", false, false},
		{"", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.sql, func(t *testing.T) {
			if got := txExit(tc.sql); got != tc.exit {
				t.Fatalf("txExit(%q) = %v, want %v", tc.sql, got, tc.exit)
			}
			if got := tc.exit && txRollback(tc.sql); got != tc.rollback {
				t.Fatalf("txRollback(%q) = %v, want %v", tc.sql, got, tc.rollback)
			}
		})
	}
}

func TestFatalBody(t *testing.T) {
	cases := []struct {
		name     string
		severity string
		want     bool
	}{{"fatal", "FATAL", true}, {"panic", "PANIC", true}, {"error", "ERROR", false}, {"notice", "NOTICE", false}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, err := errorResponse(&pgconn.PgError{Severity: tc.severity, Code: "57P01", Message: "m"}).Encode(nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := fatalBody(body[5:]); got != tc.want {
				t.Fatalf("fatalBody(%s) = %v, want %v", tc.severity, got, tc.want)
			}
		})
	}
	if fatalBody(nil) || fatalBody([]byte{'S'}) {
		t.Fatal("fatalBody of a malformed body")
	}
}

// TestUpstreamLossCopy: the upstream backend is terminated while the
// client is in COPY FROM STDIN; the COPY fails with 08006, the session goes
// on, and the next forwarded statement runs on a new backend.
func TestUpstreamLossCopy(t *testing.T) {
	dsn := testenv.PostgresDB(t)
	ctx := ctxT(t)
	admin := connect0(t, dsn)
	if _, err := admin.Exec(ctx, `CREATE TABLE c (v int)`); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, Config{UpstreamDSN: dsn}, newOptRouter())
	raw := dialRaw(t, p.addr)
	raw.startup()
	pidOf := func() string {
		t.Helper()
		raw.fe.Send(&pgproto3.Query{String: "SELECT pg_backend_pid()"})
		if err := raw.fe.Flush(); err != nil {
			t.Fatal(err)
		}
		pid := ""
		for {
			m, err := raw.fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *pgproto3.DataRow:
				pid = string(m.Values[0])
			case *pgproto3.ReadyForQuery:
				return pid
			}
		}
	}
	before := pidOf()
	if got, _ := raw.exchangeUntil('G', &pgproto3.Query{String: "COPY c FROM STDIN"}); got != "G" {
		t.Fatalf("COPY start: %q", got)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1::int)`, before); err != nil {
		t.Fatal(err)
	}
	// Let the proxy see the FATAL before the data goes out.
	time.Sleep(200 * time.Millisecond)
	got, st := raw.exchange(&pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{})
	if got != "EZ" || st != 'I' {
		t.Fatalf("COPY after the loss: %q %c, want \"EZ\" I", got, st)
	}
	if got, st := raw.exchange(&pgproto3.Query{String: "/*local*/ SELECT 42"}); got != "TDCZ" || st != 'I' {
		t.Fatalf("local after the loss: %q %c", got, st)
	}
	if after := pidOf(); after == before || after == "" {
		t.Fatalf("backend pid %q after the loss, before %q", after, before)
	}
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM c`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows of the failed COPY: %d %v", n, err)
	}
}
