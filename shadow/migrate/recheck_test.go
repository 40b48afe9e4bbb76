package migrate

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/refstore"
)

// TestBackfillRecheckByVersion: the re-check trusts an unchanged row
// version (xmin) and re-reads the others whole. A staged entry changed
// after the copy is taken back; one rewritten with the same values (a new
// version, same content) is kept.
func TestBackfillRecheckByVersion(t *testing.T) {
	cases := []struct {
		name         string
		update       string
		wantReverted int64
		wantKept     bool
	}{
		{"changed after the copy", `UPDATE graveler_staging_kv SET data = 'changed' WHERE staging_token = $1 AND key = $2`, 1, false},
		{"rewritten unchanged after the copy", `UPDATE graveler_staging_kv SET data = data WHERE staging_token = $1 AND key = $2`, 0, true},
		{"deleted and inserted again unchanged", `WITH d AS (DELETE FROM graveler_staging_kv WHERE staging_token = $1 AND key = $2 RETURNING *)
			INSERT INTO graveler_staging_kv SELECT * FROM d`, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, pool, s := smallEnv(t)
			var target Key
			var before []byte
			res := backfill(t, ctx, pool, s, func(o *BackfillOptions) {
				o.Hook = func(ctx context.Context, point, entity string, keys []Key) {
					if target.ID != "" || point != "after-write" || entity != EntityStaging || len(keys) < 3 {
						return
					}
					target = keys[len(keys)/2] // inside the page's range
					got, err := s.Get(ctx, refstore.StagingPartition(target.ID), target.StagingKey)
					if err != nil {
						t.Fatalf("copied entry: %v", err)
					}
					before = got.Value
					if _, err := pool.Exec(ctx, tc.update, target.ID, target.StagingKey); err != nil {
						t.Fatal(err)
					}
				}
			})
			if target.ID == "" {
				t.Fatal("the hook never saw a staging page")
			}
			if res.Reverted[EntityStaging] != tc.wantReverted {
				t.Errorf("reverted = %d, want %d", res.Reverted[EntityStaging], tc.wantReverted)
			}
			got, err := s.Get(ctx, refstore.StagingPartition(target.ID), target.StagingKey)
			switch {
			case tc.wantKept && (err != nil || !bytes.Equal(got.Value, before)):
				t.Errorf("entry after the backfill: %v, want the copy kept", err)
			case !tc.wantKept && !errors.Is(err, kv.ErrNotFound):
				t.Errorf("entry after the backfill: %v, want the stale copy taken back", err)
			}
		})
	}
}

// TestReadVersions: the versions of keys that are no keyset range (the
// orphans stage skips tokens) are looked up pair by pair, and match what
// PostgreSQL reports.
func TestReadVersions(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, _ := legacyPool(t, ctx, smallData)
	rows, err := pool.Query(ctx, `SELECT staging_token, key, xmin FROM graveler_staging_kv ORDER BY staging_token, key`)
	if err != nil {
		t.Fatal(err)
	}
	type kx struct {
		k Key
		x uint32
	}
	var all []kx
	for rows.Next() {
		var e kx
		e.k.Entity = EntityStaging
		if err := rows.Scan(&e.k.ID, &e.k.StagingKey, &e.x); err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
	}
	if err := rows.Err(); err != nil || len(all) < 20 {
		t.Fatalf("%d staged rows: %v", len(all), err)
	}
	for _, pick := range [][]kx{all[3:9], {all[0], all[len(all)/2], all[len(all)-1]}} {
		keys := make([]Key, len(pick))
		for i, e := range pick {
			keys[i] = e.k
		}
		got, err := readVersions(ctx, pool, EntityStaging, keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range pick {
			if x, ok := got[versionKey(e.k)]; !ok || x != e.x {
				t.Errorf("version of %s = %d, %v; want %d", e.k, x, ok, e.x)
			}
		}
		if len(got) > 4*len(keys) {
			t.Errorf("%d versions read for %d keys", len(got), len(keys))
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE graveler_staging_kv SET data = data WHERE staging_token = $1 AND key = $2`, all[0].k.ID, all[0].k.StagingKey); err != nil {
		t.Fatal(err)
	}
	got, err := readVersions(ctx, pool, EntityStaging, []Key{all[0].k})
	if err != nil || got[versionKey(all[0].k)] == all[0].x {
		t.Errorf("version after an update = %v, %v; want a new one", got, err)
	}
}

// TestBackfillOrphansInOnePass: the staging pass copies the entries of
// referenced tokens, and those of orphan tokens only with IncludeOrphans.
func TestBackfillOrphansInOnePass(t *testing.T) {
	for _, include := range []bool{false, true} {
		t.Run(map[bool]string{false: "without orphans", true: "with orphans"}[include], func(t *testing.T) {
			ctx := testCtx(t, 3*time.Minute)
			pool, st := legacyPool(t, ctx, smallData)
			s := mem.New()
			t.Cleanup(s.Close)
			res := backfill(t, ctx, pool, s, func(o *BackfillOptions) { o.IncludeOrphans = include })
			want := st.Staged // without the orphans
			if include {
				want += st.OrphanRows
			}
			if got := res.Copied[EntityStaging]; got != want {
				t.Errorf("staged entries copied = %d, want %d (%d of them orphans)", got, want, st.OrphanRows)
			}
			rows, err := pool.Query(ctx, `SELECT staging_token, key FROM graveler_staging_kv s
				WHERE NOT EXISTS (SELECT 1 FROM graveler_branches b WHERE b.staging_token = s.staging_token)`)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				var tok string
				var key []byte
				if err := rows.Scan(&tok, &key); err != nil {
					t.Fatal(err)
				}
				n++
				_, err := s.Get(ctx, refstore.StagingPartition(tok), key)
				if include && err != nil || !include && !errors.Is(err, kv.ErrNotFound) {
					t.Errorf("orphan entry %s/%q in KV: %v (include orphans %v)", tok, key, err, include)
				}
			}
			if err := rows.Err(); err != nil || int64(n) != st.OrphanRows || n == 0 {
				t.Fatalf("%d orphan rows (want %d): %v", n, st.OrphanRows, err)
			}
			if rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.IncludeOrphans = include }); sumDiff(rep) != 0 {
				t.Errorf("verify: %d differences:\n%s", sumDiff(rep), rep)
			}
		})
	}
}

// TestBackfillResumesOrphansStage: a checkpoint left in the orphans stage
// by an earlier version (which copied orphans in a pass of their own)
// resumes there and copies the orphan entries.
func TestBackfillResumesOrphansStage(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, st := legacyPool(t, ctx, smallData)
	s := mem.New()
	t.Cleanup(s.Close)
	first := backfill(t, ctx, pool, s, nil) // without orphans
	cp := Checkpoint{Stage: StageOrphans, Status: first.Status}
	cp.Status.Finished = nil
	if err := putRecord(ctx, s, KeyBackfillCheckpoint, cp); err != nil {
		t.Fatal(err)
	}
	res := backfill(t, ctx, pool, s, func(o *BackfillOptions) { o.IncludeOrphans = true })
	if !res.Resumed || res.Copied[EntityStaging] != st.OrphanRows || res.Copied.Sum() != st.OrphanRows {
		t.Errorf("resumed %v, copied %v; want the %d orphan entries only", res.Resumed, res.Copied, st.OrphanRows)
	}
	if rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.IncludeOrphans = true }); sumDiff(rep) != 0 {
		t.Errorf("verify: %d differences:\n%s", sumDiff(rep), rep)
	}
}
