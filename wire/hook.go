package wire

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// Router decides, once per distinct statement text and session, what happens
// to a statement. It is called from the session's goroutine; the decision is
// cached per session by text, so it must depend only on the text and on
// session state that does not change the answer for the same text, unless
// the Router also implements Rerouter to say when cached decisions expire.
type Router interface {
	Route(ctx context.Context, sess *Session, sql string) (Handler, error)
}

// Splitter is an optional Router method that splits a simple-protocol query
// string into statements. Without it, pg_query's parser splits it, and
// text it cannot parse is treated as one statement.
type Splitter interface {
	Split(sql string) ([]string, error)
}

// SessionOpener is an optional Router method called once per session after
// authentication and before the first statement (attach state here). An error
// ends the session with that error.
type SessionOpener interface {
	OpenSession(ctx context.Context, sess *Session) error
}

// Passthrough is an optional Router method; when it returns true at session
// start, the session relays every message upstream on the fast path and the
// Router is never consulted for it, except for Reroute when the Router is a
// Rerouter (the session then leaves the relay when Reroute returns true).
type Passthrough interface {
	Passthrough(sess *Session) bool
}

// Rerouter is an optional Router method that lets the layer above change its
// mind (a phase switch) while sessions stay connected. The session calls it
// at idle points (no transaction open: TxStatus()=='I', no pipeline pending)
// before handling the next client message; when it returns true the session
// drops its cached routing decisions and routes every prepared statement
// again (and a relaying session leaves the relay for the routed path). It is
// called on every such idle-point message, so it should be cheap (an atomic
// compare of a session's epoch against the current one).
type Rerouter interface {
	Reroute(sess *Session) bool
}

// RerouteNotifier is an optional Rerouter method: a Rerouter that says when
// Reroute may start to answer true lets its relaying sessions run on the
// Linux event loop, whose thread cannot call Reroute at every idle point.
// NotifyReroute is called once, by NewServer; the Rerouter calls changed
// (from any goroutine, without blocking) after every such change, once
// Reroute answers from it. Sessions then ask Reroute at their next idle
// point. Without it, a Rerouter's relaying sessions use the goroutine relay.
type RerouteNotifier interface {
	NotifyReroute(changed func())
}

// Handler is the Router's decision for one statement: Forward(),
// ForwardInspect(f) or Local(s).
type Handler interface{ handlerKind() kind }

type kind int

const (
	kindForward kind = iota
	kindInspect
	kindLocal
)

type forwardHandler struct{}

func (forwardHandler) handlerKind() kind { return kindForward }

// Forward sends the statement upstream as is.
func Forward() Handler { return forwardHandler{} }

// InspectFunc sees the upstream's result of a forwarded statement before the
// client does. A non-nil error replaces the result: the client gets it as an
// ErrorResponse instead of the rows and command tag.
type InspectFunc func(ctx context.Context, sess *Session, res *Inspected) error

// BeforeFunc runs on the session goroutine right before a forwarded
// statement goes upstream (before its Bind, where PostgreSQL takes the
// transaction snapshot, or before its simple Query). It may
// run statements of its own with Upstream().Exec, e.g. to open a transaction
// there only when one is needed. A non-nil error fails the statement, which
// is then not forwarded.
type BeforeFunc func(ctx context.Context, sess *Session) error

type inspectHandler struct {
	f      InspectFunc
	before BeforeFunc
	// observe: f only watches; the result goes to the client as it is.
	observe bool
}

func (inspectHandler) handlerKind() kind { return kindInspect }

// ForwardInspect forwards the statement and calls f with its result (rows,
// tag or error) before the response is released to the client.
func ForwardInspect(f InspectFunc) Handler { return inspectHandler{f: f} }

// ForwardHooks is ForwardInspect with before run right before the statement
// is forwarded. Either function may be nil.
func ForwardHooks(before BeforeFunc, inspect InspectFunc) Handler {
	if inspect == nil {
		inspect = func(context.Context, *Session, *Inspected) error { return nil }
	}
	return inspectHandler{f: inspect, before: before}
}

// ForwardObserve is ForwardHooks for an f that only watches the result
// (to count it, compare it, or note a transaction's state) and never
// replaces it: f's error is ignored. Because nothing can turn the result
// into an error, what follows the statement (its Sync above all) goes
// upstream at once instead of after the result, which saves a round trip
// per extended-protocol execution. Either function may be nil.
func ForwardObserve(before BeforeFunc, f InspectFunc) Handler {
	if f == nil {
		f = func(context.Context, *Session, *Inspected) error { return nil }
	}
	return inspectHandler{f: f, before: before, observe: true}
}

type localHandler struct{ s LocalStatement }

func (localHandler) handlerKind() kind { return kindLocal }

// Local answers the statement in the proxy with s.
func Local(s LocalStatement) Handler { return localHandler{s: s} }

// LocalStatement is a statement answered by the proxy.
type LocalStatement interface {
	// Describe returns the statement's parameter types and result columns.
	// paramOIDs are the types the client gave in Parse (0 = unspecified, may
	// be shorter than the number of parameters); the returned ParamOIDs must
	// cover every parameter, with no zeros.
	Describe(ctx context.Context, sess *Session, paramOIDs []uint32) (Description, error)
	// Execute runs the statement with bound parameters, writes rows to w (in
	// the formats the client asked for, which w handles) and returns the
	// command tag, e.g. "SELECT 1", "INSERT 0 1", "BEGIN". An error (best a
	// *pgconn.PgError, see Errorf) is sent to the client with its SQLSTATE.
	Execute(ctx context.Context, sess *Session, params Params, w *RowWriter) (tag string, err error)
}

// Description is what a LocalStatement reports about itself.
type Description struct {
	ParamOIDs []uint32
	// Columns is nil for statements that return no rows (NoData).
	Columns []Column
}

// Column describes one result column.
type Column struct {
	Name         string
	TypeOID      uint32
	TypeSize     int16 // -1 variable
	TypeModifier int32 // -1 none
	TableOID     uint32
	AttrNumber   uint16
}

// Params are the bound parameters of one execution.
type Params struct {
	Values  [][]byte // nil = NULL
	Formats []int16  // one per value: 0 text, 1 binary
	OIDs    []uint32 // one per value
	m       *pgtype.Map
}

// Len is the number of parameters.
func (p Params) Len() int { return len(p.Values) }

// Decode scans parameter i into dst (a pointer, as for pgx Scan).
func (p Params) Decode(i int, dst any) error {
	if i < 0 || i >= len(p.Values) {
		return Errorf(CodeInvalidParameterValue, "parameter $%d out of range (have %d)", i+1, len(p.Values))
	}
	m := p.m
	if m == nil {
		m = pgtype.NewMap()
	}
	if err := m.Scan(p.OIDs[i], p.Formats[i], p.Values[i], dst); err != nil {
		return fmt.Errorf("%w", &pgconn.PgError{Severity: "ERROR", Code: CodeInvalidBinaryRepresent,
			Message: fmt.Sprintf("parameter $%d: %v", i+1, err)})
	}
	return nil
}

// RowWriter encodes result rows of a local statement as DataRow messages in
// the result formats the client asked for.
type RowWriter struct {
	cols    []Column
	formats []int16
	m       *pgtype.Map
	buf     []byte
	rows    int
	vals    [][]byte
}

// Columns are the result columns from Describe.
func (w *RowWriter) Columns() []Column { return w.cols }

// Formats are the per-column result formats (0 text, 1 binary).
func (w *RowWriter) Formats() []int16 { return w.formats }

// Rows is the number of rows written so far.
func (w *RowWriter) Rows() int { return w.rows }

// WriteRow encodes one row of Go values (nil = NULL) with pgtype, by column
// type and requested format.
func (w *RowWriter) WriteRow(values ...any) error {
	if len(values) != len(w.cols) {
		return Errorf(CodeInternalError, "row has %d values, statement has %d columns", len(values), len(w.cols))
	}
	w.vals = w.vals[:0]
	var scratch []byte
	for i, v := range values {
		if v == nil {
			w.vals = append(w.vals, nil)
			continue
		}
		start := len(scratch)
		b, err := w.m.Encode(w.cols[i].TypeOID, w.formats[i], v, scratch)
		if err != nil {
			return Errorf(CodeInternalError, "column %q: %v", w.cols[i].Name, err)
		}
		if b == nil {
			w.vals = append(w.vals, nil)
			continue
		}
		scratch = b
		w.vals = append(w.vals, scratch[start:len(scratch):len(scratch)])
	}
	return w.WriteRawRow(w.vals)
}

// WriteRawRow writes one row of already encoded values (nil = NULL), which
// must be in Formats().
func (w *RowWriter) WriteRawRow(values [][]byte) error {
	if len(values) != len(w.cols) {
		return Errorf(CodeInternalError, "row has %d values, statement has %d columns", len(values), len(w.cols))
	}
	w.buf = append(w.buf, 'D', 0, 0, 0, 0)
	sp := len(w.buf) - 4
	w.buf = append(w.buf, byte(len(values)>>8), byte(len(values)))
	for _, v := range values {
		if v == nil {
			w.buf = append(w.buf, 0xff, 0xff, 0xff, 0xff)
			continue
		}
		n := len(v)
		w.buf = append(w.buf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		w.buf = append(w.buf, v...)
	}
	l := len(w.buf) - sp
	w.buf[sp], w.buf[sp+1], w.buf[sp+2], w.buf[sp+3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
	w.rows++
	return nil
}

// Inspected is the upstream result of a statement forwarded with
// ForwardInspect.
type Inspected struct {
	SQL    string
	Params Params
	// Fields is the row description when known: always in the simple
	// protocol, in the extended protocol when the client described the
	// statement or portal.
	Fields []pgproto3.FieldDescription
	// Rows are the raw DataRow values, in the formats the client asked for.
	Rows [][][]byte
	// Tag is the command tag, empty on error.
	Tag string
	// Err is the upstream's error, nil on success.
	Err *pgconn.PgError
}

// Result is the outcome of Upstream.Exec.
type Result struct {
	Fields []pgproto3.FieldDescription
	Rows   [][][]byte // text format
	Tag    string
}

func resultFormats(codes []int16, n int) []int16 {
	out := make([]int16, n)
	switch len(codes) {
	case 0:
	case 1:
		for i := range out {
			out[i] = codes[0]
		}
	default:
		copy(out, codes)
	}
	return out
}

func rowDescription(cols []Column, formats []int16) *pgproto3.RowDescription {
	rd := &pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(cols))}
	for i, c := range cols {
		size, mod := c.TypeSize, c.TypeModifier
		if size == 0 {
			size = -1
		}
		if mod == 0 {
			mod = -1
		}
		var f int16
		if formats != nil {
			f = formats[i]
		}
		rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(c.Name), TableOID: c.TableOID,
			TableAttributeNumber: c.AttrNumber, DataTypeOID: c.TypeOID, DataTypeSize: size, TypeModifier: mod, Format: f}
	}
	return rd
}
