package refstore

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"github.com/rs/xid"
	"google.golang.org/protobuf/proto"
)

func TestSchemaVersionWrittenOnlyIfAbsent(t *testing.T) {
	tests := []struct {
		name     string
		existing string
		want     string
	}{
		{"fresh store", "", SchemaVersion},
		{"already 1", "1", "1"},
		{"later version kept", "3", "3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			raw := mem.New()
			defer raw.Close()
			if tc.existing != "" {
				must(t, raw.Set(ctx, []byte(SchemaPartition), []byte(SchemaVersionKey), []byte(tc.existing)))
			}
			if _, err := New(ctx, raw, Options{}); err != nil {
				t.Fatal(err)
			}
			v, err := raw.Get(ctx, []byte("kv-internal-metadata"), []byte("kv/schema/version"))
			must(t, err)
			if string(v.Value) != tc.want {
				t.Fatalf("schema version %q, want %q", v.Value, tc.want)
			}
		})
	}
}

func TestRepositoryLayoutAndLifecycle(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		commit := newRepo(t, ctx, s, "repo1")

		// The record is where lakeFS looks for it, with an xid uid.
		v, err := raw.Get(ctx, []byte("graveler"), []byte("repos/repo1"))
		must(t, err)
		var rd graveler.RepositoryData
		must(t, proto.Unmarshal(v.Value, &rd))
		if _, err := xid.FromString(rd.InstanceUid); err != nil {
			t.Fatalf("instance uid %q is not an xid: %v", rd.InstanceUid, err)
		}
		if rd.State != graveler.RepositoryState_ACTIVE || rd.DefaultBranchId != "main" || rd.StorageNamespace != "s3://bucket/repo1" {
			t.Fatalf("record %v", &rd)
		}
		pk := []byte("repo1-" + rd.InstanceUid)
		want := []string{"branches/main", "commits/" + commit.ID}
		if got := partitionKeys(t, ctx, raw, pk); !reflect.DeepEqual(got, want) {
			t.Fatalf("partition %s keys %v, want %v", pk, got, want)
		}

		// Later writes reuse the uid.
		must(t, s.CreateBranch(ctx, BranchRow{RepositoryID: "repo1", ID: "dev", StagingToken: sp("t2"), CommitID: sp(commit.ID)}))
		must(t, s.CreateTag(ctx, TagRow{RepositoryID: "repo1", ID: "v1", CommitID: sp(commit.ID)}))
		must(t, s.Update(ctx, func(tx *Txn) error {
			return tx.SetProtectionRules(ctx, "repo1", &graveler.BranchProtectionRules{BranchPatternToBlockedActions: map[string]*graveler.BranchProtectionBlockedActions{"main": {}}})
		}))
		want = []string{"branches/dev", "branches/main", "commits/" + commit.ID, "settings/protected_branches", "tags/v1"}
		if got := partitionKeys(t, ctx, raw, pk); !reflect.DeepEqual(got, want) {
			t.Fatalf("partition keys %v, want %v", got, want)
		}

		got, err := s.GetRepository(ctx, "repo1")
		must(t, err)
		wantRepo, wantBranch, _ := repoRows("repo1")
		if !got.CreationDate.Equal(wantRepo.CreationDate) || got.ID != "repo1" || got.DefaultBranch != "main" {
			t.Fatalf("repository %+v", got)
		}
		b, err := s.GetBranch(ctx, "repo1", "main")
		must(t, err)
		if !reflect.DeepEqual(b, wantBranch) {
			t.Fatalf("branch %+v, want %+v", b, wantBranch)
		}
		c, err := s.GetCommit(ctx, "repo1", commit.ID)
		must(t, err)
		if id, _ := CommitRowID(c); id != commit.ID {
			t.Fatalf("commit read back hashes to %s, want %s", id, commit.ID)
		}

		r, b2, c2 := repoRows("repo1")
		if err := s.CreateRepository(ctx, r, &b2, &c2); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("duplicate create: %v, want ErrAlreadyExists", err)
		}

		must(t, s.DeleteRepository(ctx, "repo1"))
		if _, err := s.GetRepository(ctx, "repo1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		if keys := partitionKeys(t, ctx, raw, pk); len(keys) != 0 {
			t.Fatalf("partition left behind: %v", keys)
		}
		if err := s.DeleteRepository(ctx, "repo1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v, want ErrNotFound", err)
		}
		newRepo(t, ctx, s, "repo1")
		rd2, err := s.GetRepositoryData(ctx, "repo1")
		must(t, err)
		if rd2.InstanceUid == rd.InstanceUid {
			t.Fatal("re-created repository reuses the old instance uid")
		}
	})
}

func TestSQLOutcomes(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		c := newRepo(t, ctx, s, "r")
		tag := TagRow{RepositoryID: "r", ID: "v1", CommitID: sp(c.ID)}
		c2 := c
		c2.Message, c2.Parents, c2.Generation = "second", []string{c.ID}, ip(2)
		c2.ID, _ = CommitRowID(c2)
		live := StagingRow{StagingToken: "r-main:token", Key: []byte("a/1"), Identity: []byte{1}, Data: []byte{2}}
		tomb := StagingRow{StagingToken: "r-main:token", Key: []byte("a/2")}
		other := StagingRow{StagingToken: "r-main:token", Key: []byte("b/1"), Identity: []byte{3}, Data: []byte{4}}

		type step struct {
			name string
			op   func(*Txn) (any, error)
			want any
			err  error
		}
		steps := []step{
			{"T2 creates", func(tx *Txn) (any, error) { return tx.CreateTag(ctx, tag) }, true, nil},
			{"T2 again does nothing", func(tx *Txn) (any, error) { return tx.CreateTag(ctx, tag) }, false, nil},
			{"T1", func(tx *Txn) (any, error) { return tx.GetTag(ctx, "r", "v1") }, tag, nil},
			{"T3 deletes", func(tx *Txn) (any, error) { return tx.DeleteTag(ctx, "r", "v1") }, true, nil},
			{"T3 again: 0 rows", func(tx *Txn) (any, error) { return tx.DeleteTag(ctx, "r", "v1") }, false, nil},
			{"T1 missing", func(tx *Txn) (any, error) { return tx.GetTag(ctx, "r", "v1") }, TagRow{}, ErrNotFound},
			{"C3 inserts", func(tx *Txn) (any, error) { return tx.AddCommit(ctx, c2) }, true, nil},
			{"C3 again is idempotent", func(tx *Txn) (any, error) { return tx.AddCommit(ctx, c2) }, false, nil},
			{"C3 NULL generation", func(tx *Txn) (any, error) {
				bad := c2
				bad.ID, bad.Generation = "ff", nil
				return tx.AddCommit(ctx, bad)
			}, false, ErrInvalidRow},
			{"C7 sets generation", func(tx *Txn) (any, error) { return tx.SetCommitGeneration(ctx, "r", c2.ID, 5) }, true, nil},
			{"C7 missing commit", func(tx *Txn) (any, error) { return tx.SetCommitGeneration(ctx, "r", "00", 5) }, false, nil},
			{"C1 sees generation", func(tx *Txn) (any, error) {
				r, err := tx.GetCommit(ctx, "r", c2.ID)
				return *r.Generation, err
			}, int32(5), nil},
			{"B2 duplicate", func(tx *Txn) (any, error) {
				return nil, tx.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "main", StagingToken: sp("x"), CommitID: sp(c.ID)})
			}, nil, ErrAlreadyExists},
			{"B2 into a missing repository", func(tx *Txn) (any, error) {
				return nil, tx.CreateBranch(ctx, BranchRow{RepositoryID: "nope", ID: "main", StagingToken: sp("x"), CommitID: sp(c.ID)})
			}, nil, ErrNotFound},
			{"B3 upserts a new branch", func(tx *Txn) (any, error) {
				return nil, tx.SetBranch(ctx, BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("t"), CommitID: sp(c.ID)})
			}, nil, nil},
			{"B3 overwrites", func(tx *Txn) (any, error) {
				return nil, tx.SetBranch(ctx, BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("t2"), CommitID: sp(c2.ID)})
			}, nil, nil},
			{"B1 sees the upsert", func(tx *Txn) (any, error) { return tx.GetBranch(ctx, "r", "dev") },
				BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("t2"), CommitID: sp(c2.ID)}, nil},
			{"B4 deletes", func(tx *Txn) (any, error) { return tx.DeleteBranch(ctx, "r", "dev") }, true, nil},
			{"B4 missing", func(tx *Txn) (any, error) { return tx.DeleteBranch(ctx, "r", "dev") }, false, nil},
			{"B4 missing repository", func(tx *Txn) (any, error) { return tx.DeleteBranch(ctx, "nope", "dev") }, false, nil},
			{"R1 missing", func(tx *Txn) (any, error) { return tx.GetRepository(ctx, "nope") }, RepositoryRow{}, ErrNotFound},
			{"R4 missing: 0 rows", func(tx *Txn) (any, error) { return tx.DeleteRepository(ctx, "nope") }, false, nil},
			{"S2 inserts", func(tx *Txn) (any, error) { return tx.SetStagedIfAbsent(ctx, live) }, true, nil},
			{"S2 inserts a tombstone", func(tx *Txn) (any, error) { return tx.SetStagedIfAbsent(ctx, tomb) }, true, nil},
			{"S2 over a tombstone does nothing", func(tx *Txn) (any, error) {
				return tx.SetStagedIfAbsent(ctx, StagingRow{StagingToken: tomb.StagingToken, Key: tomb.Key, Identity: []byte{9}})
			}, false, nil},
			{"S3 upserts", func(tx *Txn) (any, error) { return nil, tx.SetStaged(ctx, other) }, nil, nil},
			{"S1 live", func(tx *Txn) (any, error) { return tx.GetStaged(ctx, live.StagingToken, live.Key) }, live, nil},
			{"S1 tombstone", func(tx *Txn) (any, error) { return tx.GetStaged(ctx, tomb.StagingToken, tomb.Key) }, tomb, nil},
			{"S1 missing", func(tx *Txn) (any, error) { return tx.GetStaged(ctx, tomb.StagingToken, []byte("zz")) }, StagingRow{}, ErrNotFound},
			{"S6 drops by prefix", func(tx *Txn) (any, error) { return tx.DropStagedByPrefix(ctx, live.StagingToken, []byte("a/")) }, 2, nil},
			{"S4 missing", func(tx *Txn) (any, error) { return tx.DropStagedKey(ctx, live.StagingToken, live.Key) }, false, nil},
			{"S4 present", func(tx *Txn) (any, error) { return tx.DropStagedKey(ctx, other.StagingToken, other.Key) }, true, nil},
			{"S3 again", func(tx *Txn) (any, error) { return nil, tx.SetStaged(ctx, other) }, nil, nil},
			{"S5 drops the token", func(tx *Txn) (any, error) { return tx.DropStaging(ctx, other.StagingToken) }, 1, nil},
			{"S5 on an empty token", func(tx *Txn) (any, error) { return tx.DropStaging(ctx, other.StagingToken) }, 0, nil},
		}
		for _, st := range steps {
			var got any
			err := s.Update(ctx, func(tx *Txn) error {
				var err error
				got, err = st.op(tx)
				return err
			})
			if !errors.Is(err, st.err) || (st.err == nil && err != nil) {
				t.Fatalf("%s: err %v, want %v", st.name, err, st.err)
			}
			if st.err == nil && !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: got %#v, want %#v", st.name, got, st.want)
			}
		}
	})
}

func TestTxnReadsOwnWritesAndIsolation(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		c := newRepo(t, ctx, s, "r")
		dev := BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("t"), CommitID: sp(c.ID)}

		tx := s.Begin()
		must(t, tx.CreateBranch(ctx, dev))
		if got, err := tx.GetBranch(ctx, "r", "dev"); err != nil || !reflect.DeepEqual(got, dev) {
			t.Fatalf("own write: %+v, %v", got, err)
		}
		if _, err := s.GetBranch(ctx, "r", "dev"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("uncommitted write visible outside: %v", err)
		}
		if n, err := tx.DeleteBranchesOfRepository(ctx, "r"); err != nil || n != 2 {
			t.Fatalf("scan with own write: %d, %v", n, err)
		}
		if _, err := tx.GetBranch(ctx, "r", "main"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("own delete: %v", err)
		}
		tx.Rollback()
		if err := tx.Commit(ctx); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("commit after rollback: %v", err)
		}
		if _, err := s.GetBranch(ctx, "r", "main"); err != nil {
			t.Fatalf("rolled back delete applied: %v", err)
		}

		// Create and fill a repository in one transaction.
		r2, b2, c2 := repoRows("r2")
		must(t, s.Update(ctx, func(tx *Txn) error {
			must(t, tx.CreateRepository(ctx, r2))
			if _, err := tx.AddCommit(ctx, c2); err != nil {
				return err
			}
			must(t, tx.CreateBranch(ctx, b2))
			got, err := tx.GetBranch(ctx, "r2", "main")
			if err != nil || !reflect.DeepEqual(got, b2) {
				t.Fatalf("branch of repository created in the txn: %+v, %v", got, err)
			}
			return nil
		}))
		if _, err := s.GetBranch(ctx, "r2", "main"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTxnConflicts(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		c := newRepo(t, ctx, s, "r")
		branch := func(id, token string) BranchRow {
			return BranchRow{RepositoryID: "r", ID: id, StagingToken: sp(token), CommitID: sp(c.ID)}
		}
		must(t, s.SetBranch(ctx, branch("x", "t0")))
		tests := []struct {
			name   string
			loser  func(*Txn) error // runs first, commits last
			winner func(*Txn) error
		}{
			{"lost update on one branch",
				func(tx *Txn) error {
					if _, err := tx.GetBranch(ctx, "r", "main"); err != nil {
						return err
					}
					return tx.SetBranch(ctx, branch("main", "loser"))
				},
				func(tx *Txn) error { return tx.SetBranch(ctx, branch("main", "winner")) }},
			{"write skew: read x, write y",
				func(tx *Txn) error {
					if _, err := tx.GetBranch(ctx, "r", "x"); err != nil {
						return err
					}
					return tx.SetBranch(ctx, branch("y", "loser"))
				},
				func(tx *Txn) error { return tx.SetBranch(ctx, branch("x", "winner")) }},
			{"absent read: tag created meanwhile",
				func(tx *Txn) error {
					ok, err := tx.CreateTag(ctx, TagRow{RepositoryID: "r", ID: "t", CommitID: sp("loser")})
					if !ok {
						return fmt.Errorf("tag exists already")
					}
					return err
				},
				func(tx *Txn) error {
					_, err := tx.CreateTag(ctx, TagRow{RepositoryID: "r", ID: "t", CommitID: sp("winner")})
					return err
				}},
			{"phantom: branch inserted under a DELETE scan",
				func(tx *Txn) error { _, err := tx.DeleteBranchesOfRepository(ctx, "r"); return err },
				func(tx *Txn) error { return tx.CreateBranch(ctx, branch("phantom", "winner")) }},
			{"phantom: staged object inserted under S5",
				func(tx *Txn) error { _, err := tx.DropStaging(ctx, "tok"); return err },
				func(tx *Txn) error {
					return tx.SetStaged(ctx, StagingRow{StagingToken: "tok", Key: []byte("new"), Identity: []byte{1}})
				}},
			{"staged object changed after S1",
				func(tx *Txn) error {
					if _, err := tx.GetStaged(ctx, "tok", []byte("new")); err != nil {
						return err
					}
					return tx.SetStaged(ctx, StagingRow{StagingToken: "tok2", Key: []byte("copy"), Identity: []byte{1}})
				},
				func(tx *Txn) error {
					return tx.SetStaged(ctx, StagingRow{StagingToken: "tok", Key: []byte("new"), Identity: []byte{2}})
				}},
			{"repository deleted under a branch write",
				func(tx *Txn) error { return tx.SetBranch(ctx, branch("late", "loser")) },
				func(tx *Txn) error {
					_, err := tx.DeleteRepository(ctx, "r")
					return err
				}},
		}
		for _, tc := range tests {
			loser := s.Begin()
			if err := tc.loser(loser); err != nil {
				t.Fatalf("%s: loser: %v", tc.name, err)
			}
			must(t, s.Update(ctx, tc.winner))
			if err := loser.Commit(ctx); !errors.Is(err, ErrConflict) {
				t.Fatalf("%s: loser commit: %v, want ErrConflict", tc.name, err)
			}
		}
		// Nothing of the losers is visible.
		if _, err := s.GetRepository(ctx, "r"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("repository: %v", err)
		}
	})
}

func TestDeleteRepositoryAsSQLTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		c := newRepo(t, ctx, s, "r")
		for i := range 3 {
			must(t, s.CreateTag(ctx, TagRow{RepositoryID: "r", ID: fmt.Sprint("v", i), CommitID: sp(c.ID)}))
		}
		must(t, s.CreateBranch(ctx, BranchRow{RepositoryID: "r", ID: "dev", StagingToken: sp("t"), CommitID: sp(c.ID)}))
		must(t, s.SetStaged(ctx, StagingRow{StagingToken: "t", Key: []byte("k"), Identity: []byte{1}}))
		rd, err := s.GetRepositoryData(ctx, "r")
		must(t, err)

		var counts []int
		must(t, s.Update(ctx, func(tx *Txn) error {
			for _, del := range []func() (int, error){
				func() (int, error) { return tx.DeleteBranchesOfRepository(ctx, "r") },
				func() (int, error) { return tx.DeleteTagsOfRepository(ctx, "r") },
				func() (int, error) { return tx.DeleteCommitsOfRepository(ctx, "r") },
				func() (int, error) { ok, err := tx.DeleteRepository(ctx, "r"); return map[bool]int{true: 1}[ok], err },
			} {
				n, err := del()
				if err != nil {
					return err
				}
				counts = append(counts, n)
			}
			return nil
		}))
		if want := []int{2, 3, 1, 1}; !slices.Equal(counts, want) {
			t.Fatalf("rows affected %v, want %v", counts, want)
		}
		if keys := partitionKeys(t, ctx, raw, RepoPartition("r", rd.InstanceUid)); len(keys) != 0 {
			t.Fatalf("partition left behind: %v", keys)
		}
		if keys := partitionKeys(t, ctx, raw, []byte("graveler")); len(keys) != 0 {
			t.Fatalf("graveler partition: %v", keys)
		}
		// Staging is left alone, as lakeFS does.
		if _, err := s.GetStaged(ctx, "t", []byte("k")); err != nil {
			t.Fatalf("staging: %v", err)
		}
	})
}

func TestRepositoryInDeletion(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		newRepo(t, ctx, s, "a")
		newRepo(t, ctx, s, "b")
		newRepo(t, ctx, s, "c")
		old, err := s.GetRepositoryData(ctx, "b")
		must(t, err)
		// What a delete that died after its first step leaves behind.
		marked := proto.Clone(old).(*graveler.RepositoryData)
		marked.State = graveler.RepositoryState_IN_DELETION
		v, err := proto.Marshal(marked)
		must(t, err)
		must(t, raw.Set(ctx, []byte("graveler"), []byte("repos/b"), v))

		_, err = s.GetRepository(ctx, "b")
		if !errors.Is(err, ErrRepositoryInDeletion) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("get: %v, want ErrRepositoryInDeletion and ErrNotFound", err)
		}
		if _, err := s.GetBranch(ctx, "b", "main"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("branch of a repository in deletion: %v", err)
		}
		list, err := s.ListRepositories(ctx, "", false, 0)
		must(t, err)
		if len(list) != 2 || list[0].ID != "a" || list[1].ID != "c" {
			t.Fatalf("list %+v, want a and c", list)
		}
		// The name is reusable: the create replaces the record and empties
		// the old instance's partition.
		newRepo(t, ctx, s, "b")
		nd, err := s.GetRepositoryData(ctx, "b")
		must(t, err)
		if nd.InstanceUid == old.InstanceUid {
			t.Fatal("instance uid reused")
		}
		if keys := partitionKeys(t, ctx, raw, RepoPartition("b", old.InstanceUid)); len(keys) != 0 {
			t.Fatalf("old partition left behind: %v", keys)
		}
		// And a delete of an IN_DELETION record completes.
		must(t, raw.Set(ctx, []byte("graveler"), []byte("repos/c"), v))
		must(t, s.DeleteRepository(ctx, "c"))
		if keys := partitionKeys(t, ctx, raw, []byte("graveler")); !slices.Equal(keys, []string{"repos/a", "repos/b"}) {
			t.Fatalf("records %v", keys)
		}
	})
}

func TestListings(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		for _, id := range []string{"r1", "r2", "r3", "r4"} {
			newRepo(t, ctx, s, id)
		}
		ids := func(rs []RepositoryRow) (out []string) {
			for _, r := range rs {
				out = append(out, r.ID)
			}
			return out
		}
		repoTests := []struct {
			from  string
			after bool
			limit int
			want  []string
		}{
			{"", false, 0, []string{"r1", "r2", "r3", "r4"}},
			{"r2", false, 2, []string{"r2", "r3"}},
			{"r2", true, 2, []string{"r3", "r4"}},
			{"r4", true, 0, nil},
			{"r25", false, 0, []string{"r3", "r4"}},
		}
		for _, tc := range repoTests {
			got, err := s.ListRepositories(ctx, tc.from, tc.after, tc.limit)
			must(t, err)
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("repos from %q after=%v limit %d: %v, want %v", tc.from, tc.after, tc.limit, ids(got), tc.want)
			}
		}

		c, err := s.GetBranch(ctx, "r1", "main")
		must(t, err)
		for _, b := range []string{"a", "b", "c"} {
			must(t, s.CreateBranch(ctx, BranchRow{RepositoryID: "r1", ID: b, StagingToken: sp("t" + b), CommitID: c.CommitID}))
			must(t, s.CreateTag(ctx, TagRow{RepositoryID: "r1", ID: b, CommitID: c.CommitID}))
		}
		bs, err := s.ListBranches(ctx, "r1", "b", true, 0)
		must(t, err)
		if len(bs) != 2 || bs[0].ID != "c" || bs[1].ID != "main" {
			t.Fatalf("branches %+v", bs)
		}
		ts, err := s.ListTags(ctx, "r1", "", false, 2)
		must(t, err)
		if len(ts) != 2 || ts[0].ID != "a" || ts[1].ID != "b" {
			t.Fatalf("tags %+v", ts)
		}
		if _, err := s.ListBranches(ctx, "nope", "", false, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("branches of a missing repository: %v", err)
		}

		// Commits by prefix: make two that share a first hex digit.
		first, err := s.GetCommit(ctx, "r1", *c.CommitID)
		must(t, err)
		var twin CommitRow
		for i := 0; ; i++ {
			twin = first
			twin.Message = fmt.Sprint("m", i)
			twin.ID, _ = CommitRowID(twin)
			if twin.ID[0] == first.ID[0] {
				break
			}
		}
		if _, err := s.AddCommit(ctx, twin); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetCommitByPrefix(ctx, "r1", first.ID[:1]); !errors.Is(err, ErrAmbiguous) || !errors.Is(err, ErrNotFound) {
			t.Fatalf("ambiguous prefix: %v", err)
		}
		got, err := s.GetCommitByPrefix(ctx, "r1", first.ID[:20])
		if err != nil || got.ID != first.ID {
			t.Fatalf("unique prefix: %v %v", got.ID, err)
		}
		if _, err := s.GetCommitByPrefix(ctx, "r1", "zz"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrAmbiguous) {
			t.Fatalf("no match: %v", err)
		}
		all, err := s.ListCommits(ctx, "r1", "", false, 0)
		must(t, err)
		if len(all) != 2 || all[0].ID > all[1].ID {
			t.Fatalf("commits %v", all)
		}

		for i := range 5 {
			must(t, s.SetStaged(ctx, StagingRow{StagingToken: "tok", Key: []byte{byte('a' + i)}, Identity: []byte{1}, Data: []byte{}}))
		}
		st, err := s.ListStaged(ctx, "tok", []byte("b"), 3)
		must(t, err)
		if len(st) != 3 || string(st[0].Key) != "b" || string(st[2].Key) != "d" {
			t.Fatalf("staged %+v", st)
		}
	})
}

func TestUpdateBranchRetries(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		newRepo(t, ctx, s, "r")
		calls := 0
		err := s.UpdateBranch(ctx, "r", "main", func(b *graveler.BranchData) (*graveler.BranchData, error) {
			calls++
			if calls == 1 {
				// A concurrent writer moves the branch under us.
				must(t, s.UpdateBranch(ctx, "r", "main", func(b *graveler.BranchData) (*graveler.BranchData, error) {
					b.SealedTokens = append([]string{b.StagingToken}, b.SealedTokens...)
					b.StagingToken = "other"
					return b, nil
				}))
			}
			b.CommitId = "moved"
			return b, nil
		})
		must(t, err)
		bd, pred, err := s.GetBranchData(ctx, "r", "main")
		must(t, err)
		if calls != 2 || bd.CommitId != "moved" || bd.StagingToken != "other" || len(bd.SealedTokens) != 1 {
			t.Fatalf("after %d calls: %v", calls, bd)
		}
		if want, _ := proto.Marshal(bd); len(pred) == 0 || !proto.Equal(bd, mustUnmarshalBranch(t, pred)) || len(want) != len(pred) {
			t.Fatalf("predicate %x does not hold the branch", pred)
		}

		s2, err := New(ctx, s.KV(), Options{BranchUpdateMaxTries: 3})
		must(t, err)
		calls = 0
		err = s2.UpdateBranch(ctx, "r", "main", func(b *graveler.BranchData) (*graveler.BranchData, error) {
			calls++
			must(t, s.SetBranch(ctx, BranchRow{RepositoryID: "r", ID: "main", StagingToken: sp(fmt.Sprint("t", calls)), CommitID: sp("c")}))
			b.CommitId = "never"
			return b, nil
		})
		if !errors.Is(err, ErrTooManyTries) || !errors.Is(err, ErrConflict) || calls != 3 {
			t.Fatalf("after %d calls: %v, want ErrTooManyTries", calls, err)
		}
	})
}

func mustUnmarshalBranch(t *testing.T, b []byte) *graveler.BranchData {
	var bd graveler.BranchData
	must(t, proto.Unmarshal(b, &bd))
	return &bd
}

func TestBadInputAndCorruptValues(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *Store, raw kv.Store) {
		ctx := testCtx(t)
		newRepo(t, ctx, s, "r")
		rd, err := s.GetRepositoryData(ctx, "r")
		must(t, err)
		must(t, raw.Set(ctx, RepoPartition("r", rd.InstanceUid), BranchKey("bad"), []byte{0xff, 0xff}))
		if _, err := s.GetBranch(ctx, "r", "bad"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("corrupt branch: %v, want ErrCorrupt", err)
		}
		if _, err := s.ListBranches(ctx, "r", "", false, 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("list over a corrupt branch: %v, want ErrCorrupt", err)
		}
		tests := []struct {
			name string
			err  error
		}{
			{"empty repository id", func() error { _, err := s.GetRepository(ctx, ""); return err }()},
			{"empty branch id", func() error { _, err := s.GetBranch(ctx, "r", ""); return err }()},
			{"empty staging token", func() error { _, err := s.ListStaged(ctx, "", nil, 0); return err }()},
			{"empty staged key", s.SetStaged(ctx, StagingRow{StagingToken: "t", Identity: []byte{1}})},
			{"update returning another branch", s.UpdateBranch(ctx, "r", "main", func(b *graveler.BranchData) (*graveler.BranchData, error) {
				return &graveler.BranchData{Id: "other"}, nil
			})},
		}
		for _, tc := range tests {
			if !errors.Is(tc.err, ErrInvalidRow) {
				t.Errorf("%s: %v, want ErrInvalidRow", tc.name, tc.err)
			}
		}
		tx := s.Begin()
		must(t, tx.Commit(ctx))
		if _, err := tx.GetRepository(ctx, "r"); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("read after commit: %v", err)
		}
		if err := tx.SetStaged(ctx, StagingRow{StagingToken: "t", Key: []byte("k")}); !errors.Is(err, ErrTxnDone) {
			t.Fatalf("write after commit: %v", err)
		}
	})
}
