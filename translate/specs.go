package translate

// The statements of spec §3, as patterns over the parse tree. Slot i of a
// pattern becomes Plan.Args[i]; its type is the type of the column it is
// compared with or assigned to (LIMIT: int8, LIKE prefix: text), which is
// what PostgreSQL infers for a $n in that place.

type predOp uint8

const (
	opEq predOp = iota
	opGE
	opGT
	opLT
	opLikePrefix // col LIKE slot || '%'
)

// pred is "col op slot".
type pred struct {
	col  string
	op   predOp
	slot int
}

type selectSpec struct {
	shape Shape
	table string
	cols  []string
	where []pred
	// leaves adds C6's NOT EXISTS (first_parent) conjunct.
	leaves bool
	order  []string
	limit  int // slot of LIMIT, or -1
}

type conflict uint8

const (
	conflictNone      conflict = iota // no ON CONFLICT
	conflictNothing                   // ON CONFLICT DO NOTHING
	conflictNothingOn                 // ON CONFLICT (target) DO NOTHING
	conflictSet                       // ON CONFLICT (target) DO UPDATE SET c = <same slot as VALUES>
	conflictExcluded                  // ON CONFLICT (target) DO UPDATE SET (cols) = (excluded.cols)
)

type insertSpec struct {
	shape    Shape
	table    string
	cols     []string // slot i is VALUES item i
	conflict conflict
	target   []string
	set      []string // columns assigned in DO UPDATE SET
}

type deleteSpec struct {
	shape Shape
	table string
	where []pred
}

// Slot is one argument of a shape: its name (the column it binds, or
// "from"/"to"/"prefix"/"limit"/"key") and the type PostgreSQL infers for it.
type Slot struct {
	Name string
	OID  uint32
}

var (
	commitCols       = []string{"committer", "message", "creation_date", "parents", "meta_range_id", "metadata", "version", "generation"}
	commitColsWithID = append([]string{"id"}, commitCols...)
	commitListCols   = []string{"id", "committer", "message", "creation_date", "meta_range_id", "parents", "metadata", "version", "generation"}
)

func page(shape Shape, table string, cols []string, op predOp, order string, leaves bool) selectSpec {
	return selectSpec{shape: shape, table: table, cols: cols,
		where: []pred{{"repository_id", opEq, 0}, {"id", op, 1}}, leaves: leaves, order: []string{order}, limit: 2}
}

var selectSpecs = []selectSpec{
	{shape: R1, table: tblRepositories, cols: []string{"storage_namespace", "creation_date", "default_branch"},
		where: []pred{{"id", opEq, 0}}, limit: -1},
	{shape: R3a, table: tblRepositories, cols: []string{"id", "storage_namespace", "creation_date", "default_branch"},
		where: []pred{{"id", opGE, 0}}, order: []string{"id"}, limit: 1},
	{shape: R3b, table: tblRepositories, cols: []string{"id", "storage_namespace", "creation_date", "default_branch"},
		where: []pred{{"id", opGT, 0}}, order: []string{"id"}, limit: 1},
	{shape: B1, table: tblBranches, cols: []string{"commit_id", "staging_token"},
		where: []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}, limit: -1},
	page(B5a, tblBranches, []string{"id", "staging_token", "commit_id"}, opGE, "id", false),
	page(B5b, tblBranches, []string{"id", "staging_token", "commit_id"}, opGT, "id", false),
	page(B6a, tblBranches, []string{"id", "staging_token", "commit_id"}, opGE, "commit_id", false),
	page(B6b, tblBranches, []string{"id", "staging_token", "commit_id"}, opGT, "commit_id", false),
	{shape: T1, table: tblTags, cols: []string{"commit_id"},
		where: []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}, limit: -1},
	page(T4a, tblTags, []string{"id", "commit_id"}, opGE, "id", false),
	page(T4b, tblTags, []string{"id", "commit_id"}, opGT, "id", false),
	{shape: C1, table: tblCommits, cols: commitCols,
		where: []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}, limit: -1},
	{shape: C2, table: tblCommits, cols: commitColsWithID,
		where: []pred{{"repository_id", opEq, 0}, {"id", opLikePrefix, 1}}, limit: 2},
	{shape: C4, table: tblCommits, cols: commitColsWithID,
		where: []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}, limit: -1},
	page(C5a, tblCommits, commitListCols, opGE, "id", false),
	page(C5b, tblCommits, commitListCols, opGT, "id", false),
	page(C6a, tblCommits, commitListCols, opGE, "id", true),
	page(C6b, tblCommits, commitListCols, opGT, "id", true),
	{shape: S1, table: tblStaging, cols: []string{"identity", "data"},
		where: []pred{{"staging_token", opEq, 0}, {"key", opEq, 1}}, limit: -1},
	{shape: S7, table: tblStaging, cols: []string{"key", "identity", "data"},
		where: []pred{{"staging_token", opEq, 0}, {"key", opGE, 1}}, order: []string{"key"}, limit: 2},
}

var (
	branchCols  = []string{"repository_id", "id", "staging_token", "commit_id"}
	stagingCols = []string{"staging_token", "key", "identity", "data"}
)

var insertSpecs = []insertSpec{
	{shape: R2, table: tblRepositories, cols: []string{"id", "storage_namespace", "creation_date", "default_branch"}},
	{shape: B2, table: tblBranches, cols: branchCols},
	{shape: B3, table: tblBranches, cols: branchCols, conflict: conflictSet,
		target: []string{"repository_id", "id"}, set: []string{"staging_token", "commit_id"}},
	{shape: T2, table: tblTags, cols: []string{"repository_id", "id", "commit_id"}, conflict: conflictNothing},
	{shape: C3, table: tblCommits, cols: []string{"repository_id", "id", "committer", "message", "creation_date",
		"parents", "meta_range_id", "metadata", "version", "generation"}, conflict: conflictNothing},
	{shape: S2, table: tblStaging, cols: stagingCols, conflict: conflictNothingOn, target: []string{"staging_token", "key"}},
	{shape: S3, table: tblStaging, cols: stagingCols, conflict: conflictExcluded,
		target: []string{"staging_token", "key"}, set: stagingCols},
}

var deleteSpecs = []deleteSpec{
	{R4Branches, tblBranches, []pred{{"repository_id", opEq, 0}}},
	{R4Tags, tblTags, []pred{{"repository_id", opEq, 0}}},
	{R4Commits, tblCommits, []pred{{"repository_id", opEq, 0}}},
	{R4Repository, tblRepositories, []pred{{"id", opEq, 0}}},
	{B4, tblBranches, []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}},
	{T3, tblTags, []pred{{"repository_id", opEq, 0}, {"id", opEq, 1}}},
	{S4, tblStaging, []pred{{"staging_token", opEq, 0}, {"key", opEq, 1}}},
	{S5, tblStaging, []pred{{"staging_token", opEq, 0}}},
	{S6a, tblStaging, []pred{{"staging_token", opEq, 0}, {"key", opGE, 1}, {"key", opLT, 2}}},
	{S6b, tblStaging, []pred{{"staging_token", opEq, 0}, {"key", opGE, 1}}},
}

// shapeInfo is what is known about a shape before matching any text.
type shapeInfo struct {
	table  string
	slots  []Slot
	fields []string // result columns of table
}

var shapeInfos = buildShapeInfos()

func predSlots(t *table, preds []pred, slots []Slot) []Slot {
	for _, p := range preds {
		c, _ := t.col(p.col)
		oid := c.oid
		if oid == OIDVarchar {
			// varchar has no operators of its own: "varchar = $1" resolves
			// to text = text, so PostgreSQL infers text (25) here, while
			// an INSERT into the column infers varchar (1043).
			oid = OIDText
		}
		name := p.col
		switch p.op {
		case opLikePrefix:
			oid, name = OIDText, "prefix"
		case opGE, opGT:
			name = "from"
		case opLT:
			name = "to"
		}
		slots = setSlot(slots, p.slot, Slot{name, oid})
	}
	return slots
}

func setSlot(slots []Slot, i int, s Slot) []Slot {
	for len(slots) <= i {
		slots = append(slots, Slot{})
	}
	slots[i] = s
	return slots
}

func buildShapeInfos() [numShapes]shapeInfo {
	var out [numShapes]shapeInfo
	for _, s := range selectSpecs {
		t := legacyTables[s.table]
		slots := predSlots(t, s.where, nil)
		if s.limit >= 0 {
			slots = setSlot(slots, s.limit, Slot{"limit", OIDInt8})
		}
		out[s.shape] = shapeInfo{table: s.table, slots: slots, fields: s.cols}
	}
	for _, s := range insertSpecs {
		t := legacyTables[s.table]
		var slots []Slot
		for _, c := range s.cols {
			col, _ := t.col(c)
			slots = append(slots, Slot{c, col.oid})
		}
		out[s.shape] = shapeInfo{table: s.table, slots: slots}
	}
	for _, s := range deleteSpecs {
		out[s.shape] = shapeInfo{table: s.table, slots: predSlots(legacyTables[s.table], s.where, nil)}
	}
	out[C7] = shapeInfo{table: tblCommits, slots: []Slot{{"repository_id", OIDText}}}
	out[L1] = shapeInfo{slots: []Slot{{"key", OIDInt8}}}
	out[L2] = shapeInfo{slots: []Slot{{"key", OIDInt8}}}
	for _, s := range []Shape{DiagCountMigrations, DiagCountRefTable, DiagSelectMigrations} {
		out[s] = shapeInfo{slots: []Slot{{"limit", OIDInt8}}}
	}
	out[DiagSelectMigrations].table = tblMigrations
	out[DiagSelectMigrations].fields = []string{"version", "dirty"}
	out[DiagCountMigrations].table = tblMigrations
	return out
}

// Slots returns the names and types of a shape's arguments, in Plan.Args
// order.
func (s Shape) Slots() []Slot {
	if s >= numShapes {
		return nil
	}
	return shapeInfos[s].slots
}
