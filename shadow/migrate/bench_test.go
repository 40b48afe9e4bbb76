package migrate

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

// BenchmarkBackfillVerify backfills and verifies the generated benchmark
// database (KVPROXY_BENCH_SCALE, default 0.02 of 100 repositories / 100k
// commits / 10k branches / 1M staged entries) into each driver, reporting
// rows/s.
func BenchmarkBackfillVerify(b *testing.B) {
	scale := 0.02
	if v, err := strconv.ParseFloat(os.Getenv("KVPROXY_BENCH_SCALE"), 64); err == nil && v > 0 {
		scale = v
	}
	for _, d := range kvtest.Drivers() {
		if d.Name == "mem" {
			continue
		}
		b.Run(d.Name, func(b *testing.B) {
			ctx := benchCtx(b, 30*time.Minute)
			pool, st := legacyPoolB(b, ctx, legacygen.Bench(scale))
			var bfSecs, vfSecs float64
			for b.Loop() {
				s := d.New(b)
				start := time.Now()
				bf, err := NewBackfill(BackfillOptions{Source: pool, KV: s, IncludeOrphans: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bf.Run(ctx); err != nil {
					b.Fatal(err)
				}
				bfSecs += time.Since(start).Seconds()
				start = time.Now()
				v, err := NewVerifier(VerifyOptions{Source: pool, KV: s, IncludeOrphans: true})
				if err != nil {
					b.Fatal(err)
				}
				rep, err := v.Run(ctx)
				if err != nil {
					b.Fatal(err)
				}
				vfSecs += time.Since(start).Seconds()
				if rep.Differences() != 0 {
					b.Fatalf("verify: %d differences", rep.Differences())
				}
			}
			rows := float64(st.Rows()) * float64(b.N)
			b.ReportMetric(rows/bfSecs, "backfill-rows/s")
			b.ReportMetric(rows/vfSecs, "verify-rows/s")
		})
	}
}
