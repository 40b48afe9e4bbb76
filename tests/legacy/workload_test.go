package legacy

import (
	"errors"
	"strings"
	"testing"
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
		{"moved branch", `UPDATE graveler_branches SET commit_id = 'bogus' WHERE id = 'main'`, "head"},
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
