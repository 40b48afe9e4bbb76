package translate

import (
	"container/list"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
	pg "github.com/pganalyze/pg_query_go/v6"
	pgparser "github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Options configure a Translator.
type Options struct {
	// CacheSize bounds the number of distinct statement texts whose plans
	// are kept (LRU). 0 means DefaultCacheSize.
	CacheSize int
	// RelationOIDs maps a legacy table name (graveler_*, schema_migrations)
	// to its pg_class OID in the upstream database. When a table is present,
	// result Fields carry its OID and the column's attribute number, exactly
	// as PostgreSQL's RowDescription does; when absent they carry 0 and 0,
	// which is what PostgreSQL sends for computed columns. The legacy client
	// (pgx) ignores both. Fill it with CatalogQuery when an upstream exists.
	RelationOIDs map[string]uint32
}

// DefaultCacheSize is enough for every legacy statement shape many times
// over (pgx's own statement cache holds 512 per connection).
const DefaultCacheSize = 4096

// CatalogQuery returns (relname, oid) for the legacy tables; its rows fill
// Options.RelationOIDs.
const CatalogQuery = `SELECT c.relname, c.oid::int8 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
	`WHERE n.nspname = current_schema() AND c.relname IN ('graveler_repositories', 'graveler_branches', 'graveler_commits', ` +
	`'graveler_tags', 'graveler_staging_kv', 'schema_migrations')`

// Translator plans statement texts and caches the plans. It is safe for
// concurrent use.
type Translator struct {
	relOIDs map[string]uint32
	size    int

	mu    sync.Mutex
	lru   *list.List // of *Plan, most recent first
	byKey map[string]*list.Element

	hits, misses, evictions atomic.Uint64
}

// New returns a Translator.
func New(opts Options) *Translator {
	size := opts.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	rel := make(map[string]uint32, len(opts.RelationOIDs))
	for k, v := range opts.RelationOIDs {
		rel[k] = v
	}
	return &Translator{relOIDs: rel, size: size, lru: list.New(), byKey: make(map[string]*list.Element)}
}

// CacheStats are the plan cache's counters.
type CacheStats struct {
	Hits, Misses, Evictions uint64
	Entries                 int
}

// Stats returns the plan cache's counters.
func (t *Translator) Stats() CacheStats {
	t.mu.Lock()
	n := t.lru.Len()
	t.mu.Unlock()
	return CacheStats{Hits: t.hits.Load(), Misses: t.misses.Load(), Evictions: t.evictions.Load(), Entries: n}
}

// TxOptions are the options of a BEGIN / START TRANSACTION.
type TxOptions struct {
	// Isolation is "" (session default), "serializable", "repeatable read",
	// "read committed" or "read uncommitted".
	Isolation string
	// ReadOnly / ReadWrite: at most one is set; neither means the default.
	ReadOnly, ReadWrite bool
	// Deferrable is set for DEFERRABLE, NotDeferrable for NOT DEFERRABLE.
	Deferrable, NotDeferrable bool
}

// Field describes one result column as RowDescription does.
type Field struct {
	Name     string
	TableOID uint32 // 0 unless Options.RelationOIDs has the table
	AttrNum  int16  // 0 unless TableOID is set
	TypeOID  uint32
	TypeSize int16
	TypeMod  int32
}

// Plan is what is known about one statement text before it executes. Plans
// are shared between callers and must not be modified.
type Plan struct {
	SQL   string
	Kind  Kind
	Shape Shape
	// Args are the statement's arguments in the shape's slot order
	// (Shape.Slots()). For Diag* shapes, Args is empty without a LIMIT.
	Args []Arg
	// ParamOIDs is ParameterDescription: the type of $1..$n.
	ParamOIDs []uint32
	// Fields is RowDescription; nil for statements that return no rows
	// (NoData).
	Fields []Field
	// Table is the table a DiagCount* shape counts, or the ref-store table
	// an Unsupported statement names.
	Table string
	// Tx is set for TxBegin / TxStart.
	Tx TxOptions
	// Name is the prepared statement a Deallocate shape drops.
	Name string
	// Generations are C7's inlined (id, generation) rows.
	Generations []Generation
	// Err is the 0A000 error to answer an Unsupported statement with.
	Err error

	descs []pgproto3.FieldDescription
}

// Command is the command tag verb of the plan's shape (see Shape.Command).
func (p *Plan) Command() string { return p.Shape.Command() }

// FieldDescriptions returns RowDescription's fields with the result formats
// of a Bind (resolved as PostgreSQL does: none = all text, one = all, or
// one per column). The Name slices are shared and must not be modified.
func (p *Plan) FieldDescriptions(resultFormats []int16) ([]pgproto3.FieldDescription, error) {
	if len(p.descs) == 0 {
		return nil, nil
	}
	return p.AppendFieldDescriptions(make([]pgproto3.FieldDescription, 0, len(p.descs)), resultFormats)
}

// AppendFieldDescriptions is FieldDescriptions appending to dst, for
// callers that reuse a RowDescription buffer.
func (p *Plan) AppendFieldDescriptions(dst []pgproto3.FieldDescription, resultFormats []int16) ([]pgproto3.FieldDescription, error) {
	for i, d := range p.descs {
		f, err := formatAt(resultFormats, len(p.descs), i, "result")
		if err != nil {
			return dst, err
		}
		d.Format = f
		dst = append(dst, d)
	}
	return dst, nil
}

// CheckParamTypes compares the parameter types a client declared in Parse
// (0 = unspecified) with the inferred ones. PostgreSQL would coerce or
// re-infer on a mismatch; the ref store only speaks the inferred types, so a
// different declaration is 0A000.
func (p *Plan) CheckParamTypes(declared []uint32) error {
	if p.Kind != RefStore && p.Kind != Utility {
		return nil
	}
	if len(declared) > len(p.ParamOIDs) {
		return newErr("0A000", nil, "statement %s declares %d parameters but uses %d", p.Shape, len(declared), len(p.ParamOIDs))
	}
	for i, o := range declared {
		if o != 0 && o != p.ParamOIDs[i] {
			return newErr("0A000", nil, "parameter $%d of %s declared as type %d, the ref store speaks %s (%d)", i+1, p.Shape, o, typeName(p.ParamOIDs[i]), p.ParamOIDs[i])
		}
	}
	return nil
}

// Plan classifies one statement text. The error is a *Error: 42601 for a
// syntax error or for several statements in one text (split simple-query
// strings with Split first), 42P18 for an unused parameter number in a
// recognised statement. A statement the proxy must not answer gets a Plan of
// Kind Unsupported, not an error.
func (t *Translator) Plan(sql string) (*Plan, error) {
	t.mu.Lock()
	if e, ok := t.byKey[sql]; ok {
		t.lru.MoveToFront(e)
		t.mu.Unlock()
		t.hits.Add(1)
		return e.Value.(*Plan), nil
	}
	t.mu.Unlock()
	t.misses.Add(1)
	p, err := t.build(sql)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.byKey[sql]; ok { // planned concurrently
		t.lru.MoveToFront(e)
		return e.Value.(*Plan), nil
	}
	t.byKey[sql] = t.lru.PushFront(p)
	for t.lru.Len() > t.size {
		last := t.lru.Back()
		t.lru.Remove(last)
		delete(t.byKey, last.Value.(*Plan).SQL)
		t.evictions.Add(1)
	}
	return p, nil
}

// Split splits a simple-protocol query string into its statements with
// PostgreSQL's parser (so semicolons in literals, comments and dollar quotes
// are handled), without surrounding whitespace. Empty statements are dropped,
// so ";" gives none: PostgreSQL answers it with EmptyQueryResponse.
func Split(sql string) ([]string, error) {
	parts, err := pg.SplitWithParser(sql, true)
	if err != nil {
		return nil, syntaxErr(err)
	}
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

func syntaxErr(err error) error {
	var pe *pgparser.Error
	if errors.As(err, &pe) {
		return &Error{Code: "42601", Message: pe.Message, Err: err}
	}
	return &Error{Code: "42601", Message: err.Error(), Err: err}
}

func (t *Translator) build(sql string) (*Plan, error) {
	res, err := pg.Parse(sql)
	if err != nil {
		return nil, syntaxErr(err)
	}
	p := &Plan{SQL: sql}
	switch len(res.Stmts) {
	case 0:
		p.Kind, p.Shape = Utility, EmptyQuery
		return p, nil
	case 1:
	default:
		return nil, newErr("42601", nil, "cannot insert multiple commands into a prepared statement")
	}
	stmt := res.Stmts[0].Stmt
	shape, b := classify(stmt, p)
	if shape == ShapeNone && isTxControl(stmt) {
		// The proxy owns transaction boundaries in the KV phases, so
		// transaction control it does not model cannot be forwarded.
		p.Kind = Unsupported
		p.Err = newErr("0A000", nil, "unsupported transaction statement: %s", oneLine(sql))
		return p, nil
	}
	if shape == ShapeNone {
		if table, ok := touchesRefStore(stmt); ok {
			p.Kind, p.Table = Unsupported, table
			p.Err = newErr("0A000", nil, "unsupported ref-store statement: %s", oneLine(sql))
		} else {
			p.Kind = Passthrough
		}
		return p, nil
	}
	p.Kind, p.Shape = shape.Kind(), shape
	if b != nil {
		p.Args = b.args
		if !b.complete() {
			p.Args = nil
		}
	}
	oids, err := paramOIDs(p.Args)
	if err != nil {
		return nil, err
	}
	if oids == nil && len(p.Args) > 0 {
		// One $n bound to slots of different types: PostgreSQL would
		// reject or coerce; this is not a legacy statement.
		p.Kind, p.Shape, p.Args = Unsupported, ShapeNone, nil
		p.Table = shapeInfos[shape].table
		p.Err = newErr("0A000", nil, "unsupported ref-store statement: %s", oneLine(sql))
		return p, nil
	}
	p.ParamOIDs = oids
	p.Fields = t.fields(shape, p.Table)
	p.descs = make([]pgproto3.FieldDescription, len(p.Fields))
	for i, f := range p.Fields {
		p.descs[i] = pgproto3.FieldDescription{Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: uint16(f.AttrNum),
			DataTypeOID: f.TypeOID, DataTypeSize: f.TypeSize, TypeModifier: f.TypeMod}
	}
	return p, nil
}

// paramOIDs infers ParameterDescription from the bound slots. It returns
// nil, nil when one parameter is bound to slots of different types.
func paramOIDs(args []Arg) ([]uint32, error) {
	n := 0
	for _, a := range args {
		n = max(n, a.Param)
	}
	oids := make([]uint32, n)
	for _, a := range args {
		if a.Param == 0 {
			continue
		}
		if o := oids[a.Param-1]; o != 0 && o != a.OID {
			return nil, nil
		}
		oids[a.Param-1] = a.OID
	}
	for i, o := range oids {
		if o == 0 {
			return nil, newErr("42P18", nil, "could not determine data type of parameter $%d", i+1)
		}
	}
	return oids, nil
}

func oneLine(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func (t *Translator) fields(shape Shape, table string) []Field {
	switch shape {
	case L1:
		return []Field{{Name: "pg_advisory_xact_lock_shared", TypeOID: OIDVoid, TypeSize: 4, TypeMod: -1}}
	case L2:
		return []Field{{Name: "pg_advisory_xact_lock", TypeOID: OIDVoid, TypeSize: 4, TypeMod: -1}}
	case DiagCountMigrations, DiagCountRefTable:
		return []Field{{Name: "count", TypeOID: OIDInt8, TypeSize: 8, TypeMod: -1}}
	case DiagVersion:
		return []Field{{Name: "version", TypeOID: OIDText, TypeSize: -1, TypeMod: -1}}
	}
	info := shapeInfos[shape]
	if len(info.fields) == 0 {
		return nil
	}
	tbl := legacyTables[info.table]
	relOID := t.relOIDs[info.table]
	out := make([]Field, len(info.fields))
	for i, name := range info.fields {
		c, _ := tbl.col(name)
		f := Field{Name: name, TypeOID: c.oid, TypeSize: typeSize(c.oid), TypeMod: -1}
		if relOID != 0 {
			f.TableOID, f.AttrNum = relOID, c.attnum
		}
		out[i] = f
	}
	return out
}

// classify recognises stmt; it fills p's shape-specific fields (Tx, Name,
// Table, Generations) and returns the bound arguments.
func classify(stmt *pg.Node, p *Plan) (Shape, *binding) {
	switch {
	case stmt.GetSelectStmt() != nil:
		s := stmt.GetSelectStmt()
		if !bareSelect(s) {
			return ShapeNone, nil
		}
		for i := range selectSpecs {
			if b := matchSelect(s, &selectSpecs[i]); b != nil {
				return selectSpecs[i].shape, b
			}
		}
		if shape, b := matchAdvisoryLock(s); b != nil {
			return shape, b
		}
		if shape, table, b := matchDiagnostics(s); b != nil {
			p.Table = table
			return shape, b
		}
	case stmt.GetInsertStmt() != nil:
		for i := range insertSpecs {
			if b := matchInsert(stmt.GetInsertStmt(), &insertSpecs[i]); b != nil {
				return insertSpecs[i].shape, b
			}
		}
	case stmt.GetDeleteStmt() != nil:
		for i := range deleteSpecs {
			if b := matchDelete(stmt.GetDeleteStmt(), &deleteSpecs[i]); b != nil {
				return deleteSpecs[i].shape, b
			}
		}
	case stmt.GetUpdateStmt() != nil:
		if b, gens := matchFillGenerations(stmt.GetUpdateStmt()); b != nil {
			p.Generations = gens
			return C7, b
		}
	case stmt.GetTransactionStmt() != nil:
		return classifyTx(stmt.GetTransactionStmt(), p), nil
	case stmt.GetDeallocateStmt() != nil:
		d := stmt.GetDeallocateStmt()
		if d.Isall {
			return DeallocateAll, nil
		}
		p.Name = d.Name
		return Deallocate, nil
	}
	return ShapeNone, nil
}

func classifyTx(ts *pg.TransactionStmt, p *Plan) Shape {
	switch ts.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		if !ts.Chain {
			return TxCommit
		}
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		if !ts.Chain {
			return TxRollback
		}
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
		var tx TxOptions
		for _, o := range ts.Options {
			de := o.GetDefElem()
			if de == nil || de.Arg == nil || de.Arg.GetAConst() == nil {
				return ShapeNone
			}
			c := de.Arg.GetAConst()
			switch de.Defname {
			case "transaction_isolation":
				if c.GetSval() == nil {
					return ShapeNone
				}
				tx.Isolation = c.GetSval().Sval
			case "transaction_read_only":
				if c.GetIval() == nil {
					return ShapeNone
				}
				ro := c.GetIval().Ival != 0
				tx.ReadOnly, tx.ReadWrite = ro, !ro
			case "transaction_deferrable":
				if c.GetIval() == nil {
					return ShapeNone
				}
				d := c.GetIval().Ival != 0
				tx.Deferrable, tx.NotDeferrable = d, !d
			default:
				return ShapeNone
			}
		}
		p.Tx = tx
		if ts.Kind == pg.TransactionStmtKind_TRANS_STMT_START {
			return TxStart
		}
		return TxBegin
	}
	return ShapeNone
}

var advisoryXactLocks = map[string]bool{"pg_advisory_xact_lock": true, "pg_advisory_xact_lock_shared": true}

// touchesRefStore reports whether stmt names a graveler_* relation anywhere
// (FROM, INSERT/UPDATE/DELETE target, subqueries, DDL object names) or
// calls the transaction-level advisory locks the proxy owns.
func touchesRefStore(stmt *pg.Node) (string, bool) {
	var found string
	var walk func(m protoreflect.Message, inObjects bool)
	walk = func(m protoreflect.Message, inObjects bool) {
		if found != "" {
			return
		}
		switch v := m.Interface().(type) {
		case *pg.RangeVar:
			if strings.HasPrefix(v.Relname, "graveler_") {
				found = v.Relname
				return
			}
		case *pg.String:
			if inObjects && strings.HasPrefix(v.Sval, "graveler_") {
				found = v.Sval
				return
			}
		case *pg.FuncCall:
			if name := funcName(v); advisoryXactLocks[name] {
				found = name
				return
			}
		}
		m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind {
				return true
			}
			objects := inObjects || fd.Name() == "objects" || fd.Name() == "object"
			if fd.IsList() {
				l := val.List()
				for i := 0; i < l.Len() && found == ""; i++ {
					walk(l.Get(i).Message(), objects)
				}
			} else if !fd.IsMap() {
				walk(val.Message(), objects)
			}
			return found == ""
		})
	}
	walk(stmt.ProtoReflect(), false)
	return found, found != ""
}

// formatAt resolves a Bind format-code list for item i of n as PostgreSQL
// does: no codes = text, one code = for all, else one per item.
func formatAt(codes []int16, n, i int, what string) (int16, error) {
	var f int16
	switch len(codes) {
	case 0:
		return 0, nil
	case 1:
		f = codes[0]
	case n:
		f = codes[i]
	default:
		if what == "result" {
			return 0, newErr("08P01", nil, "bind message has %d result formats but query has %d columns", len(codes), n)
		}
		return 0, newErr("08P01", nil, "bind message has %d parameter formats but %d parameters", len(codes), n)
	}
	if f != 0 && f != 1 {
		return 0, newErr("22023", nil, "unsupported format code: %d", f)
	}
	return f, nil
}

// isTxControl: savepoints, chained commit/rollback, two-phase commit and
// SET [SESSION CHARACTERISTICS AS] TRANSACTION.
func isTxControl(stmt *pg.Node) bool {
	if stmt.GetTransactionStmt() != nil {
		return true
	}
	vs := stmt.GetVariableSetStmt()
	return vs != nil && (vs.Name == "TRANSACTION" || vs.Name == "SESSION CHARACTERISTICS")
}
