// Package mem is an in-process kv.Store for unit tests. It keeps each
// partition as a sorted slice so that scans page in O(log n) per page.
package mem

import (
	"bytes"
	"context"
	"slices"
	"sync"

	"github.com/kvproxy/kvproxy/kv"
)

// DriverName is the name mem registers under in kv/drivers.
const DriverName = "mem"

// scanPage bounds how many entries an iterator copies under the lock at once,
// so that a long scan never holds the lock for the whole partition.
const scanPage = 1000

// Store is the in-memory driver.
type Store struct {
	mu         sync.RWMutex
	partitions map[string][]kv.Entry // sorted by Key
	closed     bool
}

// New returns an empty store.
func New() *Store { return &Store{partitions: map[string][]kv.Entry{}} }

// Open matches the kv/drivers opener signature; mem takes no DSN.
func Open(_ context.Context, _ string) (kv.Store, error) { return New(), nil }

func (s *Store) find(pk, key []byte) (part []kv.Entry, idx int, found bool) {
	part = s.partitions[string(pk)]
	idx, found = slices.BinarySearchFunc(part, key, func(e kv.Entry, k []byte) int { return bytes.Compare(e.Key, k) })
	return part, idx, found
}

func (s *Store) Get(ctx context.Context, partitionKey, key []byte) (*kv.ValueWithPredicate, error) {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, kv.ErrClosed
	}
	part, i, ok := s.find(partitionKey, key)
	if !ok {
		return nil, kv.ErrNotFound
	}
	v := bytes.Clone(part[i].Value)
	return &kv.ValueWithPredicate{Value: v, Predicate: kv.Predicate(bytes.Clone(v))}, nil
}

func (s *Store) Set(ctx context.Context, partitionKey, key, value []byte) error {
	return s.Batch(ctx, []kv.Op{{Kind: kv.OpSet, PartitionKey: partitionKey, Key: key, Value: value}})
}

func (s *Store) SetIf(ctx context.Context, partitionKey, key, value []byte, pred kv.Predicate) error {
	return s.Batch(ctx, []kv.Op{{Kind: kv.OpSetIf, PartitionKey: partitionKey, Key: key, Value: value, Predicate: pred}})
}

func (s *Store) Delete(ctx context.Context, partitionKey, key []byte) error {
	return s.Batch(ctx, []kv.Op{{Kind: kv.OpDelete, PartitionKey: partitionKey, Key: key}})
}

// Batch applies ops atomically: all conditions are checked first, under one
// write lock, then all writes are applied.
func (s *Store) Batch(ctx context.Context, ops []kv.Op) error {
	if err := kv.CheckOps(ops); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return kv.ErrClosed
	}
	for _, op := range ops {
		switch op.Kind {
		case kv.OpSetIf, kv.OpDeleteIf, kv.OpCheck:
			part, i, ok := s.find(op.PartitionKey, op.Key)
			if op.Predicate == nil {
				if ok && op.Kind != kv.OpDeleteIf {
					return kv.ErrPredicateFailed
				}
				if op.Kind == kv.OpDeleteIf && !ok {
					return kv.ErrPredicateFailed
				}
				continue
			}
			if !ok || !bytes.Equal(part[i].Value, op.Predicate) {
				return kv.ErrPredicateFailed
			}
		}
	}
	for _, op := range ops {
		part, i, ok := s.find(op.PartitionKey, op.Key)
		switch op.Kind {
		case kv.OpSet, kv.OpSetIf:
			e := kv.Entry{Key: bytes.Clone(op.Key), Value: bytes.Clone(op.Value)}
			if ok {
				part[i] = e
			} else {
				s.partitions[string(op.PartitionKey)] = slices.Insert(part, i, e)
			}
		case kv.OpDelete, kv.OpDeleteIf:
			if ok {
				part = slices.Delete(part, i, i+1)
				if len(part) == 0 {
					delete(s.partitions, string(op.PartitionKey))
				} else {
					s.partitions[string(op.PartitionKey)] = part
				}
			}
		}
	}
	return nil
}

func (s *Store) Scan(ctx context.Context, partitionKey, start []byte) (kv.EntriesIterator, error) {
	if len(partitionKey) == 0 {
		return nil, kv.ErrMissingPartitionKey
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, kv.ErrClosed
	}
	return &iterator{s: s, ctx: ctx, pk: bytes.Clone(partitionKey), next: bytes.Clone(start), inclusive: true}, nil
}

func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	s.partitions = nil
	s.mu.Unlock()
}

type iterator struct {
	s         *Store
	ctx       context.Context
	pk        []byte
	next      []byte // where the next page starts
	inclusive bool   // whether next itself belongs to the next page
	page      []kv.Entry
	pos       int
	entry     *kv.Entry
	err       error
	done      bool
	closed    bool
}

func (it *iterator) fill() {
	it.s.mu.RLock()
	defer it.s.mu.RUnlock()
	if it.s.closed {
		it.err = kv.ErrClosed
		return
	}
	part := it.s.partitions[string(it.pk)]
	i, found := slices.BinarySearchFunc(part, it.next, func(e kv.Entry, k []byte) int { return bytes.Compare(e.Key, k) })
	if found && !it.inclusive {
		i++
	}
	end := min(i+scanPage, len(part))
	// A fresh slice per page: callers may hold Entry pointers of earlier pages.
	it.page = make([]kv.Entry, 0, scanPage)
	for _, e := range part[i:end] {
		it.page = append(it.page, kv.Entry{PartitionKey: it.pk, Key: bytes.Clone(e.Key), Value: bytes.Clone(e.Value)})
	}
	it.pos = 0
	if end == len(part) {
		it.done = true
	}
	if n := len(it.page); n > 0 {
		it.next, it.inclusive = it.page[n-1].Key, false
	}
}

func (it *iterator) Next() bool {
	if it.closed || it.err != nil {
		return false
	}
	if err := it.ctx.Err(); err != nil {
		it.err = err
		return false
	}
	if it.pos >= len(it.page) {
		if it.done {
			it.entry = nil
			return false
		}
		it.fill()
		if it.err != nil || len(it.page) == 0 {
			it.entry = nil
			return false
		}
	}
	it.entry = &it.page[it.pos]
	it.pos++
	return true
}

func (it *iterator) Entry() *kv.Entry { return it.entry }

func (it *iterator) Err() error {
	if it.closed && it.err == nil {
		return nil
	}
	return it.err
}

func (it *iterator) Close() { it.closed = true; it.page = nil }
