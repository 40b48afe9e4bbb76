package translate

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Arg says where one argument of a recognised statement comes from: a $n
// parameter (Param > 0) or a literal inlined in the text (simple protocol,
// squirrel's LIMIT, C7's VALUES). A literal is kept as its text, which is
// the text-format input of the slot's type, exactly as PostgreSQL would
// coerce the untyped literal.
type Arg struct {
	Param   int    // 1-based parameter number; 0 for a literal
	Literal string // literal text when Param == 0 and !Null
	Null    bool   // literal NULL
	IntLit  bool   // the literal was a bare number, not a quoted string
	OID     uint32 // type of the slot (what PostgreSQL infers for a $n here)
}

func (a Arg) same(b Arg) bool {
	return a.Param == b.Param && a.Literal == b.Literal && a.Null == b.Null && a.IntLit == b.IntLit
}

// Generation is one (id, generation) row of C7's inlined VALUES list. The
// generation is kept as int64: a value outside int4 is an out-of-range
// error (22003) when the statement executes, as in PostgreSQL.
type Generation struct {
	ID         string
	Generation int64
}

// binding collects the arguments while one pattern is tried.
type binding struct {
	slots []Slot
	args  []Arg
	set   []bool
}

func newBinding(shape Shape) *binding {
	slots := shapeInfos[shape].slots
	return &binding{slots: slots, args: make([]Arg, len(slots)), set: make([]bool, len(slots))}
}

func (b *binding) complete() bool {
	for _, s := range b.set {
		if !s {
			return false
		}
	}
	return true
}

// value binds expression n to slot i: a parameter, a literal, or either of
// them under a cast to exactly the slot's type (a cast to another type would
// change what PostgreSQL infers, so it is not the legacy statement).
func (b *binding) value(n *pg.Node, i int) bool {
	if n == nil || i >= len(b.slots) {
		return false
	}
	oid := b.slots[i].OID
	if tc := n.GetTypeCast(); tc != nil {
		if castOID(tc.TypeName) != oid {
			return false
		}
		n = tc.Arg
		if n == nil || n.GetTypeCast() != nil {
			return false
		}
	}
	var a Arg
	switch {
	case n.GetParamRef() != nil:
		num := n.GetParamRef().Number
		if num < 1 || num > 65535 {
			return false
		}
		a = Arg{Param: int(num)}
	case n.GetAConst() != nil:
		c := n.GetAConst()
		switch {
		case c.Isnull:
			a = Arg{Null: true}
		case c.GetSval() != nil:
			a = Arg{Literal: c.GetSval().Sval}
		case c.GetIval() != nil:
			if oid != OIDInt4 && oid != OIDInt8 {
				return false
			}
			a = Arg{Literal: strconv.FormatInt(int64(c.GetIval().Ival), 10), IntLit: true}
		case c.GetFval() != nil:
			// The parser makes integers beyond int4 Float nodes; only
			// integral ones can bind an integer slot without rounding.
			f := c.GetFval().Fval
			if (oid != OIDInt4 && oid != OIDInt8) || !isIntegerText(f) {
				return false
			}
			a = Arg{Literal: f, IntLit: true}
		default:
			return false
		}
	default:
		return false
	}
	a.OID = oid
	if b.set[i] {
		return b.args[i].same(a)
	}
	b.args[i], b.set[i] = a, true
	return true
}

func isIntegerText(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// castOID resolves the type names a cast in a legacy-shaped statement may
// use; anything else is 0.
func castOID(t *pg.TypeName) uint32 {
	if t == nil || t.Setof || t.PctType || len(t.Typmods) > 0 {
		return 0
	}
	names := t.Names
	if len(names) == 2 && strName(names[0]) == "pg_catalog" {
		names = names[1:]
	}
	if len(names) != 1 {
		return 0
	}
	var oid uint32
	switch strName(names[0]) {
	case "text":
		oid = OIDText
	case "varchar":
		oid = OIDVarchar
	case "bytea":
		oid = OIDBytea
	case "timestamptz":
		oid = OIDTimestamptz
	case "int4":
		oid = OIDInt4
	case "int8":
		oid = OIDInt8
	case "jsonb":
		oid = OIDJSONB
	default:
		return 0
	}
	switch len(t.ArrayBounds) {
	case 0:
		return oid
	case 1:
		if oid == OIDText {
			return OIDTextArray
		}
	}
	return 0
}

func strName(n *pg.Node) string {
	if n == nil || n.GetString_() == nil {
		return ""
	}
	return n.GetString_().Sval
}

// plainTable accepts a FROM/INTO relation naming table without schema,
// alias or ONLY.
func plainTable(rv *pg.RangeVar, table string) bool {
	return rv != nil && rv.Relname == table && rv.Schemaname == "" && rv.Catalogname == "" && rv.Alias == nil && rv.Inh
}

// isCol accepts col or table.col.
func isCol(n *pg.Node, table, col string) bool {
	cr := n.GetColumnRef()
	if cr == nil {
		return false
	}
	switch len(cr.Fields) {
	case 1:
		return strName(cr.Fields[0]) == col
	case 2:
		return strName(cr.Fields[0]) == table && strName(cr.Fields[1]) == col
	}
	return false
}

// isQualCol accepts exactly qual.col.
func isQualCol(n *pg.Node, qual, col string) bool {
	cr := n.GetColumnRef()
	return cr != nil && len(cr.Fields) == 2 && strName(cr.Fields[0]) == qual && strName(cr.Fields[1]) == col
}

// opExpr returns the operands of a plain binary operator expression "l op r".
func opExpr(n *pg.Node, op string) (l, r *pg.Node, ok bool) {
	e := n.GetAExpr()
	if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || strName(e.Name[0]) != op || e.Lexpr == nil || e.Rexpr == nil {
		return nil, nil, false
	}
	return e.Lexpr, e.Rexpr, true
}

// conjuncts flattens nested ANDs.
func conjuncts(n *pg.Node, out []*pg.Node) []*pg.Node {
	if be := n.GetBoolExpr(); be != nil && be.Boolop == pg.BoolExprType_AND_EXPR {
		for _, a := range be.Args {
			out = conjuncts(a, out)
		}
		return out
	}
	return append(out, n)
}

var opNames = [...]string{opEq: "=", opGE: ">=", opGT: ">", opLT: "<"}

func (b *binding) pred(n *pg.Node, table string, p pred) bool {
	if p.op == opLikePrefix {
		e := n.GetAExpr()
		if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_LIKE || len(e.Name) != 1 || strName(e.Name[0]) != "~~" || !isCol(e.Lexpr, table, p.col) {
			return false
		}
		l, r, ok := opExpr(e.Rexpr, "||")
		if !ok || r.GetAConst() == nil || r.GetAConst().GetSval() == nil || r.GetAConst().GetSval().Sval != "%" {
			return false
		}
		return b.value(l, p.slot)
	}
	l, r, ok := opExpr(n, opNames[p.op])
	if !ok {
		return false
	}
	if isCol(l, table, p.col) {
		return b.value(r, p.slot)
	}
	// "$1 = col" is the same predicate; inequalities are not commuted.
	return p.op == opEq && isCol(r, table, p.col) && b.value(l, p.slot)
}

// where matches the WHERE clause against preds (in any order) plus, for
// C6, the ancestry-leaves NOT EXISTS.
func (b *binding) where(w *pg.Node, table string, preds []pred, leaves bool) bool {
	if w == nil {
		return len(preds) == 0 && !leaves
	}
	cs := conjuncts(w, make([]*pg.Node, 0, 4))
	want := len(preds)
	if leaves {
		want++
	}
	if len(cs) != want {
		return false
	}
	used := make([]bool, len(cs))
	for _, p := range preds {
		found := false
		for j, c := range cs {
			if !used[j] && b.pred(c, table, p) {
				used[j], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	if leaves {
		for j, c := range cs {
			if !used[j] {
				return isLeavesClause(c)
			}
		}
	}
	return true
}

// isLeavesClause matches C6's
// NOT EXISTS (SELECT * FROM graveler_commits c2 WHERE c2.repository_id=graveler_commits.repository_id
// AND first_parent(c2.parents, c2.version)=graveler_commits.id).
func isLeavesClause(n *pg.Node) bool {
	be := n.GetBoolExpr()
	if be == nil || be.Boolop != pg.BoolExprType_NOT_EXPR || len(be.Args) != 1 {
		return false
	}
	sl := be.Args[0].GetSubLink()
	if sl == nil || sl.SubLinkType != pg.SubLinkType_EXISTS_SUBLINK || sl.Testexpr != nil {
		return false
	}
	s := sl.Subselect.GetSelectStmt()
	if s == nil || !bareSelect(s) || s.LimitCount != nil || len(s.SortClause) > 0 || len(s.FromClause) != 1 || len(s.TargetList) != 1 {
		return false
	}
	rt := s.TargetList[0].GetResTarget()
	if rt == nil || rt.Name != "" || rt.Val.GetColumnRef() == nil || len(rt.Val.GetColumnRef().Fields) != 1 || rt.Val.GetColumnRef().Fields[0].GetAStar() == nil {
		return false
	}
	rv := s.FromClause[0].GetRangeVar()
	if rv == nil || rv.Relname != tblCommits || rv.Schemaname != "" || rv.Alias == nil || len(rv.Alias.Colnames) > 0 || !rv.Inh {
		return false
	}
	alias := rv.Alias.Aliasname
	if alias == "" || alias == tblCommits || s.WhereClause == nil {
		return false
	}
	cs := conjuncts(s.WhereClause, nil)
	if len(cs) != 2 {
		return false
	}
	okRepo := func(c *pg.Node) bool {
		l, r, ok := opExpr(c, "=")
		return ok && (isQualCol(l, alias, "repository_id") && isQualCol(r, tblCommits, "repository_id") ||
			isQualCol(r, alias, "repository_id") && isQualCol(l, tblCommits, "repository_id"))
	}
	isFirstParent := func(n *pg.Node) bool {
		fc := n.GetFuncCall()
		return fc != nil && len(fc.Funcname) == 1 && strName(fc.Funcname[0]) == "first_parent" && len(fc.Args) == 2 &&
			isQualCol(fc.Args[0], alias, "parents") && isQualCol(fc.Args[1], alias, "version") &&
			!fc.AggStar && !fc.AggDistinct && !fc.FuncVariadic && fc.Over == nil && fc.AggFilter == nil && len(fc.AggOrder) == 0
	}
	okParent := func(c *pg.Node) bool {
		l, r, ok := opExpr(c, "=")
		return ok && (isFirstParent(l) && isQualCol(r, tblCommits, "id") || isFirstParent(r) && isQualCol(l, tblCommits, "id"))
	}
	return okRepo(cs[0]) && okParent(cs[1]) || okRepo(cs[1]) && okParent(cs[0])
}

// bareSelect: a single SELECT without the clauses no legacy statement has.
func bareSelect(s *pg.SelectStmt) bool {
	return len(s.DistinctClause) == 0 && s.IntoClause == nil && len(s.GroupClause) == 0 && s.HavingClause == nil &&
		len(s.WindowClause) == 0 && len(s.ValuesLists) == 0 && s.LimitOffset == nil && len(s.LockingClause) == 0 &&
		s.WithClause == nil && s.Op == pg.SetOperation_SETOP_NONE && s.Larg == nil && s.Rarg == nil &&
		(s.LimitOption == pg.LimitOption_LIMIT_OPTION_DEFAULT || s.LimitOption == pg.LimitOption_LIMIT_OPTION_COUNT)
}

func plainTarget(n *pg.Node) *pg.Node {
	rt := n.GetResTarget()
	if rt == nil || rt.Name != "" || len(rt.Indirection) > 0 {
		return nil
	}
	return rt.Val
}

func matchSelect(s *pg.SelectStmt, spec *selectSpec) *binding {
	if len(s.FromClause) != 1 || !plainTable(s.FromClause[0].GetRangeVar(), spec.table) || len(s.TargetList) != len(spec.cols) ||
		len(s.SortClause) != len(spec.order) || (s.LimitCount == nil) != (spec.limit < 0) {
		return nil
	}
	for i, c := range spec.cols {
		if !isCol(plainTarget(s.TargetList[i]), spec.table, c) {
			return nil
		}
	}
	for i, c := range spec.order {
		sb := s.SortClause[i].GetSortBy()
		if sb == nil || (sb.SortbyDir != pg.SortByDir_SORTBY_DEFAULT && sb.SortbyDir != pg.SortByDir_SORTBY_ASC) ||
			sb.SortbyNulls != pg.SortByNulls_SORTBY_NULLS_DEFAULT || len(sb.UseOp) > 0 || !isCol(sb.Node, spec.table, c) {
			return nil
		}
	}
	b := newBinding(spec.shape)
	if spec.limit >= 0 && !b.value(s.LimitCount, spec.limit) {
		return nil
	}
	if !b.where(s.WhereClause, spec.table, spec.where, spec.leaves) || !b.complete() {
		return nil
	}
	return b
}

func matchInsert(s *pg.InsertStmt, spec *insertSpec) *binding {
	if !plainTable(s.Relation, spec.table) || len(s.Cols) != len(spec.cols) || len(s.ReturningList) > 0 || s.WithClause != nil ||
		s.Override != pg.OverridingKind_OVERRIDING_NOT_SET {
		return nil
	}
	for i, c := range spec.cols {
		rt := s.Cols[i].GetResTarget()
		if rt == nil || rt.Name != c || len(rt.Indirection) > 0 || rt.Val != nil {
			return nil
		}
	}
	vs := s.SelectStmt.GetSelectStmt()
	if vs == nil || len(vs.ValuesLists) != 1 || len(vs.TargetList) > 0 || len(vs.FromClause) > 0 || vs.WhereClause != nil ||
		len(vs.SortClause) > 0 || vs.LimitCount != nil || vs.LimitOffset != nil || vs.WithClause != nil ||
		vs.Op != pg.SetOperation_SETOP_NONE || len(vs.DistinctClause) > 0 || len(vs.LockingClause) > 0 {
		return nil
	}
	row := vs.ValuesLists[0].GetList()
	if row == nil || len(row.Items) != len(spec.cols) {
		return nil
	}
	b := newBinding(spec.shape)
	for i, item := range row.Items {
		if !b.value(item, i) {
			return nil
		}
	}
	if !matchConflict(s.OnConflictClause, spec, b) || !b.complete() {
		return nil
	}
	return b
}

func matchConflict(oc *pg.OnConflictClause, spec *insertSpec, b *binding) bool {
	if spec.conflict == conflictNone {
		return oc == nil
	}
	if oc == nil || oc.WhereClause != nil {
		return false
	}
	// The conflict target.
	if spec.conflict == conflictNothing {
		if oc.Infer != nil {
			return false
		}
	} else {
		in := oc.Infer
		if in == nil || in.WhereClause != nil || in.Conname != "" || len(in.IndexElems) != len(spec.target) {
			return false
		}
		for i, c := range spec.target {
			ie := in.IndexElems[i].GetIndexElem()
			if ie == nil || ie.Name != c || ie.Expr != nil || len(ie.Collation) > 0 || len(ie.Opclass) > 0 ||
				(ie.Ordering != pg.SortByDir_SORTBY_DEFAULT) || ie.NullsOrdering != pg.SortByNulls_SORTBY_NULLS_DEFAULT {
				return false
			}
		}
	}
	switch spec.conflict {
	case conflictNothing, conflictNothingOn:
		return oc.Action == pg.OnConflictAction_ONCONFLICT_NOTHING && len(oc.TargetList) == 0
	}
	if oc.Action != pg.OnConflictAction_ONCONFLICT_UPDATE || len(oc.TargetList) != len(spec.set) {
		return false
	}
	for i, c := range spec.set {
		rt := oc.TargetList[i].GetResTarget()
		if rt == nil || rt.Name != c || len(rt.Indirection) > 0 || rt.Val == nil {
			return false
		}
		val := rt.Val
		if mr := val.GetMultiAssignRef(); mr != nil {
			// SET (a, b) = (x, y) arrives as one MultiAssignRef per column.
			row := mr.Source.GetRowExpr()
			if row == nil || int(mr.Ncolumns) != len(spec.set) || int(mr.Colno) != i+1 || len(row.Args) != len(spec.set) {
				return false
			}
			val = row.Args[i]
		}
		slot := indexOf(spec.cols, c)
		switch spec.conflict {
		case conflictExcluded:
			if !isQualCol(val, "excluded", c) {
				return false
			}
		case conflictSet:
			// Must be the very argument that the VALUES list gives the column.
			if slot < 0 || !b.value(val, slot) {
				return false
			}
		}
	}
	return true
}

func indexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

func matchDelete(s *pg.DeleteStmt, spec *deleteSpec) *binding {
	if !plainTable(s.Relation, spec.table) || len(s.UsingClause) > 0 || len(s.ReturningList) > 0 || s.WithClause != nil {
		return nil
	}
	b := newBinding(spec.shape)
	if !b.where(s.WhereClause, spec.table, spec.where, false) || !b.complete() {
		return nil
	}
	return b
}

// matchFillGenerations matches C7 and returns its inlined rows.
func matchFillGenerations(u *pg.UpdateStmt) (*binding, []Generation) {
	if !plainTable(u.Relation, tblCommits) || len(u.ReturningList) > 0 || u.WithClause == nil || u.WithClause.Recursive ||
		len(u.WithClause.Ctes) != 1 || len(u.FromClause) != 1 || len(u.TargetList) != 1 {
		return nil, nil
	}
	cte := u.WithClause.Ctes[0].GetCommonTableExpr()
	if cte == nil || cte.Ctename != "updated" || len(cte.Aliascolnames) != 2 || strName(cte.Aliascolnames[0]) != "id" ||
		strName(cte.Aliascolnames[1]) != "generation" || cte.Ctematerialized != pg.CTEMaterialize_CTEMaterializeDefault ||
		cte.SearchClause != nil || cte.CycleClause != nil {
		return nil, nil
	}
	vs := cte.Ctequery.GetSelectStmt()
	if vs == nil || len(vs.ValuesLists) == 0 || len(vs.TargetList) > 0 || len(vs.FromClause) > 0 || vs.WhereClause != nil ||
		len(vs.SortClause) > 0 || vs.LimitCount != nil || vs.LimitOffset != nil || vs.WithClause != nil || vs.Op != pg.SetOperation_SETOP_NONE {
		return nil, nil
	}
	gens := make([]Generation, 0, len(vs.ValuesLists))
	for _, l := range vs.ValuesLists {
		row := l.GetList()
		if row == nil || len(row.Items) != 2 {
			return nil, nil
		}
		id, gen := row.Items[0].GetAConst(), row.Items[1].GetAConst()
		if id == nil || id.Isnull || id.GetSval() == nil || gen == nil || gen.Isnull {
			return nil, nil
		}
		var g int64
		switch {
		case gen.GetIval() != nil:
			g = int64(gen.GetIval().Ival)
		case gen.GetFval() != nil && isIntegerText(gen.GetFval().Fval):
			v, err := strconv.ParseInt(gen.GetFval().Fval, 10, 64)
			if err != nil {
				return nil, nil
			}
			g = v
		default:
			return nil, nil
		}
		gens = append(gens, Generation{ID: id.GetSval().Sval, Generation: g})
	}
	rt := u.TargetList[0].GetResTarget()
	if rt == nil || rt.Name != "generation" || len(rt.Indirection) > 0 || !isQualCol(rt.Val, "updated", "generation") {
		return nil, nil
	}
	from := u.FromClause[0].GetRangeVar()
	if from == nil || from.Relname != "updated" || from.Schemaname != "" || from.Alias != nil {
		return nil, nil
	}
	cs := conjuncts(u.WhereClause, nil)
	if u.WhereClause == nil || len(cs) != 2 {
		return nil, nil
	}
	b := newBinding(C7)
	okJoin := func(c *pg.Node) bool {
		l, r, ok := opExpr(c, "=")
		return ok && (isQualCol(l, tblCommits, "id") && isQualCol(r, "updated", "id") || isQualCol(r, tblCommits, "id") && isQualCol(l, "updated", "id"))
	}
	okRepo := func(c *pg.Node) bool {
		l, r, ok := opExpr(c, "=")
		if !ok {
			return false
		}
		if isQualCol(l, tblCommits, "repository_id") {
			return b.value(r, 0)
		}
		return isQualCol(r, tblCommits, "repository_id") && b.value(l, 0)
	}
	if !(okJoin(cs[0]) && okRepo(cs[1]) || okRepo(cs[0]) && okJoin(cs[1])) || !b.complete() {
		return nil, nil
	}
	return b, gens
}

// matchAdvisoryLock matches L1/L2: SELECT pg_advisory_xact_lock[_shared]($1).
func matchAdvisoryLock(s *pg.SelectStmt) (Shape, *binding) {
	if !bareSelect(s) || len(s.FromClause) > 0 || s.WhereClause != nil || len(s.SortClause) > 0 || s.LimitCount != nil || len(s.TargetList) != 1 {
		return ShapeNone, nil
	}
	fc := plainTarget(s.TargetList[0]).GetFuncCall()
	if fc == nil || len(fc.Args) != 1 || fc.AggStar || fc.AggDistinct || fc.FuncVariadic || fc.Over != nil || fc.AggFilter != nil || len(fc.AggOrder) > 0 {
		return ShapeNone, nil
	}
	var shape Shape
	switch funcName(fc) {
	case "pg_advisory_xact_lock_shared":
		shape = L1
	case "pg_advisory_xact_lock":
		shape = L2
	default:
		return ShapeNone, nil
	}
	b := newBinding(shape)
	if !b.value(fc.Args[0], 0) {
		return ShapeNone, nil
	}
	return shape, b
}

// funcName is the function's name, accepting a pg_catalog qualification.
func funcName(fc *pg.FuncCall) string {
	switch len(fc.Funcname) {
	case 1:
		return strName(fc.Funcname[0])
	case 2:
		if strName(fc.Funcname[0]) == "pg_catalog" {
			return strName(fc.Funcname[1])
		}
	}
	return ""
}

// matchDiagnostics matches the §3.7 statements: COUNT(*) of a table,
// SELECT * FROM schema_migrations, SELECT version(); each optionally with
// LIMIT.
func matchDiagnostics(s *pg.SelectStmt) (Shape, string, *binding) {
	if !bareSelect(s) || s.WhereClause != nil || len(s.SortClause) > 0 || len(s.TargetList) != 1 {
		return ShapeNone, "", nil
	}
	val := plainTarget(s.TargetList[0])
	var shape Shape
	var table string
	switch {
	case val.GetFuncCall() != nil:
		fc := val.GetFuncCall()
		if fc.AggDistinct || fc.FuncVariadic || fc.Over != nil || fc.AggFilter != nil || len(fc.AggOrder) > 0 || len(fc.Args) > 0 {
			return ShapeNone, "", nil
		}
		switch {
		case funcName(fc) == "version" && !fc.AggStar && len(s.FromClause) == 0 && s.LimitCount == nil:
			return DiagVersion, "", &binding{}
		case funcName(fc) == "count" && fc.AggStar && len(s.FromClause) == 1:
			rv := s.FromClause[0].GetRangeVar()
			if rv == nil || rv.Schemaname != "" || rv.Alias != nil || !rv.Inh {
				return ShapeNone, "", nil
			}
			table = rv.Relname
			switch {
			case table == tblMigrations:
				shape = DiagCountMigrations
			case indexOf(refStoreTables, table) >= 0:
				shape = DiagCountRefTable
			default:
				return ShapeNone, "", nil
			}
		default:
			return ShapeNone, "", nil
		}
	case val.GetColumnRef() != nil:
		cr := val.GetColumnRef()
		if len(cr.Fields) != 1 || cr.Fields[0].GetAStar() == nil || len(s.FromClause) != 1 || !plainTable(s.FromClause[0].GetRangeVar(), tblMigrations) {
			return ShapeNone, "", nil
		}
		shape, table = DiagSelectMigrations, tblMigrations
	default:
		return ShapeNone, "", nil
	}
	b := newBinding(shape)
	if s.LimitCount == nil {
		// No LIMIT: the slot stays unbound and Args is empty.
		return shape, table, &binding{}
	}
	if !b.value(s.LimitCount, 0) {
		return ShapeNone, "", nil
	}
	return shape, table, b
}
