package refstore

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/kvproxy/kvproxy/kv/kvtest"
)

func opsPerSecond(b *testing.B, perOp int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N*perOp)/s, "ops/s")
	}
}

// BenchmarkRefStore measures the hot paths of a lakeFS client on every
// driver: reading a branch, committing (add commit + branch CaS in one Txn),
// and staging 1,000 objects (one S3 upsert each).
func BenchmarkRefStore(b *testing.B) {
	for _, d := range kvtest.Drivers() {
		b.Run(d.Name, func(b *testing.B) {
			ctx := testCtx(b)
			s, err := New(ctx, d.New(b), Options{})
			must(b, err)
			first := newRepo(b, ctx, s, "bench")

			b.Run("GetBranch", func(b *testing.B) {
				for b.Loop() {
					if _, err := s.GetBranch(ctx, "bench", "main"); err != nil {
						b.Fatal(err)
					}
				}
				opsPerSecond(b, 1)
			})

			b.Run("AddCommitAndBranchCaS", func(b *testing.B) {
				n := 0
				for b.Loop() {
					n++
					err := s.Update(ctx, func(tx *Txn) error {
						br, err := tx.GetBranch(ctx, "bench", "main")
						if err != nil {
							return err
						}
						c := first
						c.Message, c.Parents, c.Generation = "commit "+strconv.Itoa(n), []string{*br.CommitID}, ip(int32(n+1))
						c.ID, _ = CommitRowID(c)
						if _, err := tx.AddCommit(ctx, c); err != nil {
							return err
						}
						br.CommitID = &c.ID
						return tx.SetBranch(ctx, br)
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				opsPerSecond(b, 1)
			})

			b.Run("Stage1000", func(b *testing.B) {
				round := 0
				for b.Loop() {
					round++
					for i := range 1000 {
						err := s.SetStaged(ctx, StagingRow{StagingToken: fmt.Sprint("bench-main:", round),
							Key: fmt.Appendf(nil, "data/%06d", i), Identity: []byte("identity"), Data: make([]byte, 128)})
						if err != nil {
							b.Fatal(err)
						}
					}
				}
				opsPerSecond(b, 1000)
			})
		})
	}
}
