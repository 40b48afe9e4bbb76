package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

func TestInsertIfAbsent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := kvtest.NewPostgres(t, 0)
	b, ok := s.(kv.BulkInserter)
	if !ok {
		t.Fatal("postgres store is not a kv.BulkInserter")
	}
	if err := s.Set(ctx, []byte("p"), []byte("b"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	entries := []kv.Entry{
		{PartitionKey: []byte("p"), Key: []byte("a"), Value: []byte("1")},
		{PartitionKey: []byte("p"), Key: []byte("b"), Value: []byte("new")},
		{PartitionKey: []byte("q"), Key: []byte("a"), Value: []byte("2")},
		{PartitionKey: []byte("p"), Key: []byte("a"), Value: []byte("dup")},
	}
	got, err := b.InsertIfAbsent(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, false, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("inserted = %v, want %v", got, want)
		}
	}
	for _, c := range []struct{ pk, k, v string }{{"p", "a", "1"}, {"p", "b", "old"}, {"q", "a", "2"}} {
		v, err := s.Get(ctx, []byte(c.pk), []byte(c.k))
		if err != nil || !bytes.Equal(v.Value, []byte(c.v)) {
			t.Errorf("%s/%s = %v %v, want %s", c.pk, c.k, v, err, c.v)
		}
	}
	if _, err := b.InsertIfAbsent(ctx, []kv.Entry{{PartitionKey: []byte("p"), Key: nil, Value: []byte("x")}}); !errors.Is(err, kv.ErrMissingKey) {
		t.Errorf("empty key: %v", err)
	}
}

// TestInsertIfAbsentCopyAndFallback: pages of absent keys (the COPY
// path) and pages mixing present keys (COPY fails as a whole, the
// statement inserts the absent ones) in turns: every flag is right, no
// present value is touched and no absent key is lost.
func TestInsertIfAbsentCopyAndFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := kvtest.NewPostgres(t, 0)
	b := s.(kv.BulkInserter)
	key := func(i int) []byte { return []byte(fmt.Sprintf("k%04d", i)) }
	present := map[int]bool{}
	for round := range 60 { // the COPY is skipped for a while after it failed
		var entries []kv.Entry
		var want []bool
		for j := range 50 {
			i := round*50 + j
			if round%3 == 1 && j < 10 {
				i = (round-1)*50 + j // present: the copy fails, the statement runs
			}
			entries = append(entries, kv.Entry{PartitionKey: []byte(fmt.Sprintf("p%d", i%7)), Key: key(i), Value: []byte(fmt.Sprintf("r%d", round))})
			want = append(want, !present[i])
			present[i] = true
		}
		got, err := b.InsertIfAbsent(ctx, entries)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for j := range want {
			if got[j] != want[j] {
				t.Fatalf("round %d: entry %d (%s) inserted = %v, want %v", round, j, entries[j].Key, got[j], want[j])
			}
			v, err := s.Get(ctx, entries[j].PartitionKey, entries[j].Key)
			if err != nil {
				t.Fatalf("round %d: %s: %v", round, entries[j].Key, err)
			}
			if want[j] != bytes.Equal(v.Value, entries[j].Value) {
				t.Fatalf("round %d: %s = %q (inserted %v)", round, entries[j].Key, v.Value, want[j])
			}
		}
	}
}
