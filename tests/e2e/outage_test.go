package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// dynalite is a DynamoDB-compatible server of the test's own, kept on disk
// so that it can be stopped and started again with its data.
type dynalite struct {
	t    *testing.T
	cli  string
	dir  string
	port int
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer // the server's output, across restarts
}

func startDynalite(t *testing.T) *dynalite {
	cli := os.Getenv("KVPROXY_TEST_DYNALITE_CLI")
	if cli == "" {
		testenv.DynamoDBEndpoint(t) // fails under make test, skips otherwise
		t.Skip("KVPROXY_TEST_DYNALITE_CLI not set")
	}
	// The server is restarted on the same port, so the port must not be one
	// the kernel hands out to outgoing connections meanwhile (Linux's
	// ephemeral range starts at 32768): under load one of them would take it.
	var port int
	for try := 0; ; try++ {
		port = 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			break
		}
		if try == 100 {
			t.Fatalf("no free port below the ephemeral range: %v", err)
		}
	}
	d := &dynalite{t: t, cli: cli, dir: t.TempDir(), port: port}
	d.start()
	t.Cleanup(d.stop)
	// Runs before stop: if the server died on its own, this says why.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dynalite on port %d said:\n%s", d.port, tail(d.out.String(), 20))
		}
	})
	return d
}

func (d *dynalite) endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", d.port) }

func (d *dynalite) start() {
	d.cmd = exec.Command("node", d.cli, "--port", fmt.Sprint(d.port), "--host", "127.0.0.1", "--path", d.dir)
	if d.out == nil {
		d.out = &testenv.SyncBuffer{}
	}
	out := d.out
	d.cmd.Stdout, d.cmd.Stderr = out, out
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", d.port)); err == nil {
			c.Close()
			return
		}
	}
	d.t.Fatalf("dynalite did not start: %s", out.String())
}

func (d *dynalite) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.cmd = nil
	}
}

// The KV server stopped for 10 s in the middle of dual-write load: clients
// see no errors (PostgreSQL is authoritative and the mirror gives up after
// its timeout), the dirty-key log grows, and once the server is back the
// log drains to zero and the stores match.
func TestKVOutageDuringDualWrite(t *testing.T) {
	ctx := testCtx(t, 10*time.Minute)
	d := startDynalite(t)
	upstream := legacyDB(t)
	kvDSN := "dynamodb://?endpoint=" + d.endpoint() + "&region=us-east-1&table=kvstore&create_table=true&max_attempts=2&max_backoff=100ms"
	p := testenv.StartProxy(t, "--phase", "dual-write", "--upstream", upstream, "--kv-driver", "dynamodb", "--kv-dsn", kvDSN,
		"--shadow-mirror-timeout", "300ms", "--shadow-read-fraction", "0")
	pool, err := pgxpool.New(ctx, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	dirtyCount := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM kvproxy.dirty_keys").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	loadCtx, stopLoad := context.WithTimeout(ctx, 30*time.Second)
	defer stopLoad()
	var res *legacy.RunResult
	var runErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, runErr = legacy.RunConcurrent(loadCtx, legacy.RunConfig{DSN: p.DSN, Clients: 8, Seed: 21, Version: legacy.V068})
	}()
	time.Sleep(5 * time.Second)
	d.stop()
	var peak int64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		peak = max(peak, dirtyCount())
	}
	d.start()
	wg.Wait()
	// The load ends by its context running out; anything else a client saw
	// is a failure.
	if runErr != nil && !errors.Is(runErr, context.DeadlineExceeded) && !errors.Is(runErr, context.Canceled) {
		t.Fatalf("clients saw errors during the KV outage: %v", runErr)
	}
	if res == nil || res.Total < 50 {
		t.Fatalf("the load made no progress: %+v", res)
	}
	if len(res.Failures) > 0 {
		t.Fatalf("client failures: %v", res.Failures)
	}
	if err := res.Ledger.Verify(ctx, p.DSN); err != nil {
		t.Fatal(err)
	}
	if peak == 0 {
		t.Fatal("the dirty-key log never grew while the KV server was down")
	}
	for deadline := time.Now().Add(5 * time.Minute); dirtyCount() != 0; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dirty-key log still holds %d keys after the KV server returned\n%s", dirtyCount(), tail(p.Logs(), 20))
		}
	}
	p.Stop(t)
	verifyClean(t, ctx, pool, "dynamodb", kvDSN, "after the outage")
	t.Logf("%d steps (run ended with %v); dirty keys peaked at %d during the outage and drained", res.Total, runErr, peak)
}
