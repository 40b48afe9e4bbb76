package kvtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
)

// testTimeout bounds every conformance subtest, so that a driver that hangs
// fails instead of stalling the run.
const testTimeout = 5 * time.Minute

// RunConformance runs the kv.Store contract against d: argument checks,
// round trips of binary keys and values, compare-and-set, scans (order,
// paging, prefixes, deletes while iterating), batches when the store is a
// kv.Batcher, cancellation, closed stores, unreachable servers and
// concurrent compare-and-set. Every subtest opens its own stores with d.New.
func RunConformance(t *testing.T, d Driver) {
	t.Run("ArgumentErrors", func(t *testing.T) { testArgumentErrors(t, d) })
	t.Run("GetNotFound", func(t *testing.T) { testGetNotFound(t, d) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, d) })
	t.Run("EmptyValue", func(t *testing.T) { testEmptyValue(t, d) })
	t.Run("SetIf", func(t *testing.T) { testSetIf(t, d) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, d) })
	t.Run("ScanOrder", func(t *testing.T) { testScanOrder(t, d) })
	t.Run("ScanPages", func(t *testing.T) { testScanPages(t, d) })
	t.Run("PrefixPartitions", func(t *testing.T) { testPrefixPartitions(t, d) })
	t.Run("DeleteWhileIterating", func(t *testing.T) { testDeleteWhileIterating(t, d) })
	t.Run("ScanPrefix", func(t *testing.T) { testScanPrefix(t, d) })
	t.Run("Batch", func(t *testing.T) { testBatch(t, d) })
	t.Run("ContextCancelled", func(t *testing.T) { testContextCancelled(t, d) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, d) })
	t.Run("Unreachable", func(t *testing.T) { testUnreachable(t, d) })
	t.Run("ConcurrentCAS", func(t *testing.T) { testConcurrentCAS(t, d) })
	t.Run("ConcurrentBatch", func(t *testing.T) { testConcurrentBatch(t, d) })
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustSet(t testing.TB, s kv.Store, pk, key, value []byte) {
	t.Helper()
	if err := s.Set(testCtx(t), pk, key, value); err != nil {
		t.Fatalf("Set(%q, %q): %v", pk, key, err)
	}
}

// mustGet returns the value of key, or nil when it is absent.
func mustGet(t testing.TB, s kv.Store, pk, key []byte) []byte {
	t.Helper()
	v, err := s.Get(testCtx(t), pk, key)
	if errors.Is(err, kv.ErrNotFound) {
		if v != nil {
			t.Fatalf("Get(%q, %q): ErrNotFound with a non-nil result", pk, key)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("Get(%q, %q): %v", pk, key, err)
	}
	if v == nil || v.Value == nil || v.Predicate == nil {
		t.Fatalf("Get(%q, %q): nil result, value or predicate for a present key: %+v", pk, key, v)
	}
	if !bytes.Equal(v.Value, v.Predicate) {
		t.Fatalf("Get(%q, %q): predicate %q differs from value %q", pk, key, v.Predicate, v.Value)
	}
	return v.Value
}

// wantValue checks that key holds want (nil: absent).
func wantValue(t testing.TB, s kv.Store, pk, key, want []byte) {
	t.Helper()
	got := mustGet(t, s, pk, key)
	if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
		t.Fatalf("%q/%q = %s, want %s", pk, key, show(got), show(want))
	}
}

func show(v []byte) string {
	switch {
	case v == nil:
		return "<absent>"
	case len(v) > 64:
		return fmt.Sprintf("<%d bytes %x...>", len(v), v[:16])
	default:
		return fmt.Sprintf("%q", v)
	}
}

// collect drains an iterator, failing the test on an error.
func collect(t testing.TB, it kv.EntriesIterator) []kv.Entry {
	t.Helper()
	defer it.Close()
	var out []kv.Entry
	for it.Next() {
		e := it.Entry()
		if e == nil {
			t.Fatal("Entry() is nil after Next() returned true")
		}
		out = append(out, kv.Entry{PartitionKey: e.PartitionKey, Key: bytes.Clone(e.Key), Value: bytes.Clone(e.Value)})
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterator: %v", err)
	}
	if it.Next() {
		t.Fatal("Next() returned true again after the end")
	}
	return out
}

func scanAll(t testing.TB, s kv.Store, pk, start []byte) []kv.Entry {
	t.Helper()
	it, err := s.Scan(testCtx(t), pk, start)
	if err != nil {
		t.Fatalf("Scan(%q, %q): %v", pk, start, err)
	}
	return collect(t, it)
}

func keysOf(es []kv.Entry) [][]byte {
	out := make([][]byte, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func equalKeys(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func testArgumentErrors(t *testing.T, d Driver) {
	s := d.New(t)
	ctx := testCtx(t)
	pk, k, v := []byte("p"), []byte("k"), []byte("v")
	type call struct {
		name string
		call func() error
		want error
	}
	cases := []call{
		{"Get nil partition", func() error { _, err := s.Get(ctx, nil, k); return err }, kv.ErrMissingPartitionKey},
		{"Get empty partition", func() error { _, err := s.Get(ctx, []byte{}, k); return err }, kv.ErrMissingPartitionKey},
		{"Get nil key", func() error { _, err := s.Get(ctx, pk, nil); return err }, kv.ErrMissingKey},
		{"Get empty key", func() error { _, err := s.Get(ctx, pk, []byte{}); return err }, kv.ErrMissingKey},
		{"Set empty partition", func() error { return s.Set(ctx, []byte{}, k, v) }, kv.ErrMissingPartitionKey},
		{"Set empty key", func() error { return s.Set(ctx, pk, []byte{}, v) }, kv.ErrMissingKey},
		{"Set nil value", func() error { return s.Set(ctx, pk, k, nil) }, kv.ErrMissingValue},
		{"SetIf empty partition", func() error { return s.SetIf(ctx, nil, k, v, nil) }, kv.ErrMissingPartitionKey},
		{"SetIf empty key", func() error { return s.SetIf(ctx, pk, nil, v, nil) }, kv.ErrMissingKey},
		{"SetIf nil value", func() error { return s.SetIf(ctx, pk, k, nil, kv.Predicate("x")) }, kv.ErrMissingValue},
		{"Delete empty partition", func() error { return s.Delete(ctx, nil, k) }, kv.ErrMissingPartitionKey},
		{"Delete empty key", func() error { return s.Delete(ctx, pk, []byte{}) }, kv.ErrMissingKey},
		{"Scan empty partition", func() error { _, err := s.Scan(ctx, []byte{}, nil); return err }, kv.ErrMissingPartitionKey},
	}
	if b, ok := s.(kv.Batcher); ok {
		cases = append(cases,
			call{"Batch nil value", func() error {
				return b.Batch(ctx, []kv.Op{{Kind: kv.OpSet, PartitionKey: pk, Key: []byte("ok"), Value: v}, {Kind: kv.OpSet, PartitionKey: pk, Key: k}})
			}, kv.ErrMissingValue},
			call{"Batch unknown kind", func() error {
				return b.Batch(ctx, []kv.Op{{Kind: kv.OpKind(99), PartitionKey: pk, Key: k}})
			}, kv.ErrOperationFailed},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// Nothing of the rejected calls may have been written.
	wantValue(t, s, pk, k, nil)
	wantValue(t, s, pk, []byte("ok"), nil)
}

func testGetNotFound(t *testing.T, d Driver) {
	s := d.New(t)
	mustSet(t, s, []byte("p"), []byte("present"), []byte("v"))
	cases := []struct{ name, pk, key string }{
		{"missing key", "p", "absent"},
		{"missing partition", "nope", "present"},
		{"key prefix of a present key", "p", "pres"},
		{"present key as prefix", "p", "present1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := s.Get(testCtx(t), []byte(c.pk), []byte(c.key))
			if !errors.Is(err, kv.ErrNotFound) || v != nil {
				t.Fatalf("Get(%q, %q) = %v, %v; want nil, ErrNotFound", c.pk, c.key, v, err)
			}
		})
	}
}

func testRoundTrip(t *testing.T, d Driver) {
	s := d.New(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	cases := []struct {
		name       string
		pk, key, v []byte
	}{
		{"ascii", []byte("p"), []byte("key"), []byte("value")},
		{"key 0x00", []byte("p"), []byte{0x00}, []byte("zero")},
		{"key 0xFF", []byte("p"), []byte{0xFF}, []byte("ff")},
		{"key 0x00 0xFF 0x00", []byte("p"), []byte{0x00, 0xFF, 0x00}, []byte("mixed")},
		{"key invalid UTF-8", []byte("p"), []byte{0xC3, 0x28, 0xA0, 0xA1}, []byte("bad utf8")},
		{"partition binary", []byte{0x00, 0xFF, 0xC3}, []byte("k"), []byte("binary partition")},
		{"key 1 KiB", []byte("p"), bytes.Repeat([]byte{0xAB}, 1024), []byte("long key")},
		{"value all bytes", []byte("p"), []byte("all"), all},
		{"value 350 KiB", []byte("p"), []byte("big"), randomBytes(350 * 1024)},
		{"value empty", []byte("p"), []byte("empty"), []byte{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustSet(t, s, c.pk, c.key, c.v)
			wantValue(t, s, c.pk, c.key, c.v)
			// Overwrite, then read the new value back.
			v2 := append(bytes.Clone(c.v), 0x01, 0x00)
			mustSet(t, s, c.pk, c.key, v2)
			wantValue(t, s, c.pk, c.key, v2)
		})
	}
	// Every key is still there, in one scan, with its last value.
	got := scanAll(t, s, []byte("p"), nil)
	want := 0
	for _, c := range cases {
		if bytes.Equal(c.pk, []byte("p")) {
			want++
		}
	}
	if len(got) != want {
		t.Fatalf("scan returned %d entries, want %d", len(got), want)
	}
}

func testEmptyValue(t *testing.T, d Driver) {
	s := d.New(t)
	ctx := testCtx(t)
	pk, k := []byte("p"), []byte("k")
	mustSet(t, s, pk, k, []byte{})
	got, err := s.Get(ctx, pk, k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Value == nil || len(got.Value) != 0 || got.Predicate == nil || len(got.Predicate) != 0 {
		t.Fatalf("empty value came back as value=%#v predicate=%#v; want both non-nil and empty", got.Value, got.Predicate)
	}
	// The empty predicate is "this empty value", not "absent".
	if err := s.SetIf(ctx, pk, k, []byte("v1"), got.Predicate); err != nil {
		t.Fatalf("SetIf with the empty value's predicate: %v", err)
	}
	if err := s.SetIf(ctx, pk, k, []byte("v2"), kv.Predicate{}); !errors.Is(err, kv.ErrPredicateFailed) {
		t.Fatalf("SetIf with a stale empty predicate: %v, want ErrPredicateFailed", err)
	}
	wantValue(t, s, pk, k, []byte("v1"))
	if err := s.SetIf(ctx, pk, []byte("new"), []byte{}, nil); err != nil {
		t.Fatalf("SetIf(nil predicate) of an empty value: %v", err)
	}
	wantValue(t, s, pk, []byte("new"), []byte{})
	es := scanAll(t, s, pk, nil)
	if len(es) != 2 || es[1].Value == nil || len(es[1].Value) != 0 {
		t.Fatalf("scan of empty value: %+v", es)
	}
}

func testSetIf(t *testing.T, d Driver) {
	s := d.New(t)
	pk := []byte("p")
	absent := []byte(nil)
	cases := []struct {
		name    string
		initial []byte // nil: key absent
		pred    kv.Predicate
		wantErr error
	}{
		{"absent, nil predicate", absent, nil, nil},
		{"present, nil predicate", []byte("v1"), nil, kv.ErrPredicateFailed},
		{"present, matching predicate", []byte("v1"), kv.Predicate("v1"), nil},
		{"present, stale predicate", []byte("v1"), kv.Predicate("v0"), kv.ErrPredicateFailed},
		{"present, prefix of value", []byte("v1"), kv.Predicate("v"), kv.ErrPredicateFailed},
		{"present, value prefix of predicate", []byte("v1"), kv.Predicate("v10"), kv.ErrPredicateFailed},
		{"absent, non-nil predicate", absent, kv.Predicate("v1"), kv.ErrPredicateFailed},
		{"absent, empty predicate", absent, kv.Predicate{}, kv.ErrPredicateFailed},
		{"binary, matching predicate", []byte{0x00, 0xFF}, kv.Predicate{0x00, 0xFF}, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := []byte("k" + strconv.Itoa(i))
			if c.initial != nil {
				mustSet(t, s, pk, key, c.initial)
			}
			err := s.SetIf(testCtx(t), pk, key, []byte("new"), c.pred)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
				t.Fatalf("SetIf: %v, want %v", err, c.wantErr)
			}
			want := c.initial
			if c.wantErr == nil {
				want = []byte("new")
			}
			wantValue(t, s, pk, key, want)
		})
	}
}

func testDelete(t *testing.T, d Driver) {
	s := d.New(t)
	ctx := testCtx(t)
	pk := []byte("p")
	cases := []struct {
		name    string
		pk, key []byte
		present bool
	}{
		{"missing key", pk, []byte("absent"), false},
		{"missing partition", []byte("nope"), []byte("k"), false},
		{"present key", pk, []byte("k"), true},
		{"binary key", pk, []byte{0xFF, 0x00}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.present {
				mustSet(t, s, c.pk, c.key, []byte("v"))
			}
			for i := range 2 { // idempotent
				if err := s.Delete(ctx, c.pk, c.key); err != nil {
					t.Fatalf("Delete #%d: %v", i+1, err)
				}
			}
			wantValue(t, s, c.pk, c.key, nil)
			// A deleted key is absent for SetIf too.
			if err := s.SetIf(ctx, c.pk, c.key, []byte("again"), nil); err != nil {
				t.Fatalf("SetIf(nil) after Delete: %v", err)
			}
			wantValue(t, s, c.pk, c.key, []byte("again"))
		})
	}
	mustSet(t, s, pk, []byte("other"), []byte("stays"))
	if err := s.Delete(ctx, pk, []byte("k")); err != nil {
		t.Fatal(err)
	}
	wantValue(t, s, pk, []byte("other"), []byte("stays"))
}

func testScanOrder(t *testing.T, d Driver) {
	s := d.New(t)
	pk := []byte("order")
	keys := [][]byte{
		{0x00}, {0x00, 0x00}, {0x01}, []byte("a"), []byte("a\x00"), []byte("ab"), []byte("b"),
		{0x7F}, {0x7F, 0xFF}, {0x80}, {0x80, 0x00}, {0xC3, 0x28}, {0xFE}, {0xFF}, {0xFF, 0xFF},
	}
	// Write in an order unrelated to the sort order.
	for i := len(keys) - 1; i >= 0; i -= 2 {
		mustSet(t, s, pk, keys[i], append([]byte("v-"), keys[i]...))
	}
	for i := len(keys) - 2; i >= 0; i -= 2 {
		mustSet(t, s, pk, keys[i], append([]byte("v-"), keys[i]...))
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, bytes.Compare)
	from := func(start []byte) [][]byte {
		var out [][]byte
		for _, k := range sorted {
			if bytes.Compare(k, start) >= 0 {
				out = append(out, k)
			}
		}
		return out
	}
	cases := []struct {
		name  string
		start []byte
		want  [][]byte
	}{
		{"nil start", nil, sorted},
		{"empty start", []byte{}, sorted},
		{"start 0x00 (first key, inclusive)", []byte{0x00}, sorted},
		{"start 0x7F inclusive", []byte{0x7F}, from([]byte{0x7F})},
		{"start between 0x7F 0xFF and 0x80", []byte{0x7F, 0xFF, 0x00}, from([]byte{0x80})},
		{"start 0x80 sorts after 0x7F", []byte{0x80}, from([]byte{0x80})},
		{"start a", []byte("a"), from([]byte("a"))},
		{"start 0xFF 0xFF (last key)", []byte{0xFF, 0xFF}, [][]byte{{0xFF, 0xFF}}},
		{"start after last key", []byte{0xFF, 0xFF, 0x00}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es := scanAll(t, s, pk, c.start)
			if got := keysOf(es); !equalKeys(got, c.want) {
				t.Fatalf("keys %x, want %x", got, c.want)
			}
			for _, e := range es {
				if !bytes.Equal(e.Value, append([]byte("v-"), e.Key...)) {
					t.Fatalf("key %x has value %q", e.Key, e.Value)
				}
				if !bytes.Equal(e.PartitionKey, pk) {
					t.Fatalf("entry partition key %q, want %q", e.PartitionKey, pk)
				}
			}
		})
	}
	t.Run("empty partition", func(t *testing.T) {
		if es := scanAll(t, s, []byte("never-written"), nil); len(es) != 0 {
			t.Fatalf("got %d entries from an empty partition", len(es))
		}
	})
}

// storeWithPages returns a store whose scans page every pageSize entries
// where the driver allows it, and whether it does.
func storeWithPages(t *testing.T, d Driver, pageSize int) (kv.Store, bool) {
	if d.NewWithPageSize != nil {
		return d.NewWithPageSize(t, pageSize), true
	}
	return d.New(t), false
}

// fill writes n keys "key-%05d" concurrently and returns them sorted.
func fill(t *testing.T, s kv.Store, pk []byte, n int) [][]byte {
	t.Helper()
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%05d", i)
	}
	const workers = 8
	var (
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	ctx := testCtx(t)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := s.Set(ctx, pk, keys[i], fmt.Appendf(nil, "value-%05d", i)); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		t.Fatalf("fill: %v", *e)
	}
	return keys
}

func testScanPages(t *testing.T, d Driver) {
	const n, page = 2600, 100 // 26 full pages: the last page is exactly full
	s, paged := storeWithPages(t, d, page)
	if !paged {
		t.Logf("%s has no page size setting; scanning %d keys with its default pages", d.Name, n)
	}
	pk := []byte("pages")
	keys := fill(t, s, pk, n)
	mustSet(t, s, []byte("pages0"), []byte("key-00000"), []byte("other partition"))
	cases := []struct {
		name  string
		start []byte
		want  [][]byte
	}{
		{"all", nil, keys},
		{"from the middle of a page", keys[1234], keys[1234:]},
		{"from a page boundary", keys[1000], keys[1000:]},
		{"from between two keys", append(bytes.Clone(keys[2598]), 0x00), keys[2599:]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			es := scanAll(t, s, pk, c.start)
			if got := keysOf(es); !equalKeys(got, c.want) {
				t.Fatalf("scan returned %d keys, want %d (first got %q)", len(got), len(c.want), got[:min(3, len(got))])
			}
			for _, e := range es {
				i, _ := strconv.Atoi(string(e.Key[len("key-"):]))
				if want := fmt.Sprintf("value-%05d", i); string(e.Value) != want {
					t.Fatalf("%s = %q, want %q", e.Key, e.Value, want)
				}
			}
		})
	}
	t.Run("entries stay valid across pages", func(t *testing.T) {
		it, err := s.Scan(testCtx(t), pk, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var held []*kv.Entry
		for it.Next() {
			held = append(held, it.Entry())
		}
		if it.Err() != nil || len(held) != n {
			t.Fatalf("got %d entries, err %v", len(held), it.Err())
		}
		for i, e := range held {
			if !bytes.Equal(e.Key, keys[i]) {
				t.Fatalf("entry %d was overwritten by a later page: %q", i, e.Key)
			}
		}
	})
}

func testPrefixPartitions(t *testing.T, d Driver) {
	s := d.New(t)
	// ("a","bc") and ("ab","c") collide under a naive pk+key encoding.
	writes := []struct{ pk, key, v string }{
		{"a", "bc", "a/bc"}, {"ab", "c", "ab/c"}, {"a", "k", "a/k"}, {"ab", "k", "ab/k"},
		{"a\x00", "k", "a0/k"}, {"b", "k", "b/k"},
	}
	for _, w := range writes {
		mustSet(t, s, []byte(w.pk), []byte(w.key), []byte(w.v))
	}
	for _, w := range writes {
		wantValue(t, s, []byte(w.pk), []byte(w.key), []byte(w.v))
	}
	cases := []struct {
		pk   string
		want []string
	}{
		{"a", []string{"bc", "k"}},
		{"ab", []string{"c", "k"}},
		{"a\x00", []string{"k"}},
		{"b", []string{"k"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("scan %q", c.pk), func(t *testing.T) {
			var got []string
			for _, e := range scanAll(t, s, []byte(c.pk), nil) {
				got = append(got, string(e.Key))
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("keys %q, want %q", got, c.want)
			}
		})
	}
	if err := s.Delete(testCtx(t), []byte("a"), []byte("k")); err != nil {
		t.Fatal(err)
	}
	wantValue(t, s, []byte("ab"), []byte("k"), []byte("ab/k"))
	wantValue(t, s, []byte("a"), []byte("k"), nil)
}

// testDeleteWhileIterating checks what lakeFS guarantees: a scan has no
// snapshot, but deleting keys (the current one, or ones ahead) while
// iterating causes no error and no duplicate; every key that is never
// deleted is returned exactly once, in order; a key deleted ahead of the
// iterator may still be returned if its page was already read, but never
// after a page that starts beyond it.
func testDeleteWhileIterating(t *testing.T, d Driver) {
	const n, page = 300, 10
	t.Run("current and ahead", func(t *testing.T) {
		s, _ := storeWithPages(t, d, page)
		pk := []byte("dwi")
		keys := fill(t, s, pk, n)
		ctx := testCtx(t)
		it, err := s.Scan(ctx, pk, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		deletedAhead := map[string]bool{}
		seen := map[string]int{}
		var last []byte
		for it.Next() {
			k := bytes.Clone(it.Entry().Key)
			if last != nil && bytes.Compare(k, last) <= 0 {
				t.Fatalf("key %q after %q: not ascending", k, last)
			}
			last = k
			seen[string(k)]++
			if err := s.Delete(ctx, pk, k); err != nil {
				t.Fatal(err)
			}
			i, _ := strconv.Atoi(string(k[len("key-"):]))
			// Every 7th key deletes one 3 ahead (often in the same page) and
			// one 25 ahead (always in a later page).
			if i%7 == 0 {
				for _, j := range []int{i + 3, i + 25} {
					if j < n {
						if err := s.Delete(ctx, pk, keys[j]); err != nil {
							t.Fatal(err)
						}
						deletedAhead[string(keys[j])] = true
					}
				}
			}
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterator: %v", err)
		}
		for _, k := range keys {
			c := seen[string(k)]
			switch {
			case c > 1:
				t.Fatalf("key %s returned %d times", k, c)
			case c == 0 && !deletedAhead[string(k)]:
				t.Fatalf("key %s was never deleted but not returned", k)
			}
		}
		if rest := scanAll(t, s, pk, nil); len(rest) != 0 {
			t.Fatalf("%d keys left after deleting every key", len(rest))
		}
	})
	t.Run("everything after the first page", func(t *testing.T) {
		s, paged := storeWithPages(t, d, page)
		pk := []byte("dwi-all")
		keys := fill(t, s, pk, n)
		ctx := testCtx(t)
		it, err := s.Scan(ctx, pk, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		var got [][]byte
		for it.Next() {
			got = append(got, bytes.Clone(it.Entry().Key))
			if len(got) == 5 {
				for _, k := range keys[5:] {
					if err := s.Delete(ctx, pk, k); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := it.Err(); err != nil {
			t.Fatalf("iterator: %v", err)
		}
		if !equalKeys(got, keys[:len(got)]) {
			t.Fatalf("returned keys are not a prefix of the key list: %q", got)
		}
		if paged && len(got) > page {
			t.Fatalf("returned %d keys; only the first page (%d) was read before the deletes", len(got), page)
		}
	})
}

func testScanPrefix(t *testing.T, d Driver) {
	s, _ := storeWithPages(t, d, 2)
	pk := []byte("prefix")
	for _, k := range []string{"o", "p", "p/", "p/a", "p/b", "p/b/1", "p0", "p\xff", "p\xff\xff", "q"} {
		mustSet(t, s, pk, []byte(k), []byte("v"+k))
	}
	cases := []struct {
		name          string
		prefix, after string
		want          []string
	}{
		{"prefix p/", "p/", "", []string{"p/", "p/a", "p/b", "p/b/1"}},
		{"after is inclusive", "p/", "p/b", []string{"p/b", "p/b/1"}},
		{"after between keys", "p/", "p/a0", []string{"p/b", "p/b/1"}},
		{"after below prefix", "p/", "a", []string{"p/", "p/a", "p/b", "p/b/1"}},
		{"after beyond prefix", "p/", "p0", nil},
		{"prefix ending in 0xFF", "p\xff", "", []string{"p\xff", "p\xff\xff"}},
		{"no match", "x", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			it, err := kv.ScanPrefix(testCtx(t), s, pk, []byte(c.prefix), []byte(c.after))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range collect(t, it) {
				got = append(got, string(e.Key))
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("keys %q, want %q", got, c.want)
			}
			// The same range by Scan bounded with UpperBound.
			start := max(c.prefix, c.after)
			end := kv.UpperBound([]byte(c.prefix))
			var viaBound []string
			for _, e := range scanAll(t, s, pk, []byte(start)) {
				if end != nil && bytes.Compare(e.Key, end) >= 0 {
					break
				}
				viaBound = append(viaBound, string(e.Key))
			}
			if !slices.Equal(viaBound, c.want) {
				t.Fatalf("scan to UpperBound %q: keys %q, want %q", end, viaBound, c.want)
			}
		})
	}
}

func testBatch(t *testing.T, d Driver) {
	s := d.New(t)
	b, ok := s.(kv.Batcher)
	if !ok {
		t.Skipf("%s is not a kv.Batcher", d.Name)
	}
	pk := []byte("batch")
	run := func(t *testing.T, ops ...kv.Op) error {
		t.Helper()
		return b.Batch(testCtx(t), ops)
	}
	t.Run("empty", func(t *testing.T) {
		for _, ops := range [][]kv.Op{nil, {}} {
			if err := run(t, ops...); err != nil {
				t.Fatalf("empty batch: %v", err)
			}
		}
	})
	t.Run("single key", func(t *testing.T) {
		cases := []struct {
			name    string
			initial []byte
			op      kv.Op
			wantErr error
			want    []byte
		}{
			{"SetIf nil on absent", nil, kv.Op{Kind: kv.OpSetIf, Value: k("new")}, nil, k("new")},
			{"SetIf nil on present", k("v"), kv.Op{Kind: kv.OpSetIf, Value: k("new")}, kv.ErrPredicateFailed, k("v")},
			{"SetIf matching", k("v"), kv.Op{Kind: kv.OpSetIf, Value: k("new"), Predicate: k("v")}, nil, k("new")},
			{"SetIf stale", k("v"), kv.Op{Kind: kv.OpSetIf, Value: k("new"), Predicate: k("w")}, kv.ErrPredicateFailed, k("v")},
			{"DeleteIf matching", k("v"), kv.Op{Kind: kv.OpDeleteIf, Predicate: k("v")}, nil, nil},
			{"DeleteIf stale", k("v"), kv.Op{Kind: kv.OpDeleteIf, Predicate: k("w")}, kv.ErrPredicateFailed, k("v")},
			{"DeleteIf nil on present", k("v"), kv.Op{Kind: kv.OpDeleteIf}, nil, nil},
			{"DeleteIf nil on absent", nil, kv.Op{Kind: kv.OpDeleteIf}, kv.ErrPredicateFailed, nil},
			{"Check nil on absent writes nothing", nil, kv.Op{Kind: kv.OpCheck}, nil, nil},
			{"Check nil on present", k("v"), kv.Op{Kind: kv.OpCheck}, kv.ErrPredicateFailed, k("v")},
			{"Check matching", k("v"), kv.Op{Kind: kv.OpCheck, Predicate: k("v")}, nil, k("v")},
			{"Check stale", k("v"), kv.Op{Kind: kv.OpCheck, Predicate: k("w")}, kv.ErrPredicateFailed, k("v")},
			{"Delete absent", nil, kv.Op{Kind: kv.OpDelete}, nil, nil},
			{"Set", k("v"), kv.Op{Kind: kv.OpSet, Value: k("new")}, nil, k("new")},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				key := k("single" + strconv.Itoa(i))
				if c.initial != nil {
					mustSet(t, s, pk, key, c.initial)
				}
				op := c.op
				op.PartitionKey, op.Key = pk, key
				err := run(t, op)
				if !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
					t.Fatalf("Batch: %v, want %v", err, c.wantErr)
				}
				wantValue(t, s, pk, key, c.want)
			})
		}
	})
	t.Run("multi key", func(t *testing.T) {
		// Probe: a server may be unable to run any multi-key transaction
		// (dynalite has no TransactWriteItems); the driver then reports
		// ErrBatchTooLarge so callers fall back to single-key writes.
		err := run(t, kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("probe1"), Value: k("1")},
			kv.Op{Kind: kv.OpSet, PartitionKey: k("batch2"), Key: k("probe2"), Value: k("2")})
		if errors.Is(err, kv.ErrBatchTooLarge) {
			wantValue(t, s, pk, k("probe1"), nil)
			t.Skipf("%s cannot apply a 2-key batch atomically on this server (%v): multi-key batch tests skipped", d.Name, err)
		}
		if err != nil {
			t.Fatalf("2-key batch: %v", err)
		}
		wantValue(t, s, pk, k("probe1"), k("1"))
		wantValue(t, s, k("batch2"), k("probe2"), k("2"))

		t.Run("all or nothing", func(t *testing.T) {
			mustSet(t, s, pk, k("a"), k("1"))
			mustSet(t, s, pk, k("d"), k("4"))
			failing := []struct {
				name string
				bad  kv.Op
			}{
				{"stale SetIf", kv.Op{Kind: kv.OpSetIf, PartitionKey: pk, Key: k("a"), Value: k("x"), Predicate: k("0")}},
				{"SetIf nil on present", kv.Op{Kind: kv.OpSetIf, PartitionKey: pk, Key: k("a"), Value: k("x")}},
				{"Check on absent", kv.Op{Kind: kv.OpCheck, PartitionKey: pk, Key: k("zz"), Predicate: k("1")}},
				{"Check nil on present", kv.Op{Kind: kv.OpCheck, PartitionKey: pk, Key: k("a")}},
				{"stale DeleteIf", kv.Op{Kind: kv.OpDeleteIf, PartitionKey: pk, Key: k("a"), Predicate: k("2")}},
			}
			for _, f := range failing {
				t.Run(f.name, func(t *testing.T) {
					err := run(t,
						kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("b"), Value: k("2")},
						kv.Op{Kind: kv.OpDelete, PartitionKey: pk, Key: k("d")},
						f.bad,
						kv.Op{Kind: kv.OpSetIf, PartitionKey: k("batch-other"), Key: k("c"), Value: k("3")},
					)
					if !errors.Is(err, kv.ErrPredicateFailed) {
						t.Fatalf("Batch: %v, want ErrPredicateFailed", err)
					}
					wantValue(t, s, pk, k("a"), k("1"))
					wantValue(t, s, pk, k("b"), nil)
					wantValue(t, s, pk, k("d"), k("4"))
					wantValue(t, s, k("batch-other"), k("c"), nil)
				})
			}
		})
		t.Run("every kind applied", func(t *testing.T) {
			mustSet(t, s, pk, k("e1"), k("1"))
			mustSet(t, s, pk, k("e2"), k("2"))
			mustSet(t, s, pk, k("e3"), k("3"))
			mustSet(t, s, pk, k("e4"), k("4"))
			err := run(t,
				kv.Op{Kind: kv.OpSetIf, PartitionKey: pk, Key: k("e1"), Value: k("10"), Predicate: k("1")},
				kv.Op{Kind: kv.OpSetIf, PartitionKey: pk, Key: k("e5"), Value: k("5")},
				kv.Op{Kind: kv.OpDelete, PartitionKey: pk, Key: k("e2")},
				kv.Op{Kind: kv.OpDeleteIf, PartitionKey: pk, Key: k("e3"), Predicate: k("3")},
				kv.Op{Kind: kv.OpCheck, PartitionKey: pk, Key: k("e4"), Predicate: k("4")},
				kv.Op{Kind: kv.OpCheck, PartitionKey: pk, Key: k("e6")},
				kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("e7"), Value: []byte{}},
			)
			if err != nil {
				t.Fatalf("Batch: %v", err)
			}
			for key, want := range map[string][]byte{"e1": k("10"), "e2": nil, "e3": nil, "e4": k("4"), "e5": k("5"), "e6": nil, "e7": {}} {
				wantValue(t, s, pk, k(key), want)
			}
		})
		t.Run("same key twice", func(t *testing.T) {
			err := run(t,
				kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("twice"), Value: k("1")},
				kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("twice"), Value: k("2")},
				kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("other"), Value: k("o")},
			)
			if err != nil {
				t.Fatal(err)
			}
			wantValue(t, s, pk, k("twice"), k("2"))
			// Two conditions on one key are both checked against the
			// state before the batch, as in the mem driver.
			err = run(t,
				kv.Op{Kind: kv.OpSetIf, PartitionKey: pk, Key: k("twice"), Value: k("3"), Predicate: k("2")},
				kv.Op{Kind: kv.OpCheck, PartitionKey: pk, Key: k("twice"), Predicate: k("1")},
				kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: k("other"), Value: k("p")},
			)
			if !errors.Is(err, kv.ErrPredicateFailed) {
				t.Fatalf("contradicting conditions: %v, want ErrPredicateFailed", err)
			}
			wantValue(t, s, pk, k("twice"), k("2"))
			wantValue(t, s, pk, k("other"), k("o"))
		})
		t.Run("too large or whole", func(t *testing.T) {
			cases := []struct {
				name  string
				n     int
				value []byte
			}{
				{"101 keys", 101, k("v")},
				{"5 MiB", 16, randomBytes(320 * 1024)},
			}
			for ci, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					ops := make([]kv.Op, c.n)
					for i := range ops {
						ops[i] = kv.Op{Kind: kv.OpSet, PartitionKey: pk, Key: fmt.Appendf(nil, "large%d-%03d", ci, i), Value: c.value}
					}
					err := run(t, ops...)
					var want []byte
					switch {
					case errors.Is(err, kv.ErrBatchTooLarge):
					case err == nil:
						want = c.value
					default:
						t.Fatalf("Batch: %v, want nil or ErrBatchTooLarge", err)
					}
					for _, op := range ops {
						wantValue(t, s, pk, op.Key, want)
					}
				})
			}
		})
	})
}

func testContextCancelled(t *testing.T, d Driver) {
	s := d.New(t)
	pk := []byte("ctx")
	keys := fill(t, s, pk, 50)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	scan := func(ctx context.Context) error {
		it, err := s.Scan(ctx, pk, nil)
		if err != nil {
			return err
		}
		defer it.Close()
		for it.Next() {
		}
		if it.Err() == nil {
			return errors.New("scan ended without error")
		}
		return it.Err()
	}
	type call struct {
		name string
		call func(ctx context.Context) error
	}
	calls := []call{
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, pk, keys[0]); return err }},
		{"Set", func(ctx context.Context) error { return s.Set(ctx, pk, k("new"), k("v")) }},
		{"SetIf", func(ctx context.Context) error { return s.SetIf(ctx, pk, k("new"), k("v"), nil) }},
		{"Delete", func(ctx context.Context) error { return s.Delete(ctx, pk, keys[0]) }},
		{"Scan", scan},
	}
	if b, ok := s.(kv.Batcher); ok {
		calls = append(calls, call{"Batch", func(ctx context.Context) error {
			return b.Batch(ctx, []kv.Op{{Kind: kv.OpSet, PartitionKey: pk, Key: k("new"), Value: k("v")}, {Kind: kv.OpDelete, PartitionKey: pk, Key: keys[1]}})
		}})
	}
	for _, c := range calls {
		t.Run(c.name+" cancelled", func(t *testing.T) {
			if err := c.call(cancelled); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want an error wrapping context.Canceled", err)
			}
		})
		t.Run(c.name+" deadline exceeded", func(t *testing.T) {
			if err := c.call(expired); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want an error wrapping context.DeadlineExceeded", err)
			}
		})
	}
	wantValue(t, s, pk, k("new"), nil)
	wantValue(t, s, pk, keys[0], []byte("value-00000"))
	wantValue(t, s, pk, keys[1], []byte("value-00001"))
	t.Run("cancel during scan", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		it, err := s.Scan(ctx, pk, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		n := 0
		for it.Next() {
			n++
			if n == 3 {
				cancel()
			}
		}
		if !errors.Is(it.Err(), context.Canceled) {
			t.Fatalf("after %d entries: Err() = %v, want context.Canceled", n, it.Err())
		}
		if n >= len(keys) {
			t.Fatalf("scan returned all %d entries despite the cancel", n)
		}
	})
}

func k(s string) []byte { return []byte(s) }

func testClosed(t *testing.T, d Driver) {
	s := d.New(t)
	pk := []byte("closed")
	mustSet(t, s, pk, k("a"), k("1"))
	ctx := testCtx(t)
	it, err := s.Scan(ctx, pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	s.Close()
	s.Close() // idempotent
	type call struct {
		name string
		call func() error
	}
	calls := []call{
		{"Get", func() error { _, err := s.Get(ctx, pk, k("a")); return err }},
		{"Set", func() error { return s.Set(ctx, pk, k("b"), k("2")) }},
		{"SetIf", func() error { return s.SetIf(ctx, pk, k("b"), k("2"), nil) }},
		{"Delete", func() error { return s.Delete(ctx, pk, k("a")) }},
		{"Scan", func() error { _, err := s.Scan(ctx, pk, nil); return err }},
		{"open iterator", func() error {
			if it.Next() {
				return errors.New("Next() returned true on a closed store")
			}
			return it.Err()
		}},
	}
	if b, ok := s.(kv.Batcher); ok {
		calls = append(calls, call{"Batch", func() error {
			return b.Batch(ctx, []kv.Op{{Kind: kv.OpSet, PartitionKey: pk, Key: k("b"), Value: k("2")}})
		}})
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, kv.ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		})
	}
}

func testUnreachable(t *testing.T, d Driver) {
	if d.OpenUnreachable == nil {
		t.Skipf("%s has no server", d.Name)
	}
	// The deadline bounds the test; hitting it would surface as
	// DeadlineExceeded and fail the assertion below.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := d.OpenUnreachable(ctx, t)
	if err == nil {
		s.Close()
		t.Fatal("open against a closed port succeeded")
	}
	if !errors.Is(err, kv.ErrConnectFailed) {
		t.Fatalf("got %v, want an error wrapping ErrConnectFailed", err)
	}
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// testConcurrentCAS runs 16 goroutines that each increment one counter 50
// times with Get + SetIf retry loops. The result must be exactly 800, and
// every lost race must surface as ErrPredicateFailed.
func testConcurrentCAS(t *testing.T, d Driver) {
	const workers, increments = 16, 50
	s := d.New(t)
	ctx := testCtx(t)
	pk, key := []byte("cas"), []byte("counter")
	var (
		conflicts atomic.Int64
		wg        sync.WaitGroup
		errs      = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range increments {
				for {
					var (
						n    int
						pred kv.Predicate
					)
					cur, err := s.Get(ctx, pk, key)
					switch {
					case errors.Is(err, kv.ErrNotFound):
					case err != nil:
						errs <- fmt.Errorf("get: %w", err)
						return
					default:
						if n, err = strconv.Atoi(string(cur.Value)); err != nil {
							errs <- fmt.Errorf("counter holds %q", cur.Value)
							return
						}
						pred = cur.Predicate
					}
					err = s.SetIf(ctx, pk, key, []byte(strconv.Itoa(n+1)), pred)
					if err == nil {
						break
					}
					if !errors.Is(err, kv.ErrPredicateFailed) {
						errs <- fmt.Errorf("a SetIf conflict surfaced as another error: %w", err)
						return
					}
					conflicts.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if got := mustGet(t, s, pk, key); string(got) != strconv.Itoa(workers*increments) {
		t.Fatalf("counter = %s, want %d (lost updates)", got, workers*increments)
	}
	t.Logf("%d increments, %d conflicts reported as ErrPredicateFailed", workers*increments, conflicts.Load())
}

// testConcurrentBatch moves units between two counters in different
// partitions with two-key batches, from 8 goroutines that list the keys in
// opposite orders (a driver that locks in op order would deadlock). The sum
// must stay constant and every move must be applied exactly once.
func testConcurrentBatch(t *testing.T, d Driver) {
	const workers, moves = 8, 25
	s := d.New(t)
	b, ok := s.(kv.Batcher)
	if !ok {
		t.Skipf("%s is not a kv.Batcher", d.Name)
	}
	ctx := testCtx(t)
	ka, kb := []kv.Op{{PartitionKey: k("acct-a"), Key: k("balance")}}, []kv.Op{{PartitionKey: k("acct-b"), Key: k("balance")}}
	mustSet(t, s, ka[0].PartitionKey, ka[0].Key, k("1000"))
	mustSet(t, s, kb[0].PartitionKey, kb[0].Key, k("0"))
	probe := b.Batch(ctx, []kv.Op{
		{Kind: kv.OpCheck, PartitionKey: ka[0].PartitionKey, Key: ka[0].Key, Predicate: k("1000")},
		{Kind: kv.OpCheck, PartitionKey: kb[0].PartitionKey, Key: kb[0].Key, Predicate: k("0")},
	})
	if errors.Is(probe, kv.ErrBatchTooLarge) {
		t.Skipf("%s cannot apply a 2-key batch atomically on this server: %v", d.Name, probe)
	}
	if probe != nil {
		t.Fatalf("probe: %v", probe)
	}
	read := func(op kv.Op) (int, kv.Predicate, error) {
		v, err := s.Get(ctx, op.PartitionKey, op.Key)
		if err != nil {
			return 0, nil, err
		}
		n, err := strconv.Atoi(string(v.Value))
		return n, v.Predicate, err
	}
	var (
		conflicts atomic.Int64
		wg        sync.WaitGroup
		errs      = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range moves {
				for {
					a, pa, err := read(ka[0])
					if err != nil {
						errs <- err
						return
					}
					bb, pb, err := read(kb[0])
					if err != nil {
						errs <- err
						return
					}
					ops := []kv.Op{
						{Kind: kv.OpSetIf, PartitionKey: ka[0].PartitionKey, Key: ka[0].Key, Value: []byte(strconv.Itoa(a - 1)), Predicate: pa},
						{Kind: kv.OpSetIf, PartitionKey: kb[0].PartitionKey, Key: kb[0].Key, Value: []byte(strconv.Itoa(bb + 1)), Predicate: pb},
					}
					if w%2 == 1 {
						ops[0], ops[1] = ops[1], ops[0]
					}
					err = b.Batch(ctx, ops)
					if err == nil {
						break
					}
					if !errors.Is(err, kv.ErrPredicateFailed) {
						errs <- fmt.Errorf("a batch conflict surfaced as another error: %w", err)
						return
					}
					conflicts.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	a, _, errA := read(ka[0])
	bb, _, errB := read(kb[0])
	if errA != nil || errB != nil || a != 1000-workers*moves || bb != workers*moves {
		t.Fatalf("balances a=%d b=%d (%v, %v), want %d and %d", a, bb, errA, errB, 1000-workers*moves, workers*moves)
	}
	t.Logf("%d moves, %d conflicts reported as ErrPredicateFailed", workers*moves, conflicts.Load())
}
