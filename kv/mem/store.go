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
	c := &cursor{s: s, pk: bytes.Clone(partitionKey), next: bytes.Clone(start), inclusive: true}
	return kv.NewPager(ctx, nil, c.fetch), nil
}

func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	s.partitions = nil
	s.mu.Unlock()
}

// cursor is where a scan of one partition goes on.
type cursor struct {
	s         *Store
	pk        []byte
	next      []byte // where the next page starts
	inclusive bool   // whether next itself belongs to the next page
}

// fetch copies one page under the read lock, so that a long scan never
// holds the lock for the whole partition.
func (c *cursor) fetch(context.Context) ([]kv.Entry, bool, error) {
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	if c.s.closed {
		return nil, true, kv.ErrClosed
	}
	part := c.s.partitions[string(c.pk)]
	i, found := slices.BinarySearchFunc(part, c.next, func(e kv.Entry, k []byte) int { return bytes.Compare(e.Key, k) })
	if found && !c.inclusive {
		i++
	}
	end := min(i+scanPage, len(part))
	page := make([]kv.Entry, 0, end-i)
	for _, e := range part[i:end] {
		page = append(page, kv.Entry{PartitionKey: c.pk, Key: bytes.Clone(e.Key), Value: bytes.Clone(e.Value)})
	}
	if n := len(page); n > 0 {
		c.next, c.inclusive = page[n-1].Key, false
	}
	return page, end == len(part), nil
}
