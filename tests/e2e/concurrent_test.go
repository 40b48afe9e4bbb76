package e2e

import (
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// Sixteen legacy clients (each a lakeFS process with its DB and LockDB
// pools) run their flows concurrently through kvproxy in kv-only, spread
// over two instances where the KV store can be shared, with a shared
// repository for lock and conflict traffic. No client sees an unexpected
// outcome (40001s are retried by the client, as lakeFS does), and every
// acknowledged write is there afterwards, read back through a proxy.
func TestConcurrentClientsThroughProxies(t *testing.T) {
	for _, kvs := range kvStores() {
		if kvs.driver == "mem" {
			continue
		}
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 8*time.Minute)
			dsn := kvs.dsn(t)
			upstream := legacyDB(t)
			args := []string{"--phase", "kv-only", "--upstream", upstream, "--kv-driver", kvs.driver, "--kv-dsn", dsn}
			proxies := []*testenv.Proxy{testenv.StartProxy(t, args...)}
			if kvs.driver != "local" { // one process per local store file
				proxies = append(proxies, testenv.StartProxy(t, args...))
			}
			var dsns []string
			for _, p := range proxies {
				dsns = append(dsns, p.DSN)
			}
			res, err := legacy.RunConcurrent(ctx, legacy.RunConfig{
				DSNs: dsns, Clients: 16, Steps: 40, Seed: 11, Version: legacy.V068, SharedRepo: true,
			})
			if err != nil {
				t.Fatalf("concurrent run: %v\nproxy log tail:\n%s", err, tail(proxies[0].Logs(), 30))
			}
			if res.Total < 16*40 {
				t.Fatalf("only %d steps ran", res.Total)
			}
			if err := res.Ledger.Verify(ctx, proxies[len(proxies)-1].DSN); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d steps in %v over %d instances: %s", res.Total, res.Elapsed.Round(time.Millisecond), len(proxies), legacy.FormatStats(res.Steps))
		})
	}
}
