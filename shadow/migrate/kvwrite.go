package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/xid"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// maxBatch keeps a batch within every driver's atomic limit (DynamoDB's
// TransactWriteItems takes 100 items).
const maxBatch = 100

// item is one row on its way into KV.
type item struct {
	key     Key
	pk, k   []byte
	value   []byte
	written bool
	// xmin is the version of the SQL row the value was encoded from (if
	// hasXMin); unchanged: the re-check found that version still current.
	xmin      uint32
	hasXMin   bool
	unchanged bool
}

// batchWorkers is how many atomic batches of one page are in flight at
// once: a server-backed store spends most of a batch waiting on the
// network.
const batchWorkers = 4

// createIfAbsent writes every item whose key is absent and marks it
// written; a present key (a dual write, or an earlier run, got there first)
// is left alone. A BulkInserter takes the whole page in one round trip;
// otherwise batches are atomic, so one present key fails its batch, which
// is then retried key by key.
func createIfAbsent(ctx context.Context, s kv.Store, items []*item) error {
	if bi, ok := s.(kv.BulkInserter); ok && len(items) > 0 {
		es := make([]kv.Entry, len(items))
		for i, it := range items {
			es[i] = kv.Entry{PartitionKey: it.pk, Key: it.k, Value: it.value}
		}
		ins, err := bi.InsertIfAbsent(ctx, es)
		if err != nil {
			return fmt.Errorf("write page: %w", err)
		}
		for i, it := range items {
			it.written = ins[i]
		}
		return nil
	}
	// One atomic batch for the page if the store takes it (bbolt does, in
	// one fsync); stores with a smaller limit refuse before writing.
	if b, ok := s.(kv.Batcher); ok && len(items) > maxBatch {
		err := b.Batch(ctx, setIfAbsentOps(items))
		if err == nil {
			for _, it := range items {
				it.written = true
			}
			return nil
		}
		if !errors.Is(err, kv.ErrPredicateFailed) && !errors.Is(err, kv.ErrBatchTooLarge) {
			return fmt.Errorf("write batch: %w", err)
		}
	}
	var chunks [][]*item
	for start := 0; start < len(items); start += maxBatch {
		chunks = append(chunks, items[start:min(start+maxBatch, len(items))])
	}
	errs := make([]error, len(chunks))
	sem := make(chan struct{}, batchWorkers)
	var wg sync.WaitGroup
	for i, chunk := range chunks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = createChunk(ctx, s, chunk)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func setIfAbsentOps(items []*item) []kv.Op {
	ops := make([]kv.Op, len(items))
	for i, it := range items {
		ops[i] = kv.Op{Kind: kv.OpSetIf, PartitionKey: it.pk, Key: it.k, Value: it.value}
	}
	return ops
}

func createChunk(ctx context.Context, s kv.Store, chunk []*item) error {
	if b, ok := s.(kv.Batcher); ok && len(chunk) > 1 {
		err := b.Batch(ctx, setIfAbsentOps(chunk))
		if err == nil {
			for _, it := range chunk {
				it.written = true
			}
			return nil
		}
		if !errors.Is(err, kv.ErrPredicateFailed) && !errors.Is(err, kv.ErrBatchTooLarge) {
			return fmt.Errorf("write batch: %w", err)
		}
	}
	for _, it := range chunk {
		err := s.SetIf(ctx, it.pk, it.k, it.value, nil)
		switch {
		case err == nil:
			it.written = true
		case errors.Is(err, kv.ErrPredicateFailed):
		default:
			return fmt.Errorf("write %s: %w", it.key, err)
		}
	}
	return nil
}

// deleteIf removes pk/key only if its value is still exactly value.
// deleted is false when the value had changed (someone else's write, which
// must stay) or the key was gone.
func deleteIf(ctx context.Context, s kv.Store, pk, key, value []byte) (deleted bool, err error) {
	if b, ok := s.(kv.Batcher); ok {
		err := b.Batch(ctx, []kv.Op{{Kind: kv.OpDeleteIf, PartitionKey: pk, Key: key, Predicate: value}})
		if err == nil {
			return true, nil
		}
		if errors.Is(err, kv.ErrPredicateFailed) {
			return false, nil
		}
		if !errors.Is(err, kv.ErrBatchTooLarge) {
			return false, err
		}
	}
	// Without a conditional delete the check and the delete are two
	// steps; every kvproxy driver is a Batcher, so this is a fallback for
	// third-party stores only.
	cur, err := s.Get(ctx, pk, key)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !bytes.Equal(cur.Value, value) {
		return false, nil
	}
	return true, s.Delete(ctx, pk, key)
}

// repoRecord returns the KV record of a repository, nil if absent.
func repoRecord(ctx context.Context, s kv.Store, id string) (*graveler.RepositoryData, []byte, error) {
	v, err := s.Get(ctx, []byte(refstore.GravelerPartition), refstore.RepoKey(id))
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read repository %q: %w", id, err)
	}
	var rd graveler.RepositoryData
	if err := proto.Unmarshal(v.Value, &rd); err != nil {
		return nil, nil, fmt.Errorf("%w: repository %q: %v", refstore.ErrCorrupt, id, err)
	}
	return &rd, v.Value, nil
}

// newUID is how a repository copied from PostgreSQL gets its instance uid:
// an xid, as lakeFS's NewRepoInstanceID.
func newUID() string { return xid.New().String() }
