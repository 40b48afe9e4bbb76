package wire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func TestAuthMethods(t *testing.T) {
	scramV, err := SCRAMVerifier("pw-carol")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{
		"alice": "pw-alice",                   // plaintext
		"bob":   MD5Secret("bob", "pw-bob"),   // md5
		"carol": scramV,                       // SCRAM verifier
		"dave":  `pw with "quotes" and space`, // plaintext
	}
	tlsCfg := selfSigned(t)
	cases := []struct {
		method   AuthMethod
		tls      bool
		user, pw string
		want     string // "" = ok, else SQLSTATE
	}{
		{AuthTrust, false, "anyone", "", ""},
		{AuthSCRAM, false, "alice", "pw-alice", ""},
		{AuthSCRAM, false, "alice", "wrong", CodeInvalidPassword},
		{AuthSCRAM, false, "carol", "pw-carol", ""},
		{AuthSCRAM, false, "carol", "pw-alice", CodeInvalidPassword},
		{AuthSCRAM, true, "carol", "pw-carol", ""},
		{AuthSCRAM, false, "bob", "pw-bob", CodeInvalidPassword}, // md5 secret cannot do SCRAM
		{AuthSCRAM, false, "nobody", "x", CodeInvalidPassword},
		{AuthMD5, false, "bob", "pw-bob", ""},
		{AuthMD5, false, "alice", "pw-alice", ""},
		{AuthMD5, false, "bob", "nope", CodeInvalidPassword},
		{AuthMD5, false, "nobody", "x", CodeInvalidPassword},
		{AuthPassword, true, "alice", "pw-alice", ""},
		{AuthPassword, true, "bob", "pw-bob", ""},
		{AuthPassword, true, "carol", "pw-carol", ""},
		{AuthPassword, true, "dave", `pw with "quotes" and space`, ""},
		{AuthPassword, true, "carol", "bad", CodeInvalidPassword},
		{AuthPassword, false, "alice", "pw-alice", CodeInvalidAuthorization}, // only over TLS
	}
	for _, tc := range cases {
		name := string(tc.method) + "/" + tc.user + "/" + tc.want
		if tc.tls {
			name += "/tls"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Auth: tc.method, Users: users}
			if tc.tls {
				cfg.TLSConfig = tlsCfg
			}
			p := startProxy(t, cfg, &testRouter{})
			ssl := "sslmode=disable"
			if tc.tls {
				ssl = "sslmode=require"
			}
			dsn := "postgres://" + tc.user + ":" + strings.ReplaceAll(strings.ReplaceAll(tc.pw, " ", "%20"), `"`, "%22") + "@" + p.addr + "/db?" + ssl
			ctx := ctxT(t)
			conn, err := pgx.Connect(ctx, dsn)
			if tc.want != "" {
				if pgCode(err) != tc.want {
					t.Fatalf("err %v, want %s", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, isTLS := conn.PgConn().Conn().(*tls.Conn); isTLS != tc.tls {
				t.Fatalf("TLS %v, want %v", isTLS, tc.tls)
			}
			var v int64
			if err := conn.QueryRow(ctx, `/*local*/ SELECT 42`).Scan(&v); err != nil || v != 42 {
				t.Fatalf("query: %d %v", v, err)
			}
		})
	}
}

func TestUsersFile(t *testing.T) {
	users, err := ParseUsers(strings.NewReader("# comment\n\"alice\" \"pw\"\n;x\nbob md5" + strings.Repeat("0", 32) + "\n\"q\"\"uote\" \"a\"\"b\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if users["alice"] != "pw" || users["bob"] != "md5"+strings.Repeat("0", 32) || users[`q"uote`] != `a"b` || len(users) != 3 {
		t.Fatalf("users: %v", users)
	}
	for _, bad := range []string{"\"unterminated\n", "onlyuser\n", "u SCRAM-SHA-256$x\n"} {
		if _, err := ParseUsers(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := NewServer(Config{Auth: AuthSCRAM}, &testRouter{}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("scram without users: %v", err)
	}
	if _, err := NewServer(Config{Auth: "kerberos", Users: users}, &testRouter{}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("unknown method: %v", err)
	}
	if _, err := NewServer(Config{}, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("no upstream and no router: %v", err)
	}
}

type countingObserver struct{ client, upstream, rejected atomic.Int64 }

func (o *countingObserver) ClientConnOpened()         { o.client.Add(1) }
func (o *countingObserver) ClientConnClosed()         { o.client.Add(-1) }
func (o *countingObserver) ClientConnRejected(string) { o.rejected.Add(1) }
func (o *countingObserver) UpstreamConnOpened()       { o.upstream.Add(1) }
func (o *countingObserver) UpstreamConnClosed()       { o.upstream.Add(-1) }

func TestLimitsAndCounters(t *testing.T) {
	obs := &countingObserver{}
	up := testenv.PostgresDB(t)
	p := startProxy(t, Config{UpstreamDSN: up, MaxConnections: 2, Observer: obs}, nil)
	ctx := ctxT(t)
	c1 := connect(t, ctx, p.dsn("", ""))
	c2 := connect(t, ctx, p.dsn("", ""))
	_, err := pgx.Connect(ctx, p.dsn("", ""))
	if pgCode(err) != CodeTooManyConnections {
		t.Fatalf("third connection: %v", err)
	}
	// A session is counted right after its ReadyForQuery is sent, so the
	// client can get here first: wait (bounded) for the counters.
	want := func() bool {
		st := p.srv.Stats()
		return st.ClientConns == 2 && st.UpstreamConns == 2 && st.ClientConnsRejected == 1 &&
			obs.client.Load() == 2 && obs.upstream.Load() == 2 && obs.rejected.Load() == 1
	}
	for deadline := time.Now().Add(10 * time.Second); !want(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v observer %d/%d/%d", p.srv.Stats(), obs.client.Load(), obs.upstream.Load(), obs.rejected.Load())
		}
	}
	c1.Close(ctx)
	c2.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for p.srv.Stats().ClientConns != 0 || p.srv.Stats().UpstreamConns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("counters after close: %+v", p.srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIdleInTransactionTimeout(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, IdleInTransactionTimeout: 300 * time.Millisecond}, m.router)
			ctx := ctxT(t)
			conn := connect(t, ctx, p.dsn("", ""))
			// Idle outside a transaction is fine.
			time.Sleep(600 * time.Millisecond)
			if _, err := conn.Exec(ctx, `BEGIN`); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond)
			_, err := conn.Exec(ctx, `SELECT 1`)
			if err == nil {
				t.Fatal("session survived the idle-in-transaction timeout")
			}
			if c := pgCode(err); c != CodeIdleInTransaction && !conn.IsClosed() {
				t.Fatalf("error %v (%s)", err, c)
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			srv, err := NewServer(Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router, nil)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(context.Background(), ln) }()
			dsn := "postgres://postgres@" + ln.Addr().String() + "/x?sslmode=disable"
			ctx := ctxT(t)
			idle := connect(t, ctx, dsn)
			inTx := connect(t, ctx, dsn)
			if _, err := inTx.Exec(ctx, `CREATE TABLE s (v int)`); err != nil {
				t.Fatal(err)
			}
			tx, err := inTx.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			shut := make(chan error, 1)
			go func() {
				sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				shut <- srv.Shutdown(sctx)
			}()
			if err := <-served; !errors.Is(err, ErrServerClosed) {
				t.Fatalf("Serve: %v", err)
			}
			// New clients are refused, the idle one is closed.
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
				c.Close()
				t.Fatal("still accepting")
			}
			// Serve returns before Shutdown reaches the sessions: a
			// statement sent at once may still run.
			for deadline := time.Now().Add(10 * time.Second); srv.Stats().ClientConns > 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d sessions open, want only the one in a transaction", srv.Stats().ClientConns)
				}
			}
			if _, err := idle.Exec(ctx, `SELECT 1`); err == nil {
				t.Fatal("idle session survived shutdown")
			}
			// The transaction finishes.
			if _, err := tx.Exec(ctx, `INSERT INTO s VALUES (1)`); err != nil {
				t.Fatalf("in-transaction statement during shutdown: %v", err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit during shutdown: %v", err)
			}
			if err := <-shut; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			direct := connect(t, ctx, up)
			var n int
			if err := direct.QueryRow(ctx, `SELECT count(*) FROM s`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("committed rows %d %v", n, err)
			}
		})
	}
}

func TestShutdownDeadline(t *testing.T) {
	up := testenv.PostgresDB(t)
	srv, err := NewServer(Config{UpstreamDSN: up}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	ctx := ctxT(t)
	conn := connect(t, ctx, "postgres://postgres@"+ln.Addr().String()+"/x?sslmode=disable")
	if _, err := conn.Exec(ctx, `BEGIN`); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	<-served
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Fatal("session survived the shutdown deadline")
	}
}

func TestUpstreamFailures(t *testing.T) {
	// Nothing listens upstream: the client is told 08001 at connect.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "postgres://postgres@" + ln.Addr().String() + "/x?sslmode=disable&connect_timeout=5"
	ln.Close()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := startProxy(t, Config{UpstreamDSN: dead, NoEventLoop: m.noLoop}, m.router)
			ctx := ctxT(t)
			_, err := pgx.Connect(ctx, p.dsn("", ""))
			if pgCode(err) != CodeUnableToConnect {
				t.Fatalf("dead upstream: %v", err)
			}
			// The upstream backend dies mid-session: the client gets an
			// error, not a hang.
			up := testenv.PostgresDB(t)
			p2 := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			conn := connect(t, ctx, p2.dsn("", ""))
			var pid int
			if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			admin := connect(t, ctx, testenv.PostgresAdminDSN(t))
			if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			_, err = conn.Exec(ctx, `SELECT 1`)
			if c := pgCode(err); c != "57P01" && c != CodeConnectionFailure && !conn.IsClosed() {
				t.Fatalf("after upstream death: %v", err)
			}
		})
	}
}
