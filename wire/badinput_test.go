package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

func startupBytes(params map[string]string, version uint32) []byte {
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params}).Encode(nil)
	binary.BigEndian.PutUint32(b[4:], version)
	return b
}

func msg(typ byte, length int32, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(length))
	return append(b, body...)
}

// exchange sends raw bytes (after a proper startup when startup is true) and
// returns the error code the proxy answered with ("" if none) once it has
// closed the connection.
func exchange(t *testing.T, addr string, startup bool, payload []byte, closeWrite bool) (code string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	if startup {
		if _, err := c.Write(startupBytes(map[string]string{"user": "postgres"}, pgproto3.ProtocolVersion30)); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("startup: %v", err)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	for {
		m, err := fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return code, false
			}
			return code, true
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok && code == "" {
			code = e.Code
		}
	}
}

func TestBadInput(t *testing.T) {
	huge := msg('Q', 1<<30, nil)
	cases := []struct {
		name       string
		startup    bool
		payload    []byte
		closeWrite bool
		want       string
	}{
		{"http request", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, CodeProtocolViolation},
		{"startup length negative", false, []byte{0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0}, false, CodeProtocolViolation},
		{"startup truncated", false, []byte{0, 0, 0, 40, 0, 3, 0, 0, 'u'}, true, ""},
		{"protocol 2.0", false, startupBytes(map[string]string{"user": "postgres"}, 2<<16), false, CodeFeatureNotSupported},
		{"protocol 4.0", false, startupBytes(map[string]string{"user": "postgres"}, 4<<16), false, CodeFeatureNotSupported},
		{"no user", false, startupBytes(map[string]string{"database": "x"}, pgproto3.ProtocolVersion30), false, CodeInvalidAuthorization},
		{"startup not terminated", false, append([]byte{0, 0, 0, 12, 0, 3, 0, 0}, "user"...), false, CodeProtocolViolation},
		{"length above maximum", true, huge, false, CodeProtocolViolation},
		{"length negative", true, msg('Q', -5, nil), false, CodeProtocolViolation},
		{"length below 4", true, msg('Q', 2, nil), false, CodeProtocolViolation},
		{"unknown type", true, msg('@', 4, nil), false, CodeProtocolViolation},
		{"startup again", true, startupBytes(map[string]string{"user": "postgres"}, pgproto3.ProtocolVersion30), false, CodeProtocolViolation},
		{"password message out of order", true, msg('p', 8, []byte("abc\x00")), false, CodeProtocolViolation},
		{"query not terminated", true, msg('Q', 8, []byte("SELE")), false, CodeProtocolViolation},
		{"truncated message", true, msg('Q', 100, []byte("SELECT 1")), true, CodeProtocolViolation},
		{"garbage", true, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64), false, CodeProtocolViolation},
		{"bind unknown portal fields", true, msg('B', 6, []byte{0, 0}), false, CodeProtocolViolation},
	}
	setups := []struct {
		name     string
		upstream bool
		router   Router
	}{
		{"relay", true, nil},
		// The relay of a Rerouter's session decodes Parse and Close bodies.
		{"relay-rerouter", true, benchPassRouter{}},
		{"routed", true, &testRouter{}},
		{"no-upstream", false, &testRouter{}},
	}
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			cfg := Config{MaxMessageSize: 1 << 20, StartupTimeout: 10 * time.Second}
			if su.upstream {
				cfg.UpstreamDSN = testenv.PostgresDB(t)
			}
			p := startProxy(t, cfg, su.router)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.name == "bind unknown portal fields" && (su.router == nil || su.name == "relay-rerouter") {
						t.Skip("relay: PostgreSQL validates Bind bodies")
					}
					code, closed := exchange(t, p.addr, tc.startup, tc.payload, tc.closeWrite)
					if !closed {
						t.Fatal("connection not closed")
					}
					if code != tc.want {
						t.Fatalf("error code %q, want %q", code, tc.want)
					}
				})
			}
			// The proxy still serves after all that.
			r := dialRaw(t, p.addr)
			r.startup()
		})
	}
}

func TestSSLAndGSSRequestsWithoutTLS(t *testing.T) {
	p := startProxy(t, Config{}, &testRouter{})
	for _, code := range []uint32{codeSSLRequest, codeGSSENC} {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		req := make([]byte, 8)
		binary.BigEndian.PutUint32(req, 8)
		binary.BigEndian.PutUint32(req[4:], code)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'N' {
			t.Fatalf("request %d: %q %v", code, b, err)
		}
		// The startup continues in the clear.
		r := &rawConn{t: t, conn: c, fe: pgproto3.NewFrontend(c, c)}
		r.startup()
		c.Close()
	}
}

func TestStartupTimeout(t *testing.T) {
	p := startProxy(t, Config{StartupTimeout: 300 * time.Millisecond}, &testRouter{})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("silent client: %v", err)
	}
	if time.Since(start) > 15*time.Second {
		t.Fatal("silent client kept too long")
	}
	_ = context.Background
}
