package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// In kv-only with an upstream, a transaction may mix statements answered
// from KV (the ref store) with statements forwarded to PostgreSQL (auth,
// actions, ...). Both sides commit or roll back together: a ROLLBACK undoes
// the forwarded writes too, and an error on either side aborts the whole
// transaction as PostgreSQL would.
func TestMixedTransactionsCommitAndRollBackTogether(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	upstream := legacyDB(t)
	p := testenv.StartProxy(t, "--phase", "kv-only", "--upstream", upstream, "--kv-driver", "mem")
	direct, err := pgx.Connect(ctx, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if _, err := direct.Exec(ctx, "CREATE TABLE auth_users (name text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	users := func() int {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM auth_users").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	repos := func() int {
		rows, err := conn.Query(ctx, legacy.SQLR3First, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		return n
	}
	now := time.Now()
	steps := func(sqls ...step) { runSteps(ctx, t, conn, sqls) }

	// ROLLBACK undoes both sides.
	steps(step{sql: legacy.SQLBeginSerializableRW},
		step{sql: "INSERT INTO auth_users VALUES ($1)", args: []any{"alice"}, wantTag: "INSERT 0 1"},
		step{sql: legacy.SQLR2, args: []any{"r1", "s3://ns", now, "main"}, wantTag: "INSERT 0 1"},
		step{sql: legacy.SQLRollback, wantTag: "ROLLBACK"})
	if u, r := users(), repos(); u != 0 || r != 0 {
		t.Fatalf("after ROLLBACK: %d users upstream, %d repositories in KV; want 0 and 0", u, r)
	}
	// COMMIT applies both.
	steps(step{sql: legacy.SQLBeginSerializableRW},
		step{sql: "INSERT INTO auth_users VALUES ($1)", args: []any{"alice"}},
		step{sql: legacy.SQLR2, args: []any{"r1", "s3://ns", now, "main"}},
		step{sql: legacy.SQLCommit, wantTag: "COMMIT"})
	if u, r := users(), repos(); u != 1 || r != 1 {
		t.Fatalf("after COMMIT: %d users, %d repositories; want 1 and 1", u, r)
	}
	// A failing forwarded statement aborts the ref-store part as well.
	steps(step{sql: legacy.SQLBeginSerializableRW},
		step{sql: legacy.SQLR2, args: []any{"r2", "s3://ns", now, "main"}},
		step{sql: "INSERT INTO auth_users VALUES ($1)", args: []any{"alice"}, wantCode: "23505"},
		step{sql: legacy.SQLR1, args: []any{"r2"}, wantCode: "25P02"},
		step{sql: legacy.SQLCommit, wantTag: "ROLLBACK"})
	// A failing ref-store statement aborts the forwarded part as well.
	steps(step{sql: legacy.SQLBeginSerializableRW},
		step{sql: "INSERT INTO auth_users VALUES ($1)", args: []any{"bob"}},
		step{sql: legacy.SQLR2, args: []any{"r1", "s3://ns", now, "main"}, wantCode: "23505"},
		step{sql: "SELECT count(*) FROM auth_users", wantCode: "25P02"},
		step{sql: legacy.SQLCommit, wantTag: "ROLLBACK"})
	if u, r := users(), repos(); u != 1 || r != 1 {
		t.Fatalf("after the failed transactions: %d users, %d repositories; want 1 and 1", u, r)
	}
}

// With an upstream, the branch locker's advisory locks are PostgreSQL's own,
// so lakeFS processes that still talk to PostgreSQL directly and those that
// go through kvproxy exclude each other.
func TestAdvisoryLocksGoUpstreamWhenThereIsOne(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	upstream := legacyDB(t)
	p := testenv.StartProxy(t, "--phase", "kv-only", "--upstream", upstream, "--kv-driver", "mem")
	viaProxy, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close(ctx)
	direct, err := pgx.Connect(ctx, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	const key = int64(77)
	runSteps(ctx, t, viaProxy, []step{{sql: legacy.SQLBeginReadCommitted}, {sql: legacy.SQLL2, args: []any{key}}})
	var got bool
	if err := direct.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || got {
		t.Fatalf("PostgreSQL granted the lock held through kvproxy (got=%v, err=%v)", got, err)
	}
	runSteps(ctx, t, viaProxy, []step{{sql: legacy.SQLCommit, wantTag: "COMMIT"}})
	if err := direct.QueryRow(context.Background(), "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil || !got {
		t.Fatalf("lock still held after COMMIT through kvproxy (got=%v, err=%v)", got, err)
	}
}
