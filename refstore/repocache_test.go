package refstore

import (
	"context"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// countingStore counts Gets, to show which reads the repository cache
// saves. It stays a kv.Batcher, so commits take the atomic path.
type countingStore struct {
	*mem.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, pk, key []byte) (*kv.ValueWithPredicate, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, pk, key)
}

func TestRepoCacheSavesRecordReads(t *testing.T) {
	tests := []struct {
		name      string
		cacheSize int
		ttl       time.Duration
		op        func(ctx context.Context, s *Store) error
		wantGets  int64
	}{
		{"branch read, entry expired", 0, time.Nanosecond, func(ctx context.Context, s *Store) error {
			_, err := s.GetBranch(ctx, "r", "main")
			return err
		}, 2},
		{"branch read, cache on", 0, 0, func(ctx context.Context, s *Store) error {
			_, err := s.GetBranch(ctx, "r", "main")
			return err
		}, 1},
		{"branch read, cache off", -1, 0, func(ctx context.Context, s *Store) error {
			_, err := s.GetBranch(ctx, "r", "main")
			return err
		}, 2},
		{"missing tag: the absence is confirmed against the record", 0, 0, func(ctx context.Context, s *Store) error {
			_, err := s.GetTag(ctx, "r", "nope")
			if !errors.Is(err, ErrNotFound) {
				return errors.New("missing tag found")
			}
			return nil
		}, 2},
		{"branch listing, cache on", 0, 0, func(ctx context.Context, s *Store) error {
			_, err := s.ListBranches(ctx, "r", "", false, 0)
			return err
		}, 0},
		{"create branch: one read, the record is validated by the batch", 0, 0, func(ctx context.Context, s *Store) error {
			return s.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("tok"), CommitID: sp("c")})
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			raw := &countingStore{Store: mem.New()}
			defer raw.Close()
			s, err := New(ctx, raw, Options{RepoCacheSize: tc.cacheSize, RepoCacheTTL: tc.ttl})
			must(t, err)
			newRepo(t, ctx, s, "r")
			_, err = s.GetBranch(ctx, "r", "main") // warms the cache
			must(t, err)
			raw.gets.Store(0)
			must(t, tc.op(ctx, s))
			if got := raw.gets.Load(); got != tc.wantGets {
				t.Fatalf("%d Gets, want %d", got, tc.wantGets)
			}
		})
	}
}

// TestRepoCacheAcrossInstances: instance A caches a repository's record;
// instance B (another proxy on the same KV store) deletes the repository
// and, in most cases, recreates it under a new instance uid. Every read of
// A must answer from the current instance, and every write of A must land
// in it (after at most one retried conflict), never in the old partition.
func TestRepoCacheAcrossInstances(t *testing.T) {
	type env struct {
		a, b   *Store
		raw    kv.Store
		oldPK  []byte
		newPK  []byte
		commit CommitRow
	}
	retry := func(fn func() error) (int, error) {
		conflicts := 0
		for {
			err := fn()
			if !errors.Is(err, ErrConflict) || conflicts == 3 {
				return conflicts, err
			}
			conflicts++
		}
	}
	tests := []struct {
		name     string
		recreate bool
		check    func(t *testing.T, ctx context.Context, e env)
	}{
		{"read a branch only the new instance has", true, func(t *testing.T, ctx context.Context, e env) {
			b, err := e.a.GetBranch(ctx, "r", "only-new")
			must(t, err)
			if b.CommitID == nil || *b.CommitID != e.commit.ID {
				t.Fatalf("branch %+v", b)
			}
		}},
		{"read a branch only the old instance had", true, func(t *testing.T, ctx context.Context, e env) {
			if _, err := e.a.GetBranch(ctx, "r", "only-old"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		}},
		{"list branches", true, func(t *testing.T, ctx context.Context, e env) {
			bs, err := e.a.ListBranches(ctx, "r", "", false, 0)
			must(t, err)
			var ids []string
			for _, b := range bs {
				ids = append(ids, b.ID)
			}
			if want := []string{"main", "only-new"}; !reflect.DeepEqual(ids, want) {
				t.Fatalf("branches %v, want %v", ids, want)
			}
		}},
		{"read the repository", true, func(t *testing.T, ctx context.Context, e env) {
			r, err := e.a.GetRepository(ctx, "r")
			must(t, err)
			if r.StorageNamespace != "s3://bucket/r-again" {
				t.Fatalf("repository %+v, want the recreated one", r)
			}
		}},
		{"create a branch", true, func(t *testing.T, ctx context.Context, e env) {
			conflicts, err := retry(func() error {
				return e.a.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "from-a", StagingToken: sp("tok"), CommitID: sp(e.commit.ID)})
			})
			must(t, err)
			if conflicts > 1 {
				t.Fatalf("%d conflicts: the stale cache entry was not dropped", conflicts)
			}
			if _, err := e.b.GetBranch(ctx, "r", "from-a"); err != nil {
				t.Fatalf("B does not see A's branch: %v", err)
			}
		}},
		{"delete the repository", true, func(t *testing.T, ctx context.Context, e env) {
			conflicts, err := retry(func() error { return e.a.DeleteRepository(ctx, "r") })
			must(t, err)
			if conflicts > 1 {
				t.Fatalf("%d conflicts: the stale cache entry was not dropped", conflicts)
			}
			if _, err := e.b.GetRepository(ctx, "r"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("repository still there for B: %v", err)
			}
			if keys := partitionKeys(t, ctx, e.raw, e.newPK); len(keys) != 0 {
				t.Fatalf("new instance's partition keeps %v", keys)
			}
		}},
		{"a txn that already relied on the old uid conflicts", true, func(t *testing.T, ctx context.Context, e env) {
			tx := e.a.Begin()
			defer tx.Rollback()
			must(t, tx.SetBranch(ctx, BranchRow{RepositoryID: "r", ID: "blind", StagingToken: sp("tok"), CommitID: sp(e.commit.ID)}))
			if _, err := tx.GetBranch(ctx, "r", "only-new"); !errors.Is(err, ErrConflict) {
				t.Fatalf("got %v, want ErrConflict", err)
			}
		}},
		{"read after delete", false, func(t *testing.T, ctx context.Context, e env) {
			if _, err := e.a.GetBranch(ctx, "r", "main"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
			if _, err := e.a.ListBranches(ctx, "r", "", false, 0); !errors.Is(err, ErrNotFound) {
				t.Fatalf("listing got %v, want ErrNotFound", err)
			}
		}},
		{"write after delete", false, func(t *testing.T, ctx context.Context, e env) {
			_, err := retry(func() error {
				return e.a.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "late", StagingToken: sp("tok"), CommitID: sp(e.commit.ID)})
			})
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
				ctx := testCtx(t)
				// A keeps its entries for the whole test, so that its
				// stale entry is what is tested, however slow the machine.
				a, err := New(ctx, s.KV(), Options{RepoCacheTTL: time.Hour})
				must(t, err)
				b, err := New(ctx, s.KV(), Options{})
				must(t, err)
				commit := newRepo(t, ctx, a, "r")
				must(t, a.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "only-old", StagingToken: sp("tok"), CommitID: sp(commit.ID)}))
				if _, err := a.GetBranch(ctx, "r", "main"); err != nil { // A now has the uid cached
					t.Fatal(err)
				}
				e := env{a: a, b: b, raw: raw, commit: commit, oldPK: uidPartition(t, ctx, raw, "r")}
				must(t, b.DeleteRepository(ctx, "r"))
				if tc.recreate {
					repo, branch, c := repoRows("r")
					repo.StorageNamespace = "s3://bucket/r-again"
					must(t, b.CreateRepository(ctx, repo, &branch, &c))
					must(t, b.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "only-new", StagingToken: sp("tok"), CommitID: sp(commit.ID)}))
					e.newPK = uidPartition(t, ctx, raw, "r")
					if reflect.DeepEqual(e.newPK, e.oldPK) {
						t.Fatal("recreated repository kept its instance uid")
					}
				}
				tc.check(t, ctx, e)
				if keys := partitionKeys(t, ctx, raw, e.oldPK); len(keys) != 0 {
					t.Fatalf("A wrote into the deleted instance's partition: %v", keys)
				}
			})
		})
	}
}

func uidPartition(t *testing.T, ctx context.Context, raw kv.Store, id string) []byte {
	t.Helper()
	v, err := raw.Get(ctx, []byte(GravelerPartition), RepoKey(id))
	must(t, err)
	var rd graveler.RepositoryData
	must(t, proto.Unmarshal(v.Value, &rd))
	return RepoPartition(id, rd.GetInstanceUid())
}

// TestRepoCacheTTLBoundsOrphans: a writer outside refstore removes only a
// repository's record, leaving its branches behind. A cached reader may
// still find them, but not once the entry is older than RepoCacheTTL.
func TestRepoCacheTTLBoundsOrphans(t *testing.T) {
	ctx := testCtx(t)
	raw := mem.New()
	defer raw.Close()
	const ttl = 50 * time.Millisecond
	s, err := New(ctx, raw, Options{RepoCacheTTL: ttl})
	must(t, err)
	newRepo(t, ctx, s, "r")
	_, err = s.GetBranch(ctx, "r", "main") // cached now
	must(t, err)
	must(t, raw.Delete(ctx, []byte(GravelerPartition), RepoKey("r")))
	time.Sleep(2 * ttl)
	if _, err := s.GetBranch(ctx, "r", "main"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("branch of a repository without a record: got %v, want ErrNotFound", err)
	}
}
