package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// errLeaveRelay ends the relay so that the session continues on the routed
// path (the Rerouter asked for it at an idle point).
var errLeaveRelay = errors.New("wire: session leaves the relay for the routed path")

// trackedStmt is a statement the client prepared while relayed.
type trackedStmt struct {
	sql  string
	oids []uint32
}

// trackEntry is a client message whose outcome the relay learns from the
// upstream's responses: a Parse (ParseComplete commits it), a Close
// (CloseComplete), or a message answered by ReadyForQuery (Query, Sync,
// FunctionCall), which ends the run of messages PostgreSQL skips after an
// error.
type trackEntry struct {
	kind        byte // 'P' Parse, 'C' Close of a statement, '-' other Parse/Close, 'Z' ReadyForQuery
	name        string
	st          trackedStmt
	dropUnnamed bool // a simple Query drops the unnamed statement
	dealloc     bool // a simple Query that is a DEALLOCATE of name (or all)
	all         bool
}

// relayTrack follows the prepared statements of a relayed session whose
// Router is a Rerouter, so that they keep working when the session leaves
// the relay. Only Parse and Close bodies are decoded; the responses are
// matched by type alone (ParseComplete, CloseComplete, ReadyForQuery), in
// order. SQL PREPARE and DEALLOCATE are not followed.
type relayTrack struct {
	mu      sync.Mutex
	q       []trackEntry
	head    int
	stmts   map[string]trackedStmt
	errSeen bool              // an ErrorResponse since the last ReadyForQuery
	params  map[string]string // ParameterStatus reported during the relay
}

// param records a ParameterStatus body from upstream, so that
// Session.ParameterStatus is current once the session leaves the relay.
func (t *relayTrack) param(body []byte) {
	name, rest, ok := cut(body)
	if !ok {
		return
	}
	value, rest, ok := cut(rest)
	if !ok || len(rest) != 0 {
		return
	}
	t.mu.Lock()
	if t.params == nil {
		t.params = map[string]string{}
	}
	t.params[name] = value
	t.mu.Unlock()
}

// client records a client message on its way upstream: 'P' and 'C' with
// their bodies, 'Q' with its body when at hand (for DEALLOCATE), 'S' and
// 'F' without.
func (t *relayTrack) client(typ byte, body []byte) {
	var e trackEntry
	switch typ {
	case 'P':
		e.kind = '-'
		if name, st, ok := decodeParse(body); ok {
			e.kind, e.name, e.st = 'P', name, st
		}
	case 'C':
		e.kind = '-'
		if len(body) >= 2 && body[0] == 'S' && bytes.IndexByte(body[1:], 0) == len(body)-2 {
			e.kind, e.name = 'C', string(body[1:len(body)-1])
		}
	case 'Q':
		e.kind, e.dropUnnamed = 'Z', true
		if len(body) > 0 && looksLikeDeallocate(body) {
			e.name, e.all, e.dealloc = deallocateTarget(string(body[:len(body)-1]))
		}
	case 'S', 'F':
		e.kind = 'Z'
	default:
		return
	}
	t.mu.Lock()
	t.q = append(t.q, e)
	t.mu.Unlock()
}

// upstream applies a response: ParseComplete and CloseComplete answer the
// oldest pending Parse or Close; ReadyForQuery ends the run up to its
// Query or Sync, dropping what PostgreSQL skipped after an error.
func (t *relayTrack) upstream(typ byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch typ {
	case '1', '3':
		if e, ok := t.pop(); ok {
			switch e.kind {
			case 'P':
				t.stmts[e.name] = e.st
			case 'C':
				delete(t.stmts, e.name)
			}
		}
	case 'E':
		t.errSeen = true
	case 'Z':
		failed := t.errSeen
		t.errSeen = false
		for {
			e, ok := t.pop()
			if !ok {
				return
			}
			if e.kind == 'Z' {
				if e.dropUnnamed {
					delete(t.stmts, "")
				}
				switch {
				case !e.dealloc || failed:
				case e.all:
					clear(t.stmts)
				default:
					delete(t.stmts, e.name)
				}
				return
			}
		}
	}
}

func (t *relayTrack) pop() (trackEntry, bool) {
	if t.head == len(t.q) {
		return trackEntry{}, false
	}
	e := t.q[t.head]
	t.q[t.head] = trackEntry{}
	t.head++
	if t.head == len(t.q) {
		t.q, t.head = t.q[:0], 0
	}
	return e, true
}

// decodeParse reads a Parse body as PostgreSQL does; ok is false for a
// malformed one (which the relay forwards untracked: PostgreSQL rejects it).
func decodeParse(body []byte) (name string, st trackedStmt, ok bool) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", st, false
	}
	name, body = string(body[:i]), body[i+1:]
	i = bytes.IndexByte(body, 0)
	if i < 0 {
		return "", st, false
	}
	st.sql, body = string(body[:i]), body[i+1:]
	if len(body) < 2 {
		return "", st, false
	}
	n := int(int16(binary.BigEndian.Uint16(body)))
	body = body[2:]
	if n < 0 || len(body) != 4*n {
		return "", st, false
	}
	if n > 0 {
		st.oids = make([]uint32, n)
		for j := range st.oids {
			st.oids[j] = binary.BigEndian.Uint32(body[4*j:])
		}
	}
	return name, st, true
}

// relayIdle reports whether a relayed session is at an idle point: every
// request answered, no transaction open, no extended messages since the
// last Sync. Called at a client message boundary.
func (s *Session) relayIdle() bool {
	return !s.relayExt && s.outstanding.Load() == 0 && byte(s.upTx.Load()) == 'I'
}

// relayNote updates the relay's bookkeeping for a client message about to
// go upstream; body is needed for 'P' and 'C' only.
func (s *Session) relayNote(typ byte, body []byte) {
	switch typ {
	case 'P', 'C':
		s.track.client(typ, body)
		s.relayExt = true
	case 'B', 'D', 'E', 'H':
		s.relayExt = true
	case 'S':
		s.track.client(typ, nil)
		s.relayExt = false
	case 'Q', 'F':
		s.track.client(typ, body)
	}
}

// upRetry reports whether err is the read deadline that stops the upstream
// reader of a relay being left; the reader then finishes the message in
// hand (the deadline is cleared) and stops at its end.
func (s *Session) upRetry(err error) bool {
	var ne net.Error
	if s.leaving.Load() && errors.As(err, &ne) && ne.Timeout() {
		_ = s.up.conn.SetReadDeadline(time.Time{})
		return true
	}
	return false
}

// leaveLoop finishes what the event loop left in flight when it handed
// the session over for re-routing: parsed bytes not yet written and the
// rest of an upstream message in progress (the client side stopped at a
// message boundary, before the message that triggered re-routing).
func (s *Session) leaveLoop(res loopResult) error {
	if len(res.toUp) > 0 {
		if _, err := s.up.w.Write(res.toUp); err != nil {
			return s.upstreamFailed(err)
		}
		if err := s.up.w.Flush(); err != nil {
			return s.upstreamFailed(err)
		}
	}
	if len(res.toClient) > 0 {
		if _, err := s.cw.Write(res.toClient); err != nil {
			return err
		}
	}
	if res.needUp > 0 {
		if _, err := io.CopyN(s.cw, s.up.r, int64(res.needUp)); err != nil {
			return s.upstreamFailed(err)
		}
	}
	if err := s.cw.Flush(); err != nil {
		return err
	}
	return errLeaveRelay
}

// prefillRouted gives the routed path the statements prepared while the
// session was relayed (they exist upstream and are routed anew) and the
// parameters the upstream reported meanwhile.
func (s *Session) prefillRouted(tr *relayTrack) {
	tr.mu.Lock()
	stmts, params := tr.stmts, tr.params
	tr.stmts, tr.params = nil, nil
	tr.mu.Unlock()
	for k, v := range params {
		s.status[k] = v
	}
	for name, ts := range stmts {
		st := &stmt{name: name, sql: ts.sql, oids: ts.oids, h: Forward(), upPrepared: true}
		s.rt.stmts[name] = st
		s.rerouteStmt(st)
	}
}

// rerouteStmts drops cached routing decisions and routes every prepared
// statement again. Portals need nothing: at an idle point no transaction is
// open, so no portal survives.
func (s *Session) rerouteStmts() {
	rt := s.rt
	clear(rt.plans)
	clear(rt.splits)
	for _, st := range rt.stmts {
		s.rerouteStmt(st)
	}
}

// rerouteStmt routes st again. A statement that becomes local gets its
// local description; one that cannot be routed or described keeps existing
// and reports the error at its next Bind or Describe, as PostgreSQL reports
// a statement that no longer plans. Whether it is prepared upstream does
// not change: a local statement's upstream copy is closed with the
// statement, a forwarded statement not yet prepared there is prepared
// before its first Bind or Describe.
func (s *Session) rerouteStmt(st *stmt) {
	st.err, st.desc = nil, nil
	h, err := s.route(st.sql)
	if err != nil {
		st.err = err
		return
	}
	st.h = h
	if lh, ok := h.(localHandler); ok {
		desc, err := lh.s.Describe(s.ctx, s, st.oids)
		if err != nil {
			st.err = err
			return
		}
		st.desc = &desc
	}
}

// upPrepare prepares st upstream under its own name before a forwarded Bind
// or Describe needs it there; the ParseComplete is not the client's, and an
// error reaches the client in place of the Bind's or Describe's response.
func (s *Session) upPrepare(st *stmt) error {
	b, err := (&pgproto3.Parse{Name: st.name, Query: st.sql, ParameterOIDs: st.oids}).Encode(nil)
	if err != nil {
		return err
	}
	if _, err := s.up.w.Write(b); err != nil {
		return s.upstreamFailed(err)
	}
	st.upPrepared = true
	s.rt.slots = append(s.rt.slots, slot{kind: 'P', st: st, silent: true})
	s.rt.upDirty = true
	return nil
}

// looksLikeDeallocate is a cheap first test of a Query body (NUL
// terminated) for deallocateTarget.
func looksLikeDeallocate(body []byte) bool {
	const kw = "deallocate"
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	if len(body)-i < len(kw) {
		return false
	}
	for j := 0; j < len(kw); j++ {
		if body[i+j]|0x20 != kw[j] {
			return false
		}
	}
	return true
}

// deallocateTarget recognises a single SQL DEALLOCATE statement (as pgx v4
// sends to close a prepared statement) and returns the statement it
// closes, folded as PostgreSQL folds identifiers, or all.
func deallocateTarget(sql string) (name string, all, ok bool) {
	s := strings.TrimSpace(sql)
	s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
	kw, rest := cutWord(s)
	if !strings.EqualFold(kw, "deallocate") || rest == "" {
		return "", false, false
	}
	if kw, r2 := cutWord(rest); strings.EqualFold(kw, "prepare") && r2 != "" {
		rest = r2
	}
	if rest[0] == '"' {
		var b strings.Builder
		for i := 1; i < len(rest); i++ {
			if rest[i] != '"' {
				b.WriteByte(rest[i])
				continue
			}
			if i+1 < len(rest) && rest[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			if i != len(rest)-1 || b.Len() == 0 {
				return "", false, false
			}
			return b.String(), false, true
		}
		return "", false, false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80) || i == 0 && c >= '0' && c <= '9' {
			return "", false, false
		}
	}
	if strings.EqualFold(rest, "all") {
		return "", true, true
	}
	return strings.ToLower(rest), false, true
}

// cutWord splits s at its first run of white space.
func cutWord(s string) (string, string) {
	i := strings.IndexAny(s, " \t\r\n\f\v")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\r\n\f\v")
}

// forgetDeallocated drops the routed path's record of statements a
// forwarded SQL DEALLOCATE closed upstream, so that the name can be
// prepared again.
func (s *Session) forgetDeallocated(sql string) {
	if len(sql) < len("deallocate") {
		return
	}
	name, all, ok := deallocateTarget(sql)
	switch {
	case !ok:
	case all:
		clear(s.rt.stmts)
	default:
		delete(s.rt.stmts, name)
	}
}

// deallocateLocal answers a simple-query DEALLOCATE of a statement that
// exists only in the proxy (prepared while routed locally): the upstream
// does not know it. done is false when the query is anything else.
func (s *Session) deallocateLocal(sql string) (done bool, err error) {
	if !looksLikeDeallocate([]byte(sql)) || s.TxStatus() == 'E' {
		return false, nil
	}
	name, all, ok := deallocateTarget(sql)
	if !ok {
		return false, nil
	}
	tag := "DEALLOCATE"
	if all {
		if s.up != nil {
			return false, nil
		}
		clear(s.rt.stmts)
		tag = "DEALLOCATE ALL"
	} else {
		st := s.rt.stmts[name]
		if st == nil || st.upPrepared {
			return false, nil
		}
		delete(s.rt.stmts, name)
	}
	if err := s.buffer(&pgproto3.CommandComplete{CommandTag: []byte(tag)}); err != nil {
		return true, err
	}
	return true, s.readyForQuery()
}

// relayReroute calls the Rerouter from the goroutine relay. A panic there
// becomes the session's error, so that the relay stops its upstream reader
// before the client is told (runSession's recover would write to the
// client while that reader still does).
func (s *Session) relayReroute() (yes bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("session panicked; closing it", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			yes, err = false, fatalf(CodeInternalError, "internal error in kvproxy: %v", p)
		}
	}()
	return s.rr.Reroute(s), nil
}
