package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// legacyDB returns a fresh database with the legacy ref-store schema.
func legacyDB(t *testing.T) string {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	loadLegacySchema(t, dsn)
	return dsn
}

// loadLegacySchema creates the legacy ref-store tables in the database dsn.
func loadLegacySchema(t *testing.T, dsn string) {
	t.Helper()
	schema, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tests", "legacy", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, string(schema)); err != nil {
		t.Fatalf("load legacy schema: %v", err)
	}
}

// kvStore is how one KV driver is given to a kvproxy process.
type kvStore struct {
	driver string
	dsn    func(t *testing.T) string
}

// kvStores are the drivers a kvproxy process can run on in tests.
func kvStores() []kvStore {
	var out []kvStore
	for _, d := range []string{"mem", "local", "postgres", "dynamodb"} {
		out = append(out, kvStore{d, func(t *testing.T) string { return kvtest.ProcessDSN(t, d) }})
	}
	return out
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// metricsText returns the proxy's /metrics page.
func metricsText(t *testing.T, p *testenv.Proxy) string {
	t.Helper()
	resp, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// verifyClean runs a full verify of the upstream database against the KV
// store (which no proxy may hold open, for local) and fails the test unless
// the two hold the same ref store. It returns how many rows matched.
func verifyClean(t *testing.T, ctx context.Context, pool *pgxpool.Pool, driver, kvDSN, when string) int64 {
	t.Helper()
	store, err := drivers.Open(ctx, driver, kvDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, err := migrate.NewVerifier(migrate.VerifyOptions{Source: pool, KV: store})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := v.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Fatalf("PostgreSQL and KV differ %s: %+v", when, rep.Entities)
	}
	var rows int64
	for _, e := range rep.Entities {
		rows += e.Match
	}
	return rows
}
