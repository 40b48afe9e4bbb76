package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

// dualWriter changes PostgreSQL and then mirrors each change into KV
// through refstore, as the dual-write router will. Mirror failures go to
// the dirty-key log, as the router's will.
type dualWriter struct {
	pool    *pgxpool.Pool
	rs      *refstore.Store
	dirty   *dirtyLog
	rnd     *rand.Rand
	commits map[string][]string // repo -> commit ids
	tokens  map[string][]string // repo -> staging tokens of generated branches
	repos   []string
	ops     int
}

func newDualWriter(t *testing.T, ctx context.Context, pool *pgxpool.Pool, rs *refstore.Store, dirty *dirtyLog) *dualWriter {
	w := &dualWriter{pool: pool, rs: rs, dirty: dirty, rnd: rand.New(rand.NewPCG(1, 2)), commits: map[string][]string{}, tokens: map[string][]string{}}
	rows, err := pool.Query(ctx, `SELECT repository_id, id FROM graveler_commits ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r, id string
		if err := rows.Scan(&r, &id); err != nil {
			t.Fatal(err)
		}
		if len(w.commits[r]) == 0 {
			w.repos = append(w.repos, r)
		}
		w.commits[r] = append(w.commits[r], id)
	}
	rows.Close()
	rows, err = pool.Query(ctx, `SELECT repository_id, staging_token FROM graveler_branches ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r, tok string
		if err := rows.Scan(&r, &tok); err != nil {
			t.Fatal(err)
		}
		w.tokens[r] = append(w.tokens[r], tok)
	}
	rows.Close()
	return w
}

// step performs one random change: PostgreSQL first, then KV.
func (w *dualWriter) step(ctx context.Context) error {
	w.ops++
	repo := w.repos[w.rnd.IntN(len(w.repos))]
	commit := w.commits[repo][w.rnd.IntN(len(w.commits[repo]))]
	n := w.rnd.IntN(6)
	var key Key
	var mirror func() error
	switch w.rnd.IntN(7) {
	case 0: // B3 upsert
		id, tok := fmt.Sprintf("w-%d", n), fmt.Sprintf("%s-w-%d:tok", repo, n)
		if _, err := w.pool.Exec(ctx, `INSERT INTO graveler_branches VALUES ($1, $2, $3, $4)
			ON CONFLICT (repository_id, id) DO UPDATE SET staging_token = $3, commit_id = $4`, repo, id, tok, commit); err != nil {
			return err
		}
		key = Key{Entity: EntityBranches, Repository: repo, ID: id}
		mirror = func() error {
			return w.rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: repo, ID: id, StagingToken: strp(tok), CommitID: strp(commit)})
		}
	case 1: // B4
		id := fmt.Sprintf("w-%d", n)
		if _, err := w.pool.Exec(ctx, `DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2`, repo, id); err != nil {
			return err
		}
		key = Key{Entity: EntityBranches, Repository: repo, ID: id}
		mirror = func() error { return w.rs.DeleteBranch(ctx, repo, id) }
	case 2: // T2
		id := fmt.Sprintf("wt-%d", n)
		tag, err := w.pool.Exec(ctx, `INSERT INTO graveler_tags VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, repo, id, commit)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		key = Key{Entity: EntityTags, Repository: repo, ID: id}
		mirror = func() error {
			return w.rs.CreateTag(ctx, refstore.TagRow{RepositoryID: repo, ID: id, CommitID: strp(commit)})
		}
	case 3: // T3
		id := fmt.Sprintf("wt-%d", n)
		if _, err := w.pool.Exec(ctx, `DELETE FROM graveler_tags WHERE repository_id = $1 AND id = $2`, repo, id); err != nil {
			return err
		}
		key = Key{Entity: EntityTags, Repository: repo, ID: id}
		mirror = func() error { return w.rs.DeleteTag(ctx, repo, id) }
	case 4: // S3 upsert, tombstones included
		tok := w.tokens[repo][w.rnd.IntN(len(w.tokens[repo]))]
		k := []byte(fmt.Sprintf("w/ключ-%d", n))
		var identity []byte
		if w.rnd.IntN(3) > 0 {
			identity = fmt.Appendf(nil, "id-%d", w.rnd.IntN(1000))
		}
		data := fmt.Appendf(nil, "data-%d", w.rnd.IntN(1000))
		if _, err := w.pool.Exec(ctx, `INSERT INTO graveler_staging_kv VALUES ($1, $2, $3, $4)
			ON CONFLICT (staging_token, key) DO UPDATE SET identity = $3, data = $4`, tok, k, identity, data); err != nil {
			return err
		}
		key = Key{Entity: EntityStaging, ID: tok, StagingKey: k}
		mirror = func() error {
			return w.rs.SetStaged(ctx, refstore.StagingRow{StagingToken: tok, Key: k, Identity: identity, Data: data})
		}
	case 5: // S4
		tok := w.tokens[repo][w.rnd.IntN(len(w.tokens[repo]))]
		k := []byte(fmt.Sprintf("w/ключ-%d", n))
		if _, err := w.pool.Exec(ctx, `DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key = $2`, tok, k); err != nil {
			return err
		}
		key = Key{Entity: EntityStaging, ID: tok, StagingKey: k}
		mirror = func() error { _, err := w.rs.DropStagedKey(ctx, tok, k); return err }
	default: // C3
		gen := int32(1000 + w.ops)
		c := refstore.CommitRow{RepositoryID: repo, Committer: "writer", Message: fmt.Sprintf("w %d", w.ops),
			CreationDate: time.Now().UTC().Truncate(time.Microsecond), MetaRangeID: "mr", Metadata: []byte(`{"w": "1"}`),
			Parents: []string{commit}, Version: 1, Generation: &gen}
		id, err := refstore.CommitRowID(c)
		if err != nil {
			return err
		}
		c.ID = id
		if _, err := w.pool.Exec(ctx, `INSERT INTO graveler_commits VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) ON CONFLICT DO NOTHING`,
			repo, c.ID, c.Committer, c.Message, c.CreationDate, c.MetaRangeID, string(c.Metadata), c.Parents, c.Version, c.Generation); err != nil {
			return err
		}
		w.commits[repo] = append(w.commits[repo], id)
		key = Key{Entity: EntityCommits, Repository: repo, ID: id}
		mirror = func() error { _, err := w.rs.AddCommit(ctx, c); return err }
	}
	if err := ignoreNotFound(mirror()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.dirty.add(key)
	}
	return nil
}

// TestBackfillWithConcurrentDualWritesVerifiesClean is the issue's main
// scenario on every driver: backfill a generated database while a writer
// changes it with simulated dual writes; verify then finds no difference.
func TestBackfillWithConcurrentDualWritesVerifiesClean(t *testing.T) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			ctx := testCtx(t, 5*time.Minute)
			pool, st := legacyPool(t, ctx, legacygen.Config{Repos: 4, CommitsPerRepo: 60, BranchesPerRepo: 10, TagsPerRepo: 4, StagedPerBranch: 20, OrphanTokens: 2, Seed: 3})
			s := d.New(t)
			rs := newRefStore(t, ctx, s)
			dirty := &dirtyLog{}
			w := newDualWriter(t, ctx, pool, rs, dirty)

			// The writer stops between changes, never between the two
			// halves of one, as the router completes a mirror write before
			// acknowledging.
			var stopping atomic.Bool
			stop := func() { stopping.Store(true) }
			var wg sync.WaitGroup
			var werr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stopping.Load() {
					if err := w.step(ctx); err != nil {
						werr = err
						return
					}
				}
			}()
			reg := prometheus.NewRegistry()
			m := metrics.New(reg)
			res := backfill(t, ctx, pool, s, func(o *BackfillOptions) {
				o.MaxRowsPerSecond = 2000
				o.Metrics = m
			})
			stop()
			wg.Wait()
			if werr != nil {
				t.Fatalf("writer: %v", werr)
			}
			if w.ops < 20 {
				t.Fatalf("the writer made only %d changes during the backfill; the race was not exercised", w.ops)
			}
			if !res.Status.Complete() {
				t.Fatal("status not complete")
			}
			if got := res.Status.Copied.Sum() + res.Status.Present.Sum(); got < st.Rows()-st.OrphanRows {
				t.Errorf("copied+present = %d, want >= %d generated rows", got, st.Rows()-st.OrphanRows)
			}
			if got := testutil.ToFloat64(m.BackfillRowsCopied.WithLabelValues(EntityStaging)); got != float64(res.Copied[EntityStaging]) {
				t.Errorf("metric copied{staging} = %v, want %d", got, res.Copied[EntityStaging])
			}
			if got := testutil.ToFloat64(m.BackfillRowsTotal.WithLabelValues(EntityCommits)); got < float64(st.Commits) {
				t.Errorf("metric rows_total{commits} = %v, want >= %d", got, st.Commits)
			}
			if res.Status.Orphans.Tokens != 2 || res.Status.Orphans.Rows != 40 {
				t.Errorf("orphans = %+v, want 2 tokens, 40 rows", res.Status.Orphans)
			}
			t.Logf("writer ops %d, dirty %d, copied %v present %v reverted %v", w.ops, len(dirty.keys), res.Copied, res.Present, res.Reverted)
			if len(dirty.keys) > 0 {
				// What the router would do before cutover.
				inc := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.Incremental, o.Dirty, o.Repair = true, dirty, true })
				if !inc.Clean() {
					t.Fatalf("incremental repair not clean: %+v", inc)
				}
			}
			rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.IncludeOrphans = false; o.Metrics = m })
			if n := sumDiff(rep); n != 0 {
				for e, r := range rep.Entities {
					t.Errorf("%s: %+v", e, *r)
				}
				t.Fatalf("verify found %d differences", n)
			}
			if rep.Entities[EntityCommits].Match < int64(st.Commits) || rep.Entities[EntityStaging].Match < st.Staged-int64(6*len(w.repos)*10) {
				t.Errorf("verify matched too little: %+v %+v", *rep.Entities[EntityCommits], *rep.Entities[EntityStaging])
			}
			if got := testutil.ToFloat64(m.VerifyResults.WithLabelValues(EntityCommits, ResultMatch)); got != float64(rep.Entities[EntityCommits].Match) {
				t.Errorf("metric verify{commits,match} = %v", got)
			}
			if err := CutoverReady(ctx, s); err != nil {
				t.Errorf("CutoverReady: %v", err)
			}
			// Idempotent: a second run copies nothing.
			again := backfill(t, ctx, pool, s, nil)
			if again.Copied.Sum() != 0 || again.Resumed {
				t.Errorf("second backfill copied %v (resumed %v), want nothing", again.Copied, again.Resumed)
			}
		})
	}
}

// TestBackfillRaces drives each order of a dual write against the copy of
// one branch and checks the final KV value.
func TestBackfillRaces(t *testing.T) {
	const repo, branch = "repo-0000", "feature-ü-0001"
	type env struct {
		pool *pgxpool.Pool
		rs   *refstore.Store
	}
	newCommit := "ffff000000000000000000000000000000000000000000000000000000000000"
	pgDelete := func(ctx context.Context, e env) error {
		_, err := e.pool.Exec(ctx, `DELETE FROM graveler_branches WHERE repository_id = $1 AND id = $2`, repo, branch)
		return err
	}
	kvDelete := func(ctx context.Context, e env) error { return ignoreNotFound(e.rs.DeleteBranch(ctx, repo, branch)) }
	kvUpdate := func(ctx context.Context, e env) error {
		return e.rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: repo, ID: branch, StagingToken: strp("tok-new"), CommitID: strp(newCommit)})
	}
	pgUpdateTok := func(ctx context.Context, e env) error {
		_, err := e.pool.Exec(ctx, `UPDATE graveler_branches SET commit_id = $3, staging_token = 'tok-new' WHERE repository_id = $1 AND id = $2`, repo, branch, newCommit)
		return err
	}
	cases := []struct {
		name string
		// during runs at point of the page holding the branch; after runs
		// when the backfill is done (a mirror write that came late).
		point        string
		during       []func(context.Context, env) error
		after        []func(context.Context, env) error
		wantAbsent   bool
		wantCommit   string
		wantReverted int64
	}{
		{"dual write lands before the copy", "before-write", []func(context.Context, env) error{pgUpdateTok, kvUpdate}, nil, false, newCommit, 0},
		{"dual write lands after the copy, before the re-check", "after-write", []func(context.Context, env) error{pgUpdateTok, kvUpdate}, nil, false, newCommit, 0},
		{"update committed after the copy, mirrored after the backfill", "after-write", []func(context.Context, env) error{pgUpdateTok}, []func(context.Context, env) error{kvUpdate}, false, newCommit, 1},
		{"delete between read and copy (resurrection)", "before-write", []func(context.Context, env) error{pgDelete, kvDelete}, nil, true, "", 1},
		{"delete after the copy, mirrored before the re-check", "after-write", []func(context.Context, env) error{pgDelete, kvDelete}, nil, true, "", 0},
		{"delete after the copy, mirrored after the backfill", "after-write", []func(context.Context, env) error{pgDelete}, []func(context.Context, env) error{kvDelete}, true, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, pool, s := smallEnv(t)
			e := env{pool: pool, rs: newRefStore(t, ctx, s)}
			fired := false
			res := backfill(t, ctx, pool, s, func(o *BackfillOptions) {
				o.Hook = func(ctx context.Context, point, entity string, keys []Key) {
					if fired || point != tc.point || entity != EntityBranches {
						return
					}
					for _, k := range keys {
						if k.Repository == repo && k.ID == branch {
							fired = true
							for _, f := range tc.during {
								if err := f(ctx, e); err != nil {
									t.Fatal(err)
								}
							}
						}
					}
				}
			})
			if !fired {
				t.Fatal("the hook never saw the branch")
			}
			for _, f := range tc.after {
				if err := f(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			got, err := e.rs.GetBranch(ctx, repo, branch)
			switch {
			case tc.wantAbsent && !errors.Is(err, refstore.ErrNotFound):
				t.Fatalf("branch in KV = %+v, %v; want absent (resurrected)", got, err)
			case !tc.wantAbsent && err != nil:
				t.Fatalf("branch in KV: %v", err)
			case !tc.wantAbsent && *got.CommitID != tc.wantCommit:
				t.Fatalf("branch commit in KV = %s, want %s (a newer dual write was overwritten)", *got.CommitID, tc.wantCommit)
			}
			if res.Reverted[EntityBranches] != tc.wantReverted {
				t.Errorf("reverted = %d, want %d", res.Reverted[EntityBranches], tc.wantReverted)
			}
			if rep := verify(t, ctx, pool, s, nil); sumDiff(rep) != 0 {
				t.Errorf("verify after the race: %d differences:\n%s", sumDiff(rep), rep)
			}
		})
	}
}

// TestVerifyNamesAndRepairsCorruption corrupts one KV entry at a time.
func TestVerifyNamesAndRepairsCorruption(t *testing.T) {
	const repo = "repo-0001"
	type corruption struct {
		name   string
		entity string
		result string
		key    func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key
	}
	uidOf := func(ctx context.Context, t *testing.T, rs *refstore.Store) string {
		rd, err := rs.GetRepositoryData(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		return rd.GetInstanceUid()
	}
	firstCommit := func(ctx context.Context, t *testing.T, rs *refstore.Store) refstore.CommitRow {
		cs, err := rs.ListCommits(ctx, repo, "", false, 1)
		if err != nil || len(cs) == 0 {
			t.Fatalf("list commits: %v", err)
		}
		return cs[0]
	}
	cases := []corruption{
		{"changed branch value", EntityBranches, ResultMismatch, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			if err := rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: repo, ID: "main", StagingToken: strp("other"), CommitID: strp("abc")}); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityBranches, Repository: repo, ID: "main"}
		}},
		{"changed commit message (id no longer the content hash)", EntityCommits, ResultMismatch, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			c := firstCommit(ctx, t, rs)
			cd, err := refstore.CommitToProto(c)
			if err != nil {
				t.Fatal(err)
			}
			cd.Message += "!"
			v, _ := marshal.Marshal(cd)
			if err := s.Set(ctx, refstore.RepoPartition(repo, uidOf(ctx, t, rs)), refstore.CommitKey(c.ID), v); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityCommits, Repository: repo, ID: c.ID}
		}},
		{"missing commit", EntityCommits, ResultMissingInKV, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			c := firstCommit(ctx, t, rs)
			if err := s.Delete(ctx, refstore.RepoPartition(repo, uidOf(ctx, t, rs)), refstore.CommitKey(c.ID)); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityCommits, Repository: repo, ID: c.ID}
		}},
		{"extra tag", EntityTags, ResultExtraInKV, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			if err := rs.CreateTag(ctx, refstore.TagRow{RepositoryID: repo, ID: "extra-ü", CommitID: strp("abc")}); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityTags, Repository: repo, ID: "extra-ü"}
		}},
		{"changed staged entry (tombstone)", EntityStaging, ResultMismatch, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			b, err := rs.GetBranch(ctx, repo, "main")
			if err != nil {
				t.Fatal(err)
			}
			rows, err := rs.ListStaged(ctx, *b.StagingToken, nil, 1)
			if err != nil || len(rows) == 0 {
				t.Fatalf("list staged: %v", err)
			}
			r := rows[0]
			r.Identity, r.Data = nil, nil
			if err := rs.SetStaged(ctx, r); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityStaging, ID: r.StagingToken, StagingKey: r.Key}
		}},
		{"wrong instance uid", EntityRepositories, ResultMismatch, func(ctx context.Context, t *testing.T, s kv.Store, rs *refstore.Store) Key {
			rd, err := rs.GetRepositoryData(ctx, repo)
			if err != nil {
				t.Fatal(err)
			}
			rd.InstanceUid = "cv0000000000000000zz"
			v, _ := marshal.Marshal(rd)
			if err := s.Set(ctx, []byte(refstore.GravelerPartition), refstore.RepoKey(repo), v); err != nil {
				t.Fatal(err)
			}
			return Key{Entity: EntityRepositories, ID: repo}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 3*time.Minute)
			pool, _ := legacyPool(t, ctx, smallData)
			s := kvtest.NewLocal(t, 7)
			rs := newRefStore(t, ctx, s)
			backfill(t, ctx, pool, s, nil)
			if rep := verify(t, ctx, pool, s, nil); sumDiff(rep) != 0 {
				t.Fatalf("clean copy has %d differences:\n%s", sumDiff(rep), rep)
			}
			want := tc.key(ctx, t, s, rs)
			rep := verify(t, ctx, pool, s, nil)
			e := rep.Entities[tc.entity]
			found := false
			for _, smp := range e.Samples {
				if smp.Result == tc.result && smp.Key.String() == want.String() {
					found = true
				}
			}
			if !found {
				t.Fatalf("verify did not name %s as %s; %s: %+v", want, tc.result, tc.entity, *e)
			}
			if rep.Clean() {
				t.Fatal("a corrupted store verified clean")
			}
			if err := CutoverReady(ctx, s); !errors.Is(err, ErrNotReady) {
				t.Errorf("CutoverReady after a dirty verify = %v, want ErrNotReady", err)
			}
			fixed := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.Repair = true })
			if fixed.RepairFailed != 0 || fixed.Repaired == 0 || !fixed.Clean() {
				t.Fatalf("repair: repaired %d failed %d, entities %+v", fixed.Repaired, fixed.RepairFailed, fixed.Entities[tc.entity])
			}
			if again := verify(t, ctx, pool, s, nil); sumDiff(again) != 0 {
				t.Fatalf("after repair still %d differences: %+v", sumDiff(again), again.Entities[tc.entity])
			}
		})
	}
}

// TestVerifyIncremental checks only dirty keys, and repairs them.
func TestVerifyIncremental(t *testing.T) {
	ctx, pool, s := smallEnv(t)
	rs := newRefStore(t, ctx, s)
	backfill(t, ctx, pool, s, nil)
	bad := Key{Entity: EntityBranches, Repository: "repo-0000", ID: "main"}
	if err := rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: bad.Repository, ID: bad.ID, StagingToken: strp("x"), CommitID: strp("y")}); err != nil {
		t.Fatal(err)
	}
	good := Key{Entity: EntityTags, Repository: "repo-0000", ID: "v0.0"}
	gone := Key{Entity: EntityTags, Repository: "repo-0000", ID: "never-existed"}
	dirty := &dirtyLog{keys: []Key{bad, good, gone, bad}}
	rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.Incremental, o.Dirty = true, dirty })
	if e := rep.Entities[EntityBranches]; e.Mismatch != 1 || e.Samples[0].Key.String() != bad.String() {
		t.Fatalf("branches: %+v", e)
	}
	if e := rep.Entities[EntityTags]; e.Match != 2 || e.Differences() != 0 {
		t.Fatalf("tags: %+v", e)
	}
	if _, err := LastVerify(ctx, s); !errors.Is(err, ErrNoRecord) {
		t.Errorf("an incremental verify replaced verify/last: %v", err)
	}
	rep = verify(t, ctx, pool, s, func(o *VerifyOptions) { o.Incremental, o.Dirty, o.Repair = true, dirty, true })
	if rep.Repaired != 1 || !rep.Clean() {
		t.Fatalf("repair: %+v", rep)
	}
	if b, err := rs.GetBranch(ctx, bad.Repository, bad.ID); err != nil || *b.StagingToken == "x" {
		t.Fatalf("branch after repair: %+v %v", b, err)
	}
	if _, err := NewVerifier(VerifyOptions{Source: pool, KV: s, Incremental: true}); err == nil {
		t.Error("incremental without a log was accepted")
	}
}

// TestRepairKVToSQL repairs PostgreSQL from KV (the kv-primary direction).
func TestRepairKVToSQL(t *testing.T) {
	ctx, pool, s := smallEnv(t)
	backfill(t, ctx, pool, s, nil)
	if _, err := pool.Exec(ctx, `DELETE FROM graveler_tags WHERE repository_id = 'repo-0002' AND id = 'v0.1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE graveler_commits SET metadata = '{"x": "y"}' WHERE repository_id = 'repo-0002' AND metadata IS NULL`); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.Repair, o.Direction = true, KVToSQL })
	if rep.Entities[EntityTags].ExtraInKV != 1 || rep.Entities[EntityCommits].Mismatch == 0 || !rep.Clean() {
		t.Fatalf("report: tags %+v commits %+v repaired %d failed %d", *rep.Entities[EntityTags], *rep.Entities[EntityCommits], rep.Repaired, rep.RepairFailed)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM graveler_tags WHERE repository_id = 'repo-0002' AND id = 'v0.1'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tag back in PostgreSQL: %d %v", n, err)
	}
	if again := verify(t, ctx, pool, s, nil); sumDiff(again) != 0 {
		t.Fatalf("after repair: %+v", again.Entities)
	}
}

// TestBackfillResumesAfterInterruption stops a run after some pages and
// resumes it: same final content, at most one page redone.
func TestBackfillResumesAfterInterruption(t *testing.T) {
	const page = 25
	ctx := testCtx(t, 3*time.Minute)
	pool, st := legacyPool(t, ctx, smallData)
	s := kvtest.NewLocal(t, 0)
	cctx, cancel := context.WithCancel(ctx)
	writes := 0
	b, err := NewBackfill(BackfillOptions{Source: pool, KV: s, PageSize: page, IncludeOrphans: true, Hook: func(_ context.Context, point, _ string, _ []Key) {
		if point == "after-write" {
			writes++
			if writes == 9 {
				cancel() // like a crash after the write, before the checkpoint
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.Run(cctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	var cp Checkpoint
	if err := getRecord(ctx, s, KeyBackfillCheckpoint, &cp); err != nil {
		t.Fatalf("no checkpoint after an interrupted run: %v", err)
	}
	if st, err := BackfillStatus(ctx, s); err != nil || st.Complete() {
		t.Fatalf("status after an interrupted run: %+v %v", st, err)
	}
	if err := CutoverReady(ctx, s); !errors.Is(err, ErrNotReady) {
		t.Errorf("CutoverReady during a backfill = %v", err)
	}
	second := backfill(t, ctx, pool, s, func(o *BackfillOptions) { o.PageSize, o.IncludeOrphans = page, true })
	if !second.Resumed {
		t.Error("second run did not resume")
	}
	if got := second.Present.Sum(); got > page || got == 0 {
		t.Errorf("resumed run redid %d rows, want 1..%d (one page)", got, page)
	}
	if got, want := first.Copied.Sum()+second.Copied.Sum()+second.Present.Sum(), st.Rows(); got != want {
		t.Errorf("rows handled over both runs = %d, want %d (first %v, second %v/%v)", got, want, first.Copied, second.Copied, second.Present)
	}
	// The page written when the first run died is counted as present by
	// the second.
	if got := second.Status.Copied.Sum() + second.Status.Present.Sum(); got != st.Rows() {
		t.Errorf("status copied+present = %d, want %d", got, st.Rows())
	}
	if rep := verify(t, ctx, pool, s, nil); sumDiff(rep) != 0 {
		t.Fatalf("verify after resume: %+v", rep.Entities)
	}
}

// TestVerifyResumes stops a verify after the first repository and resumes.
func TestVerifyResumes(t *testing.T) {
	ctx, pool, s := smallEnv(t)
	rs := newRefStore(t, ctx, s)
	backfill(t, ctx, pool, s, nil)
	if err := rs.DeleteTag(ctx, "repo-0002", "v0.0"); err != nil {
		t.Fatal(err)
	}
	full := verify(t, ctx, pool, s, nil)
	cctx, cancel := context.WithCancel(ctx)
	v, err := NewVerifier(VerifyOptions{Source: pool, KV: s, PageSize: 17, IncludeOrphans: true, AfterRepository: func(repo string) {
		if repo == "repo-0000" {
			cancel()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Run(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted verify: %v", err)
	}
	resumed := verify(t, ctx, pool, s, nil)
	if resumed.Runs != 2 {
		t.Errorf("runs = %d, want 2", resumed.Runs)
	}
	for _, e := range Entities() {
		a, b := full.Entities[e], resumed.Entities[e]
		if a.Match != b.Match || a.Differences() != b.Differences() {
			t.Errorf("%s: uninterrupted %+v, resumed %+v", e, *a, *b)
		}
	}
	if resumed.Entities[EntityTags].MissingInKV != 1 {
		t.Errorf("tags: %+v", *resumed.Entities[EntityTags])
	}
}

func TestBackfillSkipsInvalidRowsAndReportsThem(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, _ := legacyPool(t, ctx, smallData)
	if _, err := pool.Exec(ctx, `UPDATE graveler_commits SET generation = NULL WHERE id = (SELECT min(id) FROM graveler_commits WHERE repository_id = 'repo-0000')`); err != nil {
		t.Fatal(err)
	}
	s := mem.New()
	t.Cleanup(s.Close)
	res := backfill(t, ctx, pool, s, nil)
	if len(res.Status.Invalid) != 1 || !strings.Contains(res.Status.Invalid[0].Reason, "generation") {
		t.Fatalf("invalid = %+v", res.Status.Invalid)
	}
	rep := verify(t, ctx, pool, s, nil)
	if rep.Entities[EntityCommits].MissingInKV != 1 {
		t.Fatalf("commits: %+v", *rep.Entities[EntityCommits])
	}
}

func TestBadOptions(t *testing.T) {
	cases := []struct {
		name string
		err  func() error
	}{
		{"backfill without source", func() error { _, err := NewBackfill(BackfillOptions{KV: mem.New()}); return err }},
		{"backfill negative rate", func() error {
			_, err := NewBackfill(BackfillOptions{KV: mem.New(), Source: &pgxpool.Pool{}, MaxRowsPerSecond: -1})
			return err
		}},
		{"verify without KV", func() error { _, err := NewVerifier(VerifyOptions{Source: &pgxpool.Pool{}}); return err }},
		{"bad direction", func() error { _, err := ParseDirection("sideways"); return err }},
		{"bad key", func() error { return Key{Entity: "x", ID: "y"}.check() }},
		{"staging key without object key", func() error { return Key{Entity: EntityStaging, ID: "t"}.check() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err() == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestProgressAndThrottle(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress("backfill", &buf, true, nil, 0)
	p.Done("staging", 50, 100)
	if out := buf.String(); !strings.Contains(out, "50/100 rows") || !strings.Contains(out, "rows/s") || !strings.Contains(out, "ETA") {
		t.Errorf("bar = %q", out)
	}
	var logs bytes.Buffer
	p = NewProgress("verify", nil, false, slogText(&logs), time.Nanosecond)
	time.Sleep(time.Millisecond)
	p.Update("commits", 10, 20)
	if out := logs.String(); !strings.Contains(out, "verify progress") || !strings.Contains(out, "rows=10") || !strings.Contains(out, "eta=") {
		t.Errorf("log = %q", out)
	}
	// A rate cap is a lower bound on elapsed time.
	th := newThrottle(1000, nil)
	start := time.Now()
	if err := th.wait(context.Background(), "p", 200, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("200 rows at 1000/s waited only %v", el)
	}
	// A slow upstream page makes it back off.
	th = newThrottle(0, nil)
	_ = th.wait(context.Background(), "p", 10, time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := th.wait(ctx, "p", 10, 100*time.Millisecond); !errors.Is(err, context.Canceled) || th.delay < 100*time.Millisecond {
		t.Errorf("after a slow page: delay %v, err %v", th.delay, err)
	}
	// A slower kind of page is not a slow upstream.
	th = newThrottle(0, nil)
	_ = th.wait(context.Background(), "repositories", 10, time.Millisecond)
	if err := th.wait(context.Background(), "staging", 10, 100*time.Millisecond); err != nil || th.delay != 0 {
		t.Errorf("first page of another kind: delay %v, err %v", th.delay, err)
	}
}

// TestSyncerRepairsDirtyKeys uses the Syncer the dirty-key repairer calls:
// one key, and a whole key (every staged entry of a token).
func TestSyncerRepairsDirtyKeys(t *testing.T) {
	ctx, pool, s := smallEnv(t)
	rs := newRefStore(t, ctx, s)
	backfill(t, ctx, pool, s, nil)
	b, err := rs.GetBranch(ctx, "repo-0000", "main")
	if err != nil {
		t.Fatal(err)
	}
	tok := *b.StagingToken
	// A stale branch, a staged entry KV misses and one it should not have.
	if err := rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: "repo-0000", ID: "main", StagingToken: strp("stale"), CommitID: strp("stale")}); err != nil {
		t.Fatal(err)
	}
	staged, err := rs.ListStaged(ctx, tok, nil, 1)
	if err != nil || len(staged) != 1 {
		t.Fatalf("staged: %v", err)
	}
	if _, err := rs.DropStagedKey(ctx, tok, staged[0].Key); err != nil {
		t.Fatal(err)
	}
	if err := rs.SetStaged(ctx, refstore.StagingRow{StagingToken: tok, Key: []byte("extra"), Identity: []byte("i"), Data: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	sy, err := NewSyncer(VerifyOptions{Source: pool, KV: s})
	if err != nil {
		t.Fatal(err)
	}
	cases := []dirty.Key{
		{Entity: dirty.Branches, Repository: "repo-0000", ID: "main"},
		{Entity: dirty.Staging, ID: tok},
	}
	for _, k := range cases {
		if err := sy.Sync(ctx, k); err != nil {
			t.Fatalf("sync %s: %v", k, err)
		}
	}
	if rep := verify(t, ctx, pool, s, nil); sumDiff(rep) != 0 {
		t.Fatalf("after sync:\n%s", rep)
	}
	if err := sy.Sync(ctx, dirty.Key{Entity: "nonsense", ID: "x"}); !errors.Is(err, ErrBadKey) || !errors.Is(err, dirty.ErrNothingWritten) {
		t.Errorf("bad key: %v, want ErrBadKey, marked as nothing written", err)
	}
}

// TestGeneratedDatabaseHasWhatTheIssueAsks checks the generator's data:
// merges of both commit versions, tombstones, unicode keys, metadata of
// every form, unreachable commits, and ids that are content hashes.
func TestGeneratedDatabaseHasWhatTheIssueAsks(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, _ := legacyPool(t, ctx, legacygen.Config{Repos: 2, CommitsPerRepo: 80, BranchesPerRepo: 6, TagsPerRepo: 3, StagedPerBranch: 30, OrphanTokens: 1, Seed: 9})
	checks := []struct {
		name, q string
	}{
		{"version 0 merges", `SELECT count(*) FROM graveler_commits WHERE version = 0 AND array_length(parents, 1) = 2`},
		{"version 1 merges", `SELECT count(*) FROM graveler_commits WHERE version = 1 AND array_length(parents, 1) = 2`},
		{"tombstones", `SELECT count(*) FROM graveler_staging_kv WHERE identity IS NULL`},
		{"unicode keys", `SELECT count(*) FROM graveler_staging_kv WHERE convert_from(key, 'UTF8') LIKE '%файл%'`},
		{"NULL metadata", `SELECT count(*) FROM graveler_commits WHERE metadata IS NULL`},
		{"null metadata", `SELECT count(*) FROM graveler_commits WHERE metadata = 'null'::jsonb`},
		{"{} metadata", `SELECT count(*) FROM graveler_commits WHERE metadata = '{}'::jsonb`},
		{"unicode metadata", `SELECT count(*) FROM graveler_commits WHERE metadata ? 'ключ'`},
		{"both token formats", `SELECT count(DISTINCT position(':' in staging_token) > 0) - 1 FROM graveler_branches`},
		{"tags", `SELECT count(*) FROM graveler_tags`},
	}
	for _, c := range checks {
		var n int
		if err := pool.QueryRow(ctx, c.q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n <= 0 {
			t.Errorf("%s: none", c.name)
		}
	}
	s := mem.New()
	t.Cleanup(s.Close)
	res := backfill(t, ctx, pool, s, nil)
	rep := verify(t, ctx, pool, s, nil)
	if e := rep.Entities[EntityCommits]; e.SourceHashMismatch != 0 || e.Match != 160 {
		t.Errorf("commits: %+v (ids must be content hashes)", *e)
	}
	var unreachable int64
	if err := pool.QueryRow(ctx, reachCTE+`SELECT count(*) FROM graveler_commits c WHERE repository_id = $1 AND NOT EXISTS (SELECT 1 FROM reach r WHERE r.id = c.id)`, "repo-0000").Scan(&unreachable); err != nil || unreachable == 0 {
		t.Errorf("unreachable commits in repo-0000: %d %v", unreachable, err)
	}
	if res.Copied[EntityCommits] != 160 {
		t.Errorf("copied commits = %d, want 160 (reachable and unreachable)", res.Copied[EntityCommits])
	}
}

// writeCountingStore counts conditional writes, the only kind a repair
// makes, and fails reads or those writes when told to.
type writeCountingStore struct {
	*mem.Store
	setIfs             atomic.Int64
	failGet, failSetIf atomic.Bool
}

var errStoreDown = errors.New("store down")

func (c *writeCountingStore) SetIf(ctx context.Context, pk, key, value []byte, pred kv.Predicate) error {
	c.setIfs.Add(1)
	if c.failSetIf.Load() {
		return errStoreDown
	}
	return c.Store.SetIf(ctx, pk, key, value, pred)
}

func (c *writeCountingStore) Get(ctx context.Context, pk, key []byte) (*kv.ValueWithPredicate, error) {
	if c.failGet.Load() {
		return nil, errStoreDown
	}
	return c.Store.Get(ctx, pk, key)
}

// TestSyncerWritesOnlyDifferences: the repairer checks every key a dual
// write logged, and nearly all of them were mirrored already; those must
// cost no KV write, while a real difference is still copied.
func TestSyncerWritesOnlyDifferences(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, _ := legacyPool(t, ctx, smallData)
	s := &writeCountingStore{Store: mem.New()}
	t.Cleanup(s.Close)
	backfill(t, ctx, pool, s, nil)
	rs := newRefStore(t, ctx, s)
	sy, err := NewSyncer(VerifyOptions{Source: pool, KV: s})
	if err != nil {
		t.Fatal(err)
	}
	main := dirty.Key{Entity: dirty.Branches, Repository: "repo-0000", ID: "main"}
	s.setIfs.Store(0)
	if err := sy.Sync(ctx, main); err != nil {
		t.Fatal(err)
	}
	if n := s.setIfs.Load(); n != 0 {
		t.Errorf("syncing a key both stores agree on made %d KV writes, want 0", n)
	}
	if err := rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: "repo-0000", ID: "main", StagingToken: strp("stale"), CommitID: strp("stale")}); err != nil {
		t.Fatal(err)
	}
	s.setIfs.Store(0)
	if err := sy.Sync(ctx, main); err != nil {
		t.Fatal(err)
	}
	if n := s.setIfs.Load(); n != 1 {
		t.Errorf("syncing a stale branch made %d KV writes, want 1", n)
	}
	if rep := verify(t, ctx, pool, s, nil); sumDiff(rep) != 0 {
		t.Fatalf("after sync:\n%s", rep)
	}

	// The dirty-key repairer logs a key afresh after a failure that may
	// follow a write, and keeps its entries after one that wrote nothing.
	if err := rs.SetBranch(ctx, refstore.BranchRow{RepositoryID: "repo-0000", ID: "main", StagingToken: strp("stale"), CommitID: strp("stale")}); err != nil {
		t.Fatal(err)
	}
	s.failGet.Store(true)
	if err := sy.Sync(ctx, main); !errors.Is(err, errStoreDown) || !errors.Is(err, dirty.ErrNothingWritten) {
		t.Errorf("sync with KV unreadable: %v, want the read error marked as nothing written", err)
	}
	toSQL, err := NewSyncer(VerifyOptions{Source: pool, KV: s, Direction: KVToSQL})
	if err != nil {
		t.Fatal(err)
	}
	if err := toSQL.Sync(ctx, main); !errors.Is(err, errStoreDown) || !errors.Is(err, dirty.ErrNothingWritten) {
		t.Errorf("sync to PostgreSQL with KV unreadable: %v, want the read error marked as nothing written", err)
	}
	s.failGet.Store(false)
	s.failSetIf.Store(true)
	if err := sy.Sync(ctx, main); !errors.Is(err, errStoreDown) || errors.Is(err, dirty.ErrNothingWritten) {
		t.Errorf("sync whose KV write failed: %v, want the write error, not marked as nothing written", err)
	}
	s.failSetIf.Store(false)
}
