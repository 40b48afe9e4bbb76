package e2e

import (
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// In dual-write, PostgreSQL stays authoritative and every ref-store write is
// mirrored to KV. Sixteen legacy clients run their flows through the proxies
// (two instances where the KV store can be shared) starting from an empty
// database; afterwards every acknowledged write is in PostgreSQL, the
// dirty-key log drains to zero, and a full verify finds PostgreSQL and KV
// identical.
func TestDualWriteMirrorsEveryWrite(t *testing.T) {
	for _, kvs := range kvStores() {
		if kvs.driver == "mem" {
			continue // the test reads the KV store after the proxies stop
		}
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 8*time.Minute)
			upstream := legacyDB(t)
			kvDSN := kvs.dsn(t)
			args := []string{"--phase", "dual-write", "--upstream", upstream, "--kv-driver", kvs.driver, "--kv-dsn", kvDSN,
				"--shadow-read-fraction", "1", "--shadow-read-timeout", "2s"}
			proxies := []*testenv.Proxy{testenv.StartProxy(t, args...)}
			if kvs.driver != "local" {
				proxies = append(proxies, testenv.StartProxy(t, args...))
			}
			var dsns []string
			for _, p := range proxies {
				dsns = append(dsns, p.DSN)
			}
			res, err := legacy.RunConcurrent(ctx, legacy.RunConfig{
				DSNs: dsns, Clients: 16, Steps: 30, Seed: 5, Version: legacy.V068, SharedRepo: true,
			})
			if err != nil {
				t.Fatalf("concurrent run: %v\nproxy log tail:\n%s", err, tail(proxies[0].Logs(), 30))
			}
			if err := res.Ledger.Verify(ctx, dsns[0]); err != nil {
				t.Fatal(err)
			}
			// The mirror did the work, not only the repairer.
			mirrored := regexp.MustCompile(`kvproxy_statements_total\{outcome="ok",route="kv",shape="mirror"\} (\d+)`).FindStringSubmatch(metricsText(t, proxies[0]))
			if mirrored == nil || mirrored[1] == "0" {
				t.Fatalf("no successful mirror writes recorded:\n%s", metricsText(t, proxies[0]))
			}
			var reads, mismatches int
			for _, p := range proxies {
				reads += metricValue(t, p, "kvproxy_shadow_reads_total{shape=")
				mismatches += metricValue(t, p, "kvproxy_shadow_mismatches_total{shape=")
			}
			// Clients also list each other's branches in the shared
			// repository, so some reads race another client's write between
			// its upstream commit and its mirror; the proxy re-reads such
			// differences before counting them, and none may persist.
			if reads == 0 || mismatches != 0 {
				t.Fatalf("%d shadow reads, %d mismatches; want some reads and no mismatch\n%s", reads, mismatches, tail(proxies[0].Logs(), 30))
			}
			pool, err := pgxpool.New(ctx, upstream)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			// The repairer verifies every logged key after a few seconds.
			deadline := time.Now().Add(2 * time.Minute)
			var left int64
			for {
				if err := pool.QueryRow(ctx, "SELECT count(*) FROM kvproxy.dirty_keys").Scan(&left); err != nil {
					t.Fatal(err)
				}
				if left == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("dirty-key log still holds %d keys\nproxy log tail:\n%s", left, tail(proxies[0].Logs(), 30))
				}
				time.Sleep(500 * time.Millisecond)
			}
			for _, p := range proxies {
				p.Stop(t) // local: release the store file
			}
			rows := verifyClean(t, ctx, pool, kvs.driver, kvDSN, "after dual writes")
			if rows < 100 {
				t.Fatalf("verify compared only %d rows", rows)
			}
			t.Logf("%d steps, %s mirrored transactions on one instance, %d shadow reads (%d mismatched); verify: %d rows identical in PostgreSQL and KV", res.Total, mirrored[1], reads, mismatches, rows)
		})
	}
}
