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

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// legacyDB returns a fresh database with the legacy ref-store schema.
func legacyDB(t *testing.T) string {
	t.Helper()
	dsn := testenv.PostgresDB(t)
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
	return dsn
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
