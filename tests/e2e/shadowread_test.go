package e2e

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// metricValue sums the samples of series: a whole series name with its
// labels, or a prefix ending in "=" that matches every label value.
func metricValue(t *testing.T, p *testenv.Proxy, series string) int {
	t.Helper()
	pattern := regexp.QuoteMeta(series) + ` (\d+)`
	if series[len(series)-1] == '=' {
		pattern = regexp.QuoteMeta(series) + `[^}]*\} (\d+)`
	}
	re := regexp.MustCompile(pattern)
	total := 0
	for _, m := range re.FindAllStringSubmatch(metricsText(t, p), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}

// Shadow reads compare PostgreSQL's answer with KV's. A sequential client
// (every mirror completes before its acknowledgement) sees no mismatch while
// every read is compared; a KV entry changed behind the proxy's back is
// caught by the next read of it, and the client still gets PostgreSQL's
// answer.
func TestShadowReadsCompareStores(t *testing.T) {
	ctx := testCtx(t, 5*time.Minute)
	upstream := legacyDB(t)
	kvDSN := testenv.PostgresDB(t)
	p := testenv.StartProxy(t, "--phase", "dual-write", "--upstream", upstream,
		"--kv-driver", "postgres", "--kv-dsn", kvDSN, "--shadow-read-fraction", "1", "--shadow-read-timeout", "2s")
	if _, _, err := legacy.RunScript(ctx, p.DSN, legacy.ScriptConfig{Seed: 3, Steps: 150, Version: legacy.V068}); err != nil {
		t.Fatalf("script through dual-write: %v\n%s", err, tail(p.Logs(), 20))
	}
	reads := metricValue(t, p, "kvproxy_shadow_reads_total{shape=")
	if reads < 100 {
		t.Fatalf("only %d shadow reads with read_fraction 1", reads)
	}
	if n := metricValue(t, p, "kvproxy_shadow_mismatches_total{shape="); n != 0 {
		t.Fatalf("%d shadow-read mismatches on a consistent mirror:\n%s", n, tail(p.Logs(), 20))
	}

	// Move a branch head in KV only.
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Now()
	runSteps(ctx, t, conn, []step{
		{sql: legacy.SQLBeginSerializableRW},
		{sql: legacy.SQLR2, args: []any{"shadowed", "s3://ns", now, "main"}},
		{sql: legacy.SQLB2Create, args: []any{"shadowed", "main", "tok", "c-in-both"}},
		{sql: legacy.SQLCommit, wantTag: "COMMIT"},
	})
	// The repairer re-copies every logged key from PostgreSQL; the change
	// behind the proxy's back must come after it is done with the branch.
	up, err := pgx.Connect(ctx, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close(ctx)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		var n int
		if err := up.QueryRow(ctx, "SELECT count(*) FROM kvproxy.dirty_keys").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dirty-key log still holds %d keys", n)
		}
	}
	store, err := drivers.Open(ctx, "postgres", kvDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rs, err := refstore.New(ctx, store, refstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, moved := "tok", "c-only-in-kv"
	if err := rs.SetBranch(context.Background(), refstore.BranchRow{RepositoryID: "shadowed", ID: "main", StagingToken: &tok, CommitID: &moved}); err != nil {
		t.Fatal(err)
	}
	var commit string
	if err := conn.QueryRow(ctx, legacy.SQLB1, "shadowed", "main").Scan(&commit, new(string)); err != nil || commit != "c-in-both" {
		t.Fatalf("client got %q (%v), want PostgreSQL's c-in-both\n%s", commit, err, tail(p.Logs(), 40))
	}
	// A difference is re-read in the background before it counts.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := metricValue(t, p, `kvproxy_shadow_mismatches_total{shape="B1"}`)
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("B1 mismatches = %d, want 1\n%s", n, tail(p.Logs(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.Logs(), "shadow read mismatch") {
		t.Fatalf("the mismatch was not logged:\n%s", tail(p.Logs(), 20))
	}
}
