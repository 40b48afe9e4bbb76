package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// database/sql's and lib/pq's background goroutines end after the
		// test that owns them; these are the pool's connection openers.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type proxy struct {
	srv  *Server
	addr string
}

// startProxy serves cfg with router on a loopback port until the test ends.
func startProxy(t testing.TB, cfg Config, router Router) *proxy {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(cfg, router, logger)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &proxy{srv: srv, addr: ln.Addr().String()}
}

// dsn is a client DSN for the proxy.
func (p *proxy) dsn(user, extra string) string {
	if user == "" {
		user = "postgres"
	}
	d := fmt.Sprintf("postgres://%s@%s/proxydb?sslmode=disable", user, p.addr)
	if extra != "" {
		d += "&" + extra
	}
	return d
}

// forwardAll routes every statement upstream through the routed path.
type forwardAll struct{}

func (forwardAll) Route(context.Context, *Session, string) (Handler, error) { return Forward(), nil }

// modes are the two ways a session can forward: the relay fast path and the
// statement-by-statement path with a Router that forwards everything.
var modes = []struct {
	name   string
	router Router
	noLoop bool
}{
	{"relay", nil, false},
	{"relay-goroutines", nil, true},
	{"routed", forwardAll{}, false},
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// testRouter answers statements marked /*local*/ itself:
//
//	/*local*/ SELECT 42   -> one row, column "answer" int8 = 42
//	/*local*/ ECHO $1     -> column "echo" int8 = $1 (or a literal)
//	/*local*/ ROWS n      -> n rows 1..n, column "n" int4
//	/*local*/ FAIL        -> error 22012
//	/*local*/ BEGIN|COMMIT|ROLLBACK -> local transaction control
//	/*local*/ OUTBOX $1   -> INSERT INTO outbox upstream, in the client's transaction
//	/*local*/ PIPELINE $1 -> Upstream.ExecPipeline: two outbox rows and a count ("fail": an error between)
//	/*local*/ SLEEP       -> waits for cancel
//
// and forwards /*inspect*/ statements with an inspector that records results
// (and rejects them when the text contains "reject"), /*observe*/ ones with
// an observer (ForwardObserve) that records them and whose error, when the
// text contains "reject", must be ignored; everything else is forwarded.
type testRouter struct {
	mu        sync.Mutex
	inspected []*Inspected
	closed    int
}

var echoLit = regexp.MustCompile(`^/\*local\*/ ECHO (-?\d+)$`)

func (r *testRouter) OpenSession(_ context.Context, sess *Session) error {
	sess.SetState("opened")
	sess.OnClose(func(context.Context) {
		r.mu.Lock()
		r.closed++
		r.mu.Unlock()
	})
	return nil
}

func (r *testRouter) Route(_ context.Context, sess *Session, sql string) (Handler, error) {
	if sess.State() != "opened" {
		return nil, errors.New("OpenSession was not called")
	}
	switch {
	case strings.HasPrefix(sql, "/*inspect*/"):
		reject := strings.Contains(sql, "reject")
		return ForwardInspect(func(_ context.Context, _ *Session, res *Inspected) error {
			r.mu.Lock()
			r.inspected = append(r.inspected, res)
			r.mu.Unlock()
			if reject && res.Err == nil {
				return Errorf("XX001", "inspector rejected %q", res.Tag)
			}
			return nil
		}), nil
	case strings.HasPrefix(sql, "/*observe*/"):
		reject := strings.Contains(sql, "reject")
		return ForwardObserve(nil, func(_ context.Context, _ *Session, res *Inspected) error {
			r.mu.Lock()
			r.inspected = append(r.inspected, res)
			r.mu.Unlock()
			if reject {
				return Errorf("XX001", "an observer cannot reject %q", res.Tag)
			}
			return nil
		}), nil
	case !strings.HasPrefix(sql, "/*local*/"):
		return Forward(), nil
	}
	rest := strings.TrimSpace(strings.TrimPrefix(sql, "/*local*/"))
	switch {
	case rest == "SELECT 42":
		return Local(localFunc{cols: []Column{{Name: "answer", TypeOID: 20, TypeSize: 8}},
			exec: func(_ context.Context, _ *Session, _ Params, w *RowWriter) (string, error) {
				return "SELECT 1", w.WriteRow(int64(42))
			}}), nil
	case rest == "ECHO $1":
		return Local(localFunc{params: []uint32{20}, cols: []Column{{Name: "echo", TypeOID: 20, TypeSize: 8}},
			exec: func(_ context.Context, _ *Session, p Params, w *RowWriter) (string, error) {
				var v *int64
				if err := p.Decode(0, &v); err != nil {
					return "", err
				}
				if v == nil {
					return "SELECT 1", w.WriteRow(nil)
				}
				return "SELECT 1", w.WriteRow(*v)
			}}), nil
	case echoLit.MatchString(sql):
		n, _ := strconv.ParseInt(echoLit.FindStringSubmatch(sql)[1], 10, 64)
		return Local(localFunc{cols: []Column{{Name: "echo", TypeOID: 20, TypeSize: 8}},
			exec: func(_ context.Context, _ *Session, _ Params, w *RowWriter) (string, error) {
				return "SELECT 1", w.WriteRow(n)
			}}), nil
	case strings.HasPrefix(rest, "ROWS "):
		n, err := strconv.Atoi(strings.TrimPrefix(rest, "ROWS "))
		if err != nil {
			return nil, Errorf(CodeSyntaxError, "bad ROWS")
		}
		return Local(localFunc{cols: []Column{{Name: "n", TypeOID: 23, TypeSize: 4}},
			exec: func(_ context.Context, _ *Session, _ Params, w *RowWriter) (string, error) {
				for i := 1; i <= n; i++ {
					if err := w.WriteRow(int32(i)); err != nil {
						return "", err
					}
				}
				return fmt.Sprintf("SELECT %d", n), nil
			}}), nil
	case rest == "FAIL":
		return Local(localFunc{exec: func(context.Context, *Session, Params, *RowWriter) (string, error) {
			return "", Errorf("22012", "local failure")
		}}), nil
	case rest == "BEGIN" || rest == "COMMIT" || rest == "ROLLBACK":
		return Local(localFunc{exec: func(_ context.Context, sess *Session, _ Params, _ *RowWriter) (string, error) {
			if rest == "BEGIN" {
				sess.SetTxStatus('T')
			} else {
				sess.SetTxStatus('I')
			}
			return rest, nil
		}}), nil
	case rest == "OUTBOX $1":
		return Local(localFunc{params: []uint32{25}, exec: func(ctx context.Context, sess *Session, p Params, _ *RowWriter) (string, error) {
			var v string
			if err := p.Decode(0, &v); err != nil {
				return "", err
			}
			if sess.Upstream() == nil {
				return "", Errorf(CodeFeatureNotSupported, "no upstream")
			}
			res, err := sess.Upstream().Exec(ctx, "INSERT INTO outbox(v) VALUES ($1) RETURNING id", v)
			if err != nil {
				return "", err
			}
			if len(res.Rows) != 1 || res.Tag != "INSERT 0 1" {
				return "", fmt.Errorf("outbox insert returned %d rows, tag %q", len(res.Rows), res.Tag)
			}
			return "INSERT 0 1", nil
		}}), nil
	case rest == "PIPELINE $1":
		// Two outbox rows and a count in one round trip; v "fail" puts a
		// division by zero between the rows.
		return Local(localFunc{params: []uint32{25}, cols: []Column{{Name: "n", TypeOID: 23, TypeSize: 4}},
			exec: func(ctx context.Context, sess *Session, p Params, w *RowWriter) (string, error) {
				var v string
				if err := p.Decode(0, &v); err != nil {
					return "", err
				}
				middle := Statement{SQL: "SELECT count(*) FROM outbox WHERE v = $1", Args: []any{v}}
				if v == "fail" {
					middle = Statement{SQL: "SELECT 1/0"}
				}
				res, err := sess.Upstream().ExecPipeline(ctx,
					Statement{SQL: "INSERT INTO outbox(v) VALUES ($1)", Args: []any{v}},
					middle,
					Statement{SQL: "INSERT INTO outbox(v) VALUES ($1) RETURNING id", Args: []any{v + "-2"}})
				if err != nil {
					if len(res) != 1 || res[0].Tag != "INSERT 0 1" {
						return "", fmt.Errorf("pipeline failed after %d results: %w", len(res), err)
					}
					return "", err
				}
				if len(res) != 3 || res[0].Tag != "INSERT 0 1" || len(res[1].Rows) != 1 || len(res[2].Rows) != 1 || res[2].Tag != "INSERT 0 1" {
					return "", fmt.Errorf("pipeline results %+v", res)
				}
				n, _ := strconv.Atoi(string(res[1].Rows[0][0]))
				if err := w.WriteRow(int32(n)); err != nil {
					return "", err
				}
				return "SELECT 1", nil
			}}), nil
	case rest == "SLEEP":
		return Local(localFunc{exec: func(ctx context.Context, _ *Session, _ Params, _ *RowWriter) (string, error) {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(20 * time.Second):
				return "SLEEP", nil
			}
		}}), nil
	}
	return nil, Errorf(CodeSyntaxError, "unknown local statement %q", rest)
}

type localFunc struct {
	params []uint32
	cols   []Column
	exec   func(ctx context.Context, sess *Session, p Params, w *RowWriter) (string, error)
}

func (l localFunc) Describe(_ context.Context, _ *Session, oids []uint32) (Description, error) {
	ps := append([]uint32{}, l.params...)
	for i := range ps {
		if i < len(oids) && oids[i] != 0 {
			ps[i] = oids[i]
		}
	}
	return Description{ParamOIDs: ps, Columns: l.cols}, nil
}

func (l localFunc) Execute(ctx context.Context, sess *Session, p Params, w *RowWriter) (string, error) {
	return l.exec(ctx, sess, p, w)
}
