package legacy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// benchTarget is one place the simulator can be pointed at: start returns
// its DSN and, for a kvproxy, the proxy's process id (0 otherwise), whose
// CPU the benchmark reports.
type benchTarget struct {
	name  string
	start func(b *testing.B) (dsn string, pid int)
}

// proxyTarget runs `kvproxy serve` with args in front of a fresh legacy
// database, with GOMAXPROCS=1 unless KVPROXY_TEST_PROXY_GOMAXPROCS says
// otherwise ("default" leaves Go's choice). One P models a sidecar with a
// CPU limit of one core, which is what Go picks there, and it is the
// better setting when the client, PostgreSQL and the proxy share two
// cores: with a second, mostly idle P, every wake-up of a session also
// wakes a spinning thread, about 40% more proxy CPU per dual-write flow
// (see the README, Performance).
func proxyTarget(name string, args func(b *testing.B) []string) benchTarget {
	return benchTarget{name, func(b *testing.B) (string, int) {
		var env []string
		switch n := os.Getenv("KVPROXY_TEST_PROXY_GOMAXPROCS"); n {
		case "":
			env = append(env, "GOMAXPROCS=1")
		case "default":
		default:
			env = append(env, "GOMAXPROCS="+n)
		}
		p := testenv.StartProxyEnv(b, env, append([]string{"--upstream", freshDB(b)}, args(b)...)...)
		return p.DSN, p.Cmd.Process.Pid
	}}
}

func benchTargets() []benchTarget {
	targets := []benchTarget{
		{"direct", func(b *testing.B) (string, int) { return freshDB(b), 0 }},
	}
	// kvproxy in kv-only on each KV driver, in front of an upstream that
	// keeps the non-ref-store tables (schema_migrations).
	for _, driver := range []string{"local", "postgres", "dynamodb"} {
		targets = append(targets, proxyTarget("kvproxy-"+driver, func(b *testing.B) []string {
			return []string{"--phase", "kv-only", "--kv-driver", driver, "--kv-dsn", kvtest.ProcessDSN(b, driver)}
		}))
	}
	// The migration phases in front of PostgreSQL: passthrough (a relay),
	// dual-write (PostgreSQL authoritative, mirrored to each KV driver) and
	// kv-primary (KV authoritative, mirrored to PostgreSQL).
	targets = append(targets, proxyTarget("passthrough", func(*testing.B) []string {
		return []string{"--phase", "passthrough", "--kv-driver", "mem"}
	}))
	for _, phase := range []string{"dual-write", "kv-primary"} {
		for _, driver := range []string{"local", "postgres", "dynamodb"} {
			targets = append(targets, proxyTarget(phase+"-"+driver, func(b *testing.B) []string {
				return []string{"--phase", phase, "--kv-driver", driver, "--kv-dsn", kvtest.ProcessDSN(b, driver)}
			}))
		}
	}
	// An externally started endpoint (e.g. a kvproxy in front of a database
	// that already holds schema.sql) can be benchmarked without code changes.
	if dsn := os.Getenv("KVPROXY_LEGACY_BENCH_DSN"); dsn != "" {
		targets = append(targets, benchTarget{"external", func(*testing.B) (string, int) { return dsn, 0 }})
	}
	return targets
}

// BenchmarkFlows measures lakeFS flows per second (one flow = one workload
// step: stage, commit, merge, list, ...) at 1 and 16 concurrent clients,
// with the latency of flows (flow-p50-µs, flow-p99-µs) and of single statements as
// the client sees them (stmt-p50-µs, stmt-p99-µs).
func BenchmarkFlows(b *testing.B) {
	for _, target := range benchTargets() {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", target.name, clients), func(b *testing.B) {
				dsn, pid := target.start(b)
				benchFlows(b, dsn, pid, clients)
			})
		}
	}
}

func benchFlows(b *testing.B, dsn string, proxyPID, clients int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ranges := NewRangeStore()
	ledger := NewLedger()
	var workloads []*Workload
	// Statement latencies as the client sees them (issue 6's target is on
	// these); recording starts with the timer.
	var stmtMu sync.Mutex
	var stmtLat []time.Duration
	var timing atomic.Bool
	onStatement := func(_ string, d time.Duration) {
		if timing.Load() {
			stmtMu.Lock()
			stmtLat = append(stmtLat, d)
			stmtMu.Unlock()
		}
	}
	for i := 0; i < clients; i++ {
		c, err := Open(ctx, Config{DSN: dsn, MaxConns: 4, LockMaxConns: 2, Ranges: ranges, UUIDs: NewSeededUUIDs(int64(i)), OnStatement: onStatement})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		// Unique names per benchmark run: the target may be reused.
		name := fmt.Sprintf("bench%d-%d-c%d", time.Now().UnixNano()%1e9, clients, i)
		workloads = append(workloads, NewWorkload(c, ledger, WorkloadConfig{Seed: int64(i), Name: name}))
	}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	timing.Store(true)
	cpu0, proxy0 := processCPU(), procCPU(proxyPID)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, w := range workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := w.Step(ctx); err != nil {
					errs <- err
					return
				}
				mine = append(mine, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, proxyCPU := processCPU()-cpu0, procCPU(proxyPID)-proxy0
	b.StopTimer()
	timing.Store(false)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "flows/s")
	// The simulator's own CPU per flow (pgx v4 and the workload): on a
	// small machine it bounds how fast any target can be driven.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "client-cpu-µs/flow")
	if proxyPID != 0 {
		b.ReportMetric(float64(proxyCPU.Microseconds())/float64(b.N), "proxy-cpu-µs/flow")
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "flow-p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "flow-p99-µs")
	}
	stmtMu.Lock()
	defer stmtMu.Unlock()
	if len(stmtLat) > 0 {
		slices.Sort(stmtLat)
		b.ReportMetric(float64(len(stmtLat))/float64(b.N), "stmts/flow")
		b.ReportMetric(float64(stmtLat[len(stmtLat)/2].Microseconds()), "stmt-p50-µs")
		b.ReportMetric(float64(stmtLat[len(stmtLat)*99/100].Microseconds()), "stmt-p99-µs")
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user and system CPU time process pid has used (0 for
// pid 0 or when /proc cannot tell).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: utime and stime are the 12th and 13th.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	// Clock ticks are 100 Hz on Linux (USER_HZ).
	return time.Duration(ut+st) * 10 * time.Millisecond
}
