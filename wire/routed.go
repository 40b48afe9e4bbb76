package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

const maxCachedPlans = 4096

// upMsg is one upstream message read by the routed session's reader.
type upMsg struct {
	typ  byte
	body []byte
}

// upQueue hands upstream messages to the session goroutine while it expects
// responses (busy), and relays them straight to the client while it waits
// for the client (notifications, notices, parameter changes).
type upQueue struct {
	mu     sync.Mutex
	busy   bool
	msgs   []upMsg
	err    error
	signal chan struct{}
}

type stmt struct {
	name   string
	sql    string
	h      Handler
	oids   []uint32 // from Parse
	desc   *Description
	fields []pgproto3.FieldDescription // learned from an upstream Describe
	// upPrepared: the statement exists upstream under its name (it was
	// forwarded when parsed, prepared during the relay, or prepared there
	// lazily after re-routing made it forwarded).
	upPrepared bool
	// err: re-routing failed (Route or the local Describe); Bind and
	// Describe report it until the next re-routing.
	err error
}

type portal struct {
	st      *stmt
	local   bool
	params  Params
	formats []int16 // result formats, resolved per column for local
	rawFmts []int16
	fields  []pgproto3.FieldDescription
	// local execution state
	executed bool
	rows     []byte
	offsets  []int
	next     int
	tag      string
}

type slot struct {
	kind   byte // 'P','B','D','E','C','S','F','Q'
	st     *stmt
	portal *portal
	isStmt bool // Describe 'S'
	ins    *inspection
	silent bool // sent by the proxy: the upstream's success is not the client's
}

type inspection struct {
	f       InspectFunc
	observe bool // see ForwardObserve
	res     Inspected
	buf     []upMsg
}

// routed is the per-session state of the statement-by-statement path.
type routed struct {
	q          *upQueue
	readerDone chan struct{} // closed when q's reader has stopped
	stmts      map[string]*stmt
	portals    map[string]*portal
	plans      map[string]Handler
	splits     map[string][]string
	slots      []slot
	aborted    bool // discard until Sync
	upDirty    bool // upstream has extended messages since its last Sync
	inExt      bool // the client sent extended messages since its last Sync
	m          *pgtype.Map
	body       []byte
	copyBuf    []byte // COPY data on its way upstream (UpstreamOptional)
	execN      int
}

func (s *Session) runRouted() error {
	rt := &routed{stmts: map[string]*stmt{}, portals: map[string]*portal{}, plans: map[string]Handler{},
		splits: map[string][]string{}, m: pgtype.NewMap()}
	s.rt = rt
	if s.optional() {
		s.upOptional.Store(true)
	}
	if s.up != nil {
		s.startReader()
	}
	defer s.stopReader()
	if tr := s.track; tr != nil {
		s.track = nil
		s.prefillRouted(tr)
	}
	max := s.srv.cfg.MaxMessageSize
	for {
		if s.cr.Buffered() == 0 {
			if err := s.cw.Flush(); err != nil {
				return err
			}
			s.setIdle(true)
			err := s.waitClient()
			s.setIdle(false)
			if err != nil {
				return err
			}
		}
		typ, n, err := readHeader(s.cr, max)
		if err != nil {
			return err
		}
		if !frontendTypes[typ] || typ == 'p' {
			return fmt.Errorf("%w: invalid frontend message type %d", ErrBadMessage, typ)
		}
		body, err := readBody(s.cr, rt.body, n)
		if err != nil {
			return err
		}
		rt.body = body
		if s.up != nil && typ != 'X' {
			s.dropDeadUpstream()
		}
		if s.rr != nil && typ != 'X' && !rt.inExt && len(rt.slots) == 0 && !rt.upDirty && s.TxStatus() == 'I' && s.rr.Reroute(s) {
			s.rerouteStmts()
			if s.srv.upCfg != nil {
				s.upOptional.Store(s.optional())
			}
		}
		switch typ {
		case 'P', 'B', 'D', 'E', 'C', 'H':
			rt.inExt = true
		}
		if err := s.handle(typ, body); err != nil {
			var lost *upLostError
			if !errors.As(err, &lost) {
				return err
			}
			if err := s.recoverLost(typ, lost); err != nil {
				return err
			}
		}
	}
}

// setIdle switches upstream messages between the queue and the client.
func (s *Session) setIdle(idle bool) {
	if s.rt.q == nil {
		return
	}
	q := s.rt.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.busy = !idle
	if idle {
		for _, m := range q.msgs {
			s.writeRaw(m.typ, m.body)
		}
		q.msgs = q.msgs[:0]
		_ = s.cw.Flush()
	}
}

func (s *Session) readUpstream(q *upQueue, up *upstreamConn) {
	r := up.r
	for {
		typ, n, err := readHeader(r, 0)
		var body []byte
		if err == nil {
			body, err = readBody(r, nil, n)
		}
		if err == nil && typ == 'E' && s.upOptional.Load() && fatalBody(body) {
			// The upstream ends the connection (57P01 on a restart): the
			// session goes on without it, the client is not told.
			err = newUpLost(pgErrorFrom(body))
		} else if err != nil && s.upOptional.Load() {
			err = newUpLost(err)
		}
		q.mu.Lock()
		if err != nil {
			q.err = err
			if !q.busy && !s.terminating.Load() && !s.upOptional.Load() {
				s.sendFatal(s.upstreamFailed(err))
				s.conn.Close()
			}
			q.mu.Unlock()
			select {
			case q.signal <- struct{}{}:
			default:
			}
			return
		}
		if !q.busy {
			s.writeRaw(typ, body)
			if typ == 'Z' && len(body) == 1 {
				s.upTx.Store(uint32(body[0]))
			}
			if r.Buffered() == 0 {
				_ = s.cw.Flush()
			}
			q.mu.Unlock()
			continue
		}
		q.msgs = append(q.msgs, upMsg{typ, body})
		q.mu.Unlock()
		select {
		case q.signal <- struct{}{}:
		default:
		}
	}
}

// upNext returns the next upstream message.
func (s *Session) upNext(ctx context.Context) (upMsg, error) {
	q := s.rt.q
	for {
		q.mu.Lock()
		if len(q.msgs) > 0 {
			m := q.msgs[0]
			q.msgs[0] = upMsg{}
			q.msgs = q.msgs[1:]
			q.mu.Unlock()
			return m, nil
		}
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return upMsg{}, s.upstreamFailed(err)
		}
		select {
		case <-q.signal:
		case <-ctx.Done():
			return upMsg{}, fatalf(CodeConnectionFailure, "upstream wait abandoned: %v", ctx.Err())
		}
	}
}

func (s *Session) writeRaw(typ byte, body []byte) {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	_, _ = s.cw.Write(hdr[:])
	_, _ = s.cw.Write(body)
}

// upWrite appends a raw message to the upstream write buffer.
func (s *Session) upWrite(typ byte, body []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	if _, err := s.up.w.Write(hdr[:]); err != nil {
		return s.upstreamFailed(err)
	}
	if _, err := s.up.w.Write(body); err != nil {
		return s.upstreamFailed(err)
	}
	return nil
}

func (s *Session) upFlush() error {
	if err := s.up.w.Flush(); err != nil {
		return s.upstreamFailed(err)
	}
	return nil
}

// handle processes one client message. A returned error ends the session.
func (s *Session) handle(typ byte, body []byte) error {
	rt := s.rt
	if typ == 'X' {
		s.terminating.Store(true)
		return errTerminated
	}
	if rt.aborted && typ != 'S' {
		if !frontendTypes[typ] || typ == 'p' {
			return fmt.Errorf("%w: invalid frontend message type %d", ErrBadMessage, typ)
		}
		return nil
	}
	switch typ {
	case 'Q':
		sql, err := cstring(body)
		if err != nil {
			return err
		}
		return s.simpleQuery(sql)
	case 'P':
		return s.parse(body)
	case 'B':
		return s.bind(body)
	case 'D':
		return s.describe(body)
	case 'E':
		return s.execute(body)
	case 'C':
		return s.closeMsg(body)
	case 'S':
		return s.sync()
	case 'H':
		if skip, err := s.syncPoint(); skip || err != nil {
			return err
		}
		return s.cw.Flush()
	case 'F':
		// A function call is answered like a simple query, ReadyForQuery
		// included.
		if skip, err := s.syncPoint(); skip || err != nil {
			return err
		}
		ok, uerr := s.upReady()
		if uerr == nil && !ok {
			uerr = Errorf(CodeFeatureNotSupported, "function calls are not supported without an upstream")
		}
		if uerr != nil {
			if err := s.buffer(errorResponse(uerr)); err != nil {
				return err
			}
			if err := s.failTransaction(false); err != nil {
				return err
			}
			return s.readyForQuery()
		}
		if err := s.upWrite(typ, body); err != nil {
			return err
		}
		if err := s.upFlush(); err != nil {
			return err
		}
		for {
			m, err := s.upNext(s.ctx)
			if err != nil {
				return err
			}
			if m.typ == 'Z' {
				s.setUpTx(m.body)
				rt.upDirty = false
				return s.readyForQuery()
			}
			s.writeRaw(m.typ, m.body)
		}
	case 'd', 'c', 'f':
		// As PostgreSQL: ignored outside COPY (a failed COPY's trailing data).
		return nil
	default:
		return fmt.Errorf("%w: invalid frontend message type %d", ErrBadMessage, typ)
	}
}

func cstring(b []byte) (string, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 || i != len(b)-1 {
		return "", fmt.Errorf("%w: invalid string in message", ErrBadMessage)
	}
	return string(b[:i]), nil
}

// route returns the cached or new decision for sql.
func (s *Session) route(sql string) (Handler, error) {
	rt := s.rt
	if h, ok := rt.plans[sql]; ok {
		return h, nil
	}
	h, err := s.srv.router.Route(s.ctx, s, sql)
	if err != nil {
		return nil, err
	}
	if h == nil {
		h = Forward()
	}
	if len(rt.plans) >= maxCachedPlans {
		clear(rt.plans)
	}
	rt.plans[sql] = h
	return h, nil
}

func (s *Session) split(sql string) ([]string, error) {
	rt := s.rt
	if parts, ok := rt.splits[sql]; ok {
		return parts, nil
	}
	var parts []string
	var err error
	if sp, ok := s.srv.router.(Splitter); ok {
		parts, err = sp.Split(sql)
	} else {
		parts, err = pg_query.SplitWithParser(sql, true)
		if err != nil {
			// Text PostgreSQL's grammar rejects is one unit: forwarded,
			// the upstream reports the error; a Router may also claim it.
			parts, err = []string{sql}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if len(rt.splits) >= maxCachedPlans {
		clear(rt.splits)
	}
	rt.splits[sql] = parts
	return parts, nil
}

// syncPoint relays outstanding upstream responses before a local response.
// skip reports that one of them was an error: the current message is then
// discarded, as everything up to Sync.
func (s *Session) syncPoint() (skip bool, err error) {
	if err := s.drain(true); err != nil {
		return true, err
	}
	return s.rt.aborted, nil
}

// localError reports a statement failure produced by the proxy: the client
// gets the error, the pipeline discards until Sync, and an open transaction
// becomes failed.
func (s *Session) localError(err error) error {
	if skip, derr := s.syncPoint(); skip || derr != nil {
		return derr
	}
	if err := s.buffer(errorResponse(err)); err != nil {
		return err
	}
	s.rt.aborted = true
	return s.failTransaction(true)
}

// failTransaction puts an open transaction into the failed state after a
// statement failed in the proxy. When the upstream holds the transaction (or
// an implicit one of the current pipeline), a failing statement is run there
// too, so the upstream aborts it: later statements fail with 25P02, ROLLBACK
// works, and the pipeline's earlier statements are not committed, as in
// PostgreSQL. inPipeline is false for simple queries.
func (s *Session) failTransaction(inPipeline bool) error {
	if s.localTx == 'T' {
		s.localTx = 'E'
	}
	if s.up == nil || !(byte(s.upTx.Load()) == 'T' || inPipeline && s.rt.upDirty) {
		return nil
	}
	const poison = "DO $kvproxy$BEGIN RAISE EXCEPTION 'kvproxy: transaction aborted by a failed statement' USING ERRCODE = '25P02'; END$kvproxy$"
	var buf []byte
	var err error
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: poison}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{},
	} {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	if _, err := s.up.w.Write(buf); err != nil {
		return s.upstreamFailed(err)
	}
	if err := s.upFlush(); err != nil {
		return err
	}
	for {
		m, err := s.upNext(s.ctx)
		if err != nil {
			return err
		}
		switch m.typ {
		case 'E':
			s.rt.upDirty = true
			if inPipeline {
				return nil
			}
			return s.upSync()
		case 'A', 'S':
			s.writeRaw(m.typ, m.body)
		}
	}
}

// upSync sends Sync upstream and waits for its ReadyForQuery.
func (s *Session) upSync() error {
	if err := s.upWrite('S', nil); err != nil {
		return err
	}
	if err := s.upFlush(); err != nil {
		return err
	}
	for {
		m, err := s.upNext(s.ctx)
		if err != nil {
			return err
		}
		switch m.typ {
		case 'Z':
			s.setUpTx(m.body)
			s.rt.upDirty = false
			return nil
		case 'A', 'S':
			s.writeRaw(m.typ, m.body)
		}
	}
}

func (s *Session) setUpTx(body []byte) {
	if len(body) != 1 {
		return
	}
	prev := byte(s.upTx.Load())
	s.upTx.Store(uint32(body[0]))
	if body[0] == 'I' && prev != 'I' && s.localTx == 'E' {
		s.localTx = 0
	}
}

func (s *Session) simpleQuery(sql string) error {
	rt := s.rt
	if skip, err := s.syncPoint(); skip || err != nil {
		return err
	}
	delete(rt.portals, "")
	delete(rt.stmts, "")
	if done, err := s.deallocateLocal(sql); done || err != nil {
		return err
	}
	parts, err := s.split(sql)
	if err != nil {
		if s.srv.upCfg != nil && s.rt != nil {
			// Let PostgreSQL report the syntax error exactly.
			if ok, uerr := s.upReady(); uerr != nil {
				if err := s.localErrorSimple(uerr); err != nil {
					return err
				}
				return s.readyForQuery()
			} else if ok {
				_, err := s.forwardQuery(sql, nil)
				if err != nil {
					return err
				}
				return s.readyForQuery()
			}
		}
		if err := s.buffer(errorResponse(Errorf(CodeSyntaxError, "%v", err))); err != nil {
			return err
		}
		return s.readyForQuery()
	}
	if len(parts) == 0 {
		if err := s.buffer(&pgproto3.EmptyQueryResponse{}); err != nil {
			return err
		}
		return s.readyForQuery()
	}
	handlers := make([]Handler, len(parts))
	allForward := true
	for i, p := range parts {
		h, err := s.route(p)
		if err != nil {
			if err := s.buffer(errorResponse(err)); err != nil {
				return err
			}
			if err := s.failTransaction(false); err != nil {
				return err
			}
			return s.readyForQuery()
		}
		handlers[i] = h
		if h.handlerKind() != kindForward {
			allForward = false
		}
	}
	if s.lostTx || s.srv.upCfg == nil {
		allForward = false
	}
	if allForward {
		ok, uerr := s.upReady()
		if uerr != nil {
			if err := s.localErrorSimple(uerr); err != nil {
				return err
			}
			return s.readyForQuery()
		}
		allForward = ok
	}
	if allForward {
		failed, err := s.forwardQuery(sql, nil)
		if err != nil {
			return err
		}
		if !failed {
			for _, p := range parts {
				s.forgetDeallocated(p)
			}
		}
		return s.readyForQuery()
	}
	for i, p := range parts {
		var failed bool
		var err error
		h := handlers[i]
		if s.lostTx && h.handlerKind() != kindLocal {
			// The transaction was lost with the upstream: answered here,
			// as PostgreSQL answers a failed transaction.
			h = lostTxHandler(p)
		}
		switch h := h.(type) {
		case localHandler:
			failed, err = s.localSimple(p, h.s)
		case inspectHandler:
			if ok, uerr := s.upSimple(); !ok {
				failed, err = true, uerr
				break
			}
			if h.before != nil {
				if berr := h.before(s.ctx, s); berr != nil {
					failed, err = true, s.localErrorSimple(berr)
					break
				}
			}
			failed, err = s.forwardQuery(p, &inspection{f: h.f, observe: h.observe, res: Inspected{SQL: p}})
		default:
			if ok, uerr := s.upSimple(); !ok {
				failed, err = true, uerr
				break
			}
			failed, err = s.forwardQuery(p, nil)
			if err == nil && !failed {
				s.forgetDeallocated(p)
			}
		}
		if err != nil {
			return err
		}
		if failed {
			break
		}
	}
	return s.readyForQuery()
}

// noUpstreamExt fails an extended message for a statement that re-routing
// made forwarded in a session without an upstream.
func (s *Session) noUpstreamExt() error {
	return s.localError(Errorf(CodeFeatureNotSupported, "statement cannot be answered without an upstream"))
}

// upSimple makes sure a forwarded statement of a simple query has an
// upstream; when not, the statement's error has been sent (err is a
// session error).
func (s *Session) upSimple() (ok bool, err error) {
	ok, uerr := s.upReady()
	if uerr != nil {
		return false, s.localErrorSimple(uerr)
	}
	if !ok {
		return false, s.noUpstream()
	}
	return true, nil
}

func (s *Session) noUpstream() error {
	if err := s.buffer(errorResponse(Errorf(CodeFeatureNotSupported, "statement cannot be answered without an upstream"))); err != nil {
		return err
	}
	return s.failTransaction(false)
}

// readyForQuery ends a simple query or a Sync: syncs the upstream if extra
// statements left it mid-pipeline, then reports the status.
func (s *Session) readyForQuery() error {
	rt := s.rt
	if s.up != nil && rt.upDirty {
		if err := s.upWrite('S', nil); err != nil {
			return err
		}
		rt.slots = append(rt.slots, slot{kind: 'S'})
		if err := s.drain(false); err != nil {
			return err
		}
		rt.upDirty = false
	}
	rt.aborted = false
	rt.inExt = false
	if s.TxStatus() == 'I' {
		clear(rt.portals)
	}
	return s.buffer(&pgproto3.ReadyForQuery{TxStatus: s.TxStatus()})
}

// forwardQuery runs one simple Query upstream and relays its results
// (without the final ReadyForQuery). failed reports an ErrorResponse.
func (s *Session) forwardQuery(sql string, ins *inspection) (failed bool, err error) {
	if err := s.upWrite('Q', append([]byte(sql), 0)); err != nil {
		return false, err
	}
	if err := s.upFlush(); err != nil {
		return false, err
	}
	for {
		m, err := s.upNext(s.ctx)
		if err != nil {
			return failed, err
		}
		if m.typ == 'E' {
			failed = true
		}
		if ins != nil {
			switch m.typ {
			case 'T':
				var rd pgproto3.RowDescription
				if rd.Decode(m.body) == nil {
					ins.res.Fields = rd.Fields
				}
				ins.buf = append(ins.buf, m)
				continue
			case 'D':
				ins.res.Rows = append(ins.res.Rows, dataRowValues(m.body))
				ins.buf = append(ins.buf, m)
				continue
			case 'C', 'E', 'I':
				ierr := s.finishInspection(ins, m)
				if ierr != nil {
					failed = true
				}
				ins = &inspection{f: ins.f, observe: ins.observe, res: Inspected{SQL: sql}}
				continue
			}
		}
		switch m.typ {
		case 'Z':
			s.setUpTx(m.body)
			return failed, nil
		case 'G':
			s.writeRaw(m.typ, m.body)
			if err := s.copyIn(); err != nil {
				return failed, err
			}
		default:
			s.noteParameter(m)
			s.writeRaw(m.typ, m.body)
		}
	}
}

// noteParameter keeps Session.ParameterStatus current when a forwarded SET
// changes a reported parameter.
func (s *Session) noteParameter(m upMsg) {
	if m.typ != 'S' {
		return
	}
	var ps pgproto3.ParameterStatus
	if ps.Decode(m.body) == nil {
		s.status[ps.Name] = ps.Value
	}
}

// finishInspection calls the inspector with a completed result and releases
// the result or the inspector's error to the client. It returns the
// inspector's error.
func (s *Session) finishInspection(ins *inspection, last upMsg) error {
	switch last.typ {
	case 'C', 's':
		var cc pgproto3.CommandComplete
		if last.typ == 'C' && cc.Decode(last.body) == nil {
			ins.res.Tag = string(cc.CommandTag)
		}
	case 'E':
		ins.res.Err = pgErrorFrom(last.body)
	}
	// Upstream.Exec would wait for the very result being inspected.
	s.inInspect = true
	err := ins.f(s.ctx, s, &ins.res)
	s.inInspect = false
	if ins.observe {
		err = nil
	}
	if err != nil {
		if last.typ == 'E' {
			s.writeRaw(last.typ, last.body)
			return err
		}
		_ = s.buffer(errorResponse(err))
		return err
	}
	for _, m := range ins.buf {
		s.writeRaw(m.typ, m.body)
	}
	s.writeRaw(last.typ, last.body)
	return nil
}

func dataRowValues(body []byte) [][]byte {
	var dr pgproto3.DataRow
	if dr.Decode(body) != nil {
		return nil
	}
	out := make([][]byte, len(dr.Values))
	for i, v := range dr.Values {
		if v != nil {
			out[i] = append([]byte{}, v...)
		}
	}
	return out
}

// copyIn relays client COPY data upstream until CopyDone or CopyFail.
func (s *Session) copyIn() error {
	if err := s.cw.Flush(); err != nil {
		return err
	}
	max := s.srv.cfg.MaxMessageSize
	for {
		if s.cr.Buffered() == 0 {
			if err := s.upFlush(); err != nil {
				return err
			}
		}
		typ, n, err := readHeader(s.cr, max)
		if err != nil {
			return err
		}
		switch typ {
		case 'd', 'c', 'f', 'H', 'S':
		default:
			return fmt.Errorf("%w: unexpected message type %q during COPY", ErrBadMessage, typ)
		}
		if s.upOptional.Load() {
			// Whole messages, so that a lost upstream leaves the client
			// side at a message boundary (the session goes on).
			b, err := readBody(s.cr, s.rt.copyBuf, n)
			if err != nil {
				return err
			}
			s.rt.copyBuf = b
			if err := s.upWrite(typ, b); err != nil {
				return err
			}
		} else if err := relayMessage(s.up.w, s.cr, typ, n); err != nil {
			return err
		}
		if typ == 'c' || typ == 'f' {
			return s.upFlush()
		}
	}
}

// localSimple answers one statement of a simple query locally.
func (s *Session) localSimple(sql string, ls LocalStatement) (bool, error) {
	desc, err := ls.Describe(s.ctx, s, nil)
	if err != nil {
		return true, s.localErrorSimple(err)
	}
	if desc.Columns != nil {
		if err := s.buffer(rowDescription(desc.Columns, nil)); err != nil {
			return true, err
		}
	}
	w := &RowWriter{cols: desc.Columns, formats: make([]int16, len(desc.Columns)), m: s.rt.m}
	tag, err := s.runLocal(ls, Params{m: s.rt.m}, w)
	if _, werr := s.cw.Write(w.buf); werr != nil {
		return true, werr
	}
	if err != nil {
		return true, s.localErrorSimple(err)
	}
	return false, s.buffer(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
}

func (s *Session) localErrorSimple(err error) error {
	if err := s.buffer(errorResponse(err)); err != nil {
		return err
	}
	return s.failTransaction(false)
}

// runLocal executes a local statement, cancellable by CancelRequest.
func (s *Session) runLocal(ls LocalStatement, p Params, w *RowWriter) (string, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.runCancel = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.runCancel = nil
		s.mu.Unlock()
		cancel()
	}()
	tag, err := ls.Execute(ctx, s, p, w)
	if err != nil && ctx.Err() != nil && s.ctx.Err() == nil {
		return "", Errorf(CodeQueryCanceled, "canceling statement due to user request")
	}
	return tag, err
}

func (s *Session) parse(body []byte) error {
	rt := s.rt
	var msg pgproto3.Parse
	if err := msg.Decode(body); err != nil {
		return fmt.Errorf("%w: Parse: %w", ErrBadMessage, err)
	}
	if msg.Name != "" {
		if _, ok := rt.stmts[msg.Name]; ok {
			return s.localError(Errorf(CodeDuplicatePreparedStmt, "prepared statement %q already exists", msg.Name))
		}
	}
	h, err := s.route(msg.Query)
	if err != nil {
		return s.localError(err)
	}
	st := &stmt{name: msg.Name, sql: msg.Query, h: h, oids: msg.ParameterOIDs}
	if lh, ok := h.(localHandler); ok {
		desc, err := lh.s.Describe(s.ctx, s, msg.ParameterOIDs)
		if err != nil {
			return s.localError(err)
		}
		st.desc = &desc
		rt.stmts[msg.Name] = st
		if skip, err := s.syncPoint(); skip || err != nil {
			return err
		}
		return s.buffer(&pgproto3.ParseComplete{})
	}
	if s.lostTx {
		if !txExit(msg.Query) {
			return s.localError(errLostTx())
		}
		// Prepared upstream lazily once it is forwarded again.
		rt.stmts[msg.Name] = st
		if skip, err := s.syncPoint(); skip || err != nil {
			return err
		}
		return s.buffer(&pgproto3.ParseComplete{})
	}
	if ok, err := s.upReady(); err != nil {
		return s.localError(err)
	} else if !ok {
		return s.localError(Errorf(CodeFeatureNotSupported, "statement cannot be answered without an upstream"))
	}
	st.upPrepared = true
	rt.stmts[msg.Name] = st
	return s.forwardExt('P', body, slot{kind: 'P', st: st})
}

func (s *Session) forwardExt(typ byte, body []byte, sl slot) error {
	if err := s.upWrite(typ, body); err != nil {
		return err
	}
	s.rt.slots = append(s.rt.slots, sl)
	s.rt.upDirty = true
	return nil
}

func (s *Session) bind(body []byte) error {
	rt := s.rt
	name, rest, ok := cut(body)
	stmtName, _, ok2 := cut(rest)
	if !ok || !ok2 {
		return fmt.Errorf("%w: Bind", ErrBadMessage)
	}
	var msg pgproto3.Bind
	if err := msg.Decode(body); err != nil {
		return fmt.Errorf("%w: Bind: %w", ErrBadMessage, err)
	}
	st := rt.stmts[stmtName]
	if st != nil && st.err != nil {
		return s.localError(st.err)
	}
	if st == nil || st.h.handlerKind() != kindLocal {
		if s.lostTx {
			if st != nil && txExit(st.sql) {
				return s.bindLostTxEnd(name, st)
			}
			return s.localError(errLostTx())
		}
		if s.srv.upCfg == nil {
			if st != nil {
				return s.noUpstreamExt()
			}
			return s.localError(Errorf(CodeUndefinedPreparedStmt, "prepared statement %q does not exist", stmtName))
		}
		p := &portal{st: st}
		if st != nil && st.h.handlerKind() == kindInspect {
			p.params = bindParams(&msg, st.oids, rt.m)
			p.rawFmts = msg.ResultFormatCodes
			p.fields = st.fields
		}
		if st != nil {
			// A hook that opens a transaction must run before the Bind:
			// PostgreSQL takes the transaction snapshot there.
			if ih, ok := st.h.(inspectHandler); ok && ih.before != nil {
				if err := ih.before(s.ctx, s); err != nil {
					return s.localError(err)
				}
			}
		}
		if _, err := s.upReady(); err != nil {
			return s.localError(err)
		}
		if st != nil && !st.upPrepared {
			if err := s.upPrepare(st); err != nil {
				return err
			}
		}
		if name != "" {
			delete(rt.portals, name)
		}
		rt.portals[name] = p
		return s.forwardExt('B', body, slot{kind: 'B', portal: p})
	}
	np := len(st.desc.ParamOIDs)
	if len(msg.Parameters) != np {
		return s.localError(Errorf(CodeProtocolViolation, "bind message supplies %d parameters, but prepared statement %q requires %d", len(msg.Parameters), stmtName, np))
	}
	if n := len(msg.ParameterFormatCodes); n > 1 && n != np {
		return s.localError(Errorf(CodeProtocolViolation, "bind message has %d parameter formats but %d parameters", n, np))
	}
	nc := len(st.desc.Columns)
	if n := len(msg.ResultFormatCodes); n > 1 && n != nc {
		return s.localError(Errorf(CodeProtocolViolation, "bind message has %d result formats but query has %d columns", n, nc))
	}
	for _, f := range append(msg.ParameterFormatCodes, msg.ResultFormatCodes...) {
		if f != 0 && f != 1 {
			return s.localError(Errorf(CodeProtocolViolation, "unsupported format code: %d", f))
		}
	}
	if name != "" {
		if _, ok := rt.portals[name]; ok {
			return s.localError(Errorf("42P03", "cursor %q already exists", name))
		}
	}
	p := &portal{st: st, local: true, params: bindParams(&msg, st.desc.ParamOIDs, rt.m),
		formats: resultFormats(msg.ResultFormatCodes, nc)}
	if skip, err := s.syncPoint(); skip || err != nil {
		return err
	}
	rt.portals[name] = p
	return s.buffer(&pgproto3.BindComplete{})
}

func bindParams(msg *pgproto3.Bind, oids []uint32, m *pgtype.Map) Params {
	n := len(msg.Parameters)
	p := Params{Values: msg.Parameters, Formats: resultFormats(msg.ParameterFormatCodes, n), OIDs: make([]uint32, n), m: m}
	copy(p.OIDs, oids)
	for i := range p.OIDs {
		if p.OIDs[i] == 0 {
			p.OIDs[i] = pgtype.TextOID
		}
	}
	return p
}

func cut(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func (s *Session) describe(body []byte) error {
	rt := s.rt
	if len(body) < 2 {
		return fmt.Errorf("%w: Describe", ErrBadMessage)
	}
	name, err := cstring(body[1:])
	if err != nil {
		return err
	}
	switch body[0] {
	case 'S':
		st := rt.stmts[name]
		if st != nil && st.err != nil {
			return s.localError(st.err)
		}
		if st != nil && st.desc != nil {
			if skip, err := s.syncPoint(); skip || err != nil {
				return err
			}
			if err := s.buffer(&pgproto3.ParameterDescription{ParameterOIDs: st.desc.ParamOIDs}); err != nil {
				return err
			}
			if st.desc.Columns == nil {
				return s.buffer(&pgproto3.NoData{})
			}
			return s.buffer(rowDescription(st.desc.Columns, nil))
		}
		if s.lostTx {
			if st != nil && txExit(st.sql) {
				if skip, err := s.syncPoint(); skip || err != nil {
					return err
				}
				if err := s.buffer(&pgproto3.ParameterDescription{}); err != nil {
					return err
				}
				return s.buffer(&pgproto3.NoData{})
			}
			return s.localError(errLostTx())
		}
		if s.srv.upCfg == nil {
			if st != nil {
				return s.noUpstreamExt()
			}
			return s.localError(Errorf(CodeUndefinedPreparedStmt, "prepared statement %q does not exist", name))
		}
		if _, err := s.upReady(); err != nil {
			return s.localError(err)
		}
		if st != nil && !st.upPrepared {
			if err := s.upPrepare(st); err != nil {
				return err
			}
		}
		return s.forwardExt('D', body, slot{kind: 'D', isStmt: true, st: st})
	case 'P':
		p := rt.portals[name]
		if p != nil && p.local {
			if skip, err := s.syncPoint(); skip || err != nil {
				return err
			}
			if p.st.desc.Columns == nil {
				return s.buffer(&pgproto3.NoData{})
			}
			return s.buffer(rowDescription(p.st.desc.Columns, p.formats))
		}
		if ok, err := s.upForPortal(name); !ok {
			return err
		}
		return s.forwardExt('D', body, slot{kind: 'D', portal: p})
	default:
		return fmt.Errorf("%w: Describe target %q", ErrBadMessage, body[0])
	}
}

// upForPortal makes sure a forwarded Describe or Execute of a portal has an
// upstream; when not (ok false), the message's error has been reported and
// err is a session error.
func (s *Session) upForPortal(name string) (ok bool, err error) {
	if s.lostTx {
		return false, s.localError(errLostTx())
	}
	ok, uerr := s.upReady()
	if uerr != nil {
		return false, s.localError(uerr)
	}
	if !ok {
		return false, s.localError(Errorf(CodeUndefinedCursor, "portal %q does not exist", name))
	}
	return true, nil
}

// bindLostTxEnd binds a COMMIT/ROLLBACK of a transaction lost with the
// upstream to a portal the proxy answers (ROLLBACK).
func (s *Session) bindLostTxEnd(name string, st *stmt) error {
	if skip, err := s.syncPoint(); skip || err != nil {
		return err
	}
	syn := &stmt{name: st.name, sql: st.sql, h: Local(lostTxEnd{}), desc: &Description{}}
	s.rt.portals[name] = &portal{st: syn, local: true}
	return s.buffer(&pgproto3.BindComplete{})
}

func (s *Session) execute(body []byte) error {
	rt := s.rt
	name, rest, ok := cut(body)
	if !ok || len(rest) != 4 {
		return fmt.Errorf("%w: Execute", ErrBadMessage)
	}
	maxRows := int32(binary.BigEndian.Uint32(rest))
	p := rt.portals[name]
	if p == nil || !p.local {
		if ok, err := s.upForPortal(name); !ok {
			return err
		}
		sl := slot{kind: 'E', portal: p}
		if p != nil && p.st != nil {
			if ih, ok := p.st.h.(inspectHandler); ok {
				fields := p.fields
				if fields == nil {
					fields = p.st.fields
				}
				sl.ins = &inspection{f: ih.f, observe: ih.observe, res: Inspected{SQL: p.st.sql, Params: p.params, Fields: withFormats(fields, p.rawFmts)}}
			}
		}
		if err := s.forwardExt('E', body, sl); err != nil {
			return err
		}
		if sl.ins != nil && !sl.ins.observe {
			// The inspector may reject the result; nothing after it may
			// reach the upstream before that is known.
			return s.drain(true)
		}
		return nil
	}
	if skip, err := s.syncPoint(); skip || err != nil {
		return err
	}
	ls := p.st.h.(localHandler).s
	if !p.executed {
		p.executed = true
		w := &RowWriter{cols: p.st.desc.Columns, formats: p.formats, m: rt.m}
		tag, err := s.runLocal(ls, p.params, w)
		if err != nil {
			if _, werr := s.cw.Write(w.buf); werr != nil {
				return werr
			}
			return s.localError(err)
		}
		p.rows, p.tag = w.buf, tag
		for off := 0; off < len(p.rows); {
			p.offsets = append(p.offsets, off)
			off += 1 + int(binary.BigEndian.Uint32(p.rows[off+1:]))
		}
	}
	end := len(p.offsets)
	if maxRows > 0 && p.next+int(maxRows) < end {
		end = p.next + int(maxRows)
	}
	if p.next < end {
		to := len(p.rows)
		if end < len(p.offsets) {
			to = p.offsets[end]
		}
		if _, err := s.cw.Write(p.rows[p.offsets[p.next]:to]); err != nil {
			return err
		}
		p.next = end
	}
	if p.next < len(p.offsets) {
		return s.buffer(&pgproto3.PortalSuspended{})
	}
	if p.st.desc.Columns == nil && p.tag == "" {
		return s.buffer(&pgproto3.EmptyQueryResponse{})
	}
	return s.buffer(&pgproto3.CommandComplete{CommandTag: []byte(p.tag)})
}

func withFormats(fields []pgproto3.FieldDescription, codes []int16) []pgproto3.FieldDescription {
	if fields == nil {
		return nil
	}
	out := append([]pgproto3.FieldDescription{}, fields...)
	f := resultFormats(codes, len(out))
	for i := range out {
		out[i].Format = f[i]
	}
	return out
}

func (s *Session) closeMsg(body []byte) error {
	rt := s.rt
	if len(body) < 2 {
		return fmt.Errorf("%w: Close", ErrBadMessage)
	}
	name, err := cstring(body[1:])
	if err != nil {
		return err
	}
	local := false
	switch body[0] {
	case 'S':
		// A statement prepared upstream is closed there, whatever it is
		// routed to now: a later Parse of the name must not find it. Its
		// CloseComplete is the client's.
		st := rt.stmts[name]
		local = st != nil && !st.upPrepared
		delete(rt.stmts, name)
	case 'P':
		p := rt.portals[name]
		local = p != nil && p.local
		delete(rt.portals, name)
	default:
		return fmt.Errorf("%w: Close target %q", ErrBadMessage, body[0])
	}
	if local || s.up == nil {
		if skip, err := s.syncPoint(); skip || err != nil {
			return err
		}
		return s.buffer(&pgproto3.CloseComplete{})
	}
	return s.forwardExt('C', body, slot{kind: 'C'})
}

func (s *Session) sync() error {
	rt := s.rt
	if s.up != nil && (rt.upDirty || len(rt.slots) > 0) {
		if err := s.upWrite('S', nil); err != nil {
			return err
		}
		rt.slots = append(rt.slots, slot{kind: 'S'})
		if err := s.drain(false); err != nil {
			return err
		}
		rt.upDirty = false
	}
	return s.readyForQuery()
}

// drain relays upstream responses until every forwarded message has been
// answered, so a local response can follow in order. flush sends Flush
// first, needed unless the last forwarded message was Sync.
func (s *Session) drain(flush bool) error {
	rt := s.rt
	if len(rt.slots) == 0 {
		return nil
	}
	if flush {
		if err := s.upWrite('H', nil); err != nil {
			return err
		}
	}
	if err := s.upFlush(); err != nil {
		return err
	}
	for len(rt.slots) > 0 {
		m, err := s.upNext(s.ctx)
		if err != nil {
			return err
		}
		head := &rt.slots[0]
		switch m.typ {
		case 'E':
			if head.ins != nil {
				ins := head.ins
				head.ins = nil
				_ = s.finishInspection(ins, m)
			} else {
				s.writeRaw(m.typ, m.body)
			}
			if head.kind == 'P' && head.st != nil && head.silent {
				// A statement prepared lazily keeps existing; the next
				// Bind or Describe tries again.
				head.st.upPrepared = false
			} else if head.kind == 'P' && head.st != nil && rt.stmts[head.st.name] == head.st {
				delete(rt.stmts, head.st.name)
			}
			rt.aborted = true
			// The upstream skips everything up to the next Sync.
			i := 0
			for i < len(rt.slots) && rt.slots[i].kind != 'S' {
				i++
			}
			rt.slots = rt.slots[i:]
			if len(rt.slots) > 0 && (head.kind == 'S') {
				continue
			}
			if len(rt.slots) == 0 {
				// An error from a Flush-driven drain: nothing more to read.
				return nil
			}
		case '1', '2', '3':
			if !head.silent {
				s.writeRaw(m.typ, m.body)
			}
			rt.slots = rt.slots[1:]
		case 't':
			s.writeRaw(m.typ, m.body)
		case 'T', 'n':
			if head.kind == 'D' && m.typ == 'T' {
				var rd pgproto3.RowDescription
				if rd.Decode(m.body) == nil {
					if head.isStmt && head.st != nil {
						head.st.fields = rd.Fields
					} else if head.portal != nil {
						head.portal.fields = rd.Fields
					}
				}
			}
			s.writeRaw(m.typ, m.body)
			if head.kind == 'D' {
				rt.slots = rt.slots[1:]
			}
		case 'D':
			if head.ins != nil {
				head.ins.res.Rows = append(head.ins.res.Rows, dataRowValues(m.body))
				head.ins.buf = append(head.ins.buf, m)
				continue
			}
			s.writeRaw(m.typ, m.body)
		case 'C', 'I', 's':
			if head.ins != nil {
				if err := s.finishInspection(head.ins, m); err != nil {
					rt.aborted = true
					rt.slots = rt.slots[1:]
					if err := s.failTransaction(true); err != nil {
						return err
					}
					i := 0
					for i < len(rt.slots) && rt.slots[i].kind != 'S' {
						i++
					}
					rt.slots = rt.slots[i:]
					continue
				}
			} else {
				s.writeRaw(m.typ, m.body)
			}
			if head.kind == 'E' {
				rt.slots = rt.slots[1:]
			}
		case 'V':
			s.writeRaw(m.typ, m.body)
			if head.kind == 'F' {
				rt.slots = rt.slots[1:]
			}
		case 'Z':
			s.setUpTx(m.body)
			if head.kind == 'S' {
				rt.slots = rt.slots[1:]
			}
		case 'G':
			s.writeRaw(m.typ, m.body)
			if err := s.copyIn(); err != nil {
				return err
			}
		default:
			s.noteParameter(m)
			s.writeRaw(m.typ, m.body)
		}
	}
	return nil
}

// Upstream runs the upper layer's own statements on the session's upstream
// connection, inside whatever transaction the client has open there. Use it
// only from the session's goroutine (in a Router, LocalStatement or
// InspectFunc call).
type Upstream struct {
	s *Session
}

// Exec runs sql with text-encoded args ($1, $2, ...; nil is NULL) and
// returns its rows in text format. Statements and portals it uses are
// private to the proxy. An error from PostgreSQL (*pgconn.PgError) fails
// the client's current transaction as it would in PostgreSQL.
func (u *Upstream) Exec(ctx context.Context, sql string, args ...any) (*Result, error) {
	res, err := u.ExecPipeline(ctx, Statement{SQL: sql, Args: args})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// Statement is one statement of Upstream.ExecPipeline: SQL with
// text-encoded arguments, as for Exec.
type Statement struct {
	SQL  string
	Args []any
}

// ExecPipeline runs stmts in order in one round trip and returns one result
// per statement. The first statement that fails ends the pipeline:
// PostgreSQL skips the ones after it, and ExecPipeline returns the results
// of those before it with the error. So a write and the COMMIT after it
// cost one round trip, and the COMMIT never runs if the write failed.
func (u *Upstream) ExecPipeline(ctx context.Context, stmts ...Statement) ([]*Result, error) {
	s := u.s
	if len(stmts) == 0 {
		return nil, nil
	}
	if s.rt == nil {
		return nil, fmt.Errorf("wire: Upstream.Exec outside a routed session: %w", ErrNoUpstream)
	}
	if s.inInspect {
		return nil, ErrExecInInspect
	}
	if s.lostTx {
		// The transaction it would run in was lost with the upstream; a
		// COMMIT must not look as if it had committed.
		if sql := stmts[0].SQL; len(stmts) == 1 && txExit(sql) && txRollback(sql) {
			return []*Result{{Tag: "ROLLBACK"}}, nil
		}
		return nil, errLostTx()
	}
	res, err := s.exec(ctx, stmts)
	var lost *upLostError
	if errors.As(err, &lost) {
		s.dropUpstream(lost.cause)
		return nil, lost.clientError()
	}
	return res, err
}

func (s *Session) exec(ctx context.Context, stmts []Statement) ([]*Result, error) {
	rt := s.rt
	if err := s.drain(true); err != nil {
		return nil, err
	}
	if ok, err := s.upReady(); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("wire: Upstream.Exec: %w", ErrNoUpstream)
	}
	var buf []byte
	for _, st := range stmts {
		vals := make([][]byte, len(st.Args))
		for i, a := range st.Args {
			v, err := encodeTextArg(a)
			if err != nil {
				return nil, fmt.Errorf("wire: Upstream.Exec arg $%d: %w", i+1, err)
			}
			vals[i] = v
		}
		rt.execN++
		name := fmt.Sprintf("kvproxy_exec_%d", rt.execN)
		var err error
		for _, m := range []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: name, Query: st.SQL},
			&pgproto3.Bind{DestinationPortal: name, PreparedStatement: name, Parameters: vals},
			&pgproto3.Describe{ObjectType: 'P', Name: name},
			&pgproto3.Execute{Portal: name},
			&pgproto3.Close{ObjectType: 'P', Name: name},
			&pgproto3.Close{ObjectType: 'S', Name: name},
		} {
			if buf, err = m.Encode(buf); err != nil {
				return nil, err
			}
		}
	}
	buf, err := (&pgproto3.Flush{}).Encode(buf)
	if err != nil {
		return nil, err
	}
	if _, err := s.up.w.Write(buf); err != nil {
		return nil, s.upstreamFailed(err)
	}
	if err := s.upFlush(); err != nil {
		return nil, err
	}
	rt.upDirty = true
	results := make([]*Result, 0, len(stmts))
	res := &Result{}
	closes := 0
	for {
		m, err := s.upNext(ctx)
		if err != nil {
			return nil, err
		}
		switch m.typ {
		case 'T':
			var rd pgproto3.RowDescription
			if rd.Decode(m.body) == nil {
				res.Fields = rd.Fields
			}
		case 'D':
			res.Rows = append(res.Rows, dataRowValues(m.body))
		case 'C':
			var cc pgproto3.CommandComplete
			if cc.Decode(m.body) == nil {
				res.Tag = string(cc.CommandTag)
			}
		case '3':
			if closes++; closes == 2 {
				results = append(results, res)
				if len(results) == len(stmts) {
					return results, nil
				}
				res, closes = &Result{}, 0
			}
		case 'E':
			pe := pgErrorFrom(m.body)
			// Resynchronise: the upstream skips until Sync, the rest of
			// the pipeline included.
			if err := s.upSync(); err != nil {
				return nil, err
			}
			return results, pe
		case 'A', 'S':
			s.writeRaw(m.typ, m.body)
		}
	}
}

func encodeTextArg(a any) ([]byte, error) {
	switch v := a.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(v), nil
	case []byte:
		if v == nil {
			return nil, nil
		}
		return v, nil
	case bool:
		if v {
			return []byte("t"), nil
		}
		return []byte("f"), nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Appendf(nil, "%v", v), nil
	case fmt.Stringer:
		return []byte(v.String()), nil
	default:
		return nil, fmt.Errorf("unsupported type %T (use string, []byte, numbers, bool)", a)
	}
}
