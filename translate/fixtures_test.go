package translate

// fixture is one statement text as the legacy client sends it (spec §3),
// with the shape it must be recognised as.
type fixture struct {
	name  string
	shape Shape
	sql   string
}

const (
	c6Tail = ` AND NOT EXISTS ( SELECT * FROM graveler_commits c2 WHERE c2.repository_id=graveler_commits.repository_id AND first_parent(c2.parents, c2.version)=graveler_commits.id ) ORDER BY id ASC LIMIT 1000`
	c5Cols = `SELECT id, committer, message, creation_date, meta_range_id, parents, metadata, version, generation FROM graveler_commits`
)

// legacyFixtures are the exact texts of spec §3, including the newlines and
// tabs of the Go source where the spec says they are there.
var legacyFixtures = []fixture{
	{"R1", R1, `SELECT storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id = $1`},
	{"R2", R2, `INSERT INTO graveler_repositories (id, storage_namespace, creation_date, default_branch) VALUES ($1, $2, $3, $4)`},
	{"R3a", R3a, `SELECT id, storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id >= $1 ORDER BY id ASC LIMIT $2`},
	{"R3b", R3b, `SELECT id, storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id > $1 ORDER BY id ASC LIMIT $2`},
	{"R4-branches", R4Branches, `DELETE FROM graveler_branches WHERE repository_id = $1`},
	{"R4-tags", R4Tags, `DELETE FROM graveler_tags WHERE repository_id = $1`},
	{"R4-commits", R4Commits, `DELETE FROM graveler_commits WHERE repository_id = $1`},
	{"R4-repository", R4Repository, `DELETE FROM graveler_repositories WHERE id = $1`},
	{"B1", B1, `SELECT commit_id, staging_token FROM graveler_branches WHERE repository_id = $1 AND id = $2`},
	{"B2", B2, `INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4)`},
	{"B3", B3, `INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4) ON CONFLICT (repository_id, id) DO UPDATE SET staging_token = $3, commit_id = $4`},
	{"B4", B4, `DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2`},
	{"B5a", B5a, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id >= $2 ORDER BY id  ASC LIMIT $3"},
	{"B5b", B5b, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id > $2 ORDER BY id  ASC LIMIT $3"},
	{"B6a", B6a, `SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id >= $2 ORDER BY commit_id ASC LIMIT $3`},
	{"B6b", B6b, `SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id > $2 ORDER BY commit_id ASC LIMIT $3`},
	{"T1", T1, `SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND id = $2`},
	{"T2", T2, `INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`},
	{"T3", T3, `DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2`},
	{"T4a", T4a, `SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT $3`},
	{"T4b", T4b, `SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3`},
	{"C1", C1, `SELECT committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id = $2`},
	{"C2", C2, `SELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id LIKE $2 || '%' LIMIT 2`},
	{"C3", C3, `INSERT INTO graveler_commits (repository_id, id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`},
	{"C4", C4, `SELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id = $2`},
	{"C5a", C5a, c5Cols + ` WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT 1000`},
	{"C5b", C5b, c5Cols + ` WHERE repository_id = $1 AND id > $2 ORDER BY id ASC LIMIT 1000`},
	{"C6a", C6a, c5Cols + ` WHERE repository_id = $1 AND id >= $2` + c6Tail},
	{"C6b", C6b, c5Cols + ` WHERE repository_id = $1 AND id > $2` + c6Tail},
	{"C7", C7, `WITH updated(id, generation) AS (VALUES ('a1b2', 1),('c3d4', 2)) UPDATE graveler_commits SET generation = updated.generation FROM updated WHERE (graveler_commits.id=updated.id AND graveler_commits.repository_id=$1)`},
	{"S1", S1, `SELECT identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2`},
	{"S2", S2, "INSERT INTO graveler_staging_kv (staging_token, key, identity, data)\n\t\t\t\t\tVALUES ($1, $2, $3, $4)\n\t\t\t\t\tON CONFLICT (staging_token, key) DO NOTHING"},
	{"S3", S3, "INSERT INTO graveler_staging_kv (staging_token, key, identity, data)\n\t\t\t\t\tVALUES ($1, $2, $3, $4)\n\t\t\t\t\tON CONFLICT (staging_token, key) DO UPDATE\n\t\t\t\t\t\tSET (staging_token, key, identity, data) =\n\t\t\t\t\t\t\t(excluded.staging_token, excluded.key, excluded.identity, excluded.data)"},
	{"S4", S4, `DELETE FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2`},
	{"S5", S5, `DELETE FROM graveler_staging_kv WHERE staging_token=$1`},
	{"S6a", S6a, `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::bytea AND key < $3::bytea`},
	{"S6b", S6b, `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::bytea`},
	{"S7", S7, `SELECT key, identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key >= $2 ORDER BY key LIMIT $3`},
	{"L1", L1, `SELECT pg_advisory_xact_lock_shared($1);`},
	{"L2", L2, `SELECT pg_advisory_xact_lock($1);`},
	{"begin-serializable-rw", TxBegin, `begin isolation level serializable read write`},
	{"begin-serializable-ro", TxBegin, `begin isolation level serializable read only`},
	{"begin-read-committed-rw", TxBegin, `begin isolation level read committed read write`},
	{"begin", TxBegin, `begin`},
	{"start-transaction", TxStart, `start transaction`},
	{"commit", TxCommit, `commit`},
	{"rollback", TxRollback, `rollback`},
	{"ping", EmptyQuery, `;`},
	{"deallocate", Deallocate, `deallocate lrupsc_1_7`},
	{"deallocate-all", DeallocateAll, `deallocate all`},
	{"diag-count-migrations", DiagCountMigrations, `SELECT COUNT(*) FROM schema_migrations`},
	{"diag-count-staging", DiagCountRefTable, `SELECT COUNT(*) FROM graveler_staging_kv LIMIT 1000`},
	{"diag-count-repositories", DiagCountRefTable, `SELECT COUNT(*) FROM graveler_repositories LIMIT 1000`},
	{"diag-count-branches", DiagCountRefTable, `SELECT COUNT(*) FROM graveler_branches LIMIT 1000`},
	{"diag-count-commits", DiagCountRefTable, `SELECT COUNT(*) FROM graveler_commits LIMIT 1000`},
	{"diag-count-tags", DiagCountRefTable, `SELECT COUNT(*) FROM graveler_tags LIMIT 1000`},
	{"diag-migrations", DiagSelectMigrations, `SELECT * FROM schema_migrations LIMIT 1000`},
	{"diag-version", DiagVersion, `SELECT version();`},
	{"db-version", DiagVersion, `SELECT version()`},
}
