package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// In kv-primary, KV is authoritative and PostgreSQL is mirrored behind it.
// Sixteen legacy clients run through two proxies while the upstream
// PostgreSQL is stopped for 5 s and started again: no client sees an
// error, the KV-side dirty-key log grows during the outage and drains to 0
// after it, every acknowledged write is in KV and in PostgreSQL, and a full
// verify finds them identical.
func TestKVPrimarySurvivesUpstreamRestart(t *testing.T) {
	ctx := testCtx(t, 8*time.Minute)
	pg := testenv.StartPrivatePostgres(t)
	loadLegacySchema(t, pg.DSN)
	m := &migration{t: t, ctx: ctx, driver: "postgres", kvDSN: kvtest.ProcessDSN(t, "postgres"), upstream: pg.DSN}
	args := append([]string{"--phase", "kv-primary", "--shadow-read-fraction", "0.2"}, m.kvArgs()...)
	for range 2 {
		m.proxies = append(m.proxies, testenv.StartProxy(t, args...))
	}
	m.startLoad(16, 21)
	time.Sleep(4 * time.Second)
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	maxDirty := 0
	for range 10 {
		time.Sleep(500 * time.Millisecond)
		n := 0
		for _, p := range m.proxies {
			n += metricValue(t, p, "kvproxy_dirty_keys")
		}
		maxDirty = max(maxDirty, n)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	m.finishLoad()
	if maxDirty == 0 {
		t.Fatalf("the dirty-key log never grew while PostgreSQL was down\n%s", m.logTails())
	}
	waitDirtyDrained(t, ctx, m)
	if err := m.res.Ledger.Verify(ctx, m.proxies[0].DSN); err != nil {
		t.Fatalf("KV misses acknowledged writes: %v", err)
	}
	if err := m.res.Ledger.Verify(ctx, pg.DSN); err != nil {
		t.Fatalf("the PostgreSQL mirror misses acknowledged writes: %v", err)
	}
	pool, err := pgxpool.New(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows := verifyClean(t, ctx, pool, m.driver, m.kvDSN, "after the upstream restart")
	var reads, mismatches int
	for _, p := range m.proxies {
		reads += metricValue(t, p, "kvproxy_shadow_reads_total{shape=")
		mismatches += metricValue(t, p, "kvproxy_shadow_mismatches_total{shape=")
	}
	if mismatches != 0 {
		t.Fatalf("%d of %d shadow reads mismatched\n%s", mismatches, reads, m.logTails())
	}
	t.Logf("%d flows acknowledged; dirty keys peaked at %d during the outage and drained; %d rows identical; %d shadow reads, 0 mismatches",
		m.res.Total, maxDirty, rows, reads)
}

// waitDirtyDrained waits until the dirty-key logs the proxies report are
// empty in two readings 2 s apart: the gauge is set once per repair round
// (every second), so one reading of 0 may predate the last entries.
func waitDirtyDrained(t *testing.T, ctx context.Context, m *migration) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	zeros := 0
	for {
		n := 0
		for _, p := range m.proxies {
			n += metricValue(t, p, "kvproxy_dirty_keys")
		}
		if n == 0 {
			if zeros++; zeros == 2 {
				return
			}
			time.Sleep(2 * time.Second)
			continue
		}
		zeros = 0
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("dirty-key logs still hold %d keys\n%s", n, m.logTails())
		}
		time.Sleep(500 * time.Millisecond)
	}
}
