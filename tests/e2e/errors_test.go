package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	if err != nil {
		return "non-pg error: " + err.Error()
	}
	return ""
}

// step is one statement of an error scenario and what it must give.
type step struct {
	sql      string
	args     []any
	wantCode string // "" = success
	wantTag  string // checked when non-empty
}

func runSteps(ctx context.Context, t *testing.T, conn *pgx.Conn, steps []step) []string {
	t.Helper()
	var got []string
	for i, s := range steps {
		tag, err := conn.Exec(ctx, s.sql, s.args...)
		code := sqlstate(err)
		got = append(got, code+"|"+tag.String())
		if code != s.wantCode {
			t.Fatalf("step %d %q: SQLSTATE %q (%v), want %q", i, legacy.Normalize(s.sql), code, err, s.wantCode)
		}
		if s.wantTag != "" && tag.String() != s.wantTag {
			t.Fatalf("step %d %q: tag %q, want %q", i, legacy.Normalize(s.sql), tag, s.wantTag)
		}
	}
	return got
}

// Errors inside and outside transactions carry PostgreSQL's SQLSTATEs and
// tags, checked against PostgreSQL itself with the same statements.
func TestErrorsMatchPostgres(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	direct := legacyDB(t)
	p := testenv.StartProxy(t, "--phase", "kv-only", "--upstream", legacyDB(t), "--kv-driver", "mem")
	now := time.Date(2022, 6, 21, 12, 0, 0, 0, time.UTC)
	steps := []step{
		{sql: legacy.SQLR2, args: []any{"repo1", "s3://ns", now, "main"}, wantTag: "INSERT 0 1"},
		// duplicate without ON CONFLICT
		{sql: legacy.SQLR2, args: []any{"repo1", "s3://ns", now, "main"}, wantCode: "23505"},
		// an error inside a transaction aborts it until its end
		{sql: legacy.SQLBeginSerializableRW, wantTag: "BEGIN"},
		{sql: legacy.SQLR2, args: []any{"repo1", "s3://other", now, "main"}, wantCode: "23505"},
		{sql: legacy.SQLR1, args: []any{"repo1"}, wantCode: "25P02"},
		{sql: legacy.SQLCommit, wantTag: "ROLLBACK"},
		{sql: legacy.SQLR1, args: []any{"repo1"}, wantTag: "SELECT 1"},
		// ROLLBACK undoes the transaction's writes
		{sql: legacy.SQLBeginSerializableRW, wantTag: "BEGIN"},
		{sql: legacy.SQLT2, args: []any{"repo1", "v1", "c1"}, wantTag: "INSERT 0 1"},
		{sql: legacy.SQLT2, args: []any{"repo1", "v1", "c2"}, wantTag: "INSERT 0 0"},
		{sql: legacy.SQLRollback, wantTag: "ROLLBACK"},
		{sql: legacy.SQLT3, args: []any{"repo1", "v1"}, wantTag: "DELETE 0"},
		// read-only transactions refuse writes
		{sql: legacy.SQLBeginSerializableRO, wantTag: "BEGIN"},
		{sql: legacy.SQLT2, args: []any{"repo1", "v2", "c1"}, wantCode: "25006"},
		{sql: legacy.SQLRollback, wantTag: "ROLLBACK"},
		// NOT NULL columns
		{sql: legacy.SQLR2, args: []any{nil, "s3://ns", now, "main"}, wantCode: "23502"},
		// a bad parameter value: LIMIT must be an integer
		{sql: legacy.SQLR3First, args: []any{"", "ten"}, wantCode: "22P02"},
		{sql: legacy.SQLR3First, args: []any{"", -1}, wantCode: "2201W"},
		{sql: legacy.SQLR3First, args: []any{"", 0}, wantTag: "SELECT 0"},
		// empty query and COMMIT outside a transaction
		{sql: legacy.SQLCommit, wantTag: "COMMIT"},
	}
	connect := func(dsn string) *pgx.Conn {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	want := runSteps(ctx, t, connect(direct), steps)
	got := runSteps(ctx, t, connect(p.DSN), steps)
	if strings.Join(want, ",") != strings.Join(got, ",") {
		t.Fatalf("outcomes differ:\n postgres %v\n kvproxy  %v", want, got)
	}
}

// What the proxy refuses, it refuses by name: an unknown statement on a
// ref-store table is 0A000 naming it (and counted), and other SQL without an
// upstream is a clear error instead of a guess.
func TestRefusals(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	p := testenv.StartProxy(t, "--phase", "kv-only", "--kv-driver", "mem")
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	cases := []struct {
		sql      string
		code     string
		contains string
	}{
		{"SELECT id FROM graveler_repositories WHERE storage_namespace = $1", "0A000", "graveler_repositories"},
		{"UPDATE graveler_branches SET commit_id = $1", "0A000", "graveler_branches"},
		{"SELECT now()", "0A000", "no upstream"},
		{"SELECT * FROM auth_users", "0A000", "no upstream"},
	}
	for _, c := range cases {
		_, err := conn.Exec(ctx, c.sql, "x")
		if c.sql == "SELECT now()" || c.sql == "SELECT * FROM auth_users" {
			_, err = conn.Exec(ctx, c.sql)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != c.code || !strings.Contains(pe.Message, c.contains) {
			t.Errorf("%q: %v, want %s mentioning %q", c.sql, err, c.code, c.contains)
		}
	}
	// The connection is still usable after the refusals.
	var n int
	if err := conn.QueryRow(ctx, legacy.DiagCountSQL("graveler_repositories")).Scan(&n); err != nil || n != 0 {
		t.Fatalf("count after refusals: %d, %v", n, err)
	}
	if !strings.Contains(metricsText(t, p), "kvproxy_unsupported_statements_total 2") {
		t.Fatalf("unsupported statements not counted:\n%s", metricsText(t, p))
	}
}

// Two transactions that read a branch and then both rewrite it: one commits,
// the other gets 40001 at COMMIT, and the retry the legacy client makes on
// 40001 succeeds.
func TestLostRaceIsSerializationFailure(t *testing.T) {
	for _, kvs := range kvStores() {
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 3*time.Minute)
			p := testenv.StartProxy(t, "--phase", "kv-only", "--kv-driver", kvs.driver, "--kv-dsn", kvs.dsn(t))
			a, err := pgx.Connect(ctx, p.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close(ctx)
			b, err := pgx.Connect(ctx, p.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(ctx)
			now := time.Now()
			runSteps(ctx, t, a, []step{
				{sql: legacy.SQLR2, args: []any{"race", "s3://ns", now, "main"}},
				{sql: legacy.SQLB2Create, args: []any{"race", "main", "tok0", "c0"}},
			})
			for _, c := range []*pgx.Conn{a, b} {
				runSteps(ctx, t, c, []step{
					{sql: legacy.SQLBeginSerializableRW},
					{sql: legacy.SQLB1, args: []any{"race", "main"}, wantTag: "SELECT 1"},
				})
			}
			runSteps(ctx, t, a, []step{{sql: legacy.SQLB3, args: []any{"race", "main", "tokA", "cA"}}, {sql: legacy.SQLCommit, wantTag: "COMMIT"}})
			runSteps(ctx, t, b, []step{{sql: legacy.SQLB3, args: []any{"race", "main", "tokB", "cB"}}, {sql: legacy.SQLCommit, wantCode: "40001"}})
			// The retry sees A's write and succeeds.
			var commit string
			if err := b.QueryRow(ctx, legacy.SQLB1, "race", "main").Scan(&commit, new(string)); err != nil || commit != "cA" {
				t.Fatalf("after the race the branch is at %q (%v), want cA", commit, err)
			}
			runSteps(ctx, t, b, []step{
				{sql: legacy.SQLBeginSerializableRW},
				{sql: legacy.SQLB1, args: []any{"race", "main"}},
				{sql: legacy.SQLB3, args: []any{"race", "main", "tokB", "cB"}},
				{sql: legacy.SQLCommit, wantTag: "COMMIT"},
			})
			if !strings.Contains(metricsText(t, p), `kvproxy_statements_total{outcome="ok",route="kv",shape="B3"}`) {
				t.Fatal("statements are not counted by shape")
			}
		})
	}
}
