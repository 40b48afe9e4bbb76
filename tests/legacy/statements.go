package legacy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/lib/pq"
)

// The statement texts below are the exact wire texts lakeFS v0.68 sends
// (spec §3), including the newlines and tabs of its Go source: the proxy
// sees these bytes, so tests that match on whitespace-normalised text must
// also survive the raw form. Normalize(x) equals the spec's quoted text.
const (
	// Transaction control, sent over the simple protocol (spec §3.0).
	SQLBeginSerializableRW = "begin isolation level serializable read write"
	SQLBeginSerializableRO = "begin isolation level serializable read only"
	SQLBeginReadCommitted  = "begin isolation level read committed read write"
	SQLCommit              = "commit"
	SQLRollback            = "rollback"
	SQLPing                = ";"

	// Repositories (§3.1).
	SQLR1 = `SELECT storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id = $1`
	SQLR2 = `INSERT INTO graveler_repositories (id, storage_namespace, creation_date, default_branch) VALUES ($1, $2, $3, $4)`
	// SQLR3First / SQLR3Next: the repository iterator's first page (or after
	// SeekGE) uses >=, later pages use > with the last id.
	SQLR3First        = "\n\t\t\tSELECT id, storage_namespace, creation_date, default_branch\n\t\t\tFROM graveler_repositories\n\t\t\tWHERE id >= $1\n\t\t\tORDER BY id ASC\n\t\t\tLIMIT $2"
	SQLR3Next         = "\n\t\t\tSELECT id, storage_namespace, creation_date, default_branch\n\t\t\tFROM graveler_repositories\n\t\t\tWHERE id > $1\n\t\t\tORDER BY id ASC\n\t\t\tLIMIT $2"
	SQLR4Branches     = `DELETE FROM graveler_branches WHERE repository_id = $1`
	SQLR4Tags         = `DELETE FROM graveler_tags WHERE repository_id = $1`
	SQLR4Commits      = `DELETE FROM graveler_commits WHERE repository_id = $1`
	SQLR4Repositories = `DELETE FROM graveler_repositories WHERE id = $1`

	// Branches (§3.2).
	SQLB1 = `SELECT commit_id, staging_token FROM graveler_branches WHERE repository_id = $1 AND id = $2`
	// SQLB2Create is CreateBranch's text; SQLB2Repo the one inside
	// CreateRepository (one tab less of indentation, same normalised text).
	SQLB2Create = "\n\t\t\tINSERT INTO graveler_branches (repository_id, id, staging_token, commit_id)\n\t\t\tVALUES ($1, $2, $3, $4)"
	SQLB2Repo   = "\n\t\t\t\tINSERT INTO graveler_branches (repository_id, id, staging_token, commit_id)\n\t\t\t\tVALUES ($1, $2, $3, $4)"
	SQLB3       = "\n\t\t\tINSERT INTO graveler_branches (repository_id, id, staging_token, commit_id)\n\t\t\tVALUES ($1, $2, $3, $4)\n\t\t\t\tON CONFLICT (repository_id, id)\n\t\t\t\tDO UPDATE SET staging_token = $3, commit_id = $4"
	SQLB4       = `DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2`
	// The branch iterator's "ORDER BY id  ASC" (two spaces) is on the wire.
	SQLB5First = "\n\t\t\tSELECT id, staging_token, commit_id\n\t\t\tFROM graveler_branches\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id >= $2\n\t\t\tORDER BY id  ASC\n\t\t\tLIMIT $3"
	SQLB5Next  = "\n\t\t\tSELECT id, staging_token, commit_id\n\t\t\tFROM graveler_branches\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id > $2\n\t\t\tORDER BY id  ASC\n\t\t\tLIMIT $3"
	SQLB6First = "\n\t\t\tSELECT id, staging_token, commit_id\n\t\t\tFROM graveler_branches\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id >= $2\n\t\t\tORDER BY commit_id  ASC\n\t\t\tLIMIT $3"
	SQLB6Next  = "\n\t\t\tSELECT id, staging_token, commit_id\n\t\t\tFROM graveler_branches\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id > $2\n\t\t\tORDER BY commit_id  ASC\n\t\t\tLIMIT $3"

	// Tags (§3.3).
	SQLT1      = `SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND id = $2`
	SQLT2      = "INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3)\n\t\t\tON CONFLICT DO NOTHING"
	SQLT3      = `DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2`
	SQLT4First = "\n\t\t\tSELECT id, commit_id\n\t\t\tFROM graveler_tags\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id >= $2\n\t\t\tORDER BY id ASC\n\t\t\tLIMIT $3"
	SQLT4Next  = "\n\t\t\tSELECT id, commit_id\n\t\t\tFROM graveler_tags\n\t\t\tWHERE repository_id = $1\n\t\t\tAND id > $2\n\t\t\tORDER BY id ASC\n\t\t\tLIMIT $3"

	// Commits (§3.4).
	SQLC1 = "\n\t\t\t\t\tSELECT committer, message, creation_date, parents, meta_range_id, metadata, version, generation\n\t\t\t\t\tFROM graveler_commits WHERE repository_id = $1 AND id = $2"
	SQLC2 = "\n\t\t\t\t\tSELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation\n\t\t\t\t\tFROM graveler_commits\n\t\t\t\t\tWHERE repository_id = $1 AND id LIKE $2 || '%'\n\t\t\t\t\tLIMIT 2"
	// SQLC3 keeps the trailing blank after "graveler_commits" that lakeFS's
	// source has.
	SQLC3 = "\n\t\t\t\tINSERT INTO graveler_commits \n\t\t\t\t(repository_id, id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation)\n\t\t\t\tVALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)\n\t\t\t\tON CONFLICT DO NOTHING"
	SQLC4 = "\n\t\tSELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation\n\t\tFROM graveler_commits\n\t\tWHERE repository_id = $1 AND id = $2"
	// C5/C6 are built by squirrel: single line, LIMIT inlined (see C5SQL, C6SQL).
	sqlC5Head = "SELECT id, committer, message, creation_date, meta_range_id, parents, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND "
	sqlC6Tail = " AND NOT EXISTS ( SELECT * FROM graveler_commits c2 WHERE c2.repository_id=graveler_commits.repository_id AND first_parent(c2.parents, c2.version)=graveler_commits.id )"
	// C7 is assembled from these parts around pq.QuoteLiteral'd values.
	sqlC7Head = `WITH updated(id, generation) AS (VALUES `
	sqlC7Tail = `) UPDATE graveler_commits SET generation = updated.generation FROM updated WHERE (graveler_commits.id=updated.id AND graveler_commits.repository_id=$1)`

	// Branch locker (§3.5); the trailing ';' is on the wire.
	SQLL1 = `SELECT pg_advisory_xact_lock_shared($1);`
	SQLL2 = `SELECT pg_advisory_xact_lock($1);`

	// Staging (§3.6).
	SQLS1 = "SELECT identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2"
	SQLS2 = "INSERT INTO graveler_staging_kv (staging_token, key, identity, data)\n\t\t\t\t\t\tVALUES ($1, $2, $3, $4)\n\t\t\t\t\t\tON CONFLICT (staging_token, key) DO NOTHING"
	SQLS3 = "INSERT INTO graveler_staging_kv (staging_token, key, identity, data)\n\t\t\t\t\t\t\t\tVALUES ($1, $2, $3, $4)\n\t\t\t\t\t\t\t\tON CONFLICT (staging_token, key) DO UPDATE\n\t\t\t\t\t\t\t\t\tSET (staging_token, key, identity, data) =\n\t\t\t\t\t\t\t\t\t\t\t(excluded.staging_token, excluded.key, excluded.identity, excluded.data)"
	SQLS4 = "DELETE FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2"
	SQLS5 = "DELETE FROM graveler_staging_kv WHERE staging_token=$1"
	// S6 is built by squirrel; the upper bound is omitted when the prefix
	// has none (empty or all 0xFF).
	SQLS6        = "DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::bytea AND key < $3::bytea"
	SQLS6NoUpper = "DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::bytea"
	SQLS7        = "SELECT key, identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key >= $2 ORDER BY key LIMIT $3"

	// Startup and diagnostics (§3.7).
	SQLMigrateCount    = "SELECT COUNT(*) FROM schema_migrations"
	SQLDiagMigrations  = "SELECT * FROM schema_migrations LIMIT 1000"
	SQLDiagVersion     = "SELECT version();"
	SQLDiagCountFormat = "SELECT COUNT(*) FROM %s LIMIT 1000"
)

// Statement ids used in the recorder and the statement table.
const (
	IDBegin       = "BEGIN"
	IDCommit      = "COMMIT"
	IDRollback    = "ROLLBACK"
	IDPing        = "PING"
	IDR1          = "R1"
	IDR2          = "R2"
	IDR3          = "R3"
	IDR4          = "R4"
	IDB1          = "B1"
	IDB2          = "B2"
	IDB3          = "B3"
	IDB4          = "B4"
	IDB5          = "B5"
	IDB6          = "B6"
	IDT1          = "T1"
	IDT2          = "T2"
	IDT3          = "T3"
	IDT4          = "T4"
	IDC1          = "C1"
	IDC2          = "C2"
	IDC3          = "C3"
	IDC4          = "C4"
	IDC5          = "C5"
	IDC6          = "C6"
	IDC7          = "C7"
	IDL1          = "L1"
	IDL2          = "L2"
	IDS1          = "S1"
	IDS2          = "S2"
	IDS3          = "S3"
	IDS4          = "S4"
	IDS5          = "S5"
	IDS6          = "S6"
	IDS7          = "S7"
	IDMigrate     = "MIGRATE_COUNT"
	IDDiagnostics = "DIAG"
)

// DefaultPageSize is lakeFS's IteratorPrefetchSize and
// ListingDefaultBatchSize; CommitBatchSize is ListingMaxBatchSize, the page
// size Commit reads staging with.
const (
	DefaultPageSize = 1000
	CommitBatchSize = 100000
	// C7BatchSize is lakeFS's BatchUpdateSQLSize: rows per C7 statement.
	C7BatchSize = 10000
)

// DiagnosticsTables are the tables the diagnostics collector counts.
// auth_users is not part of the ref-store schema, so against schema.sql its
// count fails with 42P01, exactly as it would against any database without
// the auth tables.
func DiagnosticsTables() []string {
	return []string{"graveler_staging_kv", "graveler_repositories", "graveler_branches", "graveler_commits", "graveler_tags", "auth_users"}
}

// Statement is one entry of the statement table.
type Statement struct {
	ID  string // R1, B5, ... (variants share an ID)
	SQL string // exact wire text
}

// Statements returns every fixed statement text lakeFS v0.68 sends for the
// ref store, staging and branch locker, plus the variants built at run time
// for the default page size (C5/C6 with LIMIT 1000, a two-row C7). Tests of
// the proxy can iterate it to check that every text is classified.
func Statements() []Statement {
	return []Statement{
		{IDBegin, SQLBeginSerializableRW}, {IDBegin, SQLBeginSerializableRO}, {IDBegin, SQLBeginReadCommitted},
		{IDCommit, SQLCommit}, {IDRollback, SQLRollback}, {IDPing, SQLPing},
		{IDR1, SQLR1}, {IDR2, SQLR2}, {IDR3, SQLR3First}, {IDR3, SQLR3Next},
		{IDR4, SQLR4Branches}, {IDR4, SQLR4Tags}, {IDR4, SQLR4Commits}, {IDR4, SQLR4Repositories},
		{IDB1, SQLB1}, {IDB2, SQLB2Create}, {IDB2, SQLB2Repo}, {IDB3, SQLB3}, {IDB4, SQLB4},
		{IDB5, SQLB5First}, {IDB5, SQLB5Next}, {IDB6, SQLB6First}, {IDB6, SQLB6Next},
		{IDT1, SQLT1}, {IDT2, SQLT2}, {IDT3, SQLT3}, {IDT4, SQLT4First}, {IDT4, SQLT4Next},
		{IDC1, SQLC1}, {IDC2, SQLC2}, {IDC3, SQLC3}, {IDC4, SQLC4},
		{IDC5, C5SQL(true, DefaultPageSize)}, {IDC5, C5SQL(false, DefaultPageSize)},
		{IDC6, C6SQL(true, DefaultPageSize)}, {IDC6, C6SQL(false, DefaultPageSize)},
		{IDC7, C7SQL([]GenerationUpdate{{"a", 1}, {"b", 2}})},
		{IDL1, SQLL1}, {IDL2, SQLL2},
		{IDS1, SQLS1}, {IDS2, SQLS2}, {IDS3, SQLS3}, {IDS4, SQLS4}, {IDS5, SQLS5},
		{IDS6, SQLS6}, {IDS6, SQLS6NoUpper}, {IDS7, SQLS7},
		{IDMigrate, SQLMigrateCount}, {IDDiagnostics, SQLDiagMigrations}, {IDDiagnostics, SQLDiagVersion},
	}
}

// Normalize collapses every run of whitespace to one space and trims the
// ends: the form the spec quotes statements in and the proxy matches on.
func Normalize(sql string) string {
	return strings.Join(strings.Fields(sql), " ")
}

func offsetOp(first bool) string {
	if first {
		return ">="
	}
	return ">"
}

// C5SQL is the squirrel-built ListCommits page (ordered by id).
func C5SQL(first bool, limit int) string {
	return sqlC5Head + "id " + offsetOp(first) + " $2 ORDER BY id ASC LIMIT " + strconv.Itoa(limit)
}

// C6SQL is the squirrel-built GC commit iterator page (ancestry leaves only).
func C6SQL(first bool, limit int) string {
	return sqlC5Head + "id " + offsetOp(first) + " $2" + sqlC6Tail + " ORDER BY id ASC LIMIT " + strconv.Itoa(limit)
}

// GenerationUpdate is one row of a C7 statement.
type GenerationUpdate struct {
	CommitID   string
	Generation int
}

// C7SQL is FillGenerations' UPDATE with the values inlined as literals,
// quoted with pq.QuoteLiteral as lakeFS does. lakeFS iterates a Go map here
// (random order); the simulator passes rows sorted by commit id so that two
// runs send identical texts.
func C7SQL(rows []GenerationUpdate) string {
	var b strings.Builder
	b.WriteString(sqlC7Head)
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "(%s, %d)", pq.QuoteLiteral(r.CommitID), r.Generation)
	}
	b.WriteString(sqlC7Tail)
	return b.String()
}

// DiagCountSQL is the diagnostics row count of one table.
func DiagCountSQL(table string) string {
	return fmt.Sprintf(SQLDiagCountFormat, table)
}

// UpperBoundForPrefix is graveler.UpperBoundForPrefix: the prefix with its
// last non-0xFF byte incremented and the rest cut off, or nil when there is
// no upper bound (empty or all 0xFF).
func UpperBoundForPrefix(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			ub := make([]byte, i+1)
			copy(ub, prefix[:i+1])
			ub[i]++
			return ub
		}
	}
	return nil
}

// sortedGenerationUpdates turns a generation map into C7 rows in id order.
func sortedGenerationUpdates(m map[string]int) []GenerationUpdate {
	out := make([]GenerationUpdate, 0, len(m))
	for id, g := range m {
		out = append(out, GenerationUpdate{id, g})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CommitID < out[j].CommitID })
	return out
}
