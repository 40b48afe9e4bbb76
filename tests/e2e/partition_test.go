package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// An instance cut off from the KV store's control records stops accepting
// ref-store writes once its lease expires (40001, which the legacy client
// retries), keeps serving reads, and accepts writes again once it has
// re-read the phase record.
func TestPartitionedInstanceRefusesWrites(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	fault := filepath.Join(t.TempDir(), "partitioned")
	p := testenv.StartProxyEnv(t, []string{"KVPROXY_TEST_LEASE_TTL=1s", "KVPROXY_TEST_PARTITION_FILE=" + fault},
		"--phase", "kv-only", "--kv-driver", "mem")
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	write := func(tag string) error {
		_, err := conn.Exec(ctx, legacy.SQLT2, "repo", tag, "c1")
		return err
	}
	// The tags' repository must exist for the writes to land.
	if _, err := conn.Exec(ctx, legacy.SQLR2, "repo", "s3://ns", time.Now(), "main"); err != nil {
		t.Fatal(err)
	}
	if err := write("before"); err != nil {
		t.Fatalf("write while connected: %v", err)
	}
	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var refused error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if refused = write("during"); refused != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes still accepted long after the lease must have expired")
		}
	}
	if code := sqlstate(refused); code != "40001" {
		t.Fatalf("partitioned write: %v (SQLSTATE %s), want 40001", refused, code)
	}
	var commit string
	if err := conn.QueryRow(ctx, legacy.SQLT1, "repo", "before").Scan(&commit); err != nil || commit != "c1" {
		t.Fatalf("read while partitioned: %q, %v", commit, err)
	}
	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); write("after") != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("writes still refused after the partition healed")
		}
	}
}
