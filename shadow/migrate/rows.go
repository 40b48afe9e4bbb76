package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/refstore/graveler"
)

// Entity names, as used in reports, records and metric labels.
const (
	EntityRepositories = "repositories"
	EntityCommits      = "commits"
	EntityBranches     = "branches"
	EntityTags         = "tags"
	EntityStaging      = "staging"
)

// Entities lists the entities in copy order.
func Entities() []string {
	return []string{EntityRepositories, EntityCommits, EntityBranches, EntityTags, EntityStaging}
}

// ErrBadKey is returned for a Key that names no row (unknown entity, empty
// id).
var ErrBadKey = errors.New("migrate: bad key")

// Key names one ref-store row, whichever store holds it. Repository is the
// repository id for every entity but staging; ID is the repository, commit,
// branch or tag id, or the staging token for staging; StagingKey is the
// object key of a staged entry.
type Key struct {
	Entity     string `json:"entity"`
	Repository string `json:"repository,omitempty"`
	ID         string `json:"id,omitempty"`
	StagingKey []byte `json:"staging_key,omitempty"`
}

func (k Key) String() string {
	switch k.Entity {
	case EntityRepositories:
		return "repositories/" + k.ID
	case EntityStaging:
		return fmt.Sprintf("staging/%s/%q", k.ID, k.StagingKey)
	default:
		return k.Entity + "/" + k.Repository + "/" + k.ID
	}
}

// whole tells whether k names a set of rows, as the dirty-key log does for
// bulk statements: every row of an entity in a repository (empty ID), or
// every entry of a staging token (nil StagingKey).
func (k Key) whole() bool {
	if k.Entity == EntityStaging {
		return k.ID != "" && k.StagingKey == nil
	}
	return k.inRepoPartition() && k.ID == "" && k.Repository != ""
}

func (k Key) check() error {
	ok := k.ID != ""
	switch k.Entity {
	case EntityRepositories:
	case EntityCommits, EntityBranches, EntityTags:
		ok = ok && k.Repository != ""
	case EntityStaging:
		ok = ok && len(k.StagingKey) > 0
	default:
		ok = false
	}
	if !ok {
		return fmt.Errorf("%w: %+v", ErrBadKey, k)
	}
	return nil
}

// inRepoPartition tells whether the key lives in its repository's partition.
func (k Key) inRepoPartition() bool {
	return k.Entity == EntityCommits || k.Entity == EntityBranches || k.Entity == EntityTags
}

// location is where k lives in KV; uid is the repository's instance uid
// (ignored for repositories and staging).
func (k Key) location(uid string) (pk, key []byte) {
	switch k.Entity {
	case EntityRepositories:
		return []byte(refstore.GravelerPartition), refstore.RepoKey(k.ID)
	case EntityCommits:
		return refstore.RepoPartition(k.Repository, uid), refstore.CommitKey(k.ID)
	case EntityBranches:
		return refstore.RepoPartition(k.Repository, uid), refstore.BranchKey(k.ID)
	case EntityTags:
		return refstore.RepoPartition(k.Repository, uid), refstore.TagKey(k.ID)
	default:
		return refstore.StagingPartition(k.ID), k.StagingKey
	}
}

// Row is one ref-store row of either store; exactly the field of its
// Entity is set.
type Row struct {
	Entity string
	Repo   refstore.RepositoryRow
	Commit refstore.CommitRow
	Branch refstore.BranchRow
	Tag    refstore.TagRow
	Staged refstore.StagingRow
	// State is the repository state of a KV record (ACTIVE for SQL rows).
	State graveler.RepositoryState
	// InstanceUID is the uid of a KV repository record.
	InstanceUID string
	// XMin is the SQL row version's xmin, when the query selected it
	// (HasXMin): the backfill's re-check compares it instead of the row.
	XMin    uint32
	HasXMin bool
	// orphan marks a staged entry whose token no branch references.
	orphan bool
}

// Key returns the row's key.
func (r Row) Key() Key {
	switch r.Entity {
	case EntityRepositories:
		return Key{Entity: r.Entity, ID: r.Repo.ID}
	case EntityCommits:
		return Key{Entity: r.Entity, Repository: r.Commit.RepositoryID, ID: r.Commit.ID}
	case EntityBranches:
		return Key{Entity: r.Entity, Repository: r.Branch.RepositoryID, ID: r.Branch.ID}
	case EntityTags:
		return Key{Entity: r.Entity, Repository: r.Tag.RepositoryID, ID: r.Tag.ID}
	default:
		return Key{Entity: EntityStaging, ID: r.Staged.StagingToken, StagingKey: r.Staged.Key}
	}
}

// marshal is deterministic so that re-encoding an unchanged row gives the
// very bytes that were written, which the CaS clean-ups compare against.
var marshal = proto.MarshalOptions{Deterministic: true}

// encode returns the KV value of a SQL row; uid is the repository
// instance uid for a repository row.
func encode(r Row, uid string) ([]byte, error) {
	var m proto.Message
	var err error
	switch r.Entity {
	case EntityRepositories:
		m, err = refstore.RepositoryToProto(r.Repo, uid)
	case EntityCommits:
		m, err = refstore.CommitToProto(r.Commit)
	case EntityBranches:
		m, err = refstore.BranchToProto(r.Branch)
	case EntityTags:
		m, err = refstore.TagToProto(r.Tag)
	case EntityStaging:
		m, err = refstore.StagingToProto(r.Staged)
	default:
		return nil, fmt.Errorf("%w: entity %q", ErrBadKey, r.Entity)
	}
	if err != nil {
		return nil, err
	}
	return marshal.Marshal(m)
}

// decode reads the KV value of key k into a Row.
func decode(k Key, kvKey, v []byte) (Row, error) {
	r := Row{Entity: k.Entity}
	var err error
	switch k.Entity {
	case EntityRepositories:
		var d graveler.RepositoryData
		if err = proto.Unmarshal(v, &d); err == nil {
			r.Repo, r.State, r.InstanceUID = refstore.RepositoryFromProto(&d), d.GetState(), d.GetInstanceUid()
		}
	case EntityCommits:
		var d graveler.CommitData
		if err = proto.Unmarshal(v, &d); err == nil {
			r.Commit = refstore.CommitFromProto(k.Repository, &d)
		}
	case EntityBranches:
		var d graveler.BranchData
		if err = proto.Unmarshal(v, &d); err == nil {
			r.Branch = refstore.BranchFromProto(k.Repository, &d)
		}
	case EntityTags:
		var d graveler.TagData
		if err = proto.Unmarshal(v, &d); err == nil {
			r.Tag = refstore.TagFromProto(k.Repository, &d)
		}
	case EntityStaging:
		var d graveler.StagedEntryData
		if err = proto.Unmarshal(v, &d); err == nil {
			r.Staged = refstore.StagingFromProto(k.ID, kvKey, &d)
		}
	default:
		return r, fmt.Errorf("%w: entity %q", ErrBadKey, k.Entity)
	}
	if err != nil {
		return r, fmt.Errorf("%w: %s: %v", refstore.ErrCorrupt, k, err)
	}
	return r, nil
}

// diff compares a SQL row with a KV row on canonical values and returns ""
// when they are equal, else what differs. Timestamps count at
// microseconds, metadata as maps (NULL, null and {} are the empty map),
// empty and NULL parents, identity and data are equal.
func diff(sql, kvr Row) string {
	var d []string
	// vals is called only for a difference: boxing the values up front
	// allocated on every compare of a verify.
	add := func(ok bool, what string, vals func() (any, any)) {
		if !ok {
			a, b := vals()
			d = append(d, fmt.Sprintf("%s: %v != %v", what, a, b))
		}
	}
	us := func(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }
	switch sql.Entity {
	case EntityRepositories:
		a, b := sql.Repo, kvr.Repo
		add(a.StorageNamespace == b.StorageNamespace, "storage_namespace", func() (any, any) { return a.StorageNamespace, b.StorageNamespace })
		add(a.DefaultBranch == b.DefaultBranch, "default_branch", func() (any, any) { return a.DefaultBranch, b.DefaultBranch })
		add(us(a.CreationDate).Equal(us(b.CreationDate)), "creation_date", func() (any, any) { return us(a.CreationDate), us(b.CreationDate) })
		add(kvr.State == graveler.RepositoryState_ACTIVE, "state", func() (any, any) { return "ACTIVE", kvr.State })
		add(kvr.InstanceUID != "", "instance_uid", func() (any, any) { return "non-empty", `""` })
	case EntityCommits:
		a, b := sql.Commit, kvr.Commit
		add(a.Committer == b.Committer, "committer", func() (any, any) { return a.Committer, b.Committer })
		add(a.Message == b.Message, "message", func() (any, any) { return a.Message, b.Message })
		add(a.MetaRangeID == b.MetaRangeID, "meta_range_id", func() (any, any) { return a.MetaRangeID, b.MetaRangeID })
		add(us(a.CreationDate).Equal(us(b.CreationDate)), "creation_date", func() (any, any) { return us(a.CreationDate), us(b.CreationDate) })
		ma, erra := refstore.ParseMetadata(a.Metadata)
		mb, errb := refstore.ParseMetadata(b.Metadata)
		add(erra == nil && errb == nil && maps.Equal(ma, mb), "metadata", func() (any, any) { return string(a.Metadata), string(b.Metadata) })
		add(slices.Equal(a.Parents, b.Parents), "parents", func() (any, any) { return a.Parents, b.Parents })
		add(a.Version == b.Version, "version", func() (any, any) { return a.Version, b.Version })
		add(a.Generation != nil && b.Generation != nil && *a.Generation == *b.Generation, "generation", func() (any, any) { return deref(a.Generation), deref(b.Generation) })
		// The id is a content hash: recompute it from the KV fields, so a
		// KV commit whose fields no longer hash to its id (hash refs would
		// stop resolving) is a mismatch even if every compared column
		// agreed.
		if h, err := refstore.CommitRowID(b); err == nil && h != b.ID {
			if ha, err := refstore.CommitRowID(a); err != nil || ha != h {
				d = append(d, fmt.Sprintf("id: KV fields hash to %s", h))
			}
		}
	case EntityBranches:
		a, b := sql.Branch, kvr.Branch
		add(deref(a.StagingToken) == deref(b.StagingToken), "staging_token", func() (any, any) { return deref(a.StagingToken), deref(b.StagingToken) })
		add(deref(a.CommitID) == deref(b.CommitID), "commit_id", func() (any, any) { return deref(a.CommitID), deref(b.CommitID) })
	case EntityTags:
		a, b := sql.Tag, kvr.Tag
		add(deref(a.CommitID) == deref(b.CommitID), "commit_id", func() (any, any) { return deref(a.CommitID), deref(b.CommitID) })
	case EntityStaging:
		a, b := sql.Staged, kvr.Staged
		add(bytes.Equal(a.Key, b.Key), "key", func() (any, any) { return a.Key, b.Key })
		add((a.Identity == nil) == (b.Identity == nil), "tombstone", func() (any, any) { return a.Identity == nil, b.Identity == nil })
		add(bytes.Equal(a.Identity, b.Identity), "identity", func() (any, any) { return a.Identity, b.Identity })
		add(bytes.Equal(a.Data, b.Data), "data", func() (any, any) { return a.Data, b.Data })
	}
	return strings.Join(d, "; ")
}

func deref[T any](p *T) any {
	if p == nil {
		return "NULL"
	}
	return *p
}

// SQL column lists and scanners, one per entity.
const (
	repoCols    = `id, storage_namespace, creation_date, default_branch`
	commitCols  = `repository_id, id, committer, message, creation_date, meta_range_id, metadata::text, parents, version, generation`
	branchCols  = `repository_id, id, staging_token, commit_id`
	tagCols     = `repository_id, id, commit_id`
	stagingCols = `staging_token, key, identity, data`
)

// withXMin appends the row version to an entity's column list: see
// Row.XMin.
func withXMin(cols string) string { return cols + `, xmin` }

// entityCols are the columns of each entity, in scanRow's order.
var entityCols = map[string]int{EntityRepositories: 4, EntityCommits: 10, EntityBranches: 4, EntityTags: 3, EntityStaging: 4}

func scanRow(entity string, rows pgx.Rows) (Row, error) {
	r := Row{Entity: entity, State: graveler.RepositoryState_ACTIVE}
	var dst []any
	var md *string
	switch entity {
	case EntityRepositories:
		dst = []any{&r.Repo.ID, &r.Repo.StorageNamespace, &r.Repo.CreationDate, &r.Repo.DefaultBranch}
	case EntityCommits:
		c := &r.Commit
		dst = []any{&c.RepositoryID, &c.ID, &c.Committer, &c.Message, &c.CreationDate, &c.MetaRangeID, &md, &c.Parents, &c.Version, &c.Generation}
	case EntityBranches:
		dst = []any{&r.Branch.RepositoryID, &r.Branch.ID, &r.Branch.StagingToken, &r.Branch.CommitID}
	case EntityTags:
		dst = []any{&r.Tag.RepositoryID, &r.Tag.ID, &r.Tag.CommitID}
	case EntityStaging:
		dst = []any{&r.Staged.StagingToken, &r.Staged.Key, &r.Staged.Identity, &r.Staged.Data}
	}
	if len(rows.FieldDescriptions()) == entityCols[entity]+1 {
		dst, r.HasXMin = append(dst, &r.XMin), true
	}
	err := rows.Scan(dst...)
	if md != nil {
		r.Commit.Metadata = []byte(*md)
	}
	if err != nil {
		return r, fmt.Errorf("read %s row: %w", entity, err)
	}
	return r, nil
}

// querier is a pool, a connection or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func collect(ctx context.Context, q querier, entity, sql string, args ...any) ([]Row, error) {
	return collectN(ctx, q, 0, entity, sql, args...)
}

// collectN is collect for a query of up to n rows: a Row is large, and
// growing the slice row by row copied each page several times over.
func collectN(ctx context.Context, q querier, n int, entity, sql string, args ...any) ([]Row, error) {
	return collectInto(ctx, q, make([]Row, 0, n), entity, sql, args...)
}

// collectInto appends the rows of a query to out.
func collectInto(ctx context.Context, q querier, out []Row, entity, sql string, args ...any) ([]Row, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", entity, err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRow(entity, rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query %s: %w", entity, err)
	}
	return out, nil
}

// readRow reads the current row of k from PostgreSQL; ok is false if there
// is none.
func readRow(ctx context.Context, q querier, k Key) (Row, bool, error) {
	var rs []Row
	var err error
	switch k.Entity {
	case EntityRepositories:
		rs, err = collect(ctx, q, k.Entity, `SELECT `+repoCols+` FROM graveler_repositories WHERE id = $1`, k.ID)
	case EntityCommits:
		rs, err = collect(ctx, q, k.Entity, `SELECT `+commitCols+` FROM graveler_commits WHERE repository_id = $1 AND id = $2`, k.Repository, k.ID)
	case EntityBranches:
		rs, err = collect(ctx, q, k.Entity, `SELECT `+branchCols+` FROM graveler_branches WHERE repository_id = $1 AND id = $2`, k.Repository, k.ID)
	case EntityTags:
		rs, err = collect(ctx, q, k.Entity, `SELECT `+tagCols+` FROM graveler_tags WHERE repository_id = $1 AND id = $2`, k.Repository, k.ID)
	case EntityStaging:
		rs, err = collect(ctx, q, k.Entity, `SELECT `+stagingCols+` FROM graveler_staging_kv WHERE staging_token = $1 AND key = $2`, k.ID, k.StagingKey)
	default:
		return Row{}, false, fmt.Errorf("%w: entity %q", ErrBadKey, k.Entity)
	}
	if err != nil || len(rs) == 0 {
		return Row{}, false, err
	}
	return rs[0], true, nil
}

// versionKey names a row among those of one re-check: keys of one
// re-check share the entity and (but for repositories and staging) the
// repository.
func versionKey(k Key) string {
	if k.Entity == EntityStaging {
		return k.ID + "\x00" + string(k.StagingKey)
	}
	return k.ID
}

// readVersions re-reads only the xmin of the rows of keys (as readRows
// selects them), indexed by versionKey: a row whose xmin did not change is
// the very row version read before, so nothing of it changed.
func readVersions(ctx context.Context, q querier, entity string, keys []Key) (map[string]uint32, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	var rows pgx.Rows
	var err error
	switch entity {
	case EntityRepositories:
		rows, err = q.Query(ctx, `SELECT id, NULL::bytea, xmin FROM graveler_repositories WHERE id = ANY($1)`, ids)
	case EntityCommits:
		rows, err = q.Query(ctx, `SELECT id, NULL::bytea, xmin FROM graveler_commits WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityBranches:
		rows, err = q.Query(ctx, `SELECT id, NULL::bytea, xmin FROM graveler_branches WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityTags:
		rows, err = q.Query(ctx, `SELECT id, NULL::bytea, xmin FROM graveler_tags WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityStaging:
		// The keys of a page are a keyset range, as in readRows; rows of
		// the range that are not keys are ignored by the caller.
		lo, hi := keys[0], keys[len(keys)-1]
		out, err := stagingVersions(ctx, q, `SELECT staging_token, key, xmin FROM graveler_staging_kv
			WHERE (staging_token, key) >= ($1, $2) AND (staging_token, key) <= ($3, $4) LIMIT $5`, lo.ID, lo.StagingKey, hi.ID, hi.StagingKey, 4*len(keys)+1)
		if err == nil && len(out) > 4*len(keys) {
			// Not a page (the orphans stage skips the tokens between):
			// look the pairs up instead.
			skeys := make([][]byte, len(keys))
			for i, k := range keys {
				skeys[i] = k.StagingKey
			}
			out, err = stagingVersions(ctx, q, `SELECT s.staging_token, s.key, s.xmin FROM graveler_staging_kv s
				WHERE (s.staging_token, s.key) IN (SELECT t, k FROM unnest($1::text[], $2::bytea[]) AS u(t, k))`, ids, skeys)
		}
		return out, err
	default:
		return nil, fmt.Errorf("%w: entity %q", ErrBadKey, entity)
	}
	if err != nil {
		return nil, fmt.Errorf("re-read %s versions: %w", entity, err)
	}
	return scanVersions(rows, entity)
}

func stagingVersions(ctx context.Context, q querier, sql string, args ...any) (map[string]uint32, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("re-read staging versions: %w", err)
	}
	return scanVersions(rows, EntityStaging)
}

// scanVersions reads rows of (id, staging key, xmin).
func scanVersions(rows pgx.Rows, entity string) (map[string]uint32, error) {
	defer rows.Close()
	out := map[string]uint32{}
	var id string
	var skey []byte
	var xmin uint32
	for rows.Next() {
		if err := rows.Scan(&id, &skey, &xmin); err != nil {
			return nil, fmt.Errorf("re-read %s versions: %w", entity, err)
		}
		out[versionKey(Key{Entity: entity, ID: id, StagingKey: skey})] = xmin
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("re-read %s versions: %w", entity, err)
	}
	return out, nil
}

// readRows re-reads the rows of keys, all of one entity (and, for entities
// in a repository partition, one repository), in one query; the result is
// indexed by Key.String().
func readRows(ctx context.Context, q querier, entity string, keys []Key) (map[string]Row, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ids := make([]string, len(keys))
	skeys := make([][]byte, len(keys))
	for i, k := range keys {
		ids[i], skeys[i] = k.ID, k.StagingKey
	}
	var rs []Row
	var err error
	switch entity {
	case EntityRepositories:
		rs, err = collect(ctx, q, entity, `SELECT `+repoCols+` FROM graveler_repositories WHERE id = ANY($1)`, ids)
	case EntityCommits:
		rs, err = collect(ctx, q, entity, `SELECT `+commitCols+` FROM graveler_commits WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityBranches:
		rs, err = collect(ctx, q, entity, `SELECT `+branchCols+` FROM graveler_branches WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityTags:
		rs, err = collect(ctx, q, entity, `SELECT `+tagCols+` FROM graveler_tags WHERE repository_id = $1 AND id = ANY($2)`, keys[0].Repository, ids)
	case EntityStaging:
		// A page of staged entries is a keyset range (the caller passes
		// keys in page order): one index range scan
		// (of the rows between the first and last key) is much cheaper on
		// the partitioned table than a lookup per pair.
		// keys are in the page's order, which is the index order.
		lo, hi := keys[0], keys[len(keys)-1]
		rs, err = collect(ctx, q, entity, `SELECT `+stagingCols+` FROM graveler_staging_kv
			WHERE (staging_token, key) >= ($1, $2) AND (staging_token, key) <= ($3, $4)`, lo.ID, lo.StagingKey, hi.ID, hi.StagingKey)
		if err == nil && len(rs) > 4*len(keys) {
			// The range was not a page (e.g. keys of many tokens): look
			// the pairs up instead.
			rs, err = collect(ctx, q, entity, `SELECT `+stagingCols+` FROM graveler_staging_kv s
				WHERE (s.staging_token, s.key) IN (SELECT t, k FROM unnest($1::text[], $2::bytea[]) AS u(t, k))`, ids, skeys)
		}
	default:
		return nil, fmt.Errorf("%w: entity %q", ErrBadKey, entity)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]Row, len(rs))
	for _, r := range rs {
		out[r.Key().String()] = r
	}
	return out, nil
}
