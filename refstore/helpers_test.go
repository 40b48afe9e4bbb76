package refstore

import (
	"context"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// singleKey hides a driver's kv.Batcher, so that Txn.Commit takes the
// ordered single-key path.
type singleKey struct{ kv.Store }

// commitModes are the two commit paths of a Txn.
var commitModes = []struct {
	name string
	wrap func(kv.Store) kv.Store
}{
	{"atomic", func(s kv.Store) kv.Store { return s }},
	{"ordered", func(s kv.Store) kv.Store { return singleKey{s} }},
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// forEachStore runs fn on every driver, in both commit modes.
func forEachStore(t *testing.T, fn func(t *testing.T, s *Store, raw kv.Store)) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			for _, m := range commitModes {
				t.Run(m.name, func(t *testing.T) {
					raw := d.New(t)
					s, err := New(testCtx(t), m.wrap(raw), Options{})
					if err != nil {
						t.Fatal(err)
					}
					fn(t, s, raw)
				})
			}
		})
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newRepo creates repository id with its default branch "main" and first
// commit, as lakeFS's CreateRepository does, and returns the commit.
func newRepo(t testing.TB, ctx context.Context, s *Store, id string) CommitRow {
	t.Helper()
	repo, branch, commit := repoRows(id)
	must(t, s.CreateRepository(ctx, repo, &branch, &commit))
	return commit
}

func repoRows(id string) (RepositoryRow, BranchRow, CommitRow) {
	now := time.Date(2022, 6, 21, 10, 0, 0, 123456000, time.UTC)
	c := CommitRow{RepositoryID: id, Message: "Repository created", CreationDate: now, Metadata: []byte("null"), Version: 1, Generation: ip(1)}
	c.ID, _ = CommitRowID(c)
	return RepositoryRow{ID: id, StorageNamespace: "s3://bucket/" + id, CreationDate: now, DefaultBranch: "main"},
		BranchRow{RepositoryID: id, ID: "main", StagingToken: sp(id + "-main:token"), CommitID: sp(c.ID)},
		c
}

// partitionKeys lists every key of a partition.
func partitionKeys(t testing.TB, ctx context.Context, s kv.Store, pk []byte) []string {
	t.Helper()
	it, err := s.Scan(ctx, pk, nil)
	must(t, err)
	defer it.Close()
	var keys []string
	for it.Next() {
		keys = append(keys, string(it.Entry().Key))
	}
	must(t, it.Err())
	return keys
}
