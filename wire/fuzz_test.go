package wire

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fuzzRouter is testRouter without statements that wait.
type fuzzRouter struct{ testRouter }

func (r *fuzzRouter) Route(ctx context.Context, sess *Session, sql string) (Handler, error) {
	if strings.Contains(sql, "SLEEP") {
		return nil, Errorf(CodeSyntaxError, "no sleeping in fuzz tests")
	}
	return r.testRouter.Route(ctx, sess, sql)
}

// serveBytes runs one session over an in-memory pipe, feeding it data, and
// fails if the session does not end promptly.
func serveBytes(t *testing.T, srv *Server, data []byte) {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.serveConn(context.Background(), server)
	}()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, client)
	}()
	_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = client.Write(data)
	// Half-close is not available on a pipe: give the server a moment to
	// answer what it got, then hang up.
	time.Sleep(time.Millisecond)
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("session did not end for input %q", data)
	}
	<-drained
}

func fuzzServer(t testing.TB) *Server {
	srv, err := NewServer(Config{StartupTimeout: 2 * time.Second, MaxMessageSize: 1 << 16,
		ParameterStatus: map[string]string{"server_version": "16.0"}}, &fuzzRouter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func encodeAll(msgs ...pgproto3.FrontendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

var fuzzStartup = encodeAll(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
	Parameters: map[string]string{"user": "fuzz", "database": "db"}})

func FuzzStartup(f *testing.F) {
	f.Add(fuzzStartup)
	f.Add(startupBytes(map[string]string{"user": "u"}, 3<<16|2))
	f.Add(startupBytes(map[string]string{"user": "u", "_pq_.x": "1"}, pgproto3.ProtocolVersion30))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})                          // SSLRequest
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48})                          // GSSENCRequest
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2}) // CancelRequest
	f.Add(append([]byte{0, 0, 0, 8, 4, 210, 22, 47}, fuzzStartup...))  // SSL then startup
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		serveBytes(t, srv, data)
	})
}

func FuzzFrontend(f *testing.F) {
	f.Add(encodeAll(&pgproto3.Query{String: "/*local*/ SELECT 42"}, &pgproto3.Terminate{}))
	f.Add(encodeAll(&pgproto3.Query{String: "/*local*/ SELECT 42; /*local*/ ROWS 3"}))
	f.Add(encodeAll(&pgproto3.Query{String: ""}, &pgproto3.Query{String: "SELECT 1"}))
	f.Add(encodeAll(&pgproto3.Parse{Name: "s", Query: "/*local*/ ECHO $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s"},
		&pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "s", ParameterFormatCodes: []int16{0}, Parameters: [][]byte{[]byte("5")}, ResultFormatCodes: []int16{1}},
		&pgproto3.Describe{ObjectType: 'P', Name: "p"}, &pgproto3.Execute{Portal: "p", MaxRows: 1}, &pgproto3.Close{ObjectType: 'P', Name: "p"},
		&pgproto3.Sync{}))
	f.Add(encodeAll(&pgproto3.Parse{Query: "/*local*/ ROWS 4"}, &pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 3}, &pgproto3.Execute{MaxRows: 3}, &pgproto3.Flush{}, &pgproto3.Sync{}))
	f.Add(encodeAll(&pgproto3.Parse{Query: "/*local*/ FAIL"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Parse{Query: "/*local*/ SELECT 42"}, &pgproto3.Sync{}))
	f.Add(encodeAll(&pgproto3.Query{String: "/*local*/ BEGIN"}, &pgproto3.Query{String: "/*local*/ FAIL"}, &pgproto3.Query{String: "/*local*/ ROLLBACK"}))
	f.Add(encodeAll(&pgproto3.CopyData{Data: []byte("x")}, &pgproto3.CopyDone{}, &pgproto3.CopyFail{Message: "m"}, &pgproto3.Sync{}))
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'B', 0, 0, 0, 6, 0, 0})
	srv := fuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		serveBytes(t, srv, append(append([]byte{}, fuzzStartup...), data...))
	})
}
