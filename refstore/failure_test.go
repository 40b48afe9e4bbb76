package refstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

var errInjected = errors.New("injected write failure")

// faulty fails the Nth write (Set, SetIf, Delete or Batch) it sees, either
// before applying it or after (a lost acknowledgement).
type faulty struct {
	kv.Store
	mu     sync.Mutex
	writes int
	failAt int // 0: never
	after  bool
}

func (f *faulty) arm(n int, after bool) {
	f.mu.Lock()
	f.writes, f.failAt, f.after = 0, n, after
	f.mu.Unlock()
}

func (f *faulty) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// write runs apply unless this is the write to fail.
func (f *faulty) write(apply func() error) error {
	f.mu.Lock()
	f.writes++
	fail, after := f.failAt > 0 && f.writes == f.failAt, f.after
	f.mu.Unlock()
	if !fail {
		return apply()
	}
	if after {
		if err := apply(); err != nil {
			return err
		}
	}
	return errInjected
}

func (f *faulty) Set(ctx context.Context, pk, key, value []byte) error {
	return f.write(func() error { return f.Store.Set(ctx, pk, key, value) })
}

func (f *faulty) SetIf(ctx context.Context, pk, key, value []byte, pred kv.Predicate) error {
	return f.write(func() error { return f.Store.SetIf(ctx, pk, key, value, pred) })
}

func (f *faulty) Delete(ctx context.Context, pk, key []byte) error {
	return f.write(func() error { return f.Store.Delete(ctx, pk, key) })
}

// faultyBatcher also offers the driver's atomic batches; maxOps > 0 makes
// larger batches ErrBatchTooLarge, as a backend limit would.
type faultyBatcher struct {
	*faulty
	maxOps int
}

func (f faultyBatcher) Batch(ctx context.Context, ops []kv.Op) error {
	if f.maxOps > 0 && len(ops) > f.maxOps || !batchesSupported(ctx, f.Store) {
		return kv.ErrBatchTooLarge // rejected before anything is written
	}
	return f.write(func() error { return f.Store.(kv.Batcher).Batch(ctx, ops) })
}

// batchesSupported tells whether the driver takes atomic batches at all
// (dynalite, for one, has no TransactWriteItems, and the dynamodb driver
// then answers ErrBatchTooLarge), so that a rejected batch is not counted
// as a write.
func batchesSupported(ctx context.Context, s kv.Store) bool {
	b, ok := s.(kv.Batcher)
	if !ok {
		return false
	}
	// Two keys: a driver may serve a one-key batch without a transaction.
	err := b.Batch(ctx, []kv.Op{
		{Kind: kv.OpCheck, PartitionKey: []byte("_refstore_probe"), Key: []byte("absent1")},
		{Kind: kv.OpCheck, PartitionKey: []byte("_refstore_probe"), Key: []byte("absent2")},
	})
	return !errors.Is(err, kv.ErrBatchTooLarge)
}

var faultModes = []struct {
	name string
	wrap func(*faulty) kv.Store
}{
	{"ordered", func(f *faulty) kv.Store { return f }},
	{"atomic", func(f *faulty) kv.Store { return faultyBatcher{faulty: f} }},
	{"batch-too-large", func(f *faulty) kv.Store { return faultyBatcher{faulty: f, maxOps: 2} }},
}

// checkWhole asserts that repository id is either wholly visible (record,
// every branch, tag and commit of want) or wholly gone, through every read
// path; it returns whether it is visible.
func checkWhole(t *testing.T, ctx context.Context, s *Store, id string, want repoContent) bool {
	t.Helper()
	_, err := s.GetRepository(ctx, id)
	visible := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatalf("get repository %s: %v", id, err)
	}
	list, err := s.ListRepositories(ctx, id, false, 1)
	must(t, err)
	if listed := len(list) == 1 && list[0].ID == id; listed != visible {
		t.Fatalf("repository %s: get says visible=%v, list says %v", id, visible, listed)
	}
	for _, b := range want.branches {
		_, err := s.GetBranch(ctx, id, b)
		if visible && err != nil {
			t.Fatalf("repository %s visible without branch %s: %v", id, b, err)
		}
		if !visible && !errors.Is(err, ErrNotFound) {
			t.Fatalf("branch %s of invisible repository %s: %v", b, id, err)
		}
	}
	if !visible {
		return false
	}
	for _, tag := range want.tags {
		if _, err := s.GetTag(ctx, id, tag); err != nil {
			t.Fatalf("repository %s visible without tag %s: %v", id, tag, err)
		}
	}
	for _, c := range want.commits {
		if _, err := s.GetCommit(ctx, id, c); err != nil {
			t.Fatalf("repository %s visible without commit %s: %v", id, c, err)
		}
	}
	bs, err := s.ListBranches(ctx, id, "", false, 0)
	must(t, err)
	if len(bs) != len(want.branches) {
		t.Fatalf("repository %s lists %d branches, want %d", id, len(bs), len(want.branches))
	}
	return true
}

type repoContent struct {
	branches, tags, commits []string
}

// fillRepo gives a repository a few of everything, so that a delete has
// many steps.
func fillRepo(t *testing.T, ctx context.Context, s *Store, id string) repoContent {
	c := newRepo(t, ctx, s, id)
	rc := repoContent{branches: []string{"main"}, commits: []string{c.ID}}
	for i := range 2 {
		b := fmt.Sprint("b", i)
		must(t, s.CreateBranch(ctx, BranchRow{RepositoryID: id, ID: b, StagingToken: sp(id + b), CommitID: sp(c.ID)}))
		rc.branches = append(rc.branches, b)
		must(t, s.CreateTag(ctx, TagRow{RepositoryID: id, ID: b, CommitID: sp(c.ID)}))
		rc.tags = append(rc.tags, b)
		next := c
		next.Message, next.Parents, next.Generation = b, []string{c.ID}, ip(2)
		next.ID, _ = CommitRowID(next)
		_, err := s.AddCommit(ctx, next)
		must(t, err)
		rc.commits = append(rc.commits, next.ID)
	}
	slices.Sort(rc.branches)
	return rc
}

func TestFailureInjectionCreateAndDeleteRepository(t *testing.T) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			for _, m := range faultModes {
				t.Run(m.name, func(t *testing.T) {
					ctx := testCtx(t)
					f := &faulty{Store: d.New(t)}
					s, err := New(ctx, m.wrap(f), Options{})
					must(t, err)
					for _, after := range []bool{false, true} {
						testCreateFailures(t, ctx, s, f, after)
						testDeleteFailures(t, ctx, s, f, after)
					}
				})
			}
		})
	}
}

func testCreateFailures(t *testing.T, ctx context.Context, s *Store, f *faulty, after bool) {
	f.arm(0, false)
	newRepo(t, ctx, s, fmt.Sprintf("dry-create-%v", after))
	steps := f.count()
	if steps == 0 {
		t.Fatal("create wrote nothing")
	}
	want := repoContent{branches: []string{"main"}}
	for n := 1; n <= steps; n++ {
		id := fmt.Sprintf("create-%v-%d", after, n)
		repo, branch, commit := repoRows(id)
		want.commits = []string{commit.ID}
		f.arm(n, after)
		if err := s.CreateRepository(ctx, repo, &branch, &commit); !errors.Is(err, errInjected) {
			t.Fatalf("create failing at write %d/%d (after=%v): %v", n, steps, after, err)
		}
		f.arm(0, false)
		checkWhole(t, ctx, s, id, want)
		err := s.CreateRepository(ctx, repo, &branch, &commit)
		if err != nil && !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("retry of create failed at write %d: %v", n, err)
		}
		if !checkWhole(t, ctx, s, id, want) {
			t.Fatalf("repository %s not there after the retry", id)
		}
	}
}

func testDeleteFailures(t *testing.T, ctx context.Context, s *Store, f *faulty, after bool) {
	f.arm(0, false)
	dry := fmt.Sprintf("dry-delete-%v", after)
	fillRepo(t, ctx, s, dry)
	f.arm(0, false)
	must(t, s.DeleteRepository(ctx, dry))
	steps := f.count()
	for n := 1; n <= steps; n++ {
		id := fmt.Sprintf("delete-%v-%d", after, n)
		f.arm(0, false)
		want := fillRepo(t, ctx, s, id)
		rd, err := s.GetRepositoryData(ctx, id)
		must(t, err)
		f.arm(n, after)
		if err := s.DeleteRepository(ctx, id); !errors.Is(err, errInjected) {
			t.Fatalf("delete failing at write %d/%d (after=%v): %v", n, steps, after, err)
		}
		f.arm(0, false)
		checkWhole(t, ctx, s, id, want)
		if err := s.DeleteRepository(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("retry of delete failed at write %d: %v", n, err)
		}
		if checkWhole(t, ctx, s, id, want) {
			t.Fatalf("repository %s still there after the retried delete", id)
		}
		if keys := partitionKeys(t, ctx, s.KV(), RepoPartition(id, rd.InstanceUid)); len(keys) != 0 {
			t.Fatalf("delete failed at write %d then retried left %v", n, keys)
		}
		// The name can be reused.
		newRepo(t, ctx, s, id)
		checkWhole(t, ctx, s, id, repoContent{branches: []string{"main"}})
	}
}
