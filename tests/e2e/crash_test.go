package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// A proxy killed (SIGKILL) after PostgreSQL committed a dual write and
// before the write reached KV: the outbox entry committed with the write,
// so the next proxy's repairer copies it, and the stores match again.
func TestKillBetweenUpstreamCommitAndMirror(t *testing.T) {
	ctx := testCtx(t, 4*time.Minute)
	upstream := legacyDB(t)
	kvDSN := testenv.PostgresDB(t)
	args := []string{"--phase", "dual-write", "--upstream", upstream, "--kv-driver", "postgres", "--kv-dsn", kvDSN}
	victim := testenv.StartProxyEnv(t, []string{"KVPROXY_TEST_PAUSE_BEFORE_MIRROR=5m"}, args...)

	conn, err := pgx.Connect(ctx, victim.DSN)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	runSteps(ctx, t, conn, []step{
		{sql: legacy.SQLBeginSerializableRW},
		{sql: legacy.SQLR2, args: []any{"crashed", "s3://ns", now, "main"}},
		{sql: legacy.SQLB2Repo, args: []any{"crashed", "main", "tok", "c1"}},
	})
	committed := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, legacy.SQLCommit)
		committed <- err
	}()
	// Wait until PostgreSQL has the write: the proxy is now paused before
	// the mirror.
	pool, err := pgxpool.New(ctx, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for deadline := time.Now().Add(time.Minute); ; {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM graveler_branches WHERE repository_id = 'crashed'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upstream commit never happened")
		}
		time.Sleep(50 * time.Millisecond)
	}
	victim.Kill()
	if err := <-committed; err == nil {
		t.Fatal("the client was acknowledged by a proxy that died before mirroring")
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
	if _, err := rs.GetBranch(ctx, "crashed", "main"); !errors.Is(err, refstore.ErrNotFound) {
		t.Fatalf("before repair the branch must be missing from KV (the mirror never ran): %v", err)
	}
	// A new proxy's repairer finds the outbox entries and copies the keys.
	testenv.StartProxy(t, args...)
	for deadline := time.Now().Add(time.Minute); ; {
		b, err := rs.GetBranch(context.Background(), "crashed", "main")
		if err == nil {
			if b.CommitID == nil || *b.CommitID != "c1" {
				t.Fatalf("repaired branch = %+v", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the repairer never copied the committed write: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	verifyClean(t, ctx, pool, "postgres", kvDSN, "after the repair")
}
