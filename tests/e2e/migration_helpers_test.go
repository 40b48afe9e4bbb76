package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// logTails returns the end of every proxy's log, and saves the whole logs
// in files for a closer look.
func (m *migration) logTails() string {
	var b strings.Builder
	dir, err := os.MkdirTemp("", "kvproxy-e2e-logs-")
	for i, p := range m.proxies {
		fmt.Fprintf(&b, "--- proxy %d log tail:\n%s\n", i, tail(p.Logs(), 25))
		if err == nil {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("proxy%d.log", i)), []byte(p.Logs()), 0o644)
		}
	}
	if err == nil {
		fmt.Fprintf(&b, "--- whole proxy logs in %s\n", dir)
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
		m.t.Logf("%s attempt %d aborted cleanly, retrying:\n%s\n%s", kind, attempt, out, tail(stderr, 3))
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
