package migrate

import (
	"context"
	"fmt"

	"github.com/kvproxy/kvproxy/kv"
)

// Read-ahead of KV partition scans: the verify merges the entries of each
// staging token with a scan of the token's partition, and there is a
// partition per token. Scanning them one after the other left the verify
// waiting on a round trip per token (10,000 in the benchmark) on a
// server-backed store; scanning ahead overlaps those with the merge.
const (
	// aheadDepth partitions are scanned ahead of the merge.
	aheadDepth = 4
	// aheadEntries bounds what is read ahead of one partition; the rest
	// is read when the merge gets there. Memory stays independent of the
	// partitions' sizes.
	aheadEntries = 1024
)

// aheadScan is the start of one partition's scan.
type aheadScan struct {
	entries []kv.Entry
	rest    kv.EntriesIterator // the scan after entries; nil if they are all
	err     error
}

// scanAhead scans a list of partitions ahead of their use, up to
// aheadDepth of them at once (their round trips overlap too), and hands
// them out in list order.
type scanAhead struct {
	order chan chan aheadScan // one result per partition, in list order
	slots chan struct{}       // a slot per scan started and not yet handed out
	stop  chan struct{}
	done  chan struct{}
	// orphaned are scans next gave up waiting for.
	orphaned []chan aheadScan
}

func startScanAhead(ctx context.Context, s kv.Store, partitions [][]byte) *scanAhead {
	a := &scanAhead{order: make(chan chan aheadScan, aheadDepth), slots: make(chan struct{}, aheadDepth),
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		defer close(a.order)
		for _, pk := range partitions {
			select {
			case a.slots <- struct{}{}:
			case <-a.stop:
				return
			}
			res := make(chan aheadScan, 1) // never blocks the scan
			a.order <- res                 // cannot block: a slot is held
			go func() { res <- scanStart(ctx, s, pk) }()
		}
	}()
	return a
}

func scanStart(ctx context.Context, s kv.Store, pk []byte) aheadScan {
	it, err := s.Scan(ctx, pk, nil)
	if err != nil {
		return aheadScan{err: fmt.Errorf("scan %s: %w", pk, err)}
	}
	r := aheadScan{entries: make([]kv.Entry, 0, 128)}
	for len(r.entries) < aheadEntries {
		if !it.Next() {
			err := it.Err()
			it.Close()
			if err != nil {
				return aheadScan{err: fmt.Errorf("scan %s: %w", pk, err)}
			}
			return r
		}
		r.entries = append(r.entries, *it.Entry())
	}
	r.rest = it
	return r
}

// next returns the scan of the next partition as an iterator.
func (a *scanAhead) next(ctx context.Context) (kv.EntriesIterator, error) {
	var res chan aheadScan
	select {
	case r, ok := <-a.order:
		if !ok {
			return nil, fmt.Errorf("%w: read-ahead ended early", kv.ErrOperationFailed)
		}
		res = r
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var r aheadScan
	select {
	case r = <-res:
		<-a.slots
	case <-ctx.Done():
		// Hand the pending scan back so that close closes it.
		a.orphaned = append(a.orphaned, res)
		return nil, ctx.Err()
	}
	if r.err != nil {
		return nil, r.err
	}
	return &bufIter{entries: r.entries, rest: r.rest}, nil
}

// close stops the read-ahead and closes the scans it started.
func (a *scanAhead) close() {
	close(a.stop)
	<-a.done
	pending := a.orphaned
	for res := range a.order {
		pending = append(pending, res)
	}
	for _, res := range pending {
		if r := <-res; r.rest != nil {
			r.rest.Close()
		}
	}
}

// bufIter iterates entries read ahead, then the rest of their scan.
type bufIter struct {
	entries []kv.Entry
	pos     int
	rest    kv.EntriesIterator
	cur     *kv.Entry
}

func (b *bufIter) Next() bool {
	if b.pos < len(b.entries) {
		b.cur = &b.entries[b.pos]
		b.pos++
		return true
	}
	b.cur = nil
	if b.rest == nil || !b.rest.Next() {
		return false
	}
	b.cur = b.rest.Entry()
	return true
}

func (b *bufIter) Entry() *kv.Entry { return b.cur }

func (b *bufIter) Err() error {
	if b.rest == nil {
		return nil
	}
	return b.rest.Err()
}

func (b *bufIter) Close() {
	if b.rest != nil {
		b.rest.Close()
	}
	b.entries, b.cur = nil, nil
}
