package legacy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// The spec's normalised texts (shared/spec/lakefs-refstore.md §3), copied
// verbatim: the constants must collapse to exactly these.
func TestStatementTextsMatchSpec(t *testing.T) {
	cases := []struct {
		name, sql, spec string
	}{
		{"R1", SQLR1, "SELECT storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id = $1"},
		{"R2", SQLR2, "INSERT INTO graveler_repositories (id, storage_namespace, creation_date, default_branch) VALUES ($1, $2, $3, $4)"},
		{"R3 first", SQLR3First, "SELECT id, storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id >= $1 ORDER BY id ASC LIMIT $2"},
		{"R3 next", SQLR3Next, "SELECT id, storage_namespace, creation_date, default_branch FROM graveler_repositories WHERE id > $1 ORDER BY id ASC LIMIT $2"},
		{"R4 branches", SQLR4Branches, "DELETE FROM graveler_branches WHERE repository_id = $1"},
		{"R4 tags", SQLR4Tags, "DELETE FROM graveler_tags WHERE repository_id = $1"},
		{"R4 commits", SQLR4Commits, "DELETE FROM graveler_commits WHERE repository_id = $1"},
		{"R4 repositories", SQLR4Repositories, "DELETE FROM graveler_repositories WHERE id = $1"},
		{"B1", SQLB1, "SELECT commit_id, staging_token FROM graveler_branches WHERE repository_id = $1 AND id = $2"},
		{"B2 create", SQLB2Create, "INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4)"},
		{"B2 repo", SQLB2Repo, "INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4)"},
		{"B3", SQLB3, "INSERT INTO graveler_branches (repository_id, id, staging_token, commit_id) VALUES ($1, $2, $3, $4) ON CONFLICT (repository_id, id) DO UPDATE SET staging_token = $3, commit_id = $4"},
		{"B4", SQLB4, "DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2"},
		{"B5 first", SQLB5First, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT $3"},
		{"B5 next", SQLB5Next, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3"},
		{"B6 first", SQLB6First, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id >= $2 ORDER BY commit_id ASC LIMIT $3"},
		{"B6 next", SQLB6Next, "SELECT id, staging_token, commit_id FROM graveler_branches WHERE repository_id = $1 AND id > $2 ORDER BY commit_id ASC LIMIT $3"},
		{"T1", SQLT1, "SELECT commit_id FROM graveler_tags WHERE repository_id = $1 AND id = $2"},
		{"T2", SQLT2, "INSERT INTO graveler_tags (repository_id, id, commit_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"},
		{"T3", SQLT3, "DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2"},
		{"T4 first", SQLT4First, "SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT $3"},
		{"T4 next", SQLT4Next, "SELECT id, commit_id FROM graveler_tags WHERE repository_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3"},
		{"C1", SQLC1, "SELECT committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id = $2"},
		{"C2", SQLC2, "SELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id LIKE $2 || '%' LIMIT 2"},
		{"C3", SQLC3, "INSERT INTO graveler_commits (repository_id, id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"},
		{"C4", SQLC4, "SELECT id, committer, message, creation_date, parents, meta_range_id, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id = $2"},
		{"C5 first", C5SQL(true, 1000), "SELECT id, committer, message, creation_date, meta_range_id, parents, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id >= $2 ORDER BY id ASC LIMIT 1000"},
		{"C5 next", C5SQL(false, 1000), "SELECT id, committer, message, creation_date, meta_range_id, parents, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id > $2 ORDER BY id ASC LIMIT 1000"},
		{"C6 first", C6SQL(true, 1000), "SELECT id, committer, message, creation_date, meta_range_id, parents, metadata, version, generation FROM graveler_commits WHERE repository_id = $1 AND id >= $2 AND NOT EXISTS ( SELECT * FROM graveler_commits c2 WHERE c2.repository_id=graveler_commits.repository_id AND first_parent(c2.parents, c2.version)=graveler_commits.id ) ORDER BY id ASC LIMIT 1000"},
		{"C7", C7SQL([]GenerationUpdate{{"aa", 1}, {"bb", 2}}), "WITH updated(id, generation) AS (VALUES ('aa', 1),('bb', 2)) UPDATE graveler_commits SET generation = updated.generation FROM updated WHERE (graveler_commits.id=updated.id AND graveler_commits.repository_id=$1)"},
		{"L1", SQLL1, "SELECT pg_advisory_xact_lock_shared($1);"},
		{"L2", SQLL2, "SELECT pg_advisory_xact_lock($1);"},
		{"S1", SQLS1, "SELECT identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2"},
		{"S2", SQLS2, "INSERT INTO graveler_staging_kv (staging_token, key, identity, data) VALUES ($1, $2, $3, $4) ON CONFLICT (staging_token, key) DO NOTHING"},
		{"S3", SQLS3, "INSERT INTO graveler_staging_kv (staging_token, key, identity, data) VALUES ($1, $2, $3, $4) ON CONFLICT (staging_token, key) DO UPDATE SET (staging_token, key, identity, data) = (excluded.staging_token, excluded.key, excluded.identity, excluded.data)"},
		{"S4", SQLS4, "DELETE FROM graveler_staging_kv WHERE staging_token=$1 AND key=$2"},
		{"S5", SQLS5, "DELETE FROM graveler_staging_kv WHERE staging_token=$1"},
		{"S6", SQLS6, "DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key >= $2::bytea AND key < $3::bytea"},
		{"S7", SQLS7, "SELECT key, identity, data FROM graveler_staging_kv WHERE staging_token=$1 AND key >= $2 ORDER BY key LIMIT $3"},
		{"begin rw", SQLBeginSerializableRW, "begin isolation level serializable read write"},
		{"begin ro", SQLBeginSerializableRO, "begin isolation level serializable read only"},
		{"begin rc", SQLBeginReadCommitted, "begin isolation level read committed read write"},
		{"diag count", DiagCountSQL("graveler_tags"), "SELECT COUNT(*) FROM graveler_tags LIMIT 1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Normalize(tc.sql); got != tc.spec {
				t.Errorf("normalised text\n got: %s\nwant: %s", got, tc.spec)
			}
		})
	}
}

// The raw wire forms the spec calls out must keep their whitespace.
func TestStatementWireWhitespace(t *testing.T) {
	cases := []struct{ name, sql, contains string }{
		{"branch listing double blank", SQLB5First, "ORDER BY id  ASC"},
		{"gc branch listing double blank", SQLB6Next, "ORDER BY commit_id  ASC"},
		{"S2 multi-line", SQLS2, ")\n\t\t\t\t\t\tVALUES"},
		{"S3 multi-line", SQLS3, "DO UPDATE\n"},
		{"C3 trailing blank", SQLC3, "graveler_commits \n"},
		{"L1 semicolon", SQLL1, ");"},
		{"C5 single line", C5SQL(true, 1000), "LIMIT 1000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.sql, tc.contains) {
				t.Errorf("%q does not contain %q", tc.sql, tc.contains)
			}
		})
	}
	for _, s := range Statements() {
		if s.ID == IDC5 || s.ID == IDC6 || s.ID == IDS6 {
			if strings.ContainsAny(s.SQL, "\n\t") {
				t.Errorf("%s: squirrel output is single-line: %q", s.ID, s.SQL)
			}
		}
	}
}

func TestC7QuotesLikePQ(t *testing.T) {
	got := C7SQL([]GenerationUpdate{{"it's", 3}, {`back\slash`, 4}})
	want := `WITH updated(id, generation) AS (VALUES ('it''s', 3),( E'back\\slash', 4)) UPDATE`
	if !strings.HasPrefix(got, want) {
		t.Errorf("got %s\nwant prefix %s", got, want)
	}
}

func TestUpperBoundForPrefix(t *testing.T) {
	cases := []struct {
		in, want []byte
	}{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte("a/"), []byte("a0")},
		{[]byte{'a', 0xff}, []byte{'b'}},
		{[]byte{0xff, 0xff}, nil},
		{[]byte("dir1/"), []byte("dir10")},
	}
	for _, tc := range cases {
		if got := UpperBoundForPrefix(tc.in); !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("UpperBoundForPrefix(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// fnv1 is FNV-1 64 written out, to check BranchLockKey is FNV-1 (not 1a).
func fnv1(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h *= 1099511628211
		h ^= uint64(c)
	}
	return h
}

func TestBranchLockKey(t *testing.T) {
	cases := []struct{ repo, branch string }{{"repo", "main"}, {"", ""}, {"a-b", "c"}, {"x", "feature/1"}}
	for _, tc := range cases {
		want := int64(fnv1([]byte(tc.repo + "\x00" + tc.branch + "\x00")))
		if got := BranchLockKey(tc.repo, tc.branch); got != want {
			t.Errorf("BranchLockKey(%q,%q) = %d, want %d", tc.repo, tc.branch, got, want)
		}
	}
	if BranchLockKey("ab", "c") == BranchLockKey("a", "bc") {
		t.Error("separator does not separate")
	}
}

// identBytes builds the expected ident stream by hand, independently of model.go.
func TestCommitContentAddressFraming(t *testing.T) {
	i64 := func(v int64) []byte {
		b := []byte{2, 8, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(b[2:], uint64(v))
		return b
	}
	str := func(s string) []byte { return append(append([]byte{1}, i64(int64(len(s)))...), s...) }
	when := time.Date(2022, 6, 21, 10, 0, 0, 123456789, time.UTC)
	build := func(c Commit) string {
		var buf []byte
		buf = append(buf, str("commit:v1")...)
		buf = append(buf, str(c.Committer)...)
		buf = append(buf, str(c.Message)...)
		buf = append(buf, str(c.MetaRangeID)...)
		buf = append(buf, i64(c.CreationDate.Unix())...)
		buf = append(buf, 4)
		buf = append(buf, i64(int64(len(c.Metadata)))...)
		// sorted keys: the cases use at most keys "a" < "b"
		for _, k := range []string{"a", "b"} {
			if v, ok := c.Metadata[k]; ok {
				buf = append(buf, str(k)...)
				buf = append(buf, str(v)...)
			}
		}
		var pl []byte
		pl = append(pl, 3)
		pl = append(pl, i64(int64(len(c.Parents)))...)
		for _, p := range c.Parents {
			pl = append(pl, str(p)...)
		}
		ph := sha256.Sum256(pl)
		buf = append(buf, 5, 0)
		buf = append(buf, i64(32)...)
		buf = append(buf, ph[:]...)
		sum := sha256.Sum256(buf)
		return hex.EncodeToString(sum[:])
	}
	cases := []Commit{
		{Message: FirstCommitMsg, CreationDate: when, Version: 1, Generation: 1},
		{Committer: "alice", Message: "m", MetaRangeID: "mr", CreationDate: when, Parents: []string{"p1", "p2"}, Metadata: map[string]string{"b": "2", "a": "1"}},
	}
	for i, c := range cases {
		if got, want := c.ContentAddress(), build(c); got != want {
			t.Errorf("case %d: %s, want %s", i, got, want)
		}
	}
	base := cases[1]
	same := []Commit{base, base, base}
	same[0].Version, same[0].Generation = 0, 99
	same[1].CreationDate = when.Add(800 * time.Millisecond) // same second
	same[2].CreationDate = when.In(time.FixedZone("x", 3600))
	for i, c := range same {
		if c.ContentAddress() != base.ContentAddress() {
			t.Errorf("variant %d changed the id", i)
		}
	}
	empty := Commit{CreationDate: when}
	emptied := Commit{CreationDate: when, Metadata: map[string]string{}, Parents: []string{}}
	if empty.ContentAddress() != emptied.ContentAddress() {
		t.Error("nil and empty metadata/parents hash differently")
	}
	other := base
	other.Parents = []string{"p2", "p1"}
	if other.ContentAddress() == base.ContentAddress() {
		t.Error("parent order does not matter")
	}
}

func TestCompare(t *testing.T) {
	base := []Outcome{
		{Stmt: IDBegin, SQL: SQLBeginSerializableRO, Tag: "BEGIN"},
		{Stmt: IDR1, SQL: SQLR1, Args: []any{"r"}, Rows: [][]any{{"s3://x", time.Unix(1, 0).UTC(), "main"}}, Tag: "SELECT 1"},
		{Stmt: IDB6, SQL: SQLB6First, Rows: [][]any{{"a", "t1", "c"}, {"b", "t2", "c"}}, Tag: "SELECT 2"},
		{Stmt: IDR2, SQL: SQLR2, Err: "dup", SQLState: "23505"},
	}
	clone := func() []Outcome {
		out := make([]Outcome, len(base))
		copy(out, base)
		return out
	}
	cases := []struct {
		name    string
		mutate  func([]Outcome) []Outcome
		wantErr string
	}{
		{"identical", func(o []Outcome) []Outcome { return o }, ""},
		{"error text differs only", func(o []Outcome) []Outcome { o[3].Err = "other text"; return o }, ""},
		{"B6 tie order", func(o []Outcome) []Outcome {
			o[2].Rows = [][]any{base[2].Rows[1], base[2].Rows[0]}
			return o
		}, ""},
		{"row value", func(o []Outcome) []Outcome {
			o[1].Rows = [][]any{{"s3://y", time.Unix(1, 0).UTC(), "main"}}
			return o
		}, "outcome 1 (R1)"},
		{"tag", func(o []Outcome) []Outcome { o[1].Tag = "SELECT 0"; return o }, "command tag"},
		{"sqlstate", func(o []Outcome) []Outcome { o[3].SQLState = "40001"; return o }, "sqlstate"},
		{"missing error", func(o []Outcome) []Outcome { o[3].Err, o[3].SQLState, o[3].Tag = "", "", "INSERT 0 1"; return o }, "outcome 3"},
		{"args", func(o []Outcome) []Outcome { o[1].Args = []any{"q"}; return o }, "args"},
		{"shorter", func(o []Outcome) []Outcome { return o[:2] }, "differ in length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Compare(base, tc.mutate(clone()))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected difference: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Compare = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSeededSourcesAreDeterministic(t *testing.T) {
	a, b := NewSeededUUIDs(7), NewSeededUUIDs(7)
	for i := 0; i < 5; i++ {
		ua, ub := a.NewUUID(), b.NewUUID()
		if ua != ub {
			t.Fatalf("uuid %d differs: %s %s", i, ua, ub)
		}
		if ua.Version() != 4 {
			t.Fatalf("uuid version %d", ua.Version())
		}
	}
	if NewSeededUUIDs(8).NewUUID() == NewSeededUUIDs(7).NewUUID() {
		t.Error("different seeds give the same uuid")
	}
	c := NewStepClock(time.Unix(100, 0), time.Second)
	if c.Now().Unix() != 100 || c.Now().Unix() != 101 {
		t.Error("step clock does not step")
	}
}
