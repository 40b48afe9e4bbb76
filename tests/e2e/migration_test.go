package e2e

import (
	"regexp"
	"strconv"

	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// The whole migration under load, on three proxies sharing the stores:
// passthrough, dual-write, backfill, verify, cutover, rollback, cutover
// again, finalize. Every acknowledged write is there at the end, no client
// operation failed (40001s are retried by the client, as lakeFS does), and
// PostgreSQL and KV matched right before finalize.
func TestLiveMigrationUnderLoad(t *testing.T) {
	for _, kvs := range kvStores() {
		if kvs.driver == "mem" || kvs.driver == "local" {
			continue // one process only: several instances need a shared store
		}
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Minute)
			m := &migration{t: t, ctx: ctx, driver: kvs.driver, kvDSN: kvs.dsn(t), upstream: legacyDB(t)}
			args := append([]string{"--phase", "passthrough", "--shadow-read-fraction", "0.2"}, m.kvArgs()...)
			for range 3 {
				m.proxies = append(m.proxies, testenv.StartProxy(t, args...))
			}
			m.startLoad(16, 11)
			pause := func() { time.Sleep(3 * time.Second) }
			pause()
			m.run("phase", "set", "dual-write")
			pause()
			t.Log(m.run("backfill"))
			t.Log(m.run("verify", "--repair"))
			t.Log(m.run("verify"))
			t.Log(m.switchPhase("cutover", control.KVPrimary))
			pause()
			t.Log(m.switchPhase("rollback", control.DualWrite))
			pause()
			t.Log(m.switchPhase("cutover", control.KVPrimary))
			pause()
			// The stores match in kv-primary, proven live: the verify
			// re-reads differences and names only silent ones.
			t.Log(m.run("verify"))
			t.Log(m.switchPhase("finalize", control.KVOnly))
			pause()
			m.finishLoad()
			if err := m.res.Ledger.Verify(ctx, m.proxies[0].DSN); err != nil {
				t.Fatalf("an acknowledged write is missing from KV: %v\n%s", err, m.logTails())
			}
			var reads, mismatches int
			for _, p := range m.proxies {
				reads += metricValue(t, p, "kvproxy_shadow_reads_total{shape=")
				mismatches += metricValue(t, p, "kvproxy_shadow_mismatches_total{shape=")
			}
			if reads == 0 || mismatches != 0 {
				t.Fatalf("%d shadow reads, %d mismatches; want some and none\n%s", reads, mismatches, m.logTails())
			}
			var conflicts int
			for _, p := range m.proxies {
				for _, mm := range conflictRe.FindAllStringSubmatch(metricsText(t, p), -1) {
					n, _ := strconv.Atoi(mm[1])
					conflicts += n
				}
			}
			t.Logf("%d flows acknowledged and present in KV; %d shadow reads, 0 mismatches; %d conflicts (40001) answered by the proxies", m.res.Total, reads, conflicts)
		})
	}
}

var conflictRe = regexp.MustCompile(`kvproxy_statements_total\{outcome="conflict"[^}]*\} (\d+)`)
