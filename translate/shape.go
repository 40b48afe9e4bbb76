package translate

// Type OIDs of the types the ref store uses (pg_type.oid, fixed across
// PostgreSQL versions).
const (
	OIDBool        uint32 = 16
	OIDBytea       uint32 = 17
	OIDInt8        uint32 = 20
	OIDInt4        uint32 = 23
	OIDText        uint32 = 25
	OIDTextArray   uint32 = 1009
	OIDVarchar     uint32 = 1043
	OIDTimestamptz uint32 = 1184
	OIDVoid        uint32 = 2278
	OIDJSONB       uint32 = 3802
)

// Kind says what the caller does with a statement.
type Kind uint8

const (
	// Passthrough: the statement touches no ref-store table; forward it.
	Passthrough Kind = iota
	// RefStore: a recognised ref-store statement (Shape R1..S7, L1, L2).
	RefStore
	// Transaction: begin/start transaction, commit, rollback.
	Transaction
	// Utility: the empty query, deallocate, and the diagnostics of §3.7.
	Utility
	// Unsupported: the statement names a ref-store (graveler_*) table or the
	// proxy-owned advisory locks but is not one the legacy client sends.
	// The caller answers 0A000; Plan.Err names the statement.
	Unsupported
)

func (k Kind) String() string {
	switch k {
	case Passthrough:
		return "passthrough"
	case RefStore:
		return "refstore"
	case Transaction:
		return "transaction"
	case Utility:
		return "utility"
	case Unsupported:
		return "unsupported"
	}
	return "kind?"
}

// Shape identifies one statement of spec §3 (or a utility/transaction
// statement). The names follow the spec's IDs; "a"/"b" split the first
// (>=) and later (>) page of a listing, and the R4 parts.
type Shape uint8

const (
	ShapeNone            Shape = iota
	R1                         // GetRepository
	R2                         // insert repository
	R3a                        // list repositories, id >= $1
	R3b                        // list repositories, id > $1
	R4Branches                 // delete graveler_branches by repository_id
	R4Tags                     // delete graveler_tags by repository_id
	R4Commits                  // delete graveler_commits by repository_id
	R4Repository               // delete graveler_repositories by id
	B1                         // GetBranch
	B2                         // insert branch
	B3                         // upsert branch
	B4                         // delete branch
	B5a                        // list branches ORDER BY id, id >= $2
	B5b                        // list branches ORDER BY id, id > $2
	B6a                        // list branches ORDER BY commit_id, id >= $2
	B6b                        // list branches ORDER BY commit_id, id > $2
	T1                         // GetTag
	T2                         // insert tag ON CONFLICT DO NOTHING
	T3                         // delete tag
	T4a                        // list tags, id >= $2
	T4b                        // list tags, id > $2
	C1                         // GetCommit
	C2                         // GetCommitByPrefix
	C3                         // insert commit ON CONFLICT DO NOTHING
	C4                         // GetCommit with id (v0.68 log)
	C5a                        // list commits, id >= $2
	C5b                        // list commits, id > $2
	C6a                        // ancestry leaves, id >= $2
	C6b                        // ancestry leaves, id > $2
	C7                         // fill generations (inlined VALUES)
	S1                         // staging get
	S2                         // staging insert if absent
	S3                         // staging upsert
	S4                         // staging drop key
	S5                         // staging drop token
	S6a                        // staging drop by prefix, with upper bound
	S6b                        // staging drop by prefix, without upper bound
	S7                         // staging list page
	L1                         // pg_advisory_xact_lock_shared($1)
	L2                         // pg_advisory_xact_lock($1)
	TxBegin                    // BEGIN [isolation level ...] [read only|read write]
	TxStart                    // START TRANSACTION ...
	TxCommit                   // COMMIT / END
	TxRollback                 // ROLLBACK / ABORT
	EmptyQuery                 // ";" or only whitespace/comments
	Deallocate                 // DEALLOCATE name
	DeallocateAll              // DEALLOCATE ALL
	DiagCountMigrations        // SELECT COUNT(*) FROM schema_migrations [LIMIT n]
	DiagCountRefTable          // SELECT COUNT(*) FROM graveler_* [LIMIT n]
	DiagVersion                // SELECT version()
	DiagSelectMigrations       // SELECT * FROM schema_migrations [LIMIT n]
	numShapes
)

var shapeNames = [numShapes]string{
	ShapeNone: "none", R1: "R1", R2: "R2", R3a: "R3a", R3b: "R3b",
	R4Branches: "R4-branches", R4Tags: "R4-tags", R4Commits: "R4-commits", R4Repository: "R4-repository",
	B1: "B1", B2: "B2", B3: "B3", B4: "B4", B5a: "B5a", B5b: "B5b", B6a: "B6a", B6b: "B6b",
	T1: "T1", T2: "T2", T3: "T3", T4a: "T4a", T4b: "T4b",
	C1: "C1", C2: "C2", C3: "C3", C4: "C4", C5a: "C5a", C5b: "C5b", C6a: "C6a", C6b: "C6b", C7: "C7",
	S1: "S1", S2: "S2", S3: "S3", S4: "S4", S5: "S5", S6a: "S6a", S6b: "S6b", S7: "S7",
	L1: "L1", L2: "L2",
	TxBegin: "begin", TxStart: "start-transaction", TxCommit: "commit", TxRollback: "rollback",
	EmptyQuery: "empty", Deallocate: "deallocate", DeallocateAll: "deallocate-all",
	DiagCountMigrations: "diag-count-migrations", DiagCountRefTable: "diag-count-ref-table",
	DiagVersion: "diag-version", DiagSelectMigrations: "diag-select-migrations",
}

func (s Shape) String() string {
	if s < numShapes {
		return shapeNames[s]
	}
	return "shape?"
}

// Shapes returns every shape, for tests and benchmarks that iterate them.
func Shapes() []Shape {
	out := make([]Shape, 0, numShapes-1)
	for s := ShapeNone + 1; s < numShapes; s++ {
		out = append(out, s)
	}
	return out
}

// Kind returns the kind of plan a shape belongs to.
func (s Shape) Kind() Kind {
	switch {
	case s == ShapeNone:
		return Passthrough
	case s >= R1 && s <= L2:
		return RefStore
	case s >= TxBegin && s <= TxRollback:
		return Transaction
	}
	return Utility
}

// Command is the command tag verb PostgreSQL answers the shape with
// ("SELECT", "INSERT", ...); "" for the empty query.
func (s Shape) Command() string {
	switch s {
	case R2, B2, B3, T2, C3, S2, S3:
		return "INSERT"
	case R4Branches, R4Tags, R4Commits, R4Repository, B4, T3, S4, S5, S6a, S6b:
		return "DELETE"
	case C7:
		return "UPDATE"
	case TxBegin:
		return "BEGIN"
	case TxStart:
		return "START TRANSACTION"
	case TxCommit:
		return "COMMIT"
	case TxRollback:
		return "ROLLBACK"
	case EmptyQuery, ShapeNone:
		return ""
	case Deallocate:
		return "DEALLOCATE"
	case DeallocateAll:
		return "DEALLOCATE ALL"
	}
	return "SELECT"
}
