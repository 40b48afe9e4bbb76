package e2e

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/tests/legacy"
)

// migration is a live migration under way: proxies sharing one upstream
// database and one KV store, and the legacy simulator running through them.
type migration struct {
	t        *testing.T
	ctx      context.Context
	driver   string
	kvDSN    string
	upstream string
	proxies  []*testenv.Proxy
	stopLoad context.CancelFunc
	loadDone chan struct{}
	res      *legacy.RunResult
	loadErr  error
}

func (m *migration) kvArgs() []string {
	return []string{"--upstream", m.upstream, "--kv-driver", m.driver, "--kv-dsn", m.kvDSN}
}

func (m *migration) dsns() []string {
	var out []string
	for _, p := range m.proxies {
		out = append(out, p.DSN)
	}
	return out
}

// startLoad runs clients until stopLoad.
func (m *migration) startLoad(clients int, seed int64) {
	lctx, cancel := context.WithCancel(m.ctx)
	m.stopLoad, m.loadDone = cancel, make(chan struct{})
	dsns := m.dsns()
	go func() {
		defer close(m.loadDone)
		m.res, m.loadErr = legacy.RunConcurrent(lctx, legacy.RunConfig{
			DSNs: dsns, Clients: clients, Seed: seed, Version: legacy.V068, SharedRepo: true,
		})
	}()
}

func (m *migration) finishLoad() {
	m.t.Helper()
	m.stopLoad()
	<-m.loadDone
	if m.loadErr != nil && !errors.Is(m.loadErr, context.Canceled) {
		m.t.Fatalf("a client operation failed during the migration: %v\n%s", m.loadErr, m.logTails())
	}
	if m.res == nil || m.res.Total == 0 {
		m.t.Fatalf("the simulator acknowledged nothing")
	}
}

func (m *migration) logTails() string {
	var b strings.Builder
	for i, p := range m.proxies {
		fmt.Fprintf(&b, "--- proxy %d log tail:\n%s\n", i, tail(p.Logs(), 25))
	}
	return b.String()
}

// run runs a kvproxy command and fails the test if it fails.
func (m *migration) run(args ...string) string {
	m.t.Helper()
	out, stderr, err := runMigrate(m.t, m.ctx, append(args, m.kvArgs()...)...)
	if err != nil {
		m.t.Fatalf("kvproxy %s: %v\nstdout:\n%s\nstderr:\n%s\n%s", strings.Join(args, " "), err, out, tail(stderr, 30), m.logTails())
	}
	return string(out)
}

// switchPhase runs cutover, rollback or finalize. A switch that aborted
// cleanly (the machine was too slow to drain within the timeout) is
// retried; each attempt must leave either the old or the new phase.
func (m *migration) switchPhase(kind, want string) string {
	m.t.Helper()
	for attempt := 1; ; attempt++ {
		out, stderr, err := runMigrate(m.t, m.ctx, append([]string{kind}, m.kvArgs()...)...)
		phase := m.phase()
		if err == nil {
			if phase.Phase != want || phase.Barrier != nil {
				m.t.Fatalf("%s reported success but the phase record is %s", kind, phase)
			}
			return string(out)
		}
		if phase.Barrier != nil || phase.Phase == want {
			m.t.Fatalf("%s failed (%v) but left the phase record at %s\n%s", kind, err, phase, out)
		}
		if attempt == 3 || !strings.Contains(string(out)+stderr, "aborted") {
			m.t.Fatalf("kvproxy %s: %v\nstdout:\n%s\nstderr:\n%s\n%s", kind, err, out, tail(stderr, 30), m.logTails())
		}
		m.t.Logf("%s attempt %d aborted cleanly, retrying:\n%s", kind, attempt, out)
	}
}

func (m *migration) phase() control.PhaseRecord {
	m.t.Helper()
	store, err := drivers.Open(m.ctx, m.driver, m.kvDSN)
	if err != nil {
		m.t.Fatal(err)
	}
	defer store.Close()
	rec, _, err := control.NewStore(store, nil).Phase(m.ctx)
	if err != nil {
		m.t.Fatal(err)
	}
	return rec
}

// The whole migration under load, on three proxies sharing the stores:
// passthrough, dual-write, backfill, verify, cutover, rollback, cutover
// again, finalize. Every acknowledged write is there at the end, no client
// operation failed (40001s are retried by the client, as lakeFS does), and
// PostgreSQL and KV matched right before finalize.
func TestLiveMigrationUnderLoad(t *testing.T) {
	for _, kvs := range kvStores() {
		if kvs.driver == "mem" || kvs.driver == "local" {
			continue // one process only: several instances need a shared store
		}
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Minute)
			m := &migration{t: t, ctx: ctx, driver: kvs.driver, kvDSN: kvs.dsn(t), upstream: legacyDB(t)}
			args := append([]string{"--phase", "passthrough", "--shadow-read-fraction", "0.2"}, m.kvArgs()...)
			for range 3 {
				m.proxies = append(m.proxies, testenv.StartProxy(t, args...))
			}
			m.startLoad(16, 11)
			pause := func() { time.Sleep(3 * time.Second) }
			pause()
			m.run("phase", "set", "dual-write")
			pause()
			t.Log(m.run("backfill"))
			t.Log(m.run("verify", "--repair"))
			t.Log(m.run("verify"))
			t.Log(m.switchPhase("cutover", control.KVPrimary))
			pause()
			t.Log(m.switchPhase("rollback", control.DualWrite))
			pause()
			t.Log(m.run("verify", "--repair"))
			t.Log(m.run("verify"))
			t.Log(m.switchPhase("cutover", control.KVPrimary))
			pause()
			// The stores match while PostgreSQL is still mirrored: stop the
			// load so that the snapshot and KV can be compared exactly.
			m.finishLoad()
			first := m.res
			pool, err := pgxpool.New(ctx, m.upstream)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			waitDirtyDrained(t, ctx, m)
			rows := verifyClean(t, ctx, pool, m.driver, m.kvDSN, "in kv-primary")
			if err := first.Ledger.Verify(ctx, m.upstream); err != nil {
				t.Fatalf("PostgreSQL (the mirror) misses acknowledged writes: %v", err)
			}
			m.startLoad(16, 12)
			pause()
			t.Log(m.switchPhase("finalize", control.KVOnly))
			pause()
			m.finishLoad()
			for i, res := range []*legacy.RunResult{first, m.res} {
				if err := res.Ledger.Verify(ctx, m.proxies[0].DSN); err != nil {
					t.Fatalf("load %d: an acknowledged write is missing from KV: %v", i, err)
				}
			}
			var conflicts int
			for _, p := range m.proxies {
				for _, mm := range conflictRe.FindAllStringSubmatch(metricsText(t, p), -1) {
					n, _ := strconv.Atoi(mm[1])
					conflicts += n
				}
			}
			t.Logf("%d + %d flows acknowledged and present; %d rows matched in kv-primary; %d conflicts (40001) answered by the proxies",
				first.Total, m.res.Total, rows, conflicts)
		})
	}
}

var conflictRe = regexp.MustCompile(`kvproxy_statements_total\{outcome="conflict"[^}]*\} (\d+)`)

// waitDirtyDrained waits until both dirty-key logs are empty.
func waitDirtyDrained(t *testing.T, ctx context.Context, m *migration) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n := 0
		for _, p := range m.proxies {
			n += metricValue(t, p, "kvproxy_dirty_keys")
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dirty-key logs still hold %d keys\n%s", n, m.logTails())
		}
		time.Sleep(500 * time.Millisecond)
	}
}
