package postgres_test

import (
	"bytes"
	"context"
	"errors"
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
