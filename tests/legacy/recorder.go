package legacy

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgproto3/v2"
	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
)

// Column is one field of a result's RowDescription as the client saw it.
type Column struct {
	Name   string
	OID    uint32
	Format int16 // 0 text, 1 binary (what pgx asked for)
}

// JSONText is a json/jsonb value exactly as the server sent it (text
// format), so that SQL NULL (nil) and JSON null ("null") stay distinct.
type JSONText string

// Outcome is one executed statement and what came back, as data.
type Outcome struct {
	Stmt     string   // statement id: R1, S7, BEGIN, ...
	SQL      string   // exact text sent
	Args     []any    // parameters as passed to pgx (slices copied)
	Columns  []Column // nil for Exec
	Rows     [][]any  // decoded values: string, []byte, time.Time (UTC), []string, int32, int64, JSONText, nil
	Tag      string   // command tag ("" on error)
	SQLState string   // SQLSTATE of a server error
	Err      string   // error text; compared only as present/absent
}

// unordered reports statements whose row order PostgreSQL does not define:
// B6 orders by commit_id, which ties between branches on one commit.
func (o Outcome) unordered() bool { return o.Stmt == IDB6 }

func (o Outcome) String() string {
	s := fmt.Sprintf("%s %q", o.Stmt, Normalize(o.SQL))
	if o.Err != "" {
		return s + fmt.Sprintf(" -> error %s (%s)", o.SQLState, o.Err)
	}
	return s + fmt.Sprintf(" -> %q, %d rows", o.Tag, len(o.Rows))
}

// Recorder collects outcomes in execution order. It is safe for concurrent
// use, but only a single-goroutine client gives a deterministic order.
type Recorder struct {
	mu       sync.Mutex
	outcomes []Outcome
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Outcomes returns a copy of what was recorded so far.
func (r *Recorder) Outcomes() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Outcome(nil), r.outcomes...)
}

// Len is the number of recorded outcomes.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outcomes)
}

// Reset forgets everything recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.outcomes = nil
	r.mu.Unlock()
}

func (r *Recorder) add(o Outcome) {
	r.mu.Lock()
	r.outcomes = append(r.outcomes, o)
	r.mu.Unlock()
}

func (c *Client) record(id, sql string, args []any, cols []Column, rows [][]any, tag pgconn.CommandTag, err error) {
	r := c.cfg.Recorder
	if r == nil {
		return
	}
	o := Outcome{Stmt: id, SQL: sql, Args: copyArgs(args), Columns: cols, Rows: rows}
	if err != nil {
		o.Err = err.Error()
		o.SQLState = SQLState(err)
		o.Rows = nil
	} else {
		o.Tag = tag.String()
	}
	r.add(o)
}

func copyArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case []byte:
			if v != nil {
				v = append([]byte{}, v...)
			}
			out[i] = v
		case []string:
			if v != nil {
				v = append([]string{}, v...)
			}
			out[i] = v
		case map[string]string:
			if v != nil {
				m := make(map[string]string, len(v))
				for k, x := range v {
					m[k] = x
				}
				v = m
			}
			out[i] = v
		case time.Time:
			out[i] = v.UTC()
		default:
			out[i] = a
		}
	}
	return out
}

func columnsOf(fds []pgproto3.FieldDescription) []Column {
	cols := make([]Column, len(fds))
	for i, fd := range fds {
		cols[i] = Column{Name: string(fd.Name), OID: fd.DataTypeOID, Format: fd.Format}
	}
	return cols
}

// normalizeRow decodes the current row into plain Go values that compare
// with reflect.DeepEqual and never alias pgx's read buffer.
func normalizeRow(rows pgx.Rows) ([]any, error) {
	vals, err := rows.Values()
	if err != nil {
		return nil, err
	}
	raw := rows.RawValues()
	fds := rows.FieldDescriptions()
	out := make([]any, len(vals))
	for i, v := range vals {
		if raw[i] == nil {
			out[i] = nil
			continue
		}
		if fds[i].DataTypeOID == pgtype.JSONBOID || fds[i].DataTypeOID == pgtype.JSONOID {
			if fds[i].Format != 0 {
				return nil, fmt.Errorf("json column %q in binary format", fds[i].Name)
			}
			out[i] = JSONText(raw[i])
			continue
		}
		switch x := v.(type) {
		case []byte:
			out[i] = append([]byte{}, x...)
		case time.Time:
			out[i] = x.UTC()
		case pgtype.TextArray:
			out[i] = textArray(x)
		case *pgtype.TextArray:
			out[i] = textArray(*x)
		default:
			out[i] = v
		}
	}
	return out, nil
}

func textArray(a pgtype.TextArray) []string {
	out := make([]string, len(a.Elements))
	for i, e := range a.Elements {
		out[i] = e.String
	}
	return out
}

// Compare checks that two outcome streams are identical statement by
// statement: statement, text, parameters, columns, rows, command tag and
// SQLSTATE (error texts may differ, only their presence must match). It
// returns an error naming the first difference, or nil.
func Compare(a, b []Outcome) error {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if d := diffOutcome(a[i], b[i]); d != "" {
			return fmt.Errorf("outcome %d (%s) differs: %s\n a: %s\n b: %s", i, a[i].Stmt, d, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		var extra Outcome
		if len(a) > n {
			extra = a[n]
		} else {
			extra = b[n]
		}
		return fmt.Errorf("%w: %d vs %d outcomes; first unmatched #%d: %s", ErrOutcomeCount, len(a), len(b), n, extra)
	}
	return nil
}

// ErrOutcomeCount is returned by Compare when one stream is longer.
var ErrOutcomeCount = errors.New("outcome streams differ in length")

func diffOutcome(a, b Outcome) string {
	switch {
	case a.Stmt != b.Stmt:
		return fmt.Sprintf("statement %s vs %s", a.Stmt, b.Stmt)
	case a.SQL != b.SQL:
		return fmt.Sprintf("text %q vs %q", a.SQL, b.SQL)
	case !reflect.DeepEqual(a.Args, b.Args):
		return fmt.Sprintf("args %v vs %v", a.Args, b.Args)
	case a.SQLState != b.SQLState:
		return fmt.Sprintf("sqlstate %q vs %q", a.SQLState, b.SQLState)
	case (a.Err == "") != (b.Err == ""):
		return fmt.Sprintf("error %q vs %q", a.Err, b.Err)
	case a.Tag != b.Tag:
		return fmt.Sprintf("command tag %q vs %q", a.Tag, b.Tag)
	case !reflect.DeepEqual(a.Columns, b.Columns):
		return fmt.Sprintf("columns %v vs %v", a.Columns, b.Columns)
	}
	ra, rb := a.Rows, b.Rows
	if a.unordered() {
		ra, rb = sortedRows(ra), sortedRows(rb)
	}
	if len(ra) != len(rb) {
		return fmt.Sprintf("%d rows vs %d rows", len(ra), len(rb))
	}
	for i := range ra {
		if !reflect.DeepEqual(ra[i], rb[i]) {
			return fmt.Sprintf("row %d: %v vs %v", i, fmtRow(ra[i]), fmtRow(rb[i]))
		}
	}
	return ""
}

func sortedRows(rows [][]any) [][]any {
	out := append([][]any(nil), rows...)
	sort.SliceStable(out, func(i, j int) bool { return fmtRow(out[i]) < fmtRow(out[j]) })
	return out
}

func fmtRow(r []any) string {
	var b strings.Builder
	for i, v := range r {
		if i > 0 {
			b.WriteString(" | ")
		}
		switch x := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "\\x%x", x)
		case nil:
			b.WriteString("NULL")
		default:
			fmt.Fprintf(&b, "%v", x)
		}
	}
	return b.String()
}
