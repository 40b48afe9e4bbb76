package kv

import (
	"bytes"
	"slices"
	"strconv"
)

// WriteKind is what a batch finally does to one key.
type WriteKind int

const (
	// WriteNone leaves the key as it is (the key only has conditions).
	WriteNone WriteKind = iota
	// WritePut stores Value.
	WritePut
	// WriteDelete removes the key.
	WriteDelete
)

// KeyOps is every operation of a batch on one key, folded into the
// conditions to check against the value before the batch and the one write
// that remains. Backends that cannot touch an item twice in one transaction
// (DynamoDB) or that must lock rows in a fixed order (PostgreSQL) work on
// these instead of the raw ops.
type KeyOps struct {
	PartitionKey []byte
	Key          []byte
	// Conds are the conditional ops (OpSetIf, OpDeleteIf, OpCheck) on the
	// key, in batch order. All are evaluated against the value before the
	// batch, as the mem driver does.
	Conds []Op
	Write WriteKind
	Value []byte // for WritePut
}

// Holds reports whether a conditional op's condition holds for a key whose
// current state is (exists, current). OpSetIf and OpCheck with a nil
// Predicate require the key to be absent; OpDeleteIf with a nil Predicate
// requires it to be present (there is nothing to delete otherwise). A
// non-nil Predicate requires the exact value bytes. Unconditional ops always
// hold.
func (op Op) Holds(exists bool, current []byte) bool {
	switch op.Kind {
	case OpSetIf, OpCheck:
		if op.Predicate == nil {
			return !exists
		}
		return exists && bytes.Equal(current, op.Predicate)
	case OpDeleteIf:
		if op.Predicate == nil {
			return exists
		}
		return exists && bytes.Equal(current, op.Predicate)
	default:
		return true
	}
}

// Holds reports whether every condition on the key holds.
func (k KeyOps) Holds(exists bool, current []byte) bool {
	for _, c := range k.Conds {
		if !c.Holds(exists, current) {
			return false
		}
	}
	return true
}

// GroupOps folds a validated batch (see CheckOps) into one KeyOps per key,
// sorted by partition key and then key, so that every backend takes row or
// item locks in the same order and two batches cannot deadlock each other.
// The last write to a key wins, as if the ops were applied in order.
func GroupOps(ops []Op) []KeyOps {
	idx := make(map[string]int, len(ops))
	out := make([]KeyOps, 0, len(ops))
	for _, op := range ops {
		// Length-prefixing the partition keeps ("a","bc") and ("ab","c") apart.
		id := strconv.Itoa(len(op.PartitionKey)) + ":" + string(op.PartitionKey) + string(op.Key)
		i, ok := idx[id]
		if !ok {
			i = len(out)
			idx[id] = i
			out = append(out, KeyOps{PartitionKey: op.PartitionKey, Key: op.Key})
		}
		k := &out[i]
		switch op.Kind {
		case OpSetIf, OpDeleteIf, OpCheck:
			k.Conds = append(k.Conds, op)
		}
		switch op.Kind {
		case OpSet, OpSetIf:
			k.Write, k.Value = WritePut, op.Value
		case OpDelete, OpDeleteIf:
			k.Write, k.Value = WriteDelete, nil
		}
	}
	slices.SortFunc(out, func(a, b KeyOps) int {
		if c := bytes.Compare(a.PartitionKey, b.PartitionKey); c != 0 {
			return c
		}
		return bytes.Compare(a.Key, b.Key)
	})
	return out
}
