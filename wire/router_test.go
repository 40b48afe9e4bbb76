package wire

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	return connect0(t, dsn)
}

func connect0(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestRouterSimpleAndExtended(t *testing.T) {
	cases := []struct {
		name     string
		upstream bool
	}{{"with-upstream", true}, {"no-upstream", false}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{ParameterStatus: map[string]string{"server_version": "15.99"}}
			if tc.upstream {
				cfg.UpstreamDSN = testenv.PostgresDB(t)
			}
			r := &testRouter{}
			p := startProxy(t, cfg, r)
			ctx := ctxT(t)
			conn := connect(t, ctx, p.dsn("", ""))
			if !tc.upstream && conn.PgConn().ParameterStatus("server_version") != "15.99" {
				t.Fatalf("server_version %q", conn.PgConn().ParameterStatus("server_version"))
			}
			// Simple protocol: local statement, text result.
			res, err := conn.PgConn().Exec(ctx, `/*local*/ SELECT 42`).ReadAll()
			if err != nil || len(res) != 1 || string(res[0].FieldDescriptions[0].Name) != "answer" || string(res[0].Rows[0][0]) != "42" || res[0].CommandTag.String() != "SELECT 1" {
				t.Fatalf("simple local: %+v %v", res, err)
			}
			// Extended: parameter inferred locally (int8), binary result.
			var v int64
			if err := conn.QueryRow(ctx, `/*local*/ ECHO $1`, 7).Scan(&v); err != nil || v != 7 {
				t.Fatalf("extended local: %d %v", v, err)
			}
			var nv *int64
			if err := conn.QueryRow(ctx, `/*local*/ ECHO $1`, nil).Scan(&nv); err != nil || nv != nil {
				t.Fatalf("extended local NULL: %v %v", nv, err)
			}
			// Result formats as asked in Bind: text, then binary.
			sd, err := conn.PgConn().Prepare(ctx, "echo", `/*local*/ ECHO $1`, nil)
			if err != nil || len(sd.ParamOIDs) != 1 || sd.ParamOIDs[0] != 20 || sd.Fields[0].DataTypeOID != 20 {
				t.Fatalf("describe: %+v %v", sd, err)
			}
			rr := conn.PgConn().ExecPrepared(ctx, "echo", [][]byte{[]byte("9")}, []int16{0}, []int16{0}).Read()
			if rr.Err != nil || string(rr.Rows[0][0]) != "9" {
				t.Fatalf("text result: %+v", rr)
			}
			bin := make([]byte, 8)
			binary.BigEndian.PutUint64(bin, 11)
			rr = conn.PgConn().ExecPrepared(ctx, "echo", [][]byte{bin}, []int16{1}, []int16{1}).Read()
			if rr.Err != nil || binary.BigEndian.Uint64(rr.Rows[0][0]) != 11 {
				t.Fatalf("binary result: %+v", rr)
			}
			// Local error with SQLSTATE, then the session goes on.
			_, err = conn.Exec(ctx, `/*local*/ FAIL`)
			if pgCode(err) != "22012" {
				t.Fatalf("local error: %v", err)
			}
			// Local transaction status (f).
			if _, err := conn.Exec(ctx, `/*local*/ BEGIN`); err != nil {
				t.Fatal(err)
			}
			if st := conn.PgConn().TxStatus(); st != 'T' {
				t.Fatalf("status after local BEGIN %q", st)
			}
			_, _ = conn.Exec(ctx, `/*local*/ FAIL`)
			if st := conn.PgConn().TxStatus(); st != 'E' {
				t.Fatalf("status after failed local statement %q", st)
			}
			if _, err := conn.Exec(ctx, `/*local*/ ROLLBACK`); err != nil {
				t.Fatal(err)
			}
			if st := conn.PgConn().TxStatus(); st != 'I' {
				t.Fatalf("status after local ROLLBACK %q", st)
			}
			// A batch of local statements only.
			b := &pgx.Batch{}
			b.Queue(`/*local*/ ECHO $1`, 1)
			b.Queue(`/*local*/ SELECT 42`)
			b.Queue(`/*local*/ ECHO $1`, 3)
			br := conn.SendBatch(ctx, b)
			for _, want := range []int64{1, 42, 3} {
				var got int64
				if err := br.QueryRow().Scan(&got); err != nil || got != want {
					t.Fatalf("local batch: %d %v, want %d", got, err, want)
				}
			}
			br.Close()
			if !tc.upstream {
				_, err := conn.Exec(ctx, `SELECT 1`)
				if pgCode(err) != CodeFeatureNotSupported {
					t.Fatalf("forward without upstream: %v", err)
				}
				_, err = conn.Exec(ctx, `SELECT $1::int`, 1)
				if pgCode(err) != CodeFeatureNotSupported {
					t.Fatalf("forward without upstream (extended): %v", err)
				}
				if _, err := conn.Exec(ctx, `/*local*/ SELECT 42`); err != nil {
					t.Fatalf("session broken after error: %v", err)
				}
				return
			}
			// Several statements in one string, mixed.
			res, err = conn.PgConn().Exec(ctx, `/*local*/ SELECT 42; SELECT 1 AS up; /*local*/ SELECT 42`).ReadAll()
			if err != nil || len(res) != 3 || string(res[0].FieldDescriptions[0].Name) != "answer" ||
				string(res[1].FieldDescriptions[0].Name) != "up" || string(res[2].Rows[0][0]) != "42" {
				t.Fatalf("mixed multi-statement: %v", err)
			}
			// Mixed string stops at the first error.
			res, err = conn.PgConn().Exec(ctx, `SELECT 1; /*local*/ SELECT 42; SELECT 1/0; /*local*/ SELECT 42`).ReadAll()
			if pgCode(err) != "22012" || len(res) != 2 {
				t.Fatalf("mixed multi-statement with error: %d results, %v", len(res), err)
			}
		})
	}
}

func TestRouterPipelineMixed(t *testing.T) {
	up := testenv.PostgresDB(t)
	r := &testRouter{}
	p := startProxy(t, Config{UpstreamDSN: up}, r)
	ctx := ctxT(t)
	conn := connect(t, ctx, p.dsn("", ""))
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE outbox (id serial PRIMARY KEY, v text)`); err != nil {
		t.Fatal(err)
	}
	// Forwarded and local statements in one pipeline: responses in order.
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`/*local*/ ECHO $1`, 5)
	b.Queue(`INSERT INTO t VALUES ($1)`, 1)
	b.Queue(`/*local*/ SELECT 42`)
	b.Queue(`SELECT count(*) FROM t`)
	br := conn.SendBatch(ctx, b)
	for i, want := range []int64{1, 5, -1, 42, 1} {
		if want == -1 {
			if tag, err := br.Exec(); err != nil || tag.String() != "INSERT 0 1" {
				t.Fatalf("batch %d: %v %v", i, tag, err)
			}
			continue
		}
		var got int64
		if err := br.QueryRow().Scan(&got); err != nil || got != want {
			t.Fatalf("batch %d: %d %v, want %d", i, got, err, want)
		}
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	// A local error in the middle: the rest is discarded until Sync, and the
	// forwarded insert before it is rolled back with the implicit transaction.
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO t VALUES ($1)`, 2)
	b.Queue(`/*local*/ FAIL`)
	b.Queue(`INSERT INTO t VALUES ($1)`, 3)
	br = conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.Exec(); pgCode(err) != "22012" {
		t.Fatalf("local error in batch: %v", err)
	}
	if _, err := br.Exec(); err == nil {
		t.Fatal("statement after the error ran")
	}
	br.Close()
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after failed pipeline: %d %v, want 1", n, err)
	}
	// An upstream error in the middle: later local statements are skipped.
	b = &pgx.Batch{}
	b.Queue(`/*local*/ ECHO $1`, 1)
	b.Queue(`SELECT 1/0`)
	b.Queue(`/*local*/ ECHO $1`, 2)
	br = conn.SendBatch(ctx, b)
	var got int64
	if err := br.QueryRow().Scan(&got); err != nil || got != 1 {
		t.Fatalf("first: %d %v", got, err)
	}
	if _, err := br.Exec(); pgCode(err) != "22012" {
		t.Fatalf("upstream error in batch: %v", err)
	}
	if err := br.QueryRow().Scan(&got); err == nil {
		t.Fatal("local statement after the error ran")
	}
	br.Close()
	if conn.PgConn().TxStatus() != 'I' {
		t.Fatalf("status %q", conn.PgConn().TxStatus())
	}

	// (d) Upstream.Exec inside the client's transaction.
	for _, commit := range []bool{false, true} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tag, err := tx.Exec(ctx, `/*local*/ OUTBOX $1`, "row"); err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("outbox: %v %v", tag, err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if commit {
			want = 1
		}
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != want {
			t.Fatalf("outbox rows after commit=%v: %d %v", commit, n, err)
		}
	}
	// (e) Upstream.ExecPipeline: three statements in one round trip see
	// each other; an error ends the pipeline, skips what follows and
	// aborts the client's transaction.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `/*local*/ PIPELINE $1`, "p").Scan(&n); err != nil || n != 1 {
		t.Fatalf("pipeline: count %d %v, want 1 (the insert before it)", n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if tx, err = conn.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `/*local*/ PIPELINE $1`, "fail").Scan(&n); pgCode(err) != "22012" {
		t.Fatalf("failing pipeline: %v, want 22012", err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); pgCode(err) != "25P02" {
		t.Fatalf("after a failed pipeline: %v, want 25P02", err)
	}
	_ = tx.Rollback(ctx)
	var vals []string
	rows, _ := conn.Query(ctx, `SELECT v FROM outbox WHERE v LIKE 'p%' OR v LIKE 'fail%' ORDER BY id`)
	for rows.Next() {
		var v string
		_ = rows.Scan(&v)
		vals = append(vals, v)
	}
	if rows.Err() != nil || !slices.Equal(vals, []string{"p", "p-2"}) {
		t.Fatalf("outbox after pipelines: %v %v, want [p p-2]", vals, rows.Err())
	}
	// A local failure inside an upstream transaction aborts it there too.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (50)`); err != nil {
		t.Fatal(err)
	}
	_, _ = tx.Exec(ctx, `/*local*/ FAIL`)
	if st := conn.PgConn().TxStatus(); st != 'E' {
		t.Fatalf("status %q, want E", st)
	}
	if _, err := tx.Exec(ctx, `SELECT 1`); pgCode(err) != CodeInFailedTransaction {
		t.Fatalf("after local failure: %v, want 25P02", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if st := conn.PgConn().TxStatus(); st != 'I' {
		t.Fatalf("status %q, want I", st)
	}

	// (c) Inspection: sees tag and rows; a rejection becomes the client's error.
	var id int
	if err := conn.QueryRow(ctx, `/*inspect*/ INSERT INTO t VALUES ($1) RETURNING id`, 7).Scan(&id); err != nil || id != 7 {
		t.Fatalf("inspected insert: %d %v", id, err)
	}
	res, err := conn.PgConn().Exec(ctx, `/*inspect*/ SELECT id FROM t WHERE id = 7`).ReadAll()
	if err != nil || len(res) != 1 || string(res[0].Rows[0][0]) != "7" {
		t.Fatalf("inspected simple select: %v", err)
	}
	r.mu.Lock()
	if len(r.inspected) != 2 || r.inspected[0].Tag != "INSERT 0 1" || len(r.inspected[0].Rows) != 1 ||
		r.inspected[0].Params.Len() != 1 || r.inspected[1].Tag != "SELECT 1" || string(r.inspected[1].Fields[0].Name) != "id" {
		t.Fatalf("inspected: %+v", r.inspected)
	}
	r.mu.Unlock()
	_, err = conn.Exec(ctx, `/*inspect*/ /*reject*/ INSERT INTO t VALUES ($1)`, 8)
	if pgCode(err) != "XX001" {
		t.Fatalf("rejected by inspector: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t WHERE id = 8`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rejected insert committed: %d %v", n, err)
	}

	// (d) Observation: the observer sees the result, cannot replace it, and
	// statements pipelined after it keep their order.
	r.mu.Lock()
	r.inspected = nil
	r.mu.Unlock()
	b = &pgx.Batch{}
	b.Queue(`/*observe*/ /*reject*/ INSERT INTO t VALUES ($1) RETURNING id`, 9)
	b.Queue(`SELECT count(*) FROM t WHERE id = $1`, 9)
	b.Queue(`/*observe*/ SELECT id FROM t WHERE id = $1`, 9)
	br = conn.SendBatch(ctx, b)
	if err := br.QueryRow().Scan(&id); err != nil || id != 9 {
		t.Fatalf("observed insert: %d %v (an observer's error must not reach the client)", id, err)
	}
	if err := br.QueryRow().Scan(&n); err != nil || n != 1 {
		t.Fatalf("statement after an observed one: %d %v", n, err)
	}
	if err := br.QueryRow().Scan(&id); err != nil || id != 9 {
		t.Fatalf("observed select: %d %v", id, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.inspected) != 2 || r.inspected[0].Tag != "INSERT 0 1" || len(r.inspected[0].Rows) != 1 ||
		r.inspected[1].Tag != "SELECT 1" || len(r.inspected[1].Rows) != 1 {
		t.Fatalf("observed: %+v", r.inspected)
	}
}

// rawConn is a protocol-level client for tests pgx cannot express.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{t: t, conn: c, fe: pgproto3.NewFrontend(c, c)}
}

func (r *rawConn) startup() {
	r.t.Helper()
	r.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "postgres", "database": "x"}})
	if err := r.fe.Flush(); err != nil {
		r.t.Fatal(err)
	}
	r.until('Z')
}

// until reads messages up to the first of type typ and returns their types.
func (r *rawConn) until(typ byte) []byte {
	r.t.Helper()
	seen, _ := r.untilMsg(typ)
	return seen
}

// untilMsg is until that also returns the message of type typ.
func (r *rawConn) untilMsg(typ byte) ([]byte, pgproto3.BackendMessage) {
	r.t.Helper()
	var seen []byte
	for {
		m, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("receive (seen %q): %v", seen, err)
		}
		b, _ := m.Encode(nil)
		seen = append(seen, b[0])
		if e, ok := m.(*pgproto3.ErrorResponse); ok && typ != 'E' {
			r.t.Logf("error: %s %s", e.Code, e.Message)
		}
		if b[0] == typ {
			return seen, m
		}
	}
}

func TestRowLimitsAndPortals(t *testing.T) {
	up := testenv.PostgresDB(t)
	p := startProxy(t, Config{UpstreamDSN: up}, &testRouter{})
	for _, q := range []string{`/*local*/ ROWS 5`, `SELECT generate_series(1, 5) AS n`} {
		t.Run(q, func(t *testing.T) {
			r := dialRaw(t, p.addr)
			r.startup()
			r.fe.Send(&pgproto3.Parse{Name: "s1", Query: q})
			r.fe.Send(&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1"})
			r.fe.Send(&pgproto3.Describe{ObjectType: 'P', Name: "p1"})
			r.fe.Send(&pgproto3.Execute{Portal: "p1", MaxRows: 2})
			r.fe.Send(&pgproto3.Execute{Portal: "p1", MaxRows: 2})
			r.fe.Send(&pgproto3.Execute{Portal: "p1"})
			r.fe.Send(&pgproto3.Close{ObjectType: 'P', Name: "p1"})
			r.fe.Send(&pgproto3.Close{ObjectType: 'S', Name: "s1"})
			r.fe.Send(&pgproto3.Sync{})
			if err := r.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			got := string(r.until('Z'))
			if want := "12TDDsDDsDC33Z"; got != want {
				t.Fatalf("messages %q, want %q", got, want)
			}
			// Error: discard until Sync, then recover.
			r.fe.Send(&pgproto3.Parse{Query: `/*local*/ FAIL`})
			r.fe.Send(&pgproto3.Bind{})
			r.fe.Send(&pgproto3.Execute{})
			r.fe.Send(&pgproto3.Parse{Query: q})
			r.fe.Send(&pgproto3.Bind{})
			r.fe.Send(&pgproto3.Execute{})
			r.fe.Send(&pgproto3.Sync{})
			r.fe.Send(&pgproto3.Query{String: q})
			if err := r.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if got, want := string(r.until('Z')), "12EZ"; got != want {
				t.Fatalf("after error %q, want %q", got, want)
			}
			if got, want := string(r.until('Z')), "TDDDDDCZ"; got != want {
				t.Fatalf("simple query %q, want %q", got, want)
			}
		})
	}
}

func TestRouterCancelLocal(t *testing.T) {
	p := startProxy(t, Config{}, &testRouter{})
	ctx := ctxT(t)
	conn := connect(t, ctx, p.dsn("", ""))
	go func() {
		time.Sleep(300 * time.Millisecond)
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.PgConn().CancelRequest(cctx)
	}()
	start := time.Now()
	_, err := conn.Exec(ctx, `/*local*/ SLEEP`)
	if pgCode(err) != CodeQueryCanceled || time.Since(start) > 10*time.Second {
		t.Fatalf("cancel local: %v after %v", err, time.Since(start))
	}
	var pe *pgconn.PgError
	_ = pe
}

// passRouter asks for the relay fast path; Route must never be called.
type passRouter struct{ routed bool }

func (r *passRouter) Passthrough(*Session) bool { return true }
func (r *passRouter) Route(context.Context, *Session, string) (Handler, error) {
	r.routed = true
	return nil, Errorf(CodeInternalError, "Route called on a passthrough session")
}

func TestPassthroughRouterAndFunctionCall(t *testing.T) {
	up := testenv.PostgresDB(t)
	pr := &passRouter{}
	p := startProxy(t, Config{UpstreamDSN: up}, pr)
	ctx := ctxT(t)
	conn := connect(t, ctx, p.dsn("", ""))
	var v int
	if err := conn.QueryRow(ctx, `SELECT $1::int + 1`, 1).Scan(&v); err != nil || v != 2 || pr.routed {
		t.Fatalf("passthrough router: %d %v routed=%v", v, err, pr.routed)
	}
	// FunctionCall (legacy fast-path) through both paths: int4pl(2, 3).
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			r := dialRaw(t, p.addr)
			r.startup()
			arg := func(n uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, n); return b }
			r.fe.Send(&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{arg(2), arg(3)}, ResultFormatCode: 1})
			if err := r.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := string(r.until('Z')); got != "VZ" {
				t.Fatalf("function call messages %q", got)
			}
		})
	}
}

func TestSessionCloseCallbacks(t *testing.T) {
	r := &testRouter{}
	p := startProxy(t, Config{}, r)
	ctx := ctxT(t)
	for i := 0; i < 3; i++ {
		conn, err := pgx.Connect(ctx, p.dsn("", ""))
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			// Ended by the client vanishing, not by Terminate.
			conn.PgConn().Conn().Close()
		}
		conn.Close(ctx)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := r.closed
		r.mu.Unlock()
		if n == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnClose ran %d times, want 3", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// paramRouter answers "SHOW PROXY timezone" locally from the session's
// ParameterStatus, which must follow forwarded SETs.
type paramRouter struct{}

func (paramRouter) Route(_ context.Context, _ *Session, sql string) (Handler, error) {
	if sql != "SHOW PROXY timezone" {
		return Forward(), nil
	}
	return Local(localFunc{cols: []Column{{Name: "tz", TypeOID: 25}}, exec: func(_ context.Context, sess *Session, _ Params, w *RowWriter) (string, error) {
		return "SHOW", w.WriteRow(sess.ParameterStatus("TimeZone"))
	}}), nil
}

func TestParameterStatusFollowsSet(t *testing.T) {
	up := testenv.PostgresDB(t)
	p := startProxy(t, Config{UpstreamDSN: up}, paramRouter{})
	ctx := ctxT(t)
	conn := connect(t, ctx, p.dsn("", ""))
	for _, tz := range []string{"Asia/Tokyo", "Europe/Paris"} {
		if _, err := conn.Exec(ctx, "SET TimeZone = '"+tz+"'"); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := conn.QueryRow(ctx, "SHOW PROXY timezone", pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil || got != tz {
			t.Fatalf("TimeZone %q %v, want %q", got, err, tz)
		}
		if conn.PgConn().ParameterStatus("TimeZone") != tz {
			t.Fatalf("client saw TimeZone %q", conn.PgConn().ParameterStatus("TimeZone"))
		}
	}
}
