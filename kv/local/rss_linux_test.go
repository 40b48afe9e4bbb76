package local_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/local"
)

// rssFile is the process's resident file-backed memory (RssFile of
// /proc/self/status): where the pages of bbolt's mapping count.
func rssFile(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("read RSS: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse RssFile %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestMappedPagesBounded: scanning and reading every key of a store much
// larger than MaxResidentMap leaves at most about that much of the file
// resident in the process; without the bound (the control) the whole
// file is, which shows the measure sees the mapping.
func TestMappedPagesBounded(t *testing.T) {
	const (
		values = 1200
		size   = 64 << 10 // 75 MiB in all
		bound  = 8 << 20
	)
	path := filepath.Join(t.TempDir(), "kv.db")
	s, err := local.New(ctx(t), path, local.Options{MaxResidentMap: -1})
	if err != nil {
		t.Fatal(err)
	}
	pk := []byte("p")
	for i := 0; i < values; i += 50 {
		var ops []kv.Op
		for j := i; j < i+50; j++ {
			ops = append(ops, kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: []byte(fmt.Sprintf("k%05d", j)), Value: bytes.Repeat([]byte{byte(j)}, size)})
		}
		if err := s.Batch(ctx(t), ops); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	// readAll scans the partition, then reads every key, and returns the
	// largest growth of RssFile seen meanwhile.
	readAll := func(t *testing.T, limit int64) int64 {
		s, err := local.New(ctx(t), path, local.Options{ScanPageSize: 8, MaxResidentMap: limit})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		base, peak := rssFile(t), int64(0)
		sample := func() { peak = max(peak, rssFile(t)-base) }
		it, err := s.Scan(ctx(t), pk, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for it.Next() {
			if e := it.Entry(); len(e.Value) != size || e.Value[0] != byte(n) {
				t.Fatalf("entry %d: %q has %d bytes starting %d", n, e.Key, len(e.Value), e.Value[0])
			}
			n++
			sample()
		}
		it.Close()
		if err := it.Err(); err != nil || n != values {
			t.Fatalf("scanned %d of %d entries: %v", n, values, err)
		}
		for i := range values {
			v, err := s.Get(ctx(t), pk, []byte(fmt.Sprintf("k%05d", i)))
			if err != nil || len(v.Value) != size || v.Value[0] != byte(i) {
				t.Fatalf("get %d: %v", i, err)
			}
			sample()
		}
		t.Logf("RssFile grew by at most %d MiB", peak>>20)
		return peak
	}
	t.Run("bounded", func(t *testing.T) {
		// Twice the bound: the accounting is an estimate, and a value is
		// read whole before the drop.
		if peak := readAll(t, bound); peak > 2*bound {
			t.Errorf("resident mapping grew by %d MiB, want at most %d MiB", peak>>20, 2*bound>>20)
		}
	})
	t.Run("control", func(t *testing.T) {
		if peak := readAll(t, -1); peak < values*size/2 {
			t.Errorf("without a bound the mapping grew by only %d MiB: the measure does not see it", peak>>20)
		}
	})
}
