package kv

import (
	"bytes"
	"context"
)

// UpperBound returns the smallest key greater than every key with prefix, or
// nil when no such key exists (empty prefix, or a prefix of only 0xFF).
func UpperBound(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// ScanPrefix scans the keys of partitionKey that start with prefix, from
// max(prefix, after) on. As in lakeFS, an entry equal to after is included;
// callers that want "strictly after" skip it.
func ScanPrefix(ctx context.Context, s Store, partitionKey, prefix, after []byte) (EntriesIterator, error) {
	start := prefix
	if bytes.Compare(after, prefix) > 0 {
		start = after
	}
	it, err := s.Scan(ctx, partitionKey, start)
	if err != nil {
		return nil, err
	}
	return &prefixIterator{it: it, prefix: prefix}, nil
}

type prefixIterator struct {
	it     EntriesIterator
	prefix []byte
	done   bool
}

func (p *prefixIterator) Next() bool {
	if p.done {
		return false
	}
	if !p.it.Next() {
		p.done = true
		return false
	}
	if !bytes.HasPrefix(p.it.Entry().Key, p.prefix) {
		p.done = true
		return false
	}
	return true
}

func (p *prefixIterator) Entry() *Entry {
	if p.done {
		return nil
	}
	return p.it.Entry()
}

func (p *prefixIterator) Err() error { return p.it.Err() }
func (p *prefixIterator) Close()     { p.it.Close() }
