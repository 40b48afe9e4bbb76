package legacy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4/pgxpool"
)

var (
	createTokenRe = regexp.MustCompile(`^[a-z0-9-]+-[a-z0-9]+:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	commitTokenRe = regexp.MustCompile(`^[a-z0-9-]+-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

func val(s string) Value { return Value{Identity: []byte("id-" + s), Data: []byte(s)} }

type commitRow struct {
	committer, message, metaRange string
	created                       time.Time
	parents                       []string
	metadataNull                  bool
	metadataText                  *string
	version                       int32
	generation                    *int32
}

func readCommit(t *testing.T, dsn, repo, id string) commitRow {
	t.Helper()
	var r commitRow
	err := adminConn(t, dsn).QueryRow(testCtx(t), `SELECT committer, message, meta_range_id, creation_date, parents, metadata IS NULL, metadata::text, version, generation
		FROM graveler_commits WHERE repository_id=$1 AND id=$2`, repo, id).
		Scan(&r.committer, &r.message, &r.metaRange, &r.created, &r.parents, &r.metadataNull, &r.metadataText, &r.version, &r.generation)
	if err != nil {
		t.Fatalf("commit %s/%s: %v", repo, id, err)
	}
	return r
}

func stagedRows(t *testing.T, dsn, token string) map[string]*string {
	t.Helper()
	rows, err := adminConn(t, dsn).Query(testCtx(t), `SELECT convert_from(key, 'UTF8'), convert_from(data, 'UTF8') FROM graveler_staging_kv WHERE staging_token=$1`, token)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]*string{}
	for rows.Next() {
		var k string
		var d *string
		if err := rows.Scan(&k, &d); err != nil {
			t.Fatal(err)
		}
		out[k] = d
	}
	return out
}

func TestCreateRepository(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	repo, first, err := c.CreateRepository(ctx, "repo1", "s3://b/repo1", "main")
	check(t, err)
	if got := stmts(c.Recorder()); !slices.Equal(got, []string{IDBegin, IDR2, IDB2, IDC3, IDCommit}) {
		t.Fatalf("statements %v", got)
	}
	b := must[*Branch](t)(c.GetBranch(ctx, "repo1", "main"))
	if b.CommitID != first || !createTokenRe.MatchString(b.StagingToken) || !strings.HasPrefix(b.StagingToken, "repo1-main:") {
		t.Fatalf("branch %+v (first commit %s)", b, first)
	}
	cr := readCommit(t, dsn, "repo1", first)
	if cr.message != FirstCommitMsg || cr.committer != "" || cr.metaRange != "" || cr.parents != nil || cr.version != 1 || cr.generation == nil || *cr.generation != 1 {
		t.Fatalf("first commit row %+v", cr)
	}
	if cr.metadataNull || cr.metadataText == nil || *cr.metadataText != "null" {
		t.Fatalf("metadata must be JSON null, not SQL NULL: null=%v text=%v", cr.metadataNull, cr.metadataText)
	}
	recomputed := Commit{Message: cr.message, CreationDate: cr.created, MetaRangeID: cr.metaRange}
	if recomputed.ContentAddress() != first {
		t.Fatal("first commit id is not the content address of the stored fields")
	}
	r := must[*Repository](t)(c.GetRepository(ctx, "repo1"))
	if r.StorageNamespace != "s3://b/repo1" || r.DefaultBranchID != "main" || !r.CreationDate.Equal(repo.CreationDate) {
		t.Fatalf("repository %+v", r)
	}

	// Duplicate: 23505 on R2, the whole transaction rolled back.
	c.Recorder().Reset()
	_, _, err = c.CreateRepository(ctx, "repo1", "s3://other", "dev")
	if !errors.Is(err, ErrNotUnique) || !errors.Is(err, ErrAlreadyExists) || SQLState(err) != "23505" {
		t.Fatalf("duplicate create: %v (sqlstate %q)", err, SQLState(err))
	}
	if got := stmts(c.Recorder()); !slices.Equal(got, []string{IDBegin, IDR2, IDRollback}) {
		t.Fatalf("statements %v", got)
	}
	if _, err := c.GetBranch(ctx, "repo1", "dev"); !errors.Is(err, ErrBranchNotFound) {
		t.Fatalf("rolled-back branch exists: %v", err)
	}
	if _, err := c.GetRepository(ctx, "nope"); !errors.Is(err, ErrRepositoryNotFound) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing repository: %v", err)
	}
}

// The parameter Go types and the result formats pgx asked for are those of §3.0.
func TestWireTypesAndFormats(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("k"), val("v"), false))
	c.Recorder().Reset()
	_, err = c.GetCommit(ctx, "r", first)
	check(t, err)
	_, err = c.StagingList(ctx, must[*Branch](t)(c.GetBranch(ctx, "r", "main")).StagingToken, nil, 10, false)
	check(t, err)
	var c1, s7 *Outcome
	outs := c.Recorder().Outcomes()
	for i := range outs {
		switch outs[i].Stmt {
		case IDC1:
			c1 = &outs[i]
		case IDS7:
			s7 = &outs[i]
		}
	}
	if c1 == nil || s7 == nil {
		t.Fatal("C1/S7 not recorded")
	}
	wantC1 := []Column{{"committer", 25, 0}, {"message", 25, 0}, {"creation_date", 1184, 1}, {"parents", 1009, 1}, {"meta_range_id", 25, 0}, {"metadata", 3802, 0}, {"version", 23, 1}, {"generation", 23, 1}}
	if !slices.Equal(c1.Columns, wantC1) {
		t.Errorf("C1 columns %v\nwant %v", c1.Columns, wantC1)
	}
	wantS7 := []Column{{"key", 17, 1}, {"identity", 17, 1}, {"data", 17, 1}}
	if !slices.Equal(s7.Columns, wantS7) {
		t.Errorf("S7 columns %v", s7.Columns)
	}
	if len(c1.Rows) != 1 || c1.Rows[0][3] != nil || c1.Rows[0][5] != JSONText("null") || c1.Rows[0][6] != int32(1) {
		t.Errorf("C1 row %v", c1.Rows)
	}
	if _, ok := s7.Args[2].(int); !ok {
		t.Errorf("S7 LIMIT arg is %T, want int", s7.Args[2])
	}

	// C3 parameters: time.Time, []string (nil -> NULL), map (nil -> "null"), int32.
	c.Recorder().Reset()
	_, err = c.Commit(ctx, "r", "main", CommitParams{Committer: "u", Message: "m"})
	check(t, err)
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt != IDC3 {
			continue
		}
		if _, ok := o.Args[4].(time.Time); !ok {
			t.Errorf("C3 $5 is %T", o.Args[4])
		}
		if p, ok := o.Args[5].([]string); !ok || len(p) != 1 {
			t.Errorf("C3 $6 is %T %v", o.Args[5], o.Args[5])
		}
		if _, ok := o.Args[7].(map[string]string); !ok {
			t.Errorf("C3 $8 is %T", o.Args[7])
		}
		if _, ok := o.Args[8].(int32); !ok {
			t.Errorf("C3 $9 is %T", o.Args[8])
		}
		if o.Tag != "INSERT 0 1" {
			t.Errorf("C3 tag %q", o.Tag)
		}
	}
}

// Statements with arguments use named prepared statements (the default
// statement_cache_mode=prepare), visible in pg_prepared_statements.
func TestPreparedStatementCache(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn, withPools(1, 1), withVersion(V070))
	_, err := c.GetRepository(ctx, "x")
	if !errors.Is(err, ErrRepositoryNotFound) {
		t.Fatal(err)
	}
	conn, err := c.DB.Acquire(ctx)
	check(t, err)
	defer conn.Release()
	var name string
	err = conn.QueryRow(ctx, `SELECT name FROM pg_prepared_statements WHERE statement = $1`, SQLR1).Scan(&name)
	if err != nil {
		t.Fatalf("R1 not prepared on the pool's connection: %v", err)
	}
	if !strings.HasPrefix(name, "lrupsc_") {
		t.Fatalf("prepared statement name %q", name)
	}
}

func TestStageCommitAndRead(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("a"), val("a1"), false))
	check(t, c.Set(ctx, "r", "main", []byte("b"), val("b1"), false))
	before := must[*Branch](t)(c.GetBranch(ctx, "r", "main"))

	c.Recorder().Reset()
	id, err := c.Commit(ctx, "r", "main", CommitParams{Committer: "u", Message: "one", Metadata: map[string]string{"k": "v"}})
	check(t, err)
	wantSeq := []string{IDBegin, IDL2, IDBegin, IDR1, IDCommit, IDBegin, IDB1, IDCommit, IDBegin, IDC1, IDCommit,
		IDBegin, IDS7, IDCommit, IDBegin, IDC3, IDCommit, IDBegin, IDB3, IDCommit, IDBegin, IDS5, IDCommit, IDCommit}
	if got := stmts(c.Recorder()); !slices.Equal(got, wantSeq) {
		t.Fatalf("commit statements\n got %v\nwant %v", got, wantSeq)
	}
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDS7 && o.Args[2] != CommitBatchSize+1 {
			t.Errorf("commit reads staging with LIMIT %v", o.Args[2])
		}
	}
	after := must[*Branch](t)(c.GetBranch(ctx, "r", "main"))
	if after.CommitID != id || after.StagingToken == before.StagingToken || !commitTokenRe.MatchString(after.StagingToken) || !strings.HasPrefix(after.StagingToken, "r-main-") {
		t.Fatalf("branch after commit %+v (before %+v)", after, before)
	}
	if n := len(stagedRows(t, dsn, before.StagingToken)); n != 0 {
		t.Fatalf("old token still has %d rows", n)
	}
	cr := readCommit(t, dsn, "r", id)
	if !slices.Equal(cr.parents, []string{first}) || *cr.generation != 2 || cr.version != 1 || *cr.metadataText != `{"k": "v"}` {
		t.Fatalf("commit row %+v", cr)
	}
	// Nothing staged: no commit.
	if _, err := c.Commit(ctx, "r", "main", CommitParams{Message: "empty"}); !errors.Is(err, ErrNoChanges) {
		t.Fatalf("empty commit: %v", err)
	}

	// Reads: staged wins over committed, tombstones hide, commits see committed only.
	check(t, c.Set(ctx, "r", "main", []byte("a"), val("a2"), false))
	check(t, c.Delete(ctx, "r", "main", []byte("b")))
	cases := []struct {
		ref, key, want string
		notFound       bool
	}{
		{"main", "a", "a2", false},
		{"main", "b", "", true},
		{id, "a", "a1", false},
		{id, "b", "b1", false},
		{id[:10], "b", "b1", false},
		{"main", "zz", "", true},
	}
	for _, tc := range cases {
		v, err := c.Get(ctx, "r", tc.ref, []byte(tc.key))
		if tc.notFound {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%s,%s) = %v, %v; want not found", tc.ref, tc.key, v, err)
			}
			continue
		}
		if err != nil || string(v.Data) != tc.want {
			t.Errorf("Get(%s,%s) = %v, %v; want %s", tc.ref, tc.key, v, err, tc.want)
		}
	}
	list := must[[]ValueRecord](t)(c.List(ctx, "r", "main"))
	if len(list) != 1 || string(list[0].Key) != "a" || string(list[0].Value.Data) != "a2" {
		t.Fatalf("list %v", list)
	}
}

func TestDeleteObject(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("committed"), val("c"), false))
	_, err = c.Commit(ctx, "r", "main", CommitParams{Message: "m"})
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("staged"), val("s"), false))
	tok := must[*Branch](t)(c.GetBranch(ctx, "r", "main")).StagingToken

	c.Recorder().Reset()
	check(t, c.Delete(ctx, "r", "main", []byte("staged")))
	if got := stmts(c.Recorder()); !slices.Contains(got, IDS4) || slices.Contains(got, IDS3) {
		t.Fatalf("staged-only delete statements %v", got)
	}
	c.Recorder().Reset()
	check(t, c.Delete(ctx, "r", "main", []byte("committed")))
	if got := stmts(c.Recorder()); !slices.Contains(got, IDS1) || !slices.Contains(got, IDS3) {
		t.Fatalf("committed delete statements %v", got)
	}
	rows := stagedRows(t, dsn, tok)
	if d, ok := rows["committed"]; !ok || d != nil || len(rows) != 1 {
		t.Fatalf("want a single tombstone row, got %v", rows)
	}
	if err := c.Delete(ctx, "r", "main", []byte("committed")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestSetIfAbsent(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("k"), val("1"), true))
	c.Recorder().Reset()
	err = c.Set(ctx, "r", "main", []byte("k"), val("2"), true)
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("staged if-absent: %v", err)
	}
	var s2 *Outcome
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDS2 {
			s2 = &o
		}
	}
	if s2 == nil || s2.Tag != "INSERT 0 0" {
		t.Fatalf("S2 outcome %v", s2)
	}
	_, err = c.Commit(ctx, "r", "main", CommitParams{Message: "m"})
	check(t, err)
	c.Recorder().Reset()
	if err := c.Set(ctx, "r", "main", []byte("k"), val("3"), true); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("committed if-absent: %v", err)
	}
	if got := stmts(c.Recorder()); slices.Contains(got, IDS2) || !slices.Contains(got, IDC2) {
		t.Fatalf("committed if-absent statements %v", got)
	}
	if err := c.Set(ctx, "r", "main", []byte("x"), Value{Data: []byte("d")}, false); !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("value without identity: %v", err)
	}
}

func TestMergeAndLog(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	commit := func(branch, key, data string) string {
		t.Helper()
		check(t, c.Set(ctx, "r", branch, []byte(key), val(data), false))
		return must[string](t)(c.Commit(ctx, "r", branch, CommitParams{Message: branch + " " + key}))
	}
	m1 := commit("main", "a", "a1")
	_, err = c.CreateBranch(ctx, "r", "dev", "main")
	check(t, err)
	d1 := commit("dev", "b", "b1")
	d2 := commit("dev", "c", "c1")
	m2 := commit("main", "d", "d1")

	base := must[*CommitRecord](t)(c.FindMergeBase(ctx, "r", m2, d2))
	if base.ID != m1 {
		t.Fatalf("merge base %s, want %s", base.ID, m1)
	}
	// Dirty destination refuses.
	check(t, c.Set(ctx, "r", "main", []byte("x"), val("x"), false))
	if _, err := c.Merge(ctx, "r", "main", "dev", CommitParams{Message: "merge"}); !errors.Is(err, ErrDirtyBranch) {
		t.Fatalf("dirty merge: %v", err)
	}
	check(t, c.Reset(ctx, "r", "main"))
	mid, err := c.Merge(ctx, "r", "main", "dev", CommitParams{Message: "merge"})
	check(t, err)
	cr := readCommit(t, dsn, "r", mid)
	// main: first(1) m1(2) m2(3); dev: d1(3) d2(4) -> merge max(3,4)+1.
	if !slices.Equal(cr.parents, []string{m2, d2}) || *cr.generation != 5 {
		t.Fatalf("merge commit parents %v generation %v", cr.parents, *cr.generation)
	}
	got := must[[]ValueRecord](t)(c.List(ctx, "r", "main"))
	var keys []string
	for _, v := range got {
		keys = append(keys, string(v.Key))
	}
	if !slices.Equal(keys, []string{"a", "b", "c", "d"}) {
		t.Fatalf("merged content %v", keys)
	}
	if _, err := c.Merge(ctx, "r", "main", "dev", CommitParams{Message: "again"}); !errors.Is(err, ErrNoChanges) {
		t.Fatalf("second merge: %v", err)
	}

	c.Recorder().Reset()
	log := must[[]CommitRecord](t)(c.Log(ctx, "r", mid, 0))
	var ids []string
	for _, l := range log {
		ids = append(ids, l.ID)
	}
	// Newest first by creation date: each commit above is later than the previous.
	want := []string{mid, m2, d2, d1, m1, first}
	if !slices.Equal(ids, want) {
		t.Fatalf("log order\n got %v\nwant %v", ids, want)
	}
	n := 0
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDC4 {
			n++
		}
	}
	if n != len(want) {
		t.Fatalf("log issued %d C4, want one per commit (%d)", n, len(want))
	}

	// Conflicting changes on both sides.
	commit("dev", "a", "dev-a")
	commit("main", "a", "main-a")
	if _, err := c.Merge(ctx, "r", "main", "dev", CommitParams{Message: "conflict"}); !errors.Is(err, ErrConflictFound) {
		t.Fatalf("conflicting merge: %v", err)
	}
}

func TestRevertResetUpdateBranch(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("a"), val("a1"), false))
	c1 := must[string](t)(c.Commit(ctx, "r", "main", CommitParams{Message: "1"}))
	check(t, c.Set(ctx, "r", "main", []byte("b"), val("b1"), false))
	c2 := must[string](t)(c.Commit(ctx, "r", "main", CommitParams{Message: "2"}))
	rid, err := c.Revert(ctx, "r", "main", c2, 1, CommitParams{Message: "revert 2"})
	check(t, err)
	cr := readCommit(t, dsn, "r", rid)
	if !slices.Equal(cr.parents, []string{c2}) || *cr.generation != 4 {
		t.Fatalf("revert commit %+v", cr)
	}
	if _, err := c.Get(ctx, "r", "main", []byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reverted key still there: %v", err)
	}

	// Reset, ResetKey, ResetPrefix.
	for _, k := range []string{"p/1", "p/2", "q/1", "z"} {
		check(t, c.Set(ctx, "r", "main", []byte(k), val(k), false))
	}
	tok := must[*Branch](t)(c.GetBranch(ctx, "r", "main")).StagingToken
	check(t, c.ResetKey(ctx, "r", "main", []byte("z")))
	check(t, c.ResetPrefix(ctx, "r", "main", []byte("p/")))
	rows := stagedRows(t, dsn, tok)
	if len(rows) != 1 || rows["q/1"] == nil {
		t.Fatalf("after reset key/prefix: %v", rows)
	}
	// Update branch refuses a dirty branch, then moves it.
	if _, err := c.UpdateBranch(ctx, "r", "main", c1); !errors.Is(err, ErrConflictFound) {
		t.Fatalf("update dirty branch: %v", err)
	}
	c.Recorder().Reset()
	check(t, c.ResetPrefix(ctx, "r", "main", nil))
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDS6 && (o.SQL != SQLS6NoUpper || o.Tag != "DELETE 1") {
			t.Fatalf("empty-prefix S6: %s", o)
		}
	}
	nb := must[*Branch](t)(c.UpdateBranch(ctx, "r", "main", c1))
	if nb.CommitID != c1 || nb.StagingToken != tok {
		t.Fatalf("updated branch %+v", nb)
	}
	if _, err := c.Revert(ctx, "r", "main", must[*Branch](t)(c.GetBranch(ctx, "r", "main")).CommitID+"~1", 1, CommitParams{}); !errors.Is(err, ErrInvalidRef) {
		t.Fatalf("revert of the root commit: %v", err)
	}
}

func TestTagsAndBranches(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	if got := must[string](t)(c.CreateTag(ctx, "r", "v1", "main")); got != first {
		t.Fatalf("tag points at %s", got)
	}
	if _, err := c.CreateTag(ctx, "r", "v1", "main"); !errors.Is(err, ErrTagAlreadyExists) {
		t.Fatalf("existing tag: %v", err)
	}
	c.Recorder().Reset()
	if err := c.LoadTags(ctx, "r", []Tag{{"v1", first}}); !errors.Is(err, ErrTagAlreadyExists) {
		t.Fatalf("T2 on existing tag: %v", err)
	}
	if o := c.Recorder().Outcomes(); len(o) != 3 || o[1].Stmt != IDT2 || o[1].Tag != "INSERT 0 0" || o[2].Stmt != IDRollback {
		t.Fatalf("T2 outcomes %v", o)
	}
	b := must[*Branch](t)(c.CreateBranch(ctx, "r", "dev", "v1"))
	if b.CommitID != first || !strings.HasPrefix(b.StagingToken, "r-dev:") {
		t.Fatalf("branch from tag %+v", b)
	}
	if _, err := c.CreateBranch(ctx, "r", "dev", "main"); !errors.Is(err, ErrBranchExists) {
		t.Fatalf("existing branch: %v", err)
	}
	if _, err := c.CreateBranch(ctx, "r", "x", "no-such-ref"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bad source ref: %v", err)
	}
	// B2 race: the record exists although B1 did not see it.
	if err := c.CreateBranchRecord(ctx, "r", Branch{ID: "dev", CommitID: first, StagingToken: "t"}); !errors.Is(err, ErrBranchExists) || SQLState(err) != "23505" {
		t.Fatalf("B2 duplicate: %v", err)
	}
	check(t, c.DeleteTag(ctx, "r", "v1"))
	if err := c.DeleteTag(ctx, "r", "v1"); !errors.Is(err, ErrTagNotFound) {
		t.Fatalf("delete missing tag: %v", err)
	}
	if err := c.DeleteTagRecord(ctx, "r", "v1"); !errors.Is(err, ErrTagNotFound) {
		t.Fatalf("T3 on missing tag: %v", err)
	}

	check(t, c.Set(ctx, "r", "dev", []byte("k"), val("v"), false))
	c.Recorder().Reset()
	check(t, c.DeleteBranch(ctx, "r", "dev"))
	want := []string{IDBegin, IDL2, IDBegin, IDR1, IDCommit, IDBegin, IDB1, IDCommit, IDBegin, IDS5, IDCommit, IDBegin, IDB4, IDCommit, IDCommit}
	if got := stmts(c.Recorder()); !slices.Equal(got, want) {
		t.Fatalf("delete branch\n got %v\nwant %v", got, want)
	}
	if n := len(stagedRows(t, dsn, b.StagingToken)); n != 0 {
		t.Fatalf("deleted branch left %d staged rows", n)
	}
	if err := c.DeleteBranch(ctx, "r", "dev"); !errors.Is(err, ErrBranchNotFound) {
		t.Fatalf("delete missing branch: %v", err)
	}
	if err := c.DeleteBranchRecord(ctx, "r", "dev"); !errors.Is(err, ErrBranchNotFound) {
		t.Fatalf("B4 on missing branch: %v", err)
	}
	if err := c.DeleteBranch(ctx, "r", "main"); !errors.Is(err, ErrDeleteDefaultBranch) {
		t.Fatalf("delete default branch: %v", err)
	}
}

func TestDeleteRepositoryLeavesStagingOrphans(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "main", []byte("k"), val("v"), false))
	_, err = c.CreateTag(ctx, "r", "t", "main")
	check(t, err)
	tok := must[*Branch](t)(c.GetBranch(ctx, "r", "main")).StagingToken
	c.Recorder().Reset()
	check(t, c.DeleteRepository(ctx, "r"))
	var tags []string
	for _, o := range c.Recorder().Outcomes() {
		tags = append(tags, o.Stmt+":"+o.Tag)
	}
	want := []string{"BEGIN:BEGIN", "R4:DELETE 1", "R4:DELETE 1", "R4:DELETE 1", "R4:DELETE 1", "COMMIT:COMMIT"}
	if !slices.Equal(tags, want) {
		t.Fatalf("delete repository outcomes %v", tags)
	}
	if rows := stagedRows(t, dsn, tok); len(rows) != 1 {
		t.Fatalf("staging rows after delete: %v (want the orphan)", rows)
	}
	if err := c.DeleteRepository(ctx, "r"); !errors.Is(err, ErrRepositoryNotFound) {
		t.Fatalf("delete missing repository: %v", err)
	}
}

// Listings of 2,500 entries page with >= then >, 1000 per page, stopping on a short page.
func TestListingsPage(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	tok := must[*Branch](t)(c.GetBranch(ctx, "r", "main")).StagingToken
	admin := adminConn(t, dsn)
	fixtures := []string{
		`INSERT INTO graveler_repositories SELECT 'repo-' || lpad(i::text, 5, '0'), 'ns', now(), 'main' FROM generate_series(1, 2499) i`,
		`INSERT INTO graveler_branches SELECT 'r', 'br-' || lpad(i::text, 5, '0'), 'tok-' || i, 'c' FROM generate_series(1, 2499) i`,
		`INSERT INTO graveler_tags SELECT 'r', 'tag-' || lpad(i::text, 5, '0'), 'c' FROM generate_series(1, 2500) i`,
		`INSERT INTO graveler_commits (repository_id, id, committer, message, creation_date, meta_range_id, metadata, parents, version, generation)
			SELECT 'r', 'c' || lpad(i::text, 5, '0'), '', 'm', now(), '', 'null', NULL, 1, 1 FROM generate_series(1, 2499) i`,
		fmt.Sprintf(`INSERT INTO graveler_staging_kv SELECT '%s', convert_to('obj-' || lpad(i::text, 5, '0'), 'UTF8'), '\x01', '\x02' FROM generate_series(1, 2500) i`, tok),
	}
	for _, f := range fixtures {
		if _, err := admin.Exec(ctx, f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	type pageCheck struct {
		id   string
		sqls []string
	}
	cases := []struct {
		name  string
		run   func() (int, error)
		want  int
		pages pageCheck
	}{
		{"repositories", func() (int, error) { r, err := c.ListRepositories(ctx); return len(r), err }, 2500,
			pageCheck{IDR3, []string{SQLR3First, SQLR3Next, SQLR3Next}}},
		{"branches", func() (int, error) { r, err := c.ListBranchesFrom(ctx, "r", ""); return len(r), err }, 2500,
			pageCheck{IDB5, []string{SQLB5First, SQLB5Next, SQLB5Next}}},
		{"tags", func() (int, error) { r, err := c.ListTagsFrom(ctx, "r", ""); return len(r), err }, 2500,
			pageCheck{IDT4, []string{SQLT4First, SQLT4Next, SQLT4Next}}},
		{"commits", func() (int, error) { r, err := c.ListCommits(ctx, "r"); return len(r), err }, 2500,
			pageCheck{IDC5, []string{C5SQL(true, 1000), C5SQL(false, 1000), C5SQL(false, 1000)}}},
		{"objects", func() (int, error) { r, err := c.List(ctx, "r", "main"); return len(r), err }, 2500,
			pageCheck{IDS7, []string{SQLS7, SQLS7, SQLS7}}},
		{"exactly one page of branches from br-01500", func() (int, error) { r, err := c.ListBranchesFrom(ctx, "r", "br-01500"); return len(r), err }, 1001,
			pageCheck{IDB5, []string{SQLB5First, SQLB5Next}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Recorder().Reset()
			n, err := tc.run()
			check(t, err)
			if n != tc.want {
				t.Fatalf("%d entries, want %d", n, tc.want)
			}
			var sqls []string
			var prevLast any
			for _, o := range c.Recorder().Outcomes() {
				if o.Stmt != tc.pages.id {
					continue
				}
				sqls = append(sqls, o.SQL)
				if tc.pages.id == IDS7 {
					if o.Args[2] != 1001 {
						t.Errorf("S7 limit %v", o.Args[2])
					}
					// The next page starts inclusive at the look-ahead row.
					if prevLast != nil && string(o.Args[1].([]byte)) != prevLast {
						t.Errorf("S7 page starts at %q, want %q", o.Args[1], prevLast)
					}
					if len(o.Rows) == 1001 {
						prevLast = string(o.Rows[1000][0].([]byte))
					}
				} else if off := o.Args[offsetArg(tc.pages.id)]; len(sqls) > 1 && off != prevLast {
					t.Errorf("page offset %v, want last id %v", off, prevLast)
				}
				if tc.pages.id != IDS7 && len(o.Rows) > 0 {
					prevLast = o.Rows[len(o.Rows)-1][0]
				}
			}
			if !slices.Equal(sqls, tc.pages.sqls) {
				t.Fatalf("page statements\n got %q\nwant %q", sqls, tc.pages.sqls)
			}
		})
	}
}

// offsetArg is the position of the paging offset among a listing's arguments.
func offsetArg(id string) int {
	if id == IDR3 {
		return 0
	}
	return 1
}

func TestRefsRestoreFillsGenerations(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	for i, k := range []string{"a", "b", "c"} {
		check(t, c.Set(ctx, "r", "main", []byte(k), val(k), false))
		_, err := c.Commit(ctx, "r", "main", CommitParams{Message: fmt.Sprint(i), Metadata: map[string]string{"i": fmt.Sprint(i)}})
		check(t, err)
	}
	_, err = c.CreateTag(ctx, "r", "v1", "main~1")
	check(t, err)
	dump := must[*RefsDump](t)(c.DumpRefs(ctx, "r"))
	wantGen := map[string]int32{}
	zeroed := make([]CommitRecord, len(dump.Commits))
	for i, cr := range dump.Commits {
		wantGen[cr.ID] = cr.Generation
		cr.Generation = 0
		zeroed[i] = cr
	}
	check(t, c.CreateBareRepository(ctx, Repository{ID: "r2", StorageNamespace: "ns2", CreationDate: time.Now(), DefaultBranchID: "main"}))
	c.Recorder().Reset()
	check(t, c.LoadCommits(ctx, "r2", zeroed))
	var c7 []Outcome
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDC7 {
			c7 = append(c7, o)
		}
	}
	if len(c7) != 1 || c7[0].Tag != "UPDATE 4" {
		t.Fatalf("C7 outcomes %v", c7)
	}
	for id, g := range wantGen {
		if got := readCommit(t, dsn, "r2", id).generation; got == nil || *got != g {
			t.Errorf("generation of %s = %v, want %d", id, got, g)
		}
	}
	check(t, c.LoadBranches(ctx, "r2", dump.Branches))
	check(t, c.LoadTags(ctx, "r2", dump.Tags))
	b := must[*Branch](t)(c.GetBranch(ctx, "r2", "main"))
	if b.CommitID != dump.Branches[0].CommitID || !strings.HasPrefix(b.StagingToken, "r2-main:") {
		t.Fatalf("restored branch %+v", b)
	}
	list := must[[]ValueRecord](t)(c.List(ctx, "r2", "v1"))
	if len(list) != 2 {
		t.Fatalf("restored tag content %v", list)
	}
	// A tampered dump is refused.
	bad := dump.Commits[0]
	bad.Message = "tampered"
	if err := c.LoadCommits(ctx, "r2", []CommitRecord{bad}); !errors.Is(err, ErrCommitIDMismatch) {
		t.Fatalf("tampered commit: %v", err)
	}
}

func TestGCIterators(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	_, err = c.CreateBranch(ctx, "r", "dev", "main")
	check(t, err)
	check(t, c.Set(ctx, "r", "dev", []byte("k"), val("v"), false))
	d1 := must[string](t)(c.Commit(ctx, "r", "dev", CommitParams{Message: "d1"}))
	leaves := must[[]CommitRecord](t)(c.GCCommits(ctx, "r"))
	if len(leaves) != 1 || leaves[0].ID != d1 {
		t.Fatalf("ancestry leaves %v, want only %s (not %s)", leaves, d1, first)
	}
	branches := must[[]Branch](t)(c.GCBranches(ctx, "r"))
	if len(branches) != 2 {
		t.Fatalf("gc branches %v", branches)
	}
}

func TestStartupAndDiagnostics(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	if n := must[int64](t)(c.Startup(ctx)); n != 1 {
		t.Fatalf("schema_migrations count %d", n)
	}
	if o := c.Recorder().Outcomes(); o[0].Stmt != IDPing || o[0].Tag != "" || o[0].Err != "" {
		t.Fatalf("ping outcome %v", o[0])
	}
	_, _, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	counts, err := c.Diagnostics(ctx)
	if SQLState(err) != "42P01" || !strings.Contains(err.Error(), "auth_users") {
		t.Fatalf("diagnostics error %v", err)
	}
	if counts["graveler_repositories"] != 1 || counts["graveler_branches"] != 1 || counts["graveler_commits"] != 1 || counts["graveler_tags"] != 0 {
		t.Fatalf("counts %v", counts)
	}
}

func TestVersionTransactionShapes(t *testing.T) {
	cases := []struct {
		v       Version
		getRepo []string
		log     string
		setMode string
	}{
		{V068, []string{IDBegin, IDR1, IDCommit}, IDC4, SQLBeginSerializableRW},
		{V070, []string{IDR1}, IDC1, SQLBeginReadCommitted},
	}
	for _, tc := range cases {
		t.Run(tc.v.String(), func(t *testing.T) {
			ctx := testCtx(t)
			c := newClient(t, freshDB(t), withVersion(tc.v))
			_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
			check(t, err)
			c.Recorder().Reset()
			_, err = c.GetRepository(ctx, "r")
			check(t, err)
			if got := stmts(c.Recorder()); !slices.Equal(got, tc.getRepo) {
				t.Fatalf("GetRepository %v", got)
			}
			c.Recorder().Reset()
			_, err = c.Log(ctx, "r", first, 0)
			check(t, err)
			if got := stmts(c.Recorder()); !slices.Contains(got, tc.log) {
				t.Fatalf("log statements %v", got)
			}
			c.Recorder().Reset()
			check(t, c.StagingSet(ctx, "tok", []byte("k"), &Value{Identity: []byte("i")}, true))
			if o := c.Recorder().Outcomes(); o[0].SQL != tc.setMode {
				t.Fatalf("staging set begins with %q", o[0].SQL)
			}
		})
	}
}

// Transact retries SQLSTATE 40001 from the callback, gives up after 10
// attempts, maps "commit" -> ROLLBACK to ErrTxCommitRollback.
func TestTransact(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t, freshDB(t))
	serr := &pgconn.PgError{Code: "40001", Message: "could not serialize"}
	cases := []struct {
		name     string
		failures int
		wantErr  error
		begins   int
	}{
		{"no failure", 0, nil, 1},
		{"two failures", 2, nil, 3},
		{"always", 100, ErrSerialization, SerializationRetryMaxAttempts},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Recorder().Reset()
			calls := 0
			err := c.Transact(ctx, TxReadWrite, func(q Q) error {
				calls++
				if calls <= tc.failures {
					return serr
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && IsSerializationFailure(err) {
				t.Fatal("ErrSerialization must not carry 40001 (the locker would retry again)")
			}
			begins := 0
			for _, o := range c.Recorder().Outcomes() {
				if o.Stmt == IDBegin {
					begins++
				}
			}
			if begins != tc.begins {
				t.Fatalf("%d BEGINs, want %d", begins, tc.begins)
			}
		})
	}
	t.Run("commit answers ROLLBACK", func(t *testing.T) {
		err := c.Transact(ctx, TxReadWrite, func(q Q) error {
			_, _ = q.exec(ctx, "X", "SELECT 1/0")
			return nil
		})
		if !errors.Is(err, ErrTxCommitRollback) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("23505 is not retried", func(t *testing.T) {
		calls := 0
		err := c.Transact(ctx, TxReadWrite, func(q Q) error {
			calls++
			_, err := q.exec(ctx, IDR2, SQLR2, "dup", "ns", time.Now(), "main")
			if err != nil {
				return err
			}
			_, err = q.exec(ctx, IDR2, SQLR2, "dup", "ns", time.Now(), "main")
			return err
		})
		if !errors.Is(err, ErrAlreadyExists) || calls != 1 {
			t.Fatalf("err %v after %d calls", err, calls)
		}
	})
}

// An exclusive lock (L2) waits while a shared one (L1) is held on the same
// branch; it is taken on LockDB while the inner SQL uses DB.
func TestBranchLocker(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	other := newClient(t, dsn)
	admin := adminConn(t, dsn)
	holding := make(chan struct{})
	release := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		writerDone <- c.WithWriterLock(ctx, "r", "main", func() error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	entered := make(chan struct{})
	updaterDone := make(chan error, 1)
	go func() {
		updaterDone <- other.WithMetadataLock(ctx, "r", "main", func() error {
			close(entered)
			return nil
		})
	}()
	// Wait until PostgreSQL shows the exclusive request waiting.
	key := BranchLockKey("r", "main")
	for {
		var waiting int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted
			AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&waiting)
		check(t, err)
		if waiting == 1 {
			break
		}
		select {
		case <-entered:
			t.Fatal("exclusive lock entered while the shared lock is held")
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A second writer on another branch is not blocked.
	check(t, other.WithWriterLock(ctx, "r", "dev", func() error { return nil }))
	close(release)
	check(t, <-writerDone)
	check(t, <-updaterDone)
	<-entered
	var l1 *Outcome
	for _, o := range c.Recorder().Outcomes() {
		if o.Stmt == IDL1 {
			l1 = &o
		}
	}
	if l1 == nil || l1.Args[0] != key || l1.Tag != "SELECT 1" || l1.SQL != SQLL1 {
		t.Fatalf("L1 outcome %v", l1)
	}
}

// What actually reached the server: every statement text prepared on the
// client's connections (pg_prepared_statements keeps the raw text, with
// its newlines and tabs) is one of the table's constants.
func TestPreparedTextsOnTheWire(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn, withPools(1, 1), withPageSize(4))
	w := NewWorkload(c, nil, WorkloadConfig{Seed: 11, Name: "w", Global: true})
	check(t, w.Run(ctx, 400))
	known := map[string]bool{}
	for _, s := range Statements() {
		known[s.SQL] = true
	}
	for _, first := range []bool{true, false} {
		known[C5SQL(first, 4)] = true
		known[C6SQL(first, 4)] = true
	}
	for _, tbl := range DiagnosticsTables() {
		known[DiagCountSQL(tbl)] = true
	}
	seen := map[string]bool{}
	for _, pool := range []interface {
		Acquire(context.Context) (*pgxpool.Conn, error)
	}{c.DB, c.LockDB} {
		conn, err := pool.Acquire(ctx)
		check(t, err)
		rows, err := conn.Query(ctx, `SELECT name, statement FROM pg_prepared_statements`)
		check(t, err)
		for rows.Next() {
			var name, sql string
			check(t, rows.Scan(&name, &sql))
			if sql == `SELECT name, statement FROM pg_prepared_statements` {
				continue
			}
			if !strings.HasPrefix(name, "lrupsc_") {
				t.Errorf("statement %q prepared as %q", sql, name)
			}
			if !known[sql] && !strings.HasPrefix(sql, sqlC7Head) {
				t.Errorf("unknown text on the wire: %q", sql)
			}
			seen[sql] = true
		}
		check(t, rows.Err())
		rows.Close()
		conn.Release()
	}
	if len(seen) < 30 {
		t.Fatalf("only %d distinct statements prepared", len(seen))
	}
	for _, want := range []string{SQLB5First, SQLS2, SQLS3, SQLC3, SQLL1, SQLL2} {
		if !seen[want] {
			t.Errorf("raw text %q never prepared", want)
		}
	}
}

func TestAddCommitToBranchHead(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	c := newClient(t, dsn)
	_, first, err := c.CreateRepository(ctx, "r", "ns", "main")
	check(t, err)
	cm := Commit{Committer: "imp", Message: "import", CreationDate: time.Date(2022, 7, 1, 0, 0, 0, 0, time.UTC),
		Parents: []string{first}, Version: 1, Generation: 2}
	c.Recorder().Reset()
	id := must[string](t)(c.AddCommitToBranchHead(ctx, "r", "main", cm))
	want := []string{IDBegin, IDL2, IDBegin, IDC1, IDCommit, IDBegin, IDB1, IDCommit, IDBegin, IDC1, IDRollback, IDBegin, IDR1, IDCommit,
		IDBegin, IDC3, IDCommit, IDBegin, IDC2, IDCommit, IDBegin, IDB1, IDCommit, IDBegin, IDS7, IDCommit, IDBegin, IDB3, IDCommit, IDCommit}
	if got := stmts(c.Recorder()); !slices.Equal(got, want) {
		t.Fatalf("statements\n got %v\nwant %v", got, want)
	}
	if b := must[*Branch](t)(c.GetBranch(ctx, "r", "main")); b.CommitID != id {
		t.Fatalf("head %s, want %s", b.CommitID, id)
	}
	// The same commit again: its parent is no longer the head.
	if _, err := c.AddCommitToBranchHead(ctx, "r", "main", cm); !errors.Is(err, ErrCommitNotHeadBranch) {
		t.Fatalf("stale parent: %v", err)
	}

	// On a dirty branch the commit record is written before the staging
	// check refuses to move the head. Adding the same commit again then
	// succeeds at "existing -> done" and leaves the head where it was; so
	// the workload never adds one commit twice.
	check(t, c.Set(ctx, "r", "main", []byte("k"), val("v"), false))
	again := cm
	again.Parents, again.Message = []string{id}, "import 2"
	if _, err := c.AddCommitToBranchHead(ctx, "r", "main", again); !errors.Is(err, ErrConflictFound) {
		t.Fatalf("dirty branch: %v", err)
	}
	check(t, c.ResetKey(ctx, "r", "main", []byte("k")))
	done := must[string](t)(c.AddCommitToBranchHead(ctx, "r", "main", again))
	if b := must[*Branch](t)(c.GetBranch(ctx, "r", "main")); done != again.ContentAddress() || b.CommitID != id {
		t.Fatalf("existing commit added again: returned %s, head %s; want %s and the head unchanged (%s)", done, b.CommitID, again.ContentAddress(), id)
	}
}

// A workload's commits never repeat, even within one second of the
// clock (commit ids hash the time in whole seconds): a repeated commit is
// "done" without moving the head (see TestAddCommitToBranchHead), and the
// ledger would expect the head there.
func TestWorkloadCommitParamsUnique(t *testing.T) {
	w := NewWorkload(nil, nil, WorkloadConfig{Seed: 1, Name: "w"})
	seen := map[string]bool{}
	for range 100 {
		p := w.params("import")
		if seen[p.Message] {
			t.Fatalf("commit message %q repeated", p.Message)
		}
		seen[p.Message] = true
	}
}

// statement_cache_capacity in the DSN overrides the 512 default; a full
// cache evicts with "deallocate" (what the proxy must also accept).
func TestStatementCacheCapacityFromDSN(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	c := newClient(t, dsn+sep+"statement_cache_capacity=4", withPools(1, 1))
	w := NewWorkload(c, nil, WorkloadConfig{Seed: 1, Name: "w"})
	check(t, w.Run(ctx, 100))
	conn, err := c.DB.Acquire(ctx)
	check(t, err)
	defer conn.Release()
	var n int
	check(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements`).Scan(&n))
	// The count query itself may be one of the cached statements.
	if n < 1 || n > 4 {
		t.Fatalf("%d prepared statements with capacity 4", n)
	}
}
