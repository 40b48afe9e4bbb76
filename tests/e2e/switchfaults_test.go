package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// startSwitch starts `kvproxy <kind>` with the barrier held for hold before
// the flip (test hook), and returns once the barrier is up.
func (m *migration) startSwitch(kind string, hold time.Duration) (*exec.Cmd, *strings.Builder) {
	m.t.Helper()
	cmd := exec.Command(testenv.ProxyBinary(m.t), append([]string{kind}, m.kvArgs()...)...)
	cmd.Env = append(os.Environ(), "KVPROXY_TEST_BARRIER_HOLD="+hold.String())
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if m.phase().Barrier != nil {
			return cmd, out
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("no barrier after a minute:\n%s", out.String())
		}
	}
}

// startTolerantLoad runs clients that may see errors (those of a proxy that
// is killed under them) and reports their result on the returned channel.
func startTolerantLoad(ctx context.Context, dsn string, clients int, seed int64) (stop context.CancelFunc, done chan *legacy.RunResult) {
	lctx, cancel := context.WithCancel(ctx)
	done = make(chan *legacy.RunResult, 1)
	go func() {
		res, _ := legacy.RunConcurrent(lctx, legacy.RunConfig{DSN: dsn, Clients: clients, Seed: seed, Version: legacy.V068, Tolerant: true, Prefix: "t"})
		done <- res
	}()
	return cancel, done
}

// Faults during a switch's barrier, on three proxies under load:
//   - one proxy (not the one driving) is killed with SIGKILL while the
//     barrier holds writes: the switch completes without it (it had
//     acknowledged) or aborts cleanly, and its clients, whose connection
//     string lists another proxy after it, go on through that one;
//   - the process driving the switch is killed while it holds the barrier:
//     the instances let writes go on after the barrier's deadline, the phase
//     stays, and the next switch succeeds.
//
// In both, every write acknowledged to the strict clients (on the proxies
// that stay up) is present afterwards and nothing else failed.
func TestSwitchFaults(t *testing.T) {
	for _, driver := range []string{"postgres", "dynamodb"} {
		t.Run(driver, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Minute)
			m := &migration{t: t, ctx: ctx, driver: driver, kvDSN: kvtest.ProcessDSN(t, driver), upstream: legacyDB(t)}
			args := append([]string{"--phase", "dual-write"}, m.kvArgs()...)
			env := []string{"KVPROXY_TEST_LEASE_TTL=3s"}
			for range 3 {
				m.proxies = append(m.proxies, testenv.StartProxyEnv(t, env, args...))
			}
			victim := m.proxies[2]
			strict := m.proxies[:2]
			m.run("backfill")
			m.run("verify")

			// Strict load on the two proxies that stay up.
			all := m.proxies
			m.proxies = strict
			m.startLoad(8, 31)
			m.proxies = all
			// Tolerant load through the victim, falling back to proxy 0.
			fallback := "postgres://kvproxy@" + victim.Addr + "," + strict[0].Addr + "/kvproxy?sslmode=disable"
			stopTolerant, tolerantDone := startTolerantLoad(ctx, fallback, 4, 32)
			time.Sleep(3 * time.Second)

			// 1. Kill a proxy during the barrier.
			sw, out := m.startSwitch("cutover", 2*time.Second)
			time.Sleep(300 * time.Millisecond) // past the acknowledgements
			victim.Kill()
			err := sw.Wait()
			rec := m.phase()
			switch {
			case rec.Barrier != nil:
				t.Fatalf("barrier left up after the switch ended (%v):\n%s", err, out)
			case err == nil && rec.Phase != control.KVPrimary, err != nil && rec.Phase != control.DualWrite:
				t.Fatalf("switch ended with %v but the phase is %s:\n%s", err, rec, out)
			}
			t.Logf("cutover with a proxy killed under the barrier: err=%v, phase %s\n%s", err, rec, tail(out.String(), 8))
			m.proxies = strict
			if rec.Phase != control.KVPrimary {
				time.Sleep(4 * time.Second) // the victim's lease runs out
				t.Log(m.switchPhase("cutover", control.KVPrimary))
			}
			time.Sleep(2 * time.Second)

			// 2. Kill the driving process while it holds the barrier.
			sw, out = m.startSwitch("rollback", time.Minute)
			held := time.Now()
			_ = sw.Process.Signal(syscall.SIGKILL)
			_ = sw.Wait()
			if rec := m.phase(); rec.Phase != control.KVPrimary || rec.Barrier == nil {
				t.Fatalf("after killing the driver the phase record is %s, want kv-primary with its barrier still up\n%s", rec, out)
			}
			// Writes resume by themselves after the deadline (5 s) and
			// its grace (2 s); the strict clients wait at most 6 s per
			// write, then retry their 40001.
			time.Sleep(9*time.Second - time.Since(held))
			t.Log(m.switchPhase("rollback", control.DualWrite))
			time.Sleep(2 * time.Second)

			m.finishLoad()
			stopTolerant()
			tres := <-tolerantDone
			if err := m.res.Ledger.Verify(ctx, strict[0].DSN); err != nil {
				t.Fatalf("an acknowledged write is missing: %v\n%s", err, m.logTails())
			}
			if tres == nil || tres.Total == 0 {
				t.Fatal("the clients of the killed proxy completed nothing")
			}
			if err := tres.Ledger.Verify(ctx, strict[0].DSN); err != nil {
				t.Fatalf("the killed proxy's clients lost an acknowledged write: %v", err)
			}
			var connErrs, other int
			for _, f := range tres.Failures {
				if isConnectionError(f) {
					connErrs++
				} else {
					other++
					t.Logf("tolerated failure: %v", f)
				}
			}
			t.Logf("strict: %d flows; through the killed proxy: %d flows, %d connection errors, %d other tolerated outcomes",
				m.res.Total, tres.Total, connErrs, other)
		})
	}
}

func isConnectionError(err error) bool {
	if errors.Is(err, context.Canceled) {
		return true
	}
	s := err.Error()
	for _, m := range []string{"conn closed", "unexpected EOF", "connection reset", "broken pipe", "connection refused", "FATAL", "closed pool", "failed to connect"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// The KV server paused (SIGSTOP) while a cutover holds its barrier: the
// switch cannot finish and gives up, and nothing half-switched remains:
// the phase stays dual-write (a barrier its driver could not release is
// ignored after its deadline), writes acknowledged meanwhile are all there,
// and once the server runs again the next cutover succeeds.
func TestSwitchWithKVPaused(t *testing.T) {
	ctx := testCtx(t, 8*time.Minute)
	d := startDynalite(t)
	kvDSN := "dynamodb://?endpoint=" + d.endpoint() + "&region=us-east-1&table=kvstore&create_table=true&max_attempts=2&max_backoff=100ms"
	m := &migration{t: t, ctx: ctx, driver: "dynamodb", kvDSN: kvDSN, upstream: legacyDB(t)}
	args := append([]string{"--phase", "dual-write", "--shadow-mirror-timeout", "300ms"}, m.kvArgs()...)
	for range 3 {
		m.proxies = append(m.proxies, testenv.StartProxyEnv(t, []string{"KVPROXY_TEST_LEASE_TTL=3s"}, args...))
	}
	m.run("backfill")
	m.run("verify")
	// Tolerant: while the KV store is paused the instances' leases run
	// out and they refuse writes (40001) until they can vouch for the
	// phase again; what they acknowledged must survive.
	stop, done := startTolerantLoad(ctx, m.proxies[0].DSN, 6, 41)
	time.Sleep(3 * time.Second)

	sw, out := m.startSwitch("cutover", 2*time.Second)
	_ = d.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(6 * time.Second)
	_ = d.cmd.Process.Signal(syscall.SIGCONT)
	err := sw.Wait()
	if err == nil {
		t.Fatalf("the cutover succeeded although the KV store was paused under its barrier:\n%s", out)
	}
	if rec := m.phase(); rec.Phase != control.DualWrite {
		t.Fatalf("after the aborted cutover the phase is %s, want dual-write\n%s", rec, out)
	}
	t.Logf("cutover with the KV store paused: %v\n%s", err, tail(out.String(), 6))
	time.Sleep(3 * time.Second) // leases renewed, any leftover barrier past its deadline
	t.Log(m.switchPhase("cutover", control.KVPrimary))
	time.Sleep(2 * time.Second)
	stop()
	res := <-done
	if res == nil || res.Total == 0 {
		t.Fatal("no flow completed")
	}
	if err := res.Ledger.Verify(ctx, m.proxies[0].DSN); err != nil {
		t.Fatalf("an acknowledged write is missing: %v\n%s", err, m.logTails())
	}
	var refused int
	for _, f := range res.Failures {
		if strings.Contains(f.Error(), "40001") || strings.Contains(f.Error(), "serializ") {
			refused++
		}
	}
	t.Logf("%d flows, %d tolerated failures (%d refusals while the instances could not vouch for the phase)", res.Total, len(res.Failures), refused)
}

// An instance cut off from the KV store (test hook) while a cutover runs:
// it cannot acknowledge, so the switch waits until its lease runs out and
// completes without it; meanwhile and until it can read the phase record
// again it refuses ref-store writes (40001), and once healed it follows the
// new phase.
func TestSwitchWithPartitionedInstance(t *testing.T) {
	for _, driver := range []string{"postgres", "dynamodb"} {
		t.Run(driver, func(t *testing.T) {
			ctx := testCtx(t, 5*time.Minute)
			m := &migration{t: t, ctx: ctx, driver: driver, kvDSN: kvtest.ProcessDSN(t, driver), upstream: legacyDB(t)}
			args := append([]string{"--phase", "dual-write"}, m.kvArgs()...)
			fault := t.TempDir() + "/partitioned"
			for i := range 3 {
				env := []string{"KVPROXY_TEST_LEASE_TTL=3s"}
				if i == 2 {
					env = append(env, "KVPROXY_TEST_PARTITION_FILE="+fault)
				}
				m.proxies = append(m.proxies, testenv.StartProxyEnv(t, env, args...))
			}
			cut := m.proxies[2]
			m.run("backfill")
			m.run("verify")
			m.proxies = m.proxies[:2]
			m.startLoad(6, 51)
			if err := os.WriteFile(fault, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			t.Log(m.run("cutover", "--timeout", "10s"))
			took := time.Since(start)
			if rec := m.phase(); rec.Phase != control.KVPrimary {
				t.Fatalf("phase %s after the cutover", rec)
			}
			// The cut-off instance refuses writes: it cannot vouch for the
			// phase (its lease ran out).
			c, err := legacy.Open(ctx, legacy.Config{DSN: cut.DSN, MaxConns: 1, LockMaxConns: 1, Version: legacy.V068})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _, err = c.CreateRepository(ctx, "cut-off", "s3://b/cut-off", "main")
			if err == nil || !strings.Contains(err.Error(), "40001") && !errors.Is(err, legacy.ErrSerialization) {
				t.Fatalf("a write through the cut-off instance: %v, want a 40001 refusal", err)
			}
			if err := os.Remove(fault); err != nil {
				t.Fatal(err)
			}
			// Healed: it re-reads the phase record and writes again, in
			// kv-primary.
			var werr error
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
				if _, _, werr = c.CreateRepository(ctx, "healed", "s3://b/healed", "main"); werr == nil {
					break
				}
			}
			if werr != nil {
				t.Fatalf("the healed instance still refuses writes: %v\n%s", werr, tail(cut.Logs(), 20))
			}
			m.finishLoad()
			if err := m.res.Ledger.Verify(ctx, m.proxies[0].DSN); err != nil {
				t.Fatalf("an acknowledged write is missing: %v", err)
			}
			t.Logf("cutover completed in %s without the cut-off instance; it refused writes until healed, then wrote in kv-primary; %d flows through the others", took.Round(time.Millisecond), m.res.Total)
		})
	}
}
