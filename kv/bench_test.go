package kv_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

const benchKeys = 1000

// BenchmarkKV compares the drivers side by side: one sub-benchmark per
// driver and operation, each reporting ops/s (for Scan1000, full scans of a
// 1,000-key partition per second). Server drivers skip with a message when
// their server is not configured (run through `make bench`).
func BenchmarkKV(b *testing.B) {
	for _, d := range kvtest.Drivers() {
		b.Run(d.Name, func(b *testing.B) {
			s := d.New(b)
			ctx := context.Background()
			pk, scanPK := []byte("bench"), []byte("bench-scan")
			keys := make([][]byte, benchKeys)
			value := make([]byte, 256)
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "key-%05d", i)
				if err := s.Set(ctx, pk, keys[i], value); err != nil {
					b.Fatal(err)
				}
				if err := s.Set(ctx, scanPK, keys[i], value); err != nil {
					b.Fatal(err)
				}
			}
			report := func(b *testing.B) {
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			}
			b.Run("Get", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if _, err := s.Get(ctx, pk, keys[i%benchKeys]); err != nil {
						b.Fatal(err)
					}
				}
				report(b)
			})
			b.Run("Set", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if err := s.Set(ctx, pk, keys[i%benchKeys], value); err != nil {
						b.Fatal(err)
					}
				}
				report(b)
			})
			b.Run("SetIf", func(b *testing.B) {
				key := []byte("cas")
				cur := fmt.Appendf(nil, "%d", 0)
				if err := s.Set(ctx, pk, key, cur); err != nil {
					b.Fatal(err)
				}
				for i := 1; b.Loop(); i++ {
					next := fmt.Appendf(nil, "%d", i)
					if err := s.SetIf(ctx, pk, key, next, kv.Predicate(cur)); err != nil {
						b.Fatal(err)
					}
					cur = next
				}
				report(b)
			})
			b.Run("Scan1000", func(b *testing.B) {
				for b.Loop() {
					it, err := s.Scan(ctx, scanPK, nil)
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for it.Next() {
						n++
					}
					if err := it.Err(); err != nil || n != benchKeys {
						b.Fatalf("scan: %d entries, %v", n, err)
					}
					it.Close()
				}
				report(b)
			})
		})
	}
}
