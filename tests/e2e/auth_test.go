package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// Client authentication configured through kvproxy's own settings reaches
// the wire layer: SCRAM with a users file accepts the right password and
// refuses a wrong one with 28P01.
func TestSCRAMFromConfiguration(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	users := filepath.Join(t.TempDir(), "users.txt")
	if err := os.WriteFile(users, []byte(`"lakefs" "s3cret"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartProxy(t, "--kv-driver", "mem", "--auth-method", "scram-sha-256", "--auth-users-file", users)
	good := "postgres://lakefs:s3cret@" + p.Addr + "/lakefs?sslmode=disable"
	conn, err := pgx.Connect(ctx, good)
	if err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	if _, err := conn.Exec(ctx, ";"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	_, err = pgx.Connect(ctx, "postgres://lakefs:wrong@"+p.Addr+"/lakefs?sslmode=disable")
	if code := sqlstate(err); code != "28P01" {
		t.Fatalf("wrong password: %v (SQLSTATE %q), want 28P01", err, code)
	}
}
