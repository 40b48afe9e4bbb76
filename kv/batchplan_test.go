package kv_test

import (
	"bytes"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
)

func TestOpHolds(t *testing.T) {
	v := []byte("v")
	cases := []struct {
		name    string
		op      kv.Op
		exists  bool
		current []byte
		want    bool
	}{
		{"SetIf nil absent", kv.Op{Kind: kv.OpSetIf}, false, nil, true},
		{"SetIf nil present", kv.Op{Kind: kv.OpSetIf}, true, v, false},
		{"SetIf nil present empty", kv.Op{Kind: kv.OpSetIf}, true, []byte{}, false},
		{"SetIf match", kv.Op{Kind: kv.OpSetIf, Predicate: v}, true, v, true},
		{"SetIf mismatch", kv.Op{Kind: kv.OpSetIf, Predicate: []byte("w")}, true, v, false},
		{"SetIf pred absent", kv.Op{Kind: kv.OpSetIf, Predicate: v}, false, nil, false},
		{"SetIf empty pred on empty", kv.Op{Kind: kv.OpSetIf, Predicate: []byte{}}, true, []byte{}, true},
		{"SetIf empty pred absent", kv.Op{Kind: kv.OpSetIf, Predicate: []byte{}}, false, nil, false},
		{"Check nil absent", kv.Op{Kind: kv.OpCheck}, false, nil, true},
		{"Check match", kv.Op{Kind: kv.OpCheck, Predicate: v}, true, v, true},
		{"DeleteIf nil present", kv.Op{Kind: kv.OpDeleteIf}, true, v, true},
		{"DeleteIf nil absent", kv.Op{Kind: kv.OpDeleteIf}, false, nil, false},
		{"DeleteIf mismatch", kv.Op{Kind: kv.OpDeleteIf, Predicate: []byte("w")}, true, v, false},
		{"Set always", kv.Op{Kind: kv.OpSet}, true, v, true},
		{"Delete always", kv.Op{Kind: kv.OpDelete}, false, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.op.Holds(c.exists, c.current); got != c.want {
				t.Fatalf("Holds = %v, want %v", got, c.want)
			}
		})
	}
}

func TestGroupOps(t *testing.T) {
	op := func(kind kv.OpKind, pk, key, val, pred string) kv.Op {
		o := kv.Op{Kind: kind, PartitionKey: []byte(pk), Key: []byte(key)}
		if val != "" {
			o.Value = []byte(val)
		}
		if pred != "" {
			o.Predicate = []byte(pred)
		}
		return o
	}
	ops := []kv.Op{
		op(kv.OpSet, "b", "k", "1", ""),
		op(kv.OpCheck, "a", "bc", "", "x"),
		op(kv.OpSetIf, "ab", "c", "2", ""),
		op(kv.OpDelete, "b", "k", "", ""),
		op(kv.OpSet, "a", "bc", "3", ""),
		op(kv.OpDeleteIf, "a", "a", "", "y"),
	}
	got := kv.GroupOps(ops)
	want := []struct {
		pk, key string
		conds   int
		write   kv.WriteKind
		value   string
	}{
		{"a", "a", 1, kv.WriteDelete, ""},
		{"a", "bc", 1, kv.WritePut, "3"},
		{"ab", "c", 1, kv.WritePut, "2"},
		{"b", "k", 0, kv.WriteDelete, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("%d groups, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if string(g.PartitionKey) != w.pk || string(g.Key) != w.key || len(g.Conds) != w.conds || g.Write != w.write || !bytes.Equal(g.Value, []byte(w.value)) && w.value != "" {
			t.Fatalf("group %d = %q/%q conds=%d write=%d value=%q, want %+v", i, g.PartitionKey, g.Key, len(g.Conds), g.Write, g.Value, w)
		}
	}
	// Conditions are judged on the state before the batch.
	if !got[1].Holds(true, []byte("x")) || got[1].Holds(true, []byte("3")) {
		t.Fatal("a/bc: Check x must hold on x only")
	}
}

func TestUpperBound(t *testing.T) {
	cases := []struct {
		prefix, want []byte
	}{
		{[]byte("abc"), []byte("abd")},
		{[]byte("ab\xff"), []byte("ac")},
		{[]byte{0x7F}, []byte{0x80}},
		{[]byte{0x00, 0xFF, 0xFF}, []byte{0x01}},
		{[]byte{0xFF, 0xFF}, nil},
		{[]byte{}, nil},
		{nil, nil},
	}
	for _, c := range cases {
		got := kv.UpperBound(c.prefix)
		if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("UpperBound(%x) = %x, want %x", c.prefix, got, c.want)
		}
	}
	// The input is not modified.
	p := []byte("ab\xff")
	kv.UpperBound(p)
	if string(p) != "ab\xff" {
		t.Fatalf("prefix modified: %q", p)
	}
}
