package wire

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// UpstreamOptional is an optional Router method: when it returns true, the
// routed session does not need its upstream connection to live. Losing the
// upstream (an I/O error, EOF, or a FATAL such as 57P01 from a restart)
// does not end the session: locally answered statements keep working, and
// the next statement that needs the upstream reconnects (or fails with
// 08006/57P03, the session staying usable). A client that connects while
// the upstream is unreachable is let in without one.
//
// It is called on the session goroutine: at startup when the upstream
// cannot be reached (after OpenSession, so the Router's session state is
// there), when the routed path starts, and after every Reroute that
// returns true. It is not consulted for relayed sessions (Passthrough):
// they end with their upstream, as a direct PostgreSQL connection would,
// and a session whose Passthrough returns true at startup is not let in
// without an upstream.
type UpstreamOptional interface {
	UpstreamOptional(sess *Session) bool
}

// upLostError is the loss of the upstream connection of a session that
// survives it. It unwraps to the FATAL 08006 a session that does not
// survive it would get.
type upLostError struct {
	cause error
	pe    *pgconn.PgError
}

func (e *upLostError) Error() string { return "wire: upstream connection lost: " + e.cause.Error() }
func (e *upLostError) Unwrap() error { return e.pe }

func newUpLost(cause error) *upLostError {
	return &upLostError{cause: cause, pe: fatalf(CodeConnectionFailure, "upstream connection failed: %v", cause)}
}

// clientError is what the client gets for the request the loss hit.
func (e *upLostError) clientError() *pgconn.PgError {
	pe := Errorf(CodeConnectionFailure, "connection to the upstream PostgreSQL lost: %v", e.cause)
	var up *pgconn.PgError
	if errors.As(e.cause, &up) {
		pe.Message = "connection to the upstream PostgreSQL lost"
		pe.Detail = fmt.Sprintf("upstream said: %s (SQLSTATE %s)", up.Message, up.Code)
	}
	pe.Hint = "The request was not completed; an open transaction was rolled back. The proxy reconnects when the next statement needs the upstream."
	return pe
}

// fatalBody reports whether an ErrorResponse body has severity FATAL or
// PANIC: the upstream ends the connection after it.
func fatalBody(body []byte) bool {
	for len(body) > 1 {
		f := body[0]
		end := 1
		for end < len(body) && body[end] != 0 {
			end++
		}
		if f == 'S' || f == 'V' {
			v := string(body[1:end])
			return v == "FATAL" || v == "PANIC"
		}
		body = body[min(end+1, len(body)):]
	}
	return false
}

// optional asks the Router whether this session survives its upstream.
func (s *Session) optional() bool {
	o, ok := s.srv.router.(UpstreamOptional)
	return ok && s.srv.router != nil && s.srv.upCfg != nil && o.UpstreamOptional(s)
}

// optionalStart decides whether a session whose upstream is unreachable at
// startup may start without it.
func (s *Session) optionalStart() bool {
	if p, ok := s.srv.router.(Passthrough); ok && p.Passthrough(s) {
		return false
	}
	return s.optional()
}

func upstreamConnectFatal(srv *Server, err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &pgconn.PgError{Severity: "FATAL", Code: pe.Code, Message: "upstream: " + pe.Message, Detail: pe.Detail, Hint: pe.Hint}
	}
	srv.log.Warn("upstream connect failed", "err", err)
	return fatalf(CodeUnableToConnect, "could not connect to upstream: %v", err)
}

// reappliedParams are the reported parameters a client can change with SET
// whose values are carried over to a new upstream connection (as startup
// options), so that what the client was told stays true.
var reappliedParams = []string{"application_name", "client_encoding", "DateStyle", "IntervalStyle",
	"TimeZone", "standard_conforming_strings", "search_path", "default_transaction_read_only"}

// offlineStatus is what a session that starts without its upstream reports:
// the last values an upstream connection of this server reported (or the
// configured defaults), with the client's own startup settings.
func (s *Session) offlineStatus() map[string]string {
	st := s.srv.lastParamsCopy()
	if st == nil {
		st = map[string]string{}
		for k, v := range s.srv.cfg.ParameterStatus {
			st[k] = v
		}
	}
	for _, k := range reappliedParams {
		for pk, v := range s.params {
			if strings.EqualFold(pk, k) {
				st[k] = v
			}
		}
	}
	st["application_name"] = s.params["application_name"]
	st["session_authorization"] = s.user
	return st
}

// reconnectParams are the startup options of a new upstream connection:
// the client's, with the reported values it changed since (SET).
func (s *Session) reconnectParams() map[string]string {
	p := make(map[string]string, len(s.params)+len(reappliedParams))
	for k, v := range s.params {
		p[k] = v
	}
	for _, k := range reappliedParams {
		v, ok := s.status[k]
		if !ok {
			continue
		}
		for pk := range p {
			if strings.EqualFold(pk, k) {
				delete(p, pk)
			}
		}
		p[k] = v
	}
	return p
}

// startReader starts the goroutine that reads the current upstream.
func (s *Session) startReader() {
	rt := s.rt
	q := &upQueue{busy: true, signal: make(chan struct{}, 1)}
	done := make(chan struct{})
	up := s.up
	go func() {
		defer close(done)
		s.readUpstream(q, up)
	}()
	rt.q, rt.readerDone = q, done
}

// stopReader closes the upstream and waits for its reader to end.
func (s *Session) stopReader() {
	rt := s.rt
	if rt.q != nil {
		rt.q.mu.Lock()
		rt.q.busy = true
		rt.q.mu.Unlock()
	}
	s.closeUpstream()
	if rt.readerDone != nil {
		<-rt.readerDone
	}
	rt.q, rt.readerDone = nil, nil
}

// upFailed returns the error the upstream reader stopped with, if any.
func (q *upQueue) failed() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// dropDeadUpstream lets go of an upstream whose reader has stopped while
// nothing is outstanding there, so that the transaction status is right
// before the next message and the next forwarded statement reconnects.
func (s *Session) dropDeadUpstream() {
	rt := s.rt
	if s.up == nil || rt.q == nil || len(rt.slots) > 0 || rt.upDirty || !s.upOptional.Load() {
		return
	}
	if err := rt.q.failed(); err != nil {
		var lost *upLostError
		if errors.As(err, &lost) {
			err = lost.cause
		}
		s.dropUpstream(err)
	}
}

// dropUpstream forgets a lost upstream connection: nothing exists there any
// more (statements are prepared again lazily, forwarded portals are gone),
// and a transaction open there is lost (lostTx, the client sees 'E').
func (s *Session) dropUpstream(cause error) {
	if s.up == nil {
		return
	}
	rt := s.rt
	hadTx := byte(s.upTx.Load()) != 'I' || rt.upDirty && s.localTx != 0
	s.stopReader()
	s.mu.Lock()
	s.up = nil
	s.mu.Unlock()
	s.upTx.Store('I')
	for _, sl := range rt.slots {
		// A Parse the upstream never confirmed to the client: the client
		// may send it again under the same name.
		if sl.kind == 'P' && !sl.silent && sl.st != nil && rt.stmts[sl.st.name] == sl.st {
			delete(rt.stmts, sl.st.name)
		}
	}
	clear(rt.slots)
	rt.slots = rt.slots[:0]
	rt.upDirty = false
	for _, st := range rt.stmts {
		st.upPrepared = false
	}
	for name, p := range rt.portals {
		if !p.local {
			delete(rt.portals, name)
		}
	}
	if hadTx {
		s.lostTx = true
		s.localTx = 'E'
	}
	s.srv.upstreamLost()
	s.srv.log.Warn("upstream connection lost; the session goes on without it", "pid", s.pid,
		"in_transaction", hadTx, "err", cause)
}

// recoverLost answers the client message during which the upstream was lost:
// an ErrorResponse (unless the pipeline already failed) and, for messages
// answered by ReadyForQuery, ReadyForQuery; other extended messages are then
// discarded up to Sync.
func (s *Session) recoverLost(typ byte, lost *upLostError) error {
	rt := s.rt
	s.dropUpstream(lost.cause)
	if !rt.aborted {
		if err := s.buffer(errorResponse(lost.clientError())); err != nil {
			return err
		}
		if s.localTx == 'T' {
			s.localTx = 'E'
		}
	}
	switch typ {
	case 'Q', 'F', 'S':
		return s.readyForQuery()
	}
	rt.aborted = true
	return nil
}

// upReady makes sure a message about to be forwarded has an upstream.
// ok=false with a nil error: the server has no upstream at all. An error
// (a *pgconn.PgError of severity ERROR, 08006 or the upstream's code such
// as 57P03) is the statement's: reconnecting failed.
func (s *Session) upReady() (ok bool, err error) {
	s.dropDeadUpstream()
	if s.up != nil {
		return true, nil
	}
	if s.srv.upCfg == nil || s.rt == nil {
		return false, nil
	}
	if s.lostTx {
		return true, errLostTx()
	}
	return true, s.reconnect()
}

// reconnect opens a new upstream connection for the session with its
// startup parameters (and the reported values the client changed), and
// tells the client about reported values that differ from what it saw.
func (s *Session) reconnect() error {
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.StartupTimeout)
	up, err := s.srv.connectUpstream(ctx, s.reconnectParams())
	cancel()
	if err != nil {
		s.srv.log.Warn("upstream reconnect failed", "pid", s.pid, "err", err)
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return &pgconn.PgError{Severity: "ERROR", Code: pe.Code, Message: "upstream PostgreSQL: " + pe.Message,
				Detail: pe.Detail, Hint: pe.Hint}
		}
		return Errorf(CodeConnectionFailure, "upstream PostgreSQL unavailable: %v", err)
	}
	s.mu.Lock()
	s.up = up
	s.mu.Unlock()
	s.upTx.Store('I')
	s.upEpoch++
	s.startReader()
	for k, v := range up.params {
		if cur, ok := s.status[k]; ok && cur == v {
			continue
		}
		s.status[k] = v
		if err := s.buffer(&pgproto3.ParameterStatus{Name: k, Value: v}); err != nil {
			return err
		}
	}
	s.srv.log.Info("upstream reconnected", "pid", s.pid, "epoch", s.upEpoch)
	return nil
}

func errLostTx() *pgconn.PgError {
	pe := Errorf(CodeInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
	pe.Detail = "The connection to the upstream PostgreSQL was lost during the transaction."
	return pe
}

// txExit reports whether sql ends a transaction block (COMMIT, END,
// ROLLBACK, ABORT, without TO SAVEPOINT or AND CHAIN): the statements
// PostgreSQL accepts in a failed transaction.
func txExit(sql string) bool {
	s := strings.TrimSpace(sql)
	s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
	kw, rest := cutWord(s)
	switch strings.ToLower(kw) {
	case "commit", "end", "rollback", "abort":
	default:
		return false
	}
	for rest != "" {
		var w string
		w, rest = cutWord(rest)
		switch strings.ToLower(w) {
		case "work", "transaction":
		default:
			return false
		}
	}
	return true
}

// txRollback reports whether a txExit statement is ROLLBACK or ABORT.
func txRollback(sql string) bool {
	kw, _ := cutWord(strings.TrimSpace(sql))
	kw = strings.ToLower(strings.TrimSuffix(kw, ";"))
	return kw == "rollback" || kw == "abort"
}

// lostTxEnd answers COMMIT/ROLLBACK of a transaction lost with the upstream:
// ROLLBACK, as PostgreSQL answers COMMIT of a failed transaction.
type lostTxEnd struct{}

func (lostTxEnd) Describe(context.Context, *Session, []uint32) (Description, error) {
	return Description{}, nil
}

func (lostTxEnd) Execute(_ context.Context, sess *Session, _ Params, _ *RowWriter) (string, error) {
	sess.lostTx = false
	sess.localTx = 0
	return "ROLLBACK", nil
}

// lostTxAborted answers any other forwarded statement in such a transaction.
type lostTxAborted struct{}

func (lostTxAborted) Describe(context.Context, *Session, []uint32) (Description, error) {
	return Description{}, nil
}

func (lostTxAborted) Execute(context.Context, *Session, Params, *RowWriter) (string, error) {
	return "", errLostTx()
}

// lostTxHandler replaces a forwarded statement's handler while lostTx.
func lostTxHandler(sql string) Handler {
	if txExit(sql) {
		return Local(lostTxEnd{})
	}
	return Local(lostTxAborted{})
}
