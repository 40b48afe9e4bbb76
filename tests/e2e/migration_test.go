package e2e

import (
	"regexp"
	"strconv"
	"strings"

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
				// PostgreSQL stopped following at finalize: what it has
				// tells whether the write was lost before or after.
				t.Fatalf("an acknowledged write is missing from KV: %v\nthe same entities on PostgreSQL directly:\n%s\n%s", err, sameEntities(err, m.res.Ledger.Verify(ctx, m.upstream)), m.logTails())
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

// sameEntities returns the lines of other that are about the entities
// err names ("repo/branch: ..."), or what other is when it names none.
func sameEntities(err, other error) string {
	if other == nil {
		return "no problem"
	}
	var names []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ": "); ok && strings.Contains(name, "/") {
			names = append(names, name+": ")
		}
	}
	var out []string
	for _, line := range strings.Split(other.Error(), "\n") {
		for _, n := range names {
			if strings.HasPrefix(strings.TrimSpace(line), n) {
				out = append(out, line)
			}
		}
	}
	if len(out) == 0 {
		return "none of them differs (of the first 50 problems)"
	}
	return strings.Join(out, "\n")
}

var conflictRe = regexp.MustCompile(`kvproxy_statements_total\{outcome="conflict"[^}]*\} (\d+)`)
