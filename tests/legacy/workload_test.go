package legacy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// 16 concurrent clients (each one lakeFS process with its own two pools),
// private repositories plus one shared repository, then every acknowledged
// write is checked in the tables.
func TestConcurrentClientsLedger(t *testing.T) {
	cases := []struct {
		name string
		cfg  RunConfig
	}{
		{"v0.68 16 clients", RunConfig{Clients: 16, Steps: 120, Seed: 100, Version: V068, SharedRepo: true}},
		{"v0.70 16 clients", RunConfig{Clients: 16, Steps: 60, Seed: 200, Version: V070, SharedRepo: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			dsn := freshDB(t)
			tc.cfg.DSN = dsn
			res, err := RunConcurrent(ctx, tc.cfg)
			check(t, err)
			if res.Total != tc.cfg.Clients*tc.cfg.Steps {
				t.Fatalf("%d steps ran, want %d", res.Total, tc.cfg.Clients*tc.cfg.Steps)
			}
			repos, branches, tags, commits, staged := res.Ledger.Counts()
			if repos < tc.cfg.Clients || commits < tc.cfg.Clients || staged == 0 {
				t.Fatalf("ledger too thin: repos=%d branches=%d tags=%d commits=%d staged=%d", repos, branches, tags, commits, staged)
			}
			check(t, res.Ledger.Verify(ctx, dsn))
			t.Logf("%d steps in %v; ledger repos=%d branches=%d tags=%d commits=%d staged=%d; %s",
				res.Total, res.Elapsed, repos, branches, tags, commits, staged, FormatStats(res.Steps))
		})
	}
}

// Verify must notice lost or extra writes.
func TestLedgerVerifyCatchesLoss(t *testing.T) {
	cases := []struct {
		name, tamper, want string
	}{
		{"lost staged rows", `DELETE FROM graveler_staging_kv WHERE (staging_token, key) IN (SELECT s.staging_token, s.key FROM graveler_staging_kv s
			JOIN graveler_branches b ON b.staging_token = s.staging_token WHERE s.identity IS NOT NULL LIMIT 1)`, "missing"},
		{"moved branch", `UPDATE graveler_branches SET commit_id = 'bogus' WHERE id = 'main'`, "(not an acknowledged commit), acknowledged"},
		{"moved branch back", `UPDATE graveler_branches b SET commit_id = c.parents[1] FROM graveler_commits c
			WHERE c.repository_id = b.repository_id AND c.id = b.commit_id AND cardinality(c.parents) > 0 AND b.id = 'main'`, "(an acknowledged commit), acknowledged"},
		{"lost repository", `DELETE FROM graveler_repositories WHERE id = (SELECT min(id) FROM graveler_repositories)`, "acknowledged repository missing"},
		{"phantom staged row", `INSERT INTO graveler_staging_kv SELECT staging_token, 'phantom', 'i', 'd' FROM graveler_branches LIMIT 1`, "unacknowledged staged row"},
		{"lost commit", `DELETE FROM graveler_commits WHERE id IN (SELECT commit_id FROM graveler_branches LIMIT 1)`, "commit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			dsn := freshDB(t)
			res, err := RunConcurrent(ctx, RunConfig{DSN: dsn, Clients: 2, Steps: 80, Seed: 5})
			check(t, err)
			check(t, res.Ledger.Verify(ctx, dsn))
			tag, err := adminConn(t, dsn).Exec(ctx, tc.tamper)
			check(t, err)
			if tag.RowsAffected() == 0 {
				t.Fatalf("tamper %q changed nothing", tc.tamper)
			}
			err = res.Ledger.Verify(ctx, dsn)
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify after %s = %v, want %q", tc.name, err, tc.want)
			}
		})
	}
}

// Tolerant runs survive killed connections (what a phase switch or a proxy
// restart looks like to the client): failed operations make their entities
// uncertain, everything acknowledged is still verified exactly.
func TestTolerantRunSurvivesKilledConnections(t *testing.T) {
	ctx := testCtx(t)
	dsn := freshDB(t)
	admin := adminConn(t, dsn)
	done := make(chan struct{})
	killerDone := make(chan int)
	go func() {
		killed := 0
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				killerDone <- killed
				return
			case <-tick.C:
				var n int
				err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n)
				if err == nil {
					killed += n
				}
			}
		}
	}()
	res, err := RunConcurrent(ctx, RunConfig{DSN: dsn, Clients: 4, Steps: 150, Seed: 9, Tolerant: true})
	close(done)
	killed := <-killerDone
	check(t, err)
	check(t, res.Ledger.Verify(ctx, dsn))
	t.Logf("killed %d backends; %d of %d steps failed and were tolerated", killed, len(res.Failures), res.Total)
	if killed > 0 && len(res.Failures) == 0 {
		t.Log("no operation happened to hit a killed connection")
	}
}
