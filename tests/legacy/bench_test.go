package legacy

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchTarget is one place the simulator can be pointed at. Adding a
// proxy target is one entry: {"kvproxy-local", func(b) string { ... DSN ... }}.
type benchTarget struct {
	name string
	dsn  func(b *testing.B) string
}

func benchTargets() []benchTarget {
	targets := []benchTarget{
		{"direct", func(b *testing.B) string { return freshDB(b) }},
	}
	// An externally started endpoint (e.g. a kvproxy in front of a database
	// that already holds schema.sql) can be benchmarked without code changes.
	if dsn := os.Getenv("KVPROXY_LEGACY_BENCH_DSN"); dsn != "" {
		targets = append(targets, benchTarget{"external", func(*testing.B) string { return dsn }})
	}
	return targets
}

// BenchmarkFlows measures lakeFS flows per second (one flow = one workload
// step: stage, commit, merge, list, ...) at 1 and 16 concurrent clients.
func BenchmarkFlows(b *testing.B) {
	for _, target := range benchTargets() {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", target.name, clients), func(b *testing.B) {
				benchFlows(b, target.dsn(b), clients)
			})
		}
	}
}

func benchFlows(b *testing.B, dsn string, clients int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ranges := NewRangeStore()
	ledger := NewLedger()
	var workloads []*Workload
	for i := 0; i < clients; i++ {
		c, err := Open(ctx, Config{DSN: dsn, MaxConns: 4, LockMaxConns: 2, Ranges: ranges, UUIDs: NewSeededUUIDs(int64(i))})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		// Unique names per benchmark run: the target may be reused.
		name := fmt.Sprintf("bench%d-%d-c%d", time.Now().UnixNano()%1e9, clients, i)
		workloads = append(workloads, NewWorkload(c, ledger, WorkloadConfig{Seed: int64(i), Name: name}))
	}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, w := range workloads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := w.Step(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "flows/s")
}
