package migrate

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/refstore"
)

// TestScanAhead: partitions come back whole and in list order, including
// one larger than what is read ahead and an empty one; stopping half-way
// leaves no scan goroutine behind.
func TestScanAhead(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	s := mem.New()
	t.Cleanup(s.Close)
	sizes := []int{3, 0, aheadEntries + 7, 1, 50, 2, 9, 4, 1, 1, 5}
	var parts [][]byte
	for i, n := range sizes {
		pk := []byte(fmt.Sprintf("p%02d", i))
		parts = append(parts, pk)
		for j := range n {
			if err := s.Set(ctx, pk, []byte(fmt.Sprintf("k%05d", j)), []byte(fmt.Sprintf("%d/%d", i, j))); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(a *scanAhead, i int) {
		t.Helper()
		it, err := a.next(ctx)
		if err != nil {
			t.Fatalf("partition %d: %v", i, err)
		}
		defer it.Close()
		n := 0
		for it.Next() {
			e := it.Entry()
			if want := fmt.Sprintf("%d/%d", i, n); !bytes.Equal(e.Value, []byte(want)) {
				t.Fatalf("partition %d entry %d = %q, want %q", i, n, e.Value, want)
			}
			n++
		}
		if err := it.Err(); err != nil || n != sizes[i] {
			t.Fatalf("partition %d: %d entries, want %d: %v", i, n, sizes[i], err)
		}
	}
	a := startScanAhead(ctx, s, parts)
	for i := range parts {
		read(a, i)
	}
	if _, err := a.next(ctx); err == nil {
		t.Error("next after the last partition: no error")
	}
	a.close()

	before := runtime.NumGoroutine()
	for range 20 {
		a := startScanAhead(ctx, s, parts)
		read(a, 0)
		a.close()
	}
	cctx, cancel := context.WithCancel(ctx)
	a = startScanAhead(cctx, s, parts)
	cancel()
	if _, err := a.next(cctx); err == nil {
		// The scan may have been ready before the cancel; the one after
		// cannot succeed for ever.
		for i := 1; i < len(parts); i++ {
			if _, err = a.next(cctx); err != nil {
				break
			}
		}
	}
	a.close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after stopping read-aheads, %d before", n, before)
	}
}

// TestVerifyFetchAhead: with pages smaller than the repositories and the
// rows, every cursor fetches ahead while nested cursors of the same
// snapshot run; the verify still sees every row once.
func TestVerifyFetchAhead(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	pool, st := legacyPool(t, ctx, smallData)
	s := mem.New()
	t.Cleanup(s.Close)
	backfill(t, ctx, pool, s, func(o *BackfillOptions) { o.IncludeOrphans = true })
	for _, page := range []int{1, 2, 7} {
		rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.PageSize, o.IncludeOrphans = page, true })
		var match int64
		for _, e := range rep.Entities {
			match += e.Match
		}
		if sumDiff(rep) != 0 || match != st.Rows() {
			t.Errorf("page %d: %d matches (want %d), %d differences:\n%s", page, match, st.Rows(), sumDiff(rep), rep)
		}
	}
	// A difference is still found and named.
	tok, key := firstStaged(t, ctx, pool)
	if err := s.Delete(ctx, refstore.StagingPartition(tok), key); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, ctx, pool, s, func(o *VerifyOptions) { o.PageSize, o.IncludeOrphans = 2, true })
	if rep.Entities[EntityStaging].MissingInKV != 1 || sumDiff(rep) != 1 {
		t.Errorf("after deleting one entry: %s", rep)
	}
}

// firstStaged is the first staged entry in index order.
func firstStaged(t *testing.T, ctx context.Context, pool querier) (tok string, key []byte) {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT staging_token, key FROM graveler_staging_kv ORDER BY staging_token, key LIMIT 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&tok, &key); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil || key == nil {
		t.Fatalf("first staged entry: %v", err)
	}
	return tok, key
}
