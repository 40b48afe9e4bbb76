package wire

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pgx4 "github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

// Phases of phaseRouter: relay (Passthrough at session start, everything
// forwarded), forward (routed, everything forwarded) and local (statements
// "SELECT $1::int8 AS v..." answered by the proxy with $1+localOffset, so
// the answer shows where it came from).
const (
	phaseRelay int32 = iota
	phaseForward
	phaseLocal
)

const localOffset = 1_000_000

// phaseBad fails its local Describe: after a switch to local its Bind must
// fail, as a statement that no longer plans does in PostgreSQL.
const phaseBad = "SELECT $1::int8 AS bad"

type phaseRouter struct {
	mode     atomic.Int32
	epoch    atomic.Int64
	changed  func()       // from NotifyReroute
	reroutes atomic.Int64 // Reroute calls that returned true
	routes   atomic.Int64
	appName  atomic.Value // application_name as the last Route saw it
}

type phaseSess struct{ epoch atomic.Int64 }

func newPhaseRouter(mode int32) *phaseRouter {
	r := &phaseRouter{}
	r.mode.Store(mode)
	return r
}

// set switches the phase; sessions notice at their next idle point.
func (r *phaseRouter) set(mode int32) {
	r.mode.Store(mode)
	r.epoch.Add(1)
	if r.changed != nil {
		r.changed()
	}
}

func (r *phaseRouter) NotifyReroute(changed func()) { r.changed = changed }

func (r *phaseRouter) OpenSession(_ context.Context, sess *Session) error {
	ps := &phaseSess{}
	ps.epoch.Store(r.epoch.Load())
	sess.SetState(ps)
	return nil
}

func (r *phaseRouter) Passthrough(*Session) bool { return r.mode.Load() == phaseRelay }

func (r *phaseRouter) Reroute(sess *Session) bool {
	ps := sess.State().(*phaseSess)
	e := r.epoch.Load()
	if ps.epoch.Load() == e {
		return false
	}
	ps.epoch.Store(e)
	r.reroutes.Add(1)
	return true
}

func (r *phaseRouter) Route(_ context.Context, sess *Session, sql string) (Handler, error) {
	r.routes.Add(1)
	r.appName.Store(sess.ParameterStatus("application_name"))
	if r.mode.Load() != phaseLocal || !strings.HasPrefix(sql, "SELECT $1::int8 AS ") {
		return Forward(), nil
	}
	if sql == phaseBad {
		return Local(badDescribe{}), nil
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(sql, "SELECT $1::int8 AS "), " ")
	return Local(localFunc{params: []uint32{20}, cols: []Column{{Name: name, TypeOID: 20, TypeSize: 8}},
		exec: func(_ context.Context, _ *Session, p Params, w *RowWriter) (string, error) {
			var v int64
			if err := p.Decode(0, &v); err != nil {
				return "", err
			}
			return "SELECT 1", w.WriteRow(v + localOffset)
		}}), nil
}

type badDescribe struct{}

func (badDescribe) Describe(context.Context, *Session, []uint32) (Description, error) {
	return Description{}, Errorf(CodeFeatureNotSupported, "statement no longer plans")
}

func (badDescribe) Execute(context.Context, *Session, Params, *RowWriter) (string, error) {
	return "", Errorf(CodeInternalError, "not reached")
}

// want is the answer to "SELECT $1::int8 AS ..." with argument v in mode.
func want(mode int32, v int64) int64 {
	if mode == phaseLocal {
		return v + localOffset
	}
	return v
}

// rerouteClient is what the tests need of pgx v5 and pgx v4.
type rerouteClient interface {
	queryInt(ctx context.Context, sql string, v int64) (int64, error)
	exec(ctx context.Context, sql string) error
	batch(ctx context.Context, sqls []string, v int64) ([]int64, error)
	prepare(ctx context.Context, name, sql string) error
	deallocate(ctx context.Context, name string) error
	pid() uint32
}

type v5Client struct{ c *pgx.Conn }

func (c v5Client) queryInt(ctx context.Context, sql string, v int64) (int64, error) {
	var got int64
	err := c.c.QueryRow(ctx, sql, v).Scan(&got)
	return got, err
}

func (c v5Client) exec(ctx context.Context, sql string) error {
	_, err := c.c.Exec(ctx, sql)
	return err
}

func (c v5Client) batch(ctx context.Context, sqls []string, v int64) ([]int64, error) {
	b := &pgx.Batch{}
	for _, q := range sqls {
		b.Queue(q, v)
	}
	br := c.c.SendBatch(ctx, b)
	out := make([]int64, len(sqls))
	for i := range sqls {
		if err := br.QueryRow().Scan(&out[i]); err != nil {
			br.Close()
			return nil, err
		}
	}
	return out, br.Close()
}

func (c v5Client) prepare(ctx context.Context, name, sql string) error {
	_, err := c.c.Prepare(ctx, name, sql)
	return err
}

func (c v5Client) deallocate(ctx context.Context, name string) error {
	return c.c.Deallocate(ctx, name)
}
func (c v5Client) pid() uint32 { return c.c.PgConn().PID() }

type v4Client struct{ c *pgx4.Conn }

func (c v4Client) queryInt(ctx context.Context, sql string, v int64) (int64, error) {
	var got int64
	err := c.c.QueryRow(ctx, sql, v).Scan(&got)
	return got, err
}

func (c v4Client) exec(ctx context.Context, sql string) error {
	_, err := c.c.Exec(ctx, sql)
	return err
}

func (c v4Client) batch(ctx context.Context, sqls []string, v int64) ([]int64, error) {
	b := &pgx4.Batch{}
	for _, q := range sqls {
		b.Queue(q, v)
	}
	br := c.c.SendBatch(ctx, b)
	out := make([]int64, len(sqls))
	for i := range sqls {
		if err := br.QueryRow().Scan(&out[i]); err != nil {
			br.Close()
			return nil, err
		}
	}
	return out, br.Close()
}

func (c v4Client) prepare(ctx context.Context, name, sql string) error {
	_, err := c.c.Prepare(ctx, name, sql)
	return err
}

func (c v4Client) deallocate(ctx context.Context, name string) error {
	return c.c.Deallocate(ctx, name)
}
func (c v4Client) pid() uint32 { return c.c.PgConn().PID() }

type clientKind struct {
	name    string
	connect func(t *testing.T, dsn string) rerouteClient
}

var rerouteClients = []clientKind{
	{"pgx5-cache-statement", func(t *testing.T, dsn string) rerouteClient {
		return v5Client{connect0(t, dsn)}
	}},
	{"pgx5-cache-describe", func(t *testing.T, dsn string) rerouteClient {
		return v5Client{connect0(t, dsn+"&default_query_exec_mode=cache_describe")}
	}},
	{"pgx4-prepare", func(t *testing.T, dsn string) rerouteClient {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx4.Connect(ctx, dsn+"&statement_cache_mode=prepare")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return v4Client{c}
	}},
	{"pgx4-describe", func(t *testing.T, dsn string) rerouteClient {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx4.Connect(ctx, dsn+"&statement_cache_mode=describe")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return v4Client{c}
	}},
}

// checkPhase runs every statement known so far (and a new one, first
// prepared in this phase) several times, singly, in a batch and as a named
// prepared statement closed and prepared again, and checks where each
// answer came from.
func checkPhase(t *testing.T, ctx context.Context, c rerouteClient, mode int32, stmts *[]string, round int) {
	t.Helper()
	if round > 0 {
		// "carry" was prepared in the previous phase: used, closed and
		// prepared again across the switch.
		if got, err := c.queryInt(ctx, "carry", 11); err != nil || got != want(mode, 11) {
			t.Fatalf("round %d carry: %d %v", round, got, err)
		}
		if err := c.deallocate(ctx, "carry"); err != nil {
			t.Fatalf("round %d deallocate carry: %v", round, err)
		}
	}
	defer func() {
		if err := c.prepare(ctx, "carry", "SELECT $1::int8 AS carry"); err != nil {
			t.Fatalf("round %d prepare carry: %v", round, err)
		}
	}()
	*stmts = append(*stmts, fmt.Sprintf("SELECT $1::int8 AS v%d", round))
	for i := 0; i < 5; i++ {
		for j, q := range *stmts {
			arg := int64(round*1000 + i*10 + j)
			got, err := c.queryInt(ctx, q, arg)
			if err != nil || got != want(mode, arg) {
				t.Fatalf("round %d mode %d %q: got %d, %v; want %d", round, mode, q, got, err, want(mode, arg))
			}
		}
	}
	got, err := c.batch(ctx, *stmts, int64(round))
	if err != nil {
		t.Fatalf("round %d batch: %v", round, err)
	}
	for j, v := range got {
		if v != want(mode, int64(round)) {
			t.Fatalf("round %d mode %d batch item %d: %d", round, mode, j, v)
		}
	}
	// A statement that no longer plans when local: its Bind fails there,
	// and it works again once forwarded (its upstream copy is still there).
	v, err := c.queryInt(ctx, phaseBad, 7)
	if mode == phaseLocal {
		if sqlState(err) != CodeFeatureNotSupported {
			t.Fatalf("round %d: bad statement in local mode: %d, %v", round, v, err)
		}
	} else if err != nil || v != 7 {
		t.Fatalf("round %d: bad statement forwarded: %d, %v", round, v, err)
	}
	// Close and Parse of the same name again.
	for k := 0; k < 2; k++ {
		if err := c.prepare(ctx, "named", "SELECT $1::int8 AS named"); err != nil {
			t.Fatalf("round %d prepare named: %v", round, err)
		}
		if got, err := c.queryInt(ctx, "named", 5); err != nil || got != want(mode, 5) {
			t.Fatalf("round %d named: %d %v", round, got, err)
		}
		if k == 0 {
			if err := c.deallocate(ctx, "named"); err != nil {
				t.Fatalf("round %d deallocate: %v", round, err)
			}
		}
	}
}

func TestRerouteRoutedClients(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, ck := range rerouteClients {
		t.Run(ck.name, func(t *testing.T) {
			r := newPhaseRouter(phaseForward)
			p := startProxy(t, Config{UpstreamDSN: up}, r)
			ctx := ctxT(t)
			c := ck.connect(t, p.dsn("", ""))
			pid := c.pid()
			var stmts []string
			for round, mode := range []int32{phaseForward, phaseLocal, phaseForward, phaseLocal, phaseLocal, phaseForward, phaseLocal} {
				if round > 0 {
					r.set(mode)
				}
				checkPhase(t, ctx, c, mode, &stmts, round)
				if err := c.deallocate(ctx, "named"); err != nil {
					t.Fatalf("round %d deallocate: %v", round, err)
				}
			}
			if c.pid() != pid {
				t.Fatal("the client reconnected")
			}
			if n := r.reroutes.Load(); n != 6 {
				t.Fatalf("%d reroutes, want 6 (one per switch)", n)
			}
		})
	}
}

func TestRerouteRelay(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		for _, ck := range rerouteClients {
			t.Run(fmt.Sprintf("%s/noEventLoop=%v", ck.name, noLoop), func(t *testing.T) {
				r := newPhaseRouter(phaseRelay)
				p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
				ctx := ctxT(t)
				c := ck.connect(t, p.dsn("", ""))
				pid := c.pid()
				var stmts []string
				// Statements prepared during the relay, then a switch to
				// local: they are answered locally; then forwarded again
				// through their upstream copies.
				checkPhase(t, ctx, c, phaseRelay, &stmts, 0)
				if r.routes.Load() != 0 {
					t.Fatal("relay consulted the Router")
				}
				for round, mode := range []int32{phaseLocal, phaseForward, phaseRelay, phaseLocal} {
					r.set(mode)
					checkPhase(t, ctx, c, mode, &stmts, round+1)
					if err := c.deallocate(ctx, "named"); err != nil {
						t.Fatalf("round %d deallocate: %v", round, err)
					}
				}
				if c.pid() != pid {
					t.Fatal("the client reconnected")
				}
				if n := r.reroutes.Load(); n != 4 {
					t.Fatalf("%d reroutes, want 4", n)
				}
			})
		}
	}
}

// TestRerouteRelayForwarded leaves the relay for a routed path that
// forwards: the statements prepared during the relay are Bound there
// without a new Parse.
func TestRerouteRelayForwarded(t *testing.T) {
	up := testenv.PostgresDB(t)
	r := newPhaseRouter(phaseRelay)
	p := startProxy(t, Config{UpstreamDSN: up}, r)
	ctx := ctxT(t)
	conn := connect0(t, p.dsn("", ""))
	var stmts []string
	checkPhase(t, ctx, v5Client{conn}, phaseRelay, &stmts, 0)
	if err := conn.Deallocate(ctx, "named"); err != nil {
		t.Fatal(err)
	}
	r.set(phaseForward)
	checkPhase(t, ctx, v5Client{conn}, phaseForward, &stmts, 1)
	if r.routes.Load() == 0 || r.reroutes.Load() != 1 {
		t.Fatalf("routes %d reroutes %d", r.routes.Load(), r.reroutes.Load())
	}
}

// TestRerouteInTransaction: a switch while a transaction is open takes
// effect only after it ends, in the routed path and in the relay.
func TestRerouteInTransaction(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, start := range []int32{phaseForward, phaseRelay} {
		t.Run(fmt.Sprint("start=", start), func(t *testing.T) {
			r := newPhaseRouter(start)
			p := startProxy(t, Config{UpstreamDSN: up}, r)
			ctx := ctxT(t)
			conn := connect0(t, p.dsn("", ""))
			const q = "SELECT $1::int8 AS v"
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var v int64
			if err := tx.QueryRow(ctx, q, 1).Scan(&v); err != nil || v != 1 {
				t.Fatalf("%d %v", v, err)
			}
			r.set(phaseLocal)
			for i := int64(2); i < 6; i++ {
				if err := tx.QueryRow(ctx, q, i).Scan(&v); err != nil || v != i {
					t.Fatalf("in transaction after the switch: %d %v, want %d", v, err, i)
				}
			}
			if r.reroutes.Load() != 0 {
				t.Fatal("rerouted inside a transaction")
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := conn.QueryRow(ctx, q, 9).Scan(&v); err != nil || v != want(phaseLocal, 9) {
				t.Fatalf("after commit: %d %v", v, err)
			}
			if r.reroutes.Load() != 1 {
				t.Fatalf("%d reroutes", r.reroutes.Load())
			}
		})
	}
}

// TestRerouteConcurrentSwitches flips phases while several clients run
// batches: every batch is answered wholly by one side (a switch waits for
// the idle point), nothing fails, no client reconnects.
func TestRerouteConcurrentSwitches(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := newPhaseRouter(phaseRelay)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			stop := make(chan struct{})
			var flips sync.WaitGroup
			flips.Add(1)
			go func() {
				defer flips.Done()
				modes := []int32{phaseLocal, phaseForward, phaseRelay}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(3 * time.Millisecond):
					}
					r.set(modes[i%len(modes)])
				}
			}()
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			var sawLocal, sawUp atomic.Int64
			for w := 0; w < 3; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var conn *pgx.Conn
					defer func() {
						if conn != nil {
							conn.Close(context.Background())
						}
					}()
					sqls := []string{"SELECT $1::int8 AS a", "SELECT $1::int8 AS b", "SELECT $1::int8 AS a"}
					for i := int64(0); i < 150; i++ {
						if i%25 == 0 {
							// New sessions start relayed whenever the phase
							// is relay, and leave the relay at a later switch.
							if conn != nil {
								conn.Close(ctx)
							}
							var err error
							if conn, err = pgx.Connect(ctx, p.dsn("", "")); err != nil {
								errs <- err
								return
							}
						}
						got, err := v5Client{conn}.batch(ctx, sqls, i)
						if err != nil {
							errs <- fmt.Errorf("batch %d: %w", i, err)
							return
						}
						for _, g := range got {
							if g != got[0] || g != i && g != i+localOffset {
								errs <- fmt.Errorf("batch %d answered by both sides or wrongly: %v", i, got)
								return
							}
						}
						if got[0] == i {
							sawUp.Add(1)
						} else {
							sawLocal.Add(1)
						}
						var v int64
						if err := conn.QueryRow(ctx, "SELECT $1::int8 AS c", i).Scan(&v); err != nil || v != i && v != i+localOffset {
							errs <- fmt.Errorf("query %d: %d %v", i, v, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			flips.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if sawLocal.Load() == 0 || sawUp.Load() == 0 {
				t.Fatalf("answers: %d local, %d upstream; want both", sawLocal.Load(), sawUp.Load())
			}
		})
	}
}

// TestRerouteRelayRawParse covers the relay's following of Parse bodies at
// the protocol level: an unnamed statement, a Parse that fails upstream (not
// tracked), a malformed Parse (the same error as without tracking, the
// session goes on), and a statement closed during the relay.
func TestRerouteRelayRawParse(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, tc := range []struct {
		name   string
		router Router
	}{{"plain-relay", nil}, {"rerouter", newPhaseRouter(phaseRelay)}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{UpstreamDSN: up}, tc.router)
			rc := &rawSession{rawConn: dialRaw(t, p.addr)}
			rc.startup()
			malformed := []byte{'P', 0, 0, 0, 9, 'x', 0, 'S', 'E', 'L'} // query not terminated
			var buf []byte
			buf = append(buf, encodeAll(
				&pgproto3.Parse{Name: "good", Query: "SELECT $1::int8 AS v", ParameterOIDs: []uint32{20}},
				&pgproto3.Parse{Name: "closed", Query: "SELECT $1::int8 AS v"},
				&pgproto3.Close{ObjectType: 'S', Name: "closed"},
				&pgproto3.Parse{Query: "SELECT $1::int8 AS v"},
				&pgproto3.Sync{},
				&pgproto3.Parse{Name: "broken", Query: "SELEC nonsense"},
				&pgproto3.Sync{})...)
			buf = append(buf, malformed...)
			buf = append(buf, encodeAll(&pgproto3.Sync{})...)
			buf = append(buf, 'C', 0, 0, 0, 7, 'S', 'a', 'b') // name not terminated
			buf = append(buf, encodeAll(&pgproto3.Sync{})...)
			rc.write(buf)
			got := rc.readUntilReady(4)
			if want := "1 1 3 1 Z E Z E Z E Z"; got != want {
				t.Fatalf("responses %q, want %q", got, want)
			}
			codes := rc.errCodes
			if len(codes) != 3 || codes[0] != CodeSyntaxError || codes[1] != CodeProtocolViolation || codes[2] != CodeProtocolViolation {
				t.Fatalf("error codes %v", codes)
			}
			if r, ok := tc.router.(*phaseRouter); ok {
				r.set(phaseLocal)
			}
			// "good" and the unnamed statement survive; "closed" and
			// "broken" do not exist.
			arg := make([]byte, 8)
			binary.BigEndian.PutUint64(arg, 3)
			rc.errCodes = nil
			rc.rows = nil
			rc.write(encodeAll(
				&pgproto3.Bind{PreparedStatement: "good", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{arg}},
				&pgproto3.Execute{}, &pgproto3.Sync{},
				&pgproto3.Bind{PreparedStatement: "", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{arg}},
				&pgproto3.Execute{}, &pgproto3.Sync{},
				&pgproto3.Bind{PreparedStatement: "closed", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{arg}},
				&pgproto3.Execute{}, &pgproto3.Sync{},
				&pgproto3.Bind{PreparedStatement: "broken", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{arg}},
				&pgproto3.Execute{}, &pgproto3.Sync{},
				// Close and Parse again of a name prepared during the relay.
				&pgproto3.Close{ObjectType: 'S', Name: "good"},
				&pgproto3.Parse{Name: "good", Query: "SELECT $1::int8 AS v", ParameterOIDs: []uint32{20}},
				&pgproto3.Bind{PreparedStatement: "good", ParameterFormatCodes: []int16{1}, Parameters: [][]byte{arg}},
				&pgproto3.Execute{}, &pgproto3.Sync{}))
			got = rc.readUntilReady(5)
			if want := "2 D C Z 2 D C Z E Z E Z 3 1 2 D C Z"; got != want {
				t.Fatalf("responses %q, want %q", got, want)
			}
			wantV := "3"
			if tc.router != nil {
				wantV = fmt.Sprint(3 + localOffset)
			}
			if len(rc.rows) != 3 || rc.rows[0] != wantV || rc.rows[1] != wantV || rc.rows[2] != wantV {
				t.Fatalf("rows %v, want %s each", rc.rows, wantV)
			}
			if len(rc.errCodes) != 2 || rc.errCodes[0] != CodeUndefinedPreparedStmt || rc.errCodes[1] != CodeUndefinedPreparedStmt {
				t.Fatalf("error codes %v", rc.errCodes)
			}
		})
	}
}

// rawSession is a protocol-level client that records responses.
type rawSession struct {
	*rawConn
	errCodes []string
	rows     []string // first column of each DataRow, text
}

func (r *rawSession) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// readUntilReady reads responses up to the n-th ReadyForQuery and returns
// their types, space separated.
func (r *rawSession) readUntilReady(n int) string {
	r.t.Helper()
	var seen []string
	for n > 0 {
		m, err := r.fe.Receive()
		if err != nil {
			r.t.Fatalf("receive (seen %q): %v", seen, err)
		}
		b, _ := m.Encode(nil)
		seen = append(seen, string(b[0]))
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			r.errCodes = append(r.errCodes, m.Code)
		case *pgproto3.DataRow:
			r.rows = append(r.rows, string(m.Values[0]))
		case *pgproto3.ReadyForQuery:
			n--
		}
	}
	return strings.Join(seen, " ")
}

// sqlState is the SQLSTATE of a pgx v5 or v4 error.
func sqlState(err error) string {
	var se interface{ SQLState() string }
	if errors.As(err, &se) {
		return se.SQLState()
	}
	return ""
}

// TestRerouteRelayNotifications: asynchronous messages (NOTIFY) reach a
// client before and after its session leaves the relay.
func TestRerouteRelayNotifications(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := newPhaseRouter(phaseRelay)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			conn := connect0(t, p.dsn("", ""))
			other := connect0(t, up)
			if _, err := conn.Exec(ctx, "LISTEN ch"); err != nil {
				t.Fatal(err)
			}
			for i, mode := range []int32{phaseRelay, phaseLocal, phaseForward} {
				if i > 0 {
					r.set(mode)
				}
				var v int64
				if err := conn.QueryRow(ctx, "SELECT $1::int8 AS v", 4).Scan(&v); err != nil || v != want(mode, 4) {
					t.Fatalf("mode %d: %d %v", mode, v, err)
				}
				if _, err := other.Exec(ctx, "SELECT pg_notify('ch', $1)", fmt.Sprint("n", i)); err != nil {
					t.Fatal(err)
				}
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				n, err := conn.WaitForNotification(wctx)
				cancel()
				if err != nil || n.Channel != "ch" || n.Payload != fmt.Sprint("n", i) {
					t.Fatalf("mode %d notification: %+v %v", mode, n, err)
				}
			}
			if r.reroutes.Load() != 2 {
				t.Fatalf("%d reroutes", r.reroutes.Load())
			}
		})
	}
}

func TestDeallocateTarget(t *testing.T) {
	cases := []struct {
		sql  string
		name string
		all  bool
		ok   bool
	}{
		{`deallocate "lrupsc_1_0"`, "lrupsc_1_0", false, true},
		{`DEALLOCATE foo`, "foo", false, true},
		{`  Deallocate   Prepare  FooBar ; `, "foobar", false, true},
		{`DEALLOCATE "Mixed""Quote"`, `Mixed"Quote`, false, true},
		{`deallocate all`, "", true, true},
		{`DEALLOCATE PREPARE ALL`, "", true, true},
		{`deallocate "all"`, "all", false, true},
		{`deallocate prepare`, "prepare", false, true},
		{`deallocate`, "", false, false},
		{`deallocate ""`, "", false, false},
		{`deallocate "open`, "", false, false},
		{`deallocate a b`, "", false, false},
		{`deallocate a; select 1`, "", false, false},
		{`deallocate 1a`, "", false, false},
		{`deallocatex foo`, "", false, false},
		{`SELECT 'deallocate foo'`, "", false, false},
	}
	for _, tc := range cases {
		name, all, ok := deallocateTarget(tc.sql)
		if name != tc.name || all != tc.all || ok != tc.ok {
			t.Errorf("%q: %q %v %v, want %q %v %v", tc.sql, name, all, ok, tc.name, tc.all, tc.ok)
		}
		if tc.ok && !looksLikeDeallocate(append([]byte(tc.sql), 0)) {
			t.Errorf("%q: not recognised by the first test", tc.sql)
		}
	}
}

// TestRelayTrack drives the relay's statement bookkeeping with message
// sequences and PostgreSQL's answers to them.
func TestRelayTrack(t *testing.T) {
	parse := func(name, sql string, oids ...uint32) []byte {
		b := encodeAll(&pgproto3.Parse{Name: name, Query: sql, ParameterOIDs: oids})
		return b[5:]
	}
	closeS := func(name string) []byte { return append([]byte{'S'}, append([]byte(name), 0)...) }
	type cmsg struct {
		typ  byte
		body []byte
	}
	cases := []struct {
		name   string
		client []cmsg
		up     string
		want   []string
	}{
		{"parse ok", []cmsg{{'P', parse("a", "SELECT 1")}, {'P', parse("", "SELECT 2")}, {'S', nil}}, "11Z", []string{"", "a"}},
		{"parse fails, rest skipped", []cmsg{{'P', parse("a", "SELECT 1")}, {'P', parse("b", "bad")}, {'P', parse("c", "SELECT 3")}, {'S', nil}}, "1EZ", []string{"a"}},
		{"close", []cmsg{{'P', parse("a", "x")}, {'S', nil}, {'C', closeS("a")}, {'C', []byte{'P', 0}}, {'S', nil}}, "1Z33Z", nil},
		{"query drops unnamed", []cmsg{{'P', parse("", "x")}, {'P', parse("k", "y")}, {'S', nil}, {'Q', []byte("SELECT 1\x00")}}, "11ZZ", []string{"k"}},
		{"deallocate", []cmsg{{'P', parse("k", "y")}, {'P', parse("m", "z")}, {'S', nil}, {'Q', []byte("deallocate k\x00")}}, "11ZZ", []string{"m"}},
		{"deallocate fails", []cmsg{{'P', parse("k", "y")}, {'S', nil}, {'Q', []byte("deallocate k\x00")}}, "1ZEZ", []string{"k"}},
		{"deallocate all", []cmsg{{'P', parse("k", "y")}, {'S', nil}, {'Q', []byte("DEALLOCATE ALL\x00")}}, "1ZZ", nil},
		{"malformed parse", []cmsg{{'P', []byte("x\x00SEL")}, {'P', parse("ok", "y")}, {'S', nil}}, "E Z", nil},
		{"malformed accepted upstream", []cmsg{{'P', []byte{0xff}}, {'P', parse("ok", "y")}, {'S', nil}}, "11Z", []string{"ok"}},
		{"pipelined syncs", []cmsg{{'P', parse("a", "x")}, {'S', nil}, {'P', parse("b", "bad")}, {'S', nil}, {'P', parse("c", "y")}, {'S', nil}}, "1ZEZ1Z", []string{"a", "c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &relayTrack{stmts: map[string]trackedStmt{}}
			for _, m := range tc.client {
				tr.client(m.typ, m.body)
			}
			for _, c := range strings.ReplaceAll(tc.up, " ", "") {
				tr.upstream(byte(c))
			}
			var got []string
			for n := range tr.stmts {
				got = append(got, n)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("statements %q, want %q", got, tc.want)
			}
			if tr.head != len(tr.q) {
				t.Fatalf("%d entries left pending", len(tr.q)-tr.head)
			}
		})
	}
	tr := &relayTrack{stmts: map[string]trackedStmt{}}
	tr.client('P', parse("s", "SELECT $1", 20, 25))
	tr.upstream('1')
	if st := tr.stmts["s"]; st.sql != "SELECT $1" || !slices.Equal(st.oids, []uint32{20, 25}) {
		t.Fatalf("tracked %+v", st)
	}
}

// FuzzDecodeParse: decodeParse never panics and agrees with pgproto3 on
// what is a well-formed Parse.
func FuzzDecodeParse(f *testing.F) {
	f.Add(encodeAll(&pgproto3.Parse{Name: "s", Query: "SELECT $1", ParameterOIDs: []uint32{20}})[5:])
	f.Add([]byte("x\x00SEL"))
	f.Add([]byte{0, 0, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		name, st, ok := decodeParse(body)
		var p pgproto3.Parse
		perr := p.Decode(body)
		if ok && perr != nil {
			t.Fatalf("decodeParse accepted what pgproto3 rejects (%v): %q", perr, body)
		}
		if ok && (name != p.Name || st.sql != p.Query || len(st.oids) != len(p.ParameterOIDs)) {
			t.Fatalf("decodeParse %q %q %v, pgproto3 %q %q %v", name, st.sql, st.oids, p.Name, p.Query, p.ParameterOIDs)
		}
		tr := &relayTrack{stmts: map[string]trackedStmt{}}
		tr.client('P', body)
		tr.client('C', body)
		tr.client('Q', body)
		tr.upstream('1')
		tr.upstream('3')
		tr.upstream('Z')
	})
}

// panickyRerouter relays and panics in Reroute for sessions whose user is
// "boom" once armed.
type panickyRerouter struct {
	forwardAll
	armed   atomic.Bool
	changed func()
}

func (r *panickyRerouter) NotifyReroute(changed func()) { r.changed = changed }

func (r *panickyRerouter) arm() {
	r.armed.Store(true)
	r.changed()
}

func (*panickyRerouter) Passthrough(*Session) bool { return true }

func (r *panickyRerouter) Reroute(sess *Session) bool {
	if r.armed.Load() && sess.User() == "boom" {
		panic("rerouter bug")
	}
	return false
}

// A panic in Reroute, also for a session on the event loop, ends only its
// own session with FATAL XX000.
func TestReroutePanicIsContained(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := &panickyRerouter{}
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			bystander := connect0(t, p.dsn("", ""))
			victim := connect0(t, p.dsn("boom", ""))
			if _, err := victim.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			r.arm()
			_, err := victim.Exec(ctx, "SELECT 1")
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != CodeInternalError || pe.Severity != "FATAL" {
				t.Fatalf("panicking Reroute gave %v, want FATAL XX000", err)
			}
			for i := 0; i < 3; i++ {
				if _, err := bystander.Exec(ctx, "SELECT 1"); err != nil {
					t.Fatalf("another session failed after the panic: %v", err)
				}
			}
		})
	}
}

// TestRerouteRelayBigParse: Parse bodies bigger than the goroutine relay's
// buffer and than the event loop's are followed too.
func TestRerouteRelayBigParse(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := newPhaseRouter(phaseRelay)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			conn := connect0(t, p.dsn("", ""))
			var sqls []string
			for i, size := range []int{40 << 10, 100 << 10} {
				q := fmt.Sprintf("SELECT $1::int8 AS big%d -- %s", i, strings.Repeat("x", size))
				sqls = append(sqls, q)
				if _, err := conn.Prepare(ctx, fmt.Sprint("big", i), q); err != nil {
					t.Fatal(err)
				}
			}
			for _, mode := range []int32{phaseRelay, phaseLocal, phaseForward} {
				if mode != phaseRelay {
					r.set(mode)
				}
				for i, q := range sqls {
					for _, name := range []string{fmt.Sprint("big", i), q} {
						var v int64
						if err := conn.QueryRow(ctx, name, 8).Scan(&v); err != nil || v != want(mode, 8) {
							t.Fatalf("mode %d statement %d: %d %v", mode, i, v, err)
						}
					}
				}
			}
		})
	}
}

// TestRerouteRelayStreamingNotifications leaves the relay while the
// upstream streams large notifications: none is lost, cut or reordered.
func TestRerouteRelayStreamingNotifications(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := newPhaseRouter(phaseRelay)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			conn := connect0(t, p.dsn("", ""))
			other := connect0(t, up)
			if _, err := conn.Exec(ctx, "LISTEN ch"); err != nil {
				t.Fatal(err)
			}
			const n = 300
			done := make(chan error, 1)
			go func() {
				for i := 0; i < n; i++ {
					if _, err := other.Exec(ctx, "SELECT pg_notify('ch', repeat('x', 7000) || $1::text)", fmt.Sprint(i)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			modes := []int32{phaseLocal, phaseForward}
			for i := 0; i < 40; i++ {
				if i == 5 {
					r.set(modes[0])
				}
				var v int64
				if err := conn.QueryRow(ctx, "SELECT $1::int8 AS v", int64(i)).Scan(&v); err != nil || v != int64(i) && v != want(phaseLocal, int64(i)) {
					t.Fatalf("query %d: %d %v", i, v, err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				nt, err := conn.WaitForNotification(wctx)
				cancel()
				if err != nil {
					t.Fatalf("notification %d: %v", i, err)
				}
				if want := strings.Repeat("x", 7000) + fmt.Sprint(i); nt.Payload != want {
					t.Fatalf("notification %d: payload of %d bytes ending %q", i, len(nt.Payload), nt.Payload[max(0, len(nt.Payload)-8):])
				}
			}
			if r.reroutes.Load() != 1 {
				t.Fatalf("%d reroutes", r.reroutes.Load())
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// chunkReader returns its chunks one per Read, with a timeout error
// between them, the way a read deadline interrupts the relay's upstream
// reader mid-message.
type chunkReader struct {
	chunks [][]byte
	gap    bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	if r.gap {
		r.gap = false
		return 0, timeoutErr{}
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
		r.gap = true
	}
	return n, nil
}

// relayMessageRetry finishes a message interrupted by a read deadline
// when retry says so, and fails as before otherwise.
func TestRelayMessageRetry(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	for _, tc := range []struct {
		name  string
		retry bool
	}{{"retry", true}, {"no-retry", false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReaderSize(&chunkReader{chunks: [][]byte{body[:300], body[300:301], body[301:]}}, 64)
			var out bytes.Buffer
			w := bufio.NewWriter(&out)
			retries := 0
			err := relayMessageRetry(w, r, 'A', len(body), func(err error) bool {
				var ne net.Error
				if tc.retry && errors.As(err, &ne) && ne.Timeout() {
					retries++
					return true
				}
				return false
			})
			_ = w.Flush()
			if !tc.retry {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("without retry: %v", err)
				}
				return
			}
			if err != nil || retries != 2 || !bytes.Equal(out.Bytes()[5:], body) || out.Bytes()[0] != 'A' {
				t.Fatalf("err %v, %d retries, %d bytes out", err, retries, out.Len())
			}
		})
	}
}

// TestRerouteRelayParameterStatus: parameters the upstream reported during
// the relay (a SET) are what Session.ParameterStatus says after leaving it.
func TestRerouteRelayParameterStatus(t *testing.T) {
	up := testenv.PostgresDB(t)
	for _, noLoop := range []bool{false, true} {
		t.Run(fmt.Sprint("noEventLoop=", noLoop), func(t *testing.T) {
			r := newPhaseRouter(phaseRelay)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: noLoop}, r)
			ctx := ctxT(t)
			conn := connect0(t, p.dsn("", "application_name=before"))
			if _, err := conn.Exec(ctx, "SET application_name = 'during_relay'"); err != nil {
				t.Fatal(err)
			}
			r.set(phaseForward)
			var v int64
			if err := conn.QueryRow(ctx, "SELECT $1::int8 AS v", 1).Scan(&v); err != nil || v != 1 {
				t.Fatalf("%d %v", v, err)
			}
			if got, _ := r.appName.Load().(string); got != "during_relay" {
				t.Fatalf("ParameterStatus(application_name) after the relay: %q", got)
			}
		})
	}
}
