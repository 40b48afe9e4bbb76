package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/kv/postgres"
)

// TestBatchShapesMatchMem runs every one- and two-op batch on one key
// (single-statement fast path) and the same ops next to a second key
// (transaction path), from an absent and from a present key, against
// PostgreSQL and the reference mem driver: outcome and final state must be
// the same.
func TestBatchShapesMatchMem(t *testing.T) {
	pg, err := postgres.New(ctx(t), testenv.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ref := mem.New()
	defer ref.Close()
	v, x := []byte("v"), []byte("x")
	singles := []struct {
		name string
		op   kv.Op
	}{
		{"set", kv.Op{Kind: kv.OpSet, Value: []byte("new")}},
		{"delete", kv.Op{Kind: kv.OpDelete}},
		{"setif-absent", kv.Op{Kind: kv.OpSetIf, Value: []byte("new")}},
		{"setif-v", kv.Op{Kind: kv.OpSetIf, Value: []byte("new"), Predicate: v}},
		{"setif-x", kv.Op{Kind: kv.OpSetIf, Value: []byte("new"), Predicate: x}},
		{"setif-empty", kv.Op{Kind: kv.OpSetIf, Value: []byte("new"), Predicate: []byte{}}},
		{"deleteif-present", kv.Op{Kind: kv.OpDeleteIf}},
		{"deleteif-v", kv.Op{Kind: kv.OpDeleteIf, Predicate: v}},
		{"deleteif-x", kv.Op{Kind: kv.OpDeleteIf, Predicate: x}},
		{"check-absent", kv.Op{Kind: kv.OpCheck}},
		{"check-v", kv.Op{Kind: kv.OpCheck, Predicate: v}},
		{"check-x", kv.Op{Kind: kv.OpCheck, Predicate: x}},
	}
	var cases [][]kv.Op
	for _, a := range singles {
		cases = append(cases, []kv.Op{a.op})
		for _, b := range singles {
			cases = append(cases, []kv.Op{a.op, b.op})
		}
	}
	n := 0
	for _, initial := range [][]byte{nil, v, {}} {
		for _, ops := range cases {
			// A second key sends the batch down the transaction paths
			// (pipelined, or sequential when one key mixes conditions).
			for _, other := range []*kv.Op{nil,
				{Kind: kv.OpSet, Value: []byte("o")},
				{Kind: kv.OpSetIf, Value: []byte("o")},
				{Kind: kv.OpCheck},
				{Kind: kv.OpCheck, Predicate: []byte("o")},
			} {
				n++
				pk := fmt.Appendf(nil, "p%d", n)
				key := []byte("k")
				var batch []kv.Op
				for _, op := range ops {
					op.PartitionKey, op.Key = pk, key
					batch = append(batch, op)
				}
				if other != nil {
					o := *other
					o.PartitionKey, o.Key = pk, []byte("other")
					batch = append(batch, o)
				}
				name := fmt.Sprintf("initial=%q ops=%v other=%v", initial, ops, other)
				var errs [2]error
				var finals [2][]byte
				var founds [2]bool
				for i, s := range []kv.Store{ref, pg} {
					if initial != nil {
						if err := s.Set(ctx(t), pk, key, initial); err != nil {
							t.Fatal(err)
						}
					}
					errs[i] = s.(kv.Batcher).Batch(ctx(t), batch)
					got, err := s.Get(ctx(t), pk, key)
					switch {
					case errors.Is(err, kv.ErrNotFound):
					case err != nil:
						t.Fatal(err)
					default:
						finals[i], founds[i] = got.Value, true
					}
				}
				if errors.Is(errs[0], kv.ErrPredicateFailed) != errors.Is(errs[1], kv.ErrPredicateFailed) ||
					(errs[0] == nil) != (errs[1] == nil) {
					t.Errorf("%s: postgres returned %v, mem %v", name, errs[1], errs[0])
				}
				if founds[0] != founds[1] || !bytes.Equal(finals[0], finals[1]) {
					t.Errorf("%s: postgres left (%v %q), mem (%v %q)", name, founds[1], finals[1], founds[0], finals[0])
				}
			}
		}
	}
}
