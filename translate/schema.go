package translate

// column is one column of the legacy schema (tests/legacy/schema.sql) with
// its attribute number, which is what PostgreSQL puts in RowDescription.
type column struct {
	name   string
	attnum int16
	oid    uint32
}

type table struct {
	cols []column
}

func (t *table) col(name string) (column, bool) {
	for _, c := range t.cols {
		if c.name == name {
			return c, true
		}
	}
	return column{}, false
}

const (
	tblRepositories = "graveler_repositories"
	tblBranches     = "graveler_branches"
	tblCommits      = "graveler_commits"
	tblTags         = "graveler_tags"
	tblStaging      = "graveler_staging_kv"
	tblMigrations   = "schema_migrations"
)

var legacyTables = map[string]*table{
	tblRepositories: {[]column{
		{"id", 1, OIDText}, {"storage_namespace", 2, OIDText}, {"creation_date", 3, OIDTimestamptz}, {"default_branch", 4, OIDText},
	}},
	tblBranches: {[]column{
		{"repository_id", 1, OIDText}, {"id", 2, OIDText}, {"staging_token", 3, OIDText}, {"commit_id", 4, OIDText},
	}},
	tblCommits: {[]column{
		{"repository_id", 1, OIDText}, {"id", 2, OIDText}, {"committer", 3, OIDText}, {"message", 4, OIDText},
		{"creation_date", 5, OIDTimestamptz}, {"meta_range_id", 6, OIDText}, {"metadata", 7, OIDJSONB},
		{"parents", 8, OIDTextArray}, {"version", 9, OIDInt4}, {"generation", 10, OIDInt4},
	}},
	tblTags: {[]column{
		{"repository_id", 1, OIDText}, {"id", 2, OIDText}, {"commit_id", 3, OIDText},
	}},
	tblStaging: {[]column{
		{"staging_token", 1, OIDVarchar}, {"key", 2, OIDBytea}, {"identity", 3, OIDBytea}, {"data", 4, OIDBytea},
	}},
	tblMigrations: {[]column{
		{"version", 1, OIDInt8}, {"dirty", 2, OIDBool},
	}},
}

// RefStoreTables are the legacy ref-store tables, in the order R4 deletes them.
var refStoreTables = []string{tblBranches, tblTags, tblCommits, tblRepositories, tblStaging}

// typeSize is pg_type.typlen, which RowDescription carries as DataTypeSize.
func typeSize(oid uint32) int16 {
	switch oid {
	case OIDBool:
		return 1
	case OIDInt4, OIDVoid:
		return 4
	case OIDInt8, OIDTimestamptz:
		return 8
	}
	return -1
}

// typeName is the name PostgreSQL uses in error messages about the type.
func typeName(oid uint32) string {
	switch oid {
	case OIDBool:
		return "boolean"
	case OIDBytea:
		return "bytea"
	case OIDInt8:
		return "bigint"
	case OIDInt4:
		return "integer"
	case OIDText:
		return "text"
	case OIDTextArray:
		return "text[]"
	case OIDVarchar:
		return "character varying"
	case OIDTimestamptz:
		return "timestamp with time zone"
	case OIDVoid:
		return "void"
	case OIDJSONB:
		return "jsonb"
	}
	return "type?"
}
