package wire

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/kvproxy/kvproxy/internal/rawnet"
)

const (
	maxStartupPacket = 10000
	codeSSLRequest   = 80877103
	codeGSSENC       = 80877104
	codeCancel       = 80877102
	protocol30       = 196608
	ioBufSize        = 32 << 10
	fatalWriteWait   = 5 * time.Second
)

var (
	errShutdown   = errors.New("wire: session closed by shutdown")
	errIdleInTx   = errors.New("wire: idle-in-transaction timeout")
	errTerminated = errors.New("wire: client terminated")
	// errKeepUpstream: the client terminated while its upstream connection
	// was idle, which may then serve another client.
	errKeepUpstream = errors.New("wire: client terminated, upstream kept")
)

// Session is one client connection. Its methods are safe to call from the
// Router and handlers (which run on the session's goroutine); State,
// SetState and OnClose are also safe from other goroutines.
type Session struct {
	// inInspect is set while an InspectFunc runs (Upstream.Exec refuses).
	inInspect bool
	srv       *Server
	pid       uint32
	secret    uint32

	conn     net.Conn // replaced when the loop's thread hands the session back (under mu)
	remote   net.Addr
	cr       *bufio.Reader
	cw       *bufio.Writer
	tls      bool
	panicked bool // runSession recovered a panic; cr and cw are not reused
	user     string
	database string
	params   map[string]string
	status   map[string]string
	up       *upstreamConn
	upHandle *Upstream

	ctx    context.Context
	cancel context.CancelFunc

	mu           sync.Mutex
	waiting      bool
	deadlineSet  bool
	shuttingDown bool
	closed       bool
	runCancel    context.CancelFunc
	state        any
	onClose      []func(ctx context.Context)

	upTx atomic.Uint32 // last ReadyForQuery status from upstream
	// upOptional: the Router's UpstreamOptional said yes (read by the
	// upstream reader): losing the upstream does not end the session.
	upOptional atomic.Bool
	// lostTx: the upstream was lost while a transaction was open there;
	// the client's transaction is failed ('E') until it ends it.
	lostTx      bool
	upEpoch     uint64       // upstream connections opened by this session
	outstanding atomic.Int32 // passthrough: Query/Sync sent minus ReadyForQuery received
	localTx     byte         // routed: status owned by local handlers, 0 = none
	terminating atomic.Bool
	// keepUp: the client said Terminate while the upstream was idle and
	// the upstream reader stopped at a message boundary, so the upstream
	// connection may serve another client (Config.UpstreamPoolSize).
	keepUp    bool
	loopSess  *loopSess // set while the event loop's thread relays the session (under mu)
	needC     int       // relay resumes mid-frame: client bytes to pass first
	needU     int       // same for upstream bytes
	pendingUp []byte    // parsed by the event loop, not yet written upstream
	pendingCl []byte    // same towards the client
	rt        *routed
	out       []byte
	rr        Rerouter    // the Router's, asserted once per session
	track     *relayTrack // relay with a Rerouter: prepared statements
	relayExt  bool        // relay: extended messages sent since the last Sync
	leaving   atomic.Bool // relay: the upstream reader stops at the next message boundary
}

// ID is the process ID the proxy gave the client in BackendKeyData.
func (s *Session) ID() uint32 { return s.pid }

// User is the authenticated user name.
func (s *Session) User() string { return s.user }

// Database is the database the client asked for.
func (s *Session) Database() string { return s.database }

// StartupParameter returns a parameter from the client's startup message.
func (s *Session) StartupParameter(name string) string { return s.params[name] }

// ParameterStatus returns a parameter as reported to the client (kept
// current through forwarded SETs on the routed path).
func (s *Session) ParameterStatus(name string) string { return s.status[name] }

// RemoteAddr is the client's address.
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// TLS reports whether the client connection is encrypted.
func (s *Session) TLS() bool { return s.tls }

// Context ends when the session ends.
func (s *Session) Context() context.Context { return s.ctx }

// Upstream is the session's upstream connection, nil when the server has
// none. For a session whose Router opted in with UpstreamOptional it is
// non-nil even while the upstream is down: Exec then reconnects (or fails
// with 08006/57P03).
func (s *Session) Upstream() *Upstream { return s.upHandle }

// UpstreamEpoch counts the upstream connections this session has opened:
// 1 after a normal startup, 0 for a session that started while the
// upstream was down, +1 at every reconnect after a loss. Session-level
// state the layer above created upstream (e.g. with Upstream().Exec) is
// gone when it changes.
func (s *Session) UpstreamEpoch() uint64 { return s.upEpoch }

// State returns what SetState stored.
func (s *Session) State() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// SetState attaches upper-layer state (e.g. a transaction object).
func (s *Session) SetState(v any) {
	s.mu.Lock()
	s.state = v
	s.mu.Unlock()
}

// OnClose registers f to run when the session ends, however it ends (in
// reverse order of registration), e.g. to release locks. ctx bounds f.
func (s *Session) OnClose(f func(ctx context.Context)) {
	s.mu.Lock()
	s.onClose = append(s.onClose, f)
	s.mu.Unlock()
}

// TxStatus is the transaction status the client sees in ReadyForQuery:
// 'I' idle, 'T' in a transaction, 'E' in a failed transaction.
func (s *Session) TxStatus() byte {
	if s.localTx != 0 {
		return s.localTx
	}
	if s.up != nil {
		return byte(s.upTx.Load())
	}
	return 'I'
}

// SetTxStatus sets the transaction status for a transaction the local side
// owns (e.g. a locally answered BEGIN: 'T'; COMMIT/ROLLBACK: 'I'). 0 hands
// the status back to the upstream. A failed local statement inside a
// transaction sets 'E' by itself; the upstream leaving its transaction
// clears a local 'E'.
func (s *Session) SetTxStatus(status byte) {
	switch status {
	case 0, 'I', 'T', 'E':
		s.localTx = status
		if status == 'I' && (s.up == nil || byte(s.upTx.Load()) == 'I') {
			s.localTx = 0
		}
		if s.localTx == 0 || s.localTx == 'I' {
			// The client ended the transaction the lost upstream had.
			s.lostTx = false
		}
	}
}

// upstreamConn is the session's connection to PostgreSQL.
type upstreamConn struct {
	conn   net.Conn // replaced when the loop's thread hands the session back (under the session's mu)
	addr   net.Addr // conn's remote address, for cancels from other goroutines
	r      *bufio.Reader
	w      *bufio.Writer
	pid    uint32
	secret []byte
	cfg    *pgconn.Config
	params map[string]string
	closed atomic.Bool

	key     string            // poolKey of the startup parameters it was opened with
	initial map[string]string // what it reported at its start, for reuse
	cancels int               // cancel requests in flight (under the session's mu)
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	s.clientTotal.Add(1)
	n := s.active.Add(1)
	defer s.active.Add(-1)
	// Raw reads and writes (internal/rawnet) for the whole session: the
	// buffered I/O, TLS on top of it, and the relay loop's descriptor.
	conn = rawnet.Wrap(conn)
	cio := s.clientIO.Get().(*clientIO)
	cio.r.Reset(conn)
	cio.w.Reset(conn)
	sess := &Session{srv: s, conn: conn, remote: conn.RemoteAddr(), cr: cio.r, cw: cio.w}
	defer func() {
		// After a panic, a relay goroutine of the session may still be
		// writing to cio.w; the buffers are left to the collector.
		if !sess.panicked {
			cio.r.Reset(nil)
			cio.w.Reset(nil)
			s.clientIO.Put(cio)
		}
	}()
	sess.ctx, sess.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer sess.cancel()
	_ = conn.SetDeadline(time.Now().Add(s.cfg.StartupTimeout))
	if err := sess.startup(int(n)); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			s.reject(pe.Code)
			sess.sendFatal(pe)
		} else if !errors.Is(err, io.EOF) && !errors.Is(err, errCancelDone) {
			s.reject(CodeProtocolViolation)
			s.log.Debug("client startup failed", "remote", conn.RemoteAddr(), "err", err)
		}
		if sess.up != nil {
			sess.closeUpstream()
		}
		conn.Close()
		return
	}
	s.clientConns.Add(1)
	if o := s.obs(); o != nil {
		o.ClientConnOpened()
	}
	err := s.runSession(sess)
	sess.finish(err)
	s.clientConns.Add(-1)
	if o := s.obs(); o != nil {
		o.ClientConnClosed()
	}
}

// runSession runs a session, containing a panic (in the proxy or in the
// layers above it) to that session: the client gets FATAL XX000 and the
// connection is closed, the stack is logged, and every other session goes
// on.
func (s *Server) runSession(sess *Session) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("session panicked; closing it", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			sess.panicked = true
			sess.sendFatal(fatalf(CodeInternalError, "internal error in kvproxy: %v", p))
			err = fmt.Errorf("wire: session panicked: %v", p)
		}
	}()
	return sess.run()
}

var errCancelDone = errors.New("wire: cancel request handled")

// startup runs the startup phase up to ReadyForQuery.
func (s *Session) startup(active int) error {
	srv := s.srv
	sslDone := false
	var sm pgproto3.StartupMessage
	for {
		code, body, err := s.readStartupPacket()
		if err != nil {
			return err
		}
		switch code {
		case codeSSLRequest:
			if sslDone {
				return fatalf(CodeProtocolViolation, "SSLRequest after encryption negotiation")
			}
			sslDone = true
			if srv.cfg.TLSConfig == nil {
				if _, err := s.conn.Write([]byte{'N'}); err != nil {
					return err
				}
				continue
			}
			if s.cr.Buffered() > 0 {
				// Bytes sent before the handshake would bypass encryption.
				return fatalf(CodeProtocolViolation, "received unencrypted data after SSL request")
			}
			if _, err := s.conn.Write([]byte{'S'}); err != nil {
				return err
			}
			tc := tls.Server(s.conn, srv.cfg.TLSConfig)
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("wire: TLS handshake: %w", err)
			}
			s.conn, s.tls = tc, true
			s.cr.Reset(tc)
			s.cw.Reset(tc)
			continue
		case codeGSSENC:
			if s.cr.Buffered() > 0 {
				return fatalf(CodeProtocolViolation, "received unencrypted data after GSSENC request")
			}
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		case codeCancel:
			if len(body) < 8 {
				return fmt.Errorf("%w: short CancelRequest", ErrBadMessage)
			}
			ctx, cancel := context.WithTimeout(context.Background(), srv.cfg.StartupTimeout)
			srv.cancel(ctx, binary.BigEndian.Uint32(body[0:4]), binary.BigEndian.Uint32(body[4:8]))
			cancel()
			return errCancelDone
		}
		if code>>16 != 3 {
			return fatalf(CodeFeatureNotSupported, "unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff)
		}
		full := make([]byte, 4+len(body))
		binary.BigEndian.PutUint32(full, protocol30)
		copy(full[4:], body)
		if err := sm.Decode(full); err != nil {
			return fatalf(CodeProtocolViolation, "invalid startup packet layout: %v", err)
		}
		var unrecognized []string
		for k := range sm.Parameters {
			if strings.HasPrefix(k, "_pq_.") {
				unrecognized = append(unrecognized, k)
				delete(sm.Parameters, k)
			}
		}
		if code&0xffff != 0 || len(unrecognized) > 0 {
			if err := s.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unrecognized}); err != nil {
				return err
			}
		}
		break
	}
	s.params = sm.Parameters
	s.user = sm.Parameters["user"]
	if s.user == "" {
		return fatalf(CodeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	s.database = sm.Parameters["database"]
	if s.database == "" {
		s.database = s.user
	}
	if sm.Parameters["replication"] != "" && sm.Parameters["replication"] != "false" && sm.Parameters["replication"] != "off" {
		return fatalf(CodeFeatureNotSupported, "replication connections are not supported by the proxy")
	}
	if srv.isClosing() {
		return fatalf(CodeCannotConnectNow, "the proxy is shutting down")
	}
	if active > srv.cfg.MaxConnections {
		return fatalf(CodeTooManyConnections, "sorry, too many clients already")
	}
	if err := s.authenticate(); err != nil {
		return err
	}
	// upErr: the upstream could not be reached; the session starts
	// without it if the Router opts in (decided after OpenSession, which
	// attaches the state the Router decides by).
	var upErr error
	if srv.upCfg != nil {
		ctx, cancel := context.WithTimeout(s.ctx, srv.cfg.StartupTimeout)
		up, err := srv.connectUpstream(ctx, s.params)
		cancel()
		if err != nil {
			if _, ok := srv.router.(UpstreamOptional); !ok || srv.router == nil {
				return upstreamConnectFatal(srv, err)
			}
			upErr = err
			s.status = s.offlineStatus()
		} else {
			s.up = up
			s.upEpoch = 1
			s.status = up.params
		}
		s.upHandle = &Upstream{s: s}
		s.upTx.Store('I')
	} else {
		s.status = map[string]string{}
		for k, v := range srv.cfg.ParameterStatus {
			s.status[k] = v
		}
		if v := s.params["application_name"]; v != "" {
			s.status["application_name"] = v
		}
		s.status["session_authorization"] = s.user
	}
	s.pid = srv.nextPID.Add(1)
	var key [4]byte
	_, _ = rand.Read(key[:])
	s.secret = binary.BigEndian.Uint32(key[:])
	if !srv.register(s) {
		return fatalf(CodeAdminShutdown, "terminating connection due to administrator command")
	}
	for k, v := range s.status {
		if err := s.buffer(&pgproto3.ParameterStatus{Name: k, Value: v}); err != nil {
			srv.unregister(s)
			return err
		}
	}
	if err := s.buffer(&pgproto3.BackendKeyData{ProcessID: s.pid, SecretKey: key[:]}); err != nil {
		srv.unregister(s)
		return err
	}
	if o, ok := srv.router.(SessionOpener); ok && srv.router != nil {
		if err := o.OpenSession(s.ctx, s); err != nil {
			srv.unregister(s)
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				return &pgconn.PgError{Severity: "FATAL", Code: pe.Code, Message: pe.Message, Detail: pe.Detail}
			}
			return fatalf(CodeInternalError, "%v", err)
		}
	}
	if upErr != nil {
		if !s.optionalStart() {
			srv.unregister(s)
			s.runOnClose()
			return upstreamConnectFatal(srv, upErr)
		}
		srv.log.Info("session started without its upstream (unreachable); it connects when a statement needs it",
			"pid", s.pid, "err", upErr)
		s.upOptional.Store(true)
	}
	if err := s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'}); err != nil {
		srv.unregister(s)
		return err
	}
	_ = s.conn.SetDeadline(time.Time{})
	return nil
}

func (s *Session) readStartupPacket() (uint32, []byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(s.cr, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: truncated startup packet", ErrBadMessage)
		}
		return 0, nil, err
	}
	l := int32(binary.BigEndian.Uint32(hdr[:4]))
	if l < 8 || l > maxStartupPacket {
		return 0, nil, fatalf(CodeProtocolViolation, "invalid length of startup packet")
	}
	body := make([]byte, l-8)
	if _, err := io.ReadFull(s.cr, body); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated startup packet: %w", ErrBadMessage, err)
	}
	return binary.BigEndian.Uint32(hdr[4:]), body, nil
}

// readPasswordMessage reads the client's next auth message body ('p').
func (s *Session) readPasswordMessage() ([]byte, error) {
	if err := s.cw.Flush(); err != nil {
		return nil, err
	}
	typ, n, err := readHeader(s.cr, 1<<16)
	if err != nil {
		if errors.Is(err, ErrMessageTooBig) || errors.Is(err, ErrBadMessage) {
			return nil, fatalf(CodeProtocolViolation, "invalid authentication message: %v", err)
		}
		return nil, err
	}
	if typ != 'p' {
		return nil, fatalf(CodeProtocolViolation, "expected password response, got message type %q", typ)
	}
	return readBody(s.cr, nil, n)
}

// askPassword sends an authentication request and returns the password
// (or md5 response) of the client's PasswordMessage.
func (s *Session) askPassword(req pgproto3.BackendMessage) (string, error) {
	if err := s.send(req); err != nil {
		return "", err
	}
	body, err := s.readPasswordMessage()
	if err != nil {
		return "", err
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(body); err != nil {
		return "", fatalf(CodeProtocolViolation, "invalid password message")
	}
	return pm.Password, nil
}

func (s *Session) authenticate() error {
	cfg := &s.srv.cfg
	failed := fatalf(CodeInvalidPassword, "password authentication failed for user %q", s.user)
	if cfg.Auth == AuthTrust {
		return s.buffer(&pgproto3.AuthenticationOk{})
	}
	raw, known := cfg.Users[s.user]
	sec, _ := parseSecret(raw)
	switch cfg.Auth {
	case AuthPassword:
		if !s.tls {
			return fatalf(CodeInvalidAuthorization, "password authentication requires an SSL connection")
		}
		password, err := s.askPassword(&pgproto3.AuthenticationCleartextPassword{})
		if err != nil {
			return err
		}
		if !known || !sec.checkPassword(s.user, password) {
			return failed
		}
	case AuthMD5:
		var salt [4]byte
		_, _ = rand.Read(salt[:])
		response, err := s.askPassword(&pgproto3.AuthenticationMD5Password{Salt: salt})
		if err != nil {
			return err
		}
		var want string
		switch sec.kind {
		case secretPlain:
			want = md5Response(MD5Secret(s.user, sec.plain), salt)
		case secretMD5:
			want = md5Response(sec.md5, salt)
		default:
			s.srv.log.Warn("md5 auth impossible for a user with a SCRAM secret", "user", s.user)
		}
		if !known || want == "" || want != response {
			return failed
		}
	case AuthSCRAM:
		if err := s.scram(known, sec); err != nil {
			return err
		}
	}
	return s.buffer(&pgproto3.AuthenticationOk{})
}

func (s *Session) scram(known bool, sec secret) error {
	failed := fatalf(CodeInvalidPassword, "password authentication failed for user %q", s.user)
	var creds scram.StoredCredentials
	var credErr error
	if known {
		creds, credErr = sec.scramCredentials()
	} else {
		credErr = errors.New("unknown user")
	}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		// PostgreSQL clients send an empty SCRAM user name; the startup
		// packet's user is the one that counts.
		return creds, credErr
	})
	if err != nil {
		return err
	}
	conv := srv.NewConversation()
	if err := s.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
		return err
	}
	body, err := s.readPasswordMessage()
	if err != nil {
		return err
	}
	var ir pgproto3.SASLInitialResponse
	if err := ir.Decode(body); err != nil {
		return fatalf(CodeProtocolViolation, "malformed SASL initial response")
	}
	if ir.AuthMechanism != "SCRAM-SHA-256" {
		return fatalf(CodeProtocolViolation, "client selected an invalid SASL authentication mechanism")
	}
	first, err := conv.Step(string(ir.Data))
	if err != nil {
		return failed
	}
	if err := s.send(&pgproto3.AuthenticationSASLContinue{Data: []byte(first)}); err != nil {
		return err
	}
	body, err = s.readPasswordMessage()
	if err != nil {
		return err
	}
	var rsp pgproto3.SASLResponse
	if err := rsp.Decode(body); err != nil {
		return fatalf(CodeProtocolViolation, "malformed SASL response")
	}
	final, err := conv.Step(string(rsp.Data))
	if err != nil || !conv.Valid() {
		return failed
	}
	return s.buffer(&pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
}

// buffer encodes msg into the client write buffer.
func (s *Session) buffer(msg pgproto3.BackendMessage) error {
	b, err := msg.Encode(s.out[:0])
	if err != nil {
		return err
	}
	s.out = b
	_, err = s.cw.Write(b)
	return err
}

// send buffers msg and flushes.
func (s *Session) send(msg pgproto3.BackendMessage) error {
	if err := s.buffer(msg); err != nil {
		return err
	}
	return s.cw.Flush()
}

// sendFatal tells the client why its session ends; best effort.
func (s *Session) sendFatal(err error) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(fatalWriteWait))
	_ = s.send(errorResponse(err))
}

func (s *Server) connectUpstream(ctx context.Context, params map[string]string) (*upstreamConn, error) {
	var key string // only a pool needs it
	if s.pool != nil {
		key = poolKey(params)
		if up := s.pool.get(key); up != nil {
			s.upstreamReused()
			up.params = maps.Clone(up.initial)
			return up, nil
		}
	}
	cfg := s.upCfg.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for k, v := range params {
		switch k {
		case "user", "database", "replication":
			continue
		}
		cfg.RuntimeParams[k] = v
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, err
	}
	hj, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, err
	}
	if tc, ok := hj.Conn.(interface{ SetNoDelay(bool) error }); ok {
		_ = tc.SetNoDelay(true)
	}
	s.upstreamOpened()
	s.noteParams(hj.ParameterStatuses)
	return &upstreamConn{conn: hj.Conn, addr: hj.Conn.RemoteAddr(), r: bufio.NewReaderSize(hj.Conn, ioBufSize), w: bufio.NewWriterSize(hj.Conn, ioBufSize),
		pid: hj.PID, secret: hj.SecretKey, cfg: hj.Config, params: hj.ParameterStatuses,
		key: key, initial: maps.Clone(hj.ParameterStatuses)}, nil
}

// cancelUpstream sends a CancelRequest for the upstream backend, the way
// libpq does: a fresh plain connection to the same address.
func (u *upstreamConn) cancelUpstream(ctx context.Context) error {
	addr := u.addr
	network, address := addr.Network(), addr.String()
	if network == "unix" {
		network, address = pgconn.NetworkAddress(u.cfg.Host, u.cfg.Port)
	}
	c, err := u.cfg.DialFunc(ctx, network, address)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	msg := make([]byte, 12+len(u.secret))
	binary.BigEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.BigEndian.PutUint32(msg[4:], codeCancel)
	binary.BigEndian.PutUint32(msg[8:], u.pid)
	copy(msg[12:], u.secret)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	// The server closes the connection when done; wait so the cancel has
	// been processed before the client's next statement.
	_, _ = c.Read(make([]byte, 1))
	return nil
}

func (s *Session) cancelRunning(ctx context.Context) {
	s.mu.Lock()
	rc := s.runCancel
	// The session goroutine replaces s.up (under s.mu) when it reconnects:
	// a cancel goes to the backend the session uses now.
	up := s.up
	if up != nil {
		up.cancels++
	}
	s.mu.Unlock()
	if rc != nil {
		rc()
	}
	if up != nil {
		if err := up.cancelUpstream(ctx); err != nil {
			s.srv.log.Warn("cancel upstream failed", "err", err)
		}
		s.mu.Lock()
		up.cancels--
		s.mu.Unlock()
	}
}

// upResetTimeout bounds the reset of an upstream connection for reuse.
const upResetTimeout = 2 * time.Second

// parkUpstream hands the session's upstream connection, idle after the
// client's Terminate, to the pool, or closes it if it cannot be reused.
// A cancel request still in flight could reach the backend while it runs
// the next client's statement, so a connection with one is closed; the
// session lets go of the connection first (under mu, as cancelRunning
// takes it), so that no later cancel of this session finds it.
func (s *Session) parkUpstream() {
	s.mu.Lock()
	up := s.up
	ok := up != nil && up.cancels == 0 && !s.closed
	if ok {
		s.up = nil
	}
	s.mu.Unlock()
	if !ok {
		s.closeUpstream()
		return
	}
	if up.closed.Load() || s.srv.isClosing() {
		s.srv.closeUp(up)
		return
	}
	// Without the event log's bookkeeping (no Rerouter), the session
	// does not know whether the client left an extended exchange open.
	sync := s.track == nil || s.relayExt
	if err := up.reset(upResetTimeout, sync); err != nil {
		s.srv.log.Debug("upstream connection not reused", "pid", s.pid, "err", err)
		s.srv.closeUp(up)
		return
	}
	if !s.srv.pool.put(up.key, up) {
		s.srv.closeUp(up)
	}
}

func (s *Session) closeUpstream() {
	if s.up != nil {
		s.srv.closeUp(s.up)
	}
}

// closeUp ends an upstream connection (Terminate, then close), once.
func (s *Server) closeUp(up *upstreamConn) {
	if up.terminate() {
		s.upstreamClosed()
	}
}

// idleLocked reports whether the session is between transactions with no
// request in flight.
func (s *Session) idleLocked() bool {
	return s.outstanding.Load() == 0 && s.TxStatus() == 'I'
}

// beginShutdown asks the session to end once idle.
func (s *Session) beginShutdown() {
	s.mu.Lock()
	s.shuttingDown = true
	if s.loopSess != nil {
		// The goroutine relay decides when the session is idle.
		s.loopSess.ejectLocked()
	}
	if s.waiting {
		_ = s.conn.SetReadDeadline(time.Now())
		s.deadlineSet = true
	}
	s.mu.Unlock()
}

// wake interrupts a wait for client input so the session re-checks its
// state after a ReadyForQuery (shutdown, idle-in-transaction deadline).
func (s *Session) wake(status byte) {
	s.mu.Lock()
	if s.waiting && (s.shuttingDown || status != 'I' && s.srv.cfg.IdleInTransactionTimeout > 0) {
		_ = s.conn.SetReadDeadline(time.Now())
		s.deadlineSet = true
	}
	s.mu.Unlock()
}

func (s *Session) forceClose() {
	s.mu.Lock()
	s.closed = true
	ls := s.loopSess
	if ls != nil {
		ls.ejectLocked()
	}
	up := s.up
	s.mu.Unlock()
	if ls != nil {
		// The session's goroutine must have its connections back before
		// they are closed.
		<-ls.left
	}
	s.cancel()
	s.conn.Close()
	if up != nil {
		up.conn.Close()
	}
}

// waitClient blocks until client input is available, applying the
// idle-in-transaction timeout and ending the session on shutdown when idle.
func (s *Session) waitClient() error {
	for {
		if s.cr.Buffered() > 0 {
			return nil
		}
		s.mu.Lock()
		if s.shuttingDown && s.idleLocked() {
			s.mu.Unlock()
			return errShutdown
		}
		var dl time.Time
		t := s.srv.cfg.IdleInTransactionTimeout
		inTx := s.TxStatus() != 'I' && s.outstanding.Load() == 0
		if t > 0 && inTx {
			dl = time.Now().Add(t)
		}
		s.waiting = true
		if !dl.IsZero() || s.deadlineSet {
			_ = s.conn.SetReadDeadline(dl)
			s.deadlineSet = !dl.IsZero()
		}
		s.mu.Unlock()
		_, err := s.cr.Peek(1)
		s.mu.Lock()
		s.waiting = false
		if s.deadlineSet {
			_ = s.conn.SetReadDeadline(time.Time{})
			s.deadlineSet = false
		}
		s.mu.Unlock()
		if err == nil {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if !dl.IsZero() && !time.Now().Before(dl) {
				return errIdleInTx
			}
			continue
		}
		return err
	}
}

// finish ends the session: tells the client why, runs close callbacks,
// closes both connections.
func (s *Session) finish(err error) {
	s.srv.unregister(s)
	switch {
	case err == nil, errors.Is(err, errTerminated), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, errShutdown):
		s.sendFatal(fatalf(CodeAdminShutdown, "terminating connection due to administrator command"))
	case errors.Is(err, errIdleInTx):
		s.sendFatal(fatalf(CodeIdleInTransaction, "terminating connection due to idle-in-transaction timeout"))
	case errors.Is(err, ErrMessageTooBig):
		s.sendFatal(fatalf(CodeProtocolViolation, "invalid message length: %v", err))
	case errors.Is(err, ErrBadMessage), errors.Is(err, io.ErrUnexpectedEOF):
		s.sendFatal(fatalf(CodeProtocolViolation, "%v", err))
	default:
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			s.sendFatal(pe)
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			s.srv.log.Debug("session ended", "pid", s.pid, "err", err)
		}
	}
	if s.keepUp && errors.Is(err, errTerminated) && s.srv.pool != nil {
		s.parkUpstream()
	} else {
		s.closeUpstream()
	}
	s.conn.Close()
	s.cancel()
	s.runOnClose()
}

// runOnClose runs the OnClose callbacks once.
func (s *Session) runOnClose() {
	s.mu.Lock()
	cbs := s.onClose
	s.onClose = nil
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := len(cbs) - 1; i >= 0; i-- {
		cbs[i](ctx)
	}
}

// run serves the session after startup. A relaying session whose Router
// asks for re-routing leaves the relay at an idle point and continues on
// the routed path.
func (s *Session) run() error {
	if s.srv.router != nil {
		s.rr, _ = s.srv.router.(Rerouter)
	}
	if s.up != nil {
		relay := s.srv.router == nil
		if p, ok := s.srv.router.(Passthrough); ok && p.Passthrough(s) {
			relay = true
		}
		if relay {
			if s.rr != nil {
				s.track = &relayTrack{stmts: map[string]trackedStmt{}}
			}
			err := s.runRelayLoop()
			if !errors.Is(err, errLeaveRelay) {
				return err
			}
		}
	}
	return s.runRouted()
}
