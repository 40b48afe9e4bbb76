package refstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/refstore/graveler"
	"google.golang.org/protobuf/proto"
)

// Txn is an optimistic transaction over the ref store. It records every
// key it reads together with the exact bytes it saw ("absent" is a read
// too), and every scanned range with the keys it found; it buffers every
// write, and its own reads see those buffered writes. Nothing reaches the
// KV store before Commit. A Txn is not safe for concurrent use.
type Txn struct {
	s      *Store
	reads  map[rkey]readRec
	writes map[rkey]*writeRec
	scans  []scanRec
	// fresh partitions belong to a repository instance created in this
	// txn: nobody else can have written there, so reads skip the store.
	fresh map[string]bool
	// purges are repository instance partitions to empty at commit (a
	// deleted repository, or an IN_DELETION one being replaced).
	purges map[string]bool
	// cached names the repositories whose record this txn took from the
	// Store's cache and has not checked against the store yet; repoUses
	// counts how often the txn relied on each repository's record, so that
	// a stale one is only swapped for the current one while nothing else
	// depends on it.
	cached   map[string]bool
	repoUses map[string]int
	seq      int
	done     bool
}

type rkey struct{ pk, key string }

type readRec struct {
	value   []byte
	present bool
}

type writeRec struct {
	value []byte
	del   bool
	class writeClass
	seq   int
}

type scanRec struct {
	pk, prefix string
	keys       []string // what the store returned, ascending
}

// Begin starts a transaction.
func (s *Store) Begin() *Txn {
	return &Txn{
		s:      s,
		reads:  map[rkey]readRec{},
		writes: map[rkey]*writeRec{},
		fresh:  map[string]bool{},
		purges: map[string]bool{},
	}
}

// Update runs fn in a new transaction and commits it if fn returns nil. It
// does not retry: an ErrConflict is returned to the caller, who owns the
// retry policy (the SQL client retries on 40001).
func (s *Store) Update(ctx context.Context, fn func(*Txn) error) error {
	t := s.Begin()
	if err := fn(t); err != nil {
		t.Rollback()
		return err
	}
	return t.Commit(ctx)
}

// Rollback discards the buffered writes. It is safe to call after Commit.
func (t *Txn) Rollback() { t.done = true }

// get returns the txn's view of a key.
func (t *Txn) get(ctx context.Context, pk, key []byte) ([]byte, bool, error) {
	if t.done {
		return nil, false, ErrTxnDone
	}
	k := rkey{string(pk), string(key)}
	if w, ok := t.writes[k]; ok {
		return w.value, !w.del, nil
	}
	if r, ok := t.reads[k]; ok {
		return r.value, r.present, nil
	}
	if t.fresh[k.pk] {
		t.reads[k] = readRec{}
		return nil, false, nil
	}
	v, err := t.s.kv.Get(ctx, pk, key)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		t.reads[k] = readRec{}
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("get %s/%s: %w", pk, key, err)
	}
	t.reads[k] = readRec{value: v.Value, present: true}
	return v.Value, true, nil
}

// getMsg reads a key into m; found is false if the key is absent.
func (t *Txn) getMsg(ctx context.Context, pk, key []byte, m proto.Message) (bool, error) {
	v, ok, err := t.get(ctx, pk, key)
	if err != nil || !ok {
		return false, err
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return false, fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, pk, key, err)
	}
	return true, nil
}

func (t *Txn) put(pk, key []byte, m proto.Message, class writeClass) error {
	if t.done {
		return ErrTxnDone
	}
	v, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %s/%s: %w", pk, key, err)
	}
	t.seq++
	t.writes[rkey{string(pk), string(key)}] = &writeRec{value: v, class: class, seq: t.seq}
	return nil
}

func (t *Txn) del(pk, key []byte, class writeClass) {
	t.seq++
	t.writes[rkey{string(pk), string(key)}] = &writeRec{del: true, class: class, seq: t.seq}
}

type entry struct {
	key, value []byte
}

// scan returns the txn's view of every key of pk with prefix: what the
// store holds, overlaid with the txn's own reads and writes. The keys the
// store returned are recorded, so that Commit can detect a key inserted or
// removed by someone else since (a phantom).
func (t *Txn) scan(ctx context.Context, pk, prefix []byte) ([]entry, error) {
	if t.done {
		return nil, ErrTxnDone
	}
	rec := scanRec{pk: string(pk), prefix: string(prefix)}
	view := map[string][]byte{}
	if !t.fresh[rec.pk] {
		it, err := kv.ScanPrefix(ctx, t.s.kv, pk, prefix, nil)
		if err != nil {
			return nil, fmt.Errorf("scan %s/%s: %w", pk, prefix, err)
		}
		for it.Next() {
			e := it.Entry()
			k := rkey{rec.pk, string(e.Key)}
			rec.keys = append(rec.keys, k.key)
			if r, ok := t.reads[k]; ok {
				// Repeatable read: keep what we saw first; Commit
				// finds the change.
				if r.present {
					view[k.key] = r.value
				}
				continue
			}
			t.reads[k] = readRec{value: bytes.Clone(e.Value), present: true}
			view[k.key] = t.reads[k].value
		}
		err = it.Err()
		it.Close()
		if err != nil {
			return nil, fmt.Errorf("scan %s/%s: %w", pk, prefix, err)
		}
		// Keys read as absent earlier stay absent in this view.
		for k, r := range t.reads {
			if k.pk == rec.pk && !r.present && strings.HasPrefix(k.key, rec.prefix) {
				delete(view, k.key)
			}
		}
	}
	for k, w := range t.writes {
		if k.pk != rec.pk || !strings.HasPrefix(k.key, rec.prefix) {
			continue
		}
		if w.del {
			delete(view, k.key)
		} else {
			view[k.key] = w.value
		}
	}
	t.scans = append(t.scans, rec)
	out := make([]entry, 0, len(view))
	for k, v := range view {
		out = append(out, entry{key: []byte(k), value: v})
	}
	slices.SortFunc(out, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
	return out, nil
}

// step is one planned write.
type step struct {
	k       rkey
	w       *writeRec
	read    bool // the txn read k: the write is conditional on what it saw
	present bool // ... and saw a value (pred), or saw it absent
	pred    []byte
}

type plan struct {
	checks []step // read, not written: must be unchanged
	steps  []step // writes in KV-safe order
}

// order ranks a write: non-repository sets children first (staging,
// commits, tags, branches), then non-repository deletes parents first
// (branches, tags, commits, staging), then repository records.
func order(w *writeRec) (int, int) {
	switch {
	case w.class == classRepo && !w.del:
		return 2, 0
	case w.class == classRepo:
		return 3, 0
	case !w.del:
		return 0, int(w.class)
	default:
		return 1, -int(w.class)
	}
}

func (t *Txn) plan() plan {
	var p plan
	for k, r := range t.reads {
		if _, written := t.writes[k]; !written && !t.purges[k.pk] && !t.fresh[k.pk] {
			p.checks = append(p.checks, step{k: k, read: true, present: r.present, pred: r.value})
		}
	}
	for k, w := range t.writes {
		if t.purges[k.pk] && !w.del {
			continue // a set into a partition being emptied is moot
		}
		r, read := t.reads[k]
		p.steps = append(p.steps, step{k: k, w: w, read: read, present: r.present, pred: r.value})
	}
	slices.SortFunc(p.checks, func(a, b step) int {
		return cmpKey(a.k, b.k)
	})
	slices.SortFunc(p.steps, func(a, b step) int {
		a1, a2 := order(a.w)
		b1, b2 := order(b.w)
		if a1 != b1 {
			return a1 - b1
		}
		if a2 != b2 {
			return a2 - b2
		}
		return a.w.seq - b.w.seq
	})
	return p
}

func cmpKey(a, b rkey) int {
	if c := strings.Compare(a.pk, b.pk); c != 0 {
		return c
	}
	return strings.Compare(a.key, b.key)
}

func conflictf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConflict}, args...)...)
}

// Commit validates what the transaction read and applies its writes.
//
// When the store is a kv.Batcher, everything happens in one atomic batch:
// every key read but not written becomes an OpCheck against the bytes read
// (or absence), every write of a key that was read is conditional on those
// bytes, blind writes are unconditional, and a deleted repository's
// partition is emptied in the same batch. A failed condition is ErrConflict
// and nothing is written.
//
// Otherwise, or when the batch is too large, the writes are applied one key
// at a time with compare-and-set, in an order that never exposes a
// half-made object: all read predicates are re-validated first; a deleted
// repository is marked IN_DELETION; then staged entries, commits, tags,
// branches are written, deletions go parents first, and repository records
// are written (create) or removed (delete) last. A conflict found before
// the first write leaves nothing behind; one found later returns
// ErrConflict after a prefix of the writes, which by that order is
// invisible (children of a repository that does not exist yet, a
// repository still IN_DELETION, a commit no branch points to).
//
// Scanned ranges are re-scanned before anything is written and a key that
// appeared or vanished is ErrConflict. A key inserted between that re-scan
// and the writes is not detected (a phantom). Every writer into a
// repository's partition validates the repository record, which a
// repository delete changes, so such a phantom can only be an orphan in the
// partition of a repository instance that is gone.
func (t *Txn) Commit(ctx context.Context) error {
	if t.done {
		return ErrTxnDone
	}
	t.done = true
	err := t.commit(ctx)
	t.updateRepoCache(err)
	return err
}

// updateRepoCache keeps the Store's repository cache in step with a
// commit: committed repository records are remembered or forgotten, and a
// failed commit forgets every record it relied on, so that a retry reads
// them afresh instead of failing again on the same stale entry.
func (t *Txn) updateRepoCache(err error) {
	c := t.s.repos
	if c == nil {
		return
	}
	if err != nil {
		for k := range t.reads {
			if id, ok := repoIDOf(k); ok {
				c.drop(id)
			}
		}
		for k := range t.writes {
			if id, ok := repoIDOf(k); ok {
				c.drop(id)
			}
		}
		return
	}
	for k, w := range t.writes {
		if id, ok := repoIDOf(k); ok {
			c.observe(id, w.value, !w.del)
		}
	}
}

// repoIDOf tells whether k is a repository record and of which repository.
func repoIDOf(k rkey) (string, bool) {
	if k.pk != GravelerPartition {
		return "", false
	}
	return strings.CutPrefix(k.key, RepoKeyPrefix)
}

func (t *Txn) commit(ctx context.Context) error {
	if len(t.writes) == 0 && len(t.purges) == 0 {
		if len(t.reads) <= 1 && len(t.scans) == 0 {
			return nil // a single read is trivially consistent
		}
		if err := t.validateScans(ctx); err != nil {
			return err
		}
		return t.validateChecks(ctx, t.plan().checks)
	}
	if err := t.validateScans(ctx); err != nil {
		return err
	}
	p := t.plan()
	if b, ok := t.s.kv.(kv.Batcher); ok {
		err := t.commitBatch(ctx, b, p)
		if !errors.Is(err, kv.ErrBatchTooLarge) {
			return err
		}
	}
	return t.commitOrdered(ctx, p)
}

func (t *Txn) validateScans(ctx context.Context) error {
	for _, sc := range t.scans {
		if t.fresh[sc.pk] {
			continue
		}
		it, err := kv.ScanPrefix(ctx, t.s.kv, []byte(sc.pk), []byte(sc.prefix), nil)
		if err != nil {
			return fmt.Errorf("validate scan %s/%s: %w", sc.pk, sc.prefix, err)
		}
		i := 0
		same := true
		for it.Next() {
			if i >= len(sc.keys) || sc.keys[i] != string(it.Entry().Key) {
				same = false
				break
			}
			i++
		}
		err = it.Err()
		it.Close()
		if err != nil {
			return fmt.Errorf("validate scan %s/%s: %w", sc.pk, sc.prefix, err)
		}
		if !same || i != len(sc.keys) {
			return conflictf("keys under %s/%s changed since they were read", sc.pk, sc.prefix)
		}
	}
	return nil
}

// validateChecks re-reads keys one by one and compares them with what the
// txn saw.
func (t *Txn) validateChecks(ctx context.Context, checks []step) error {
	for _, c := range checks {
		v, err := t.s.kv.Get(ctx, []byte(c.k.pk), []byte(c.k.key))
		switch {
		case errors.Is(err, kv.ErrNotFound):
			if c.present {
				return conflictf("%s/%s was deleted", c.k.pk, c.k.key)
			}
		case err != nil:
			return fmt.Errorf("validate %s/%s: %w", c.k.pk, c.k.key, err)
		case !c.present:
			return conflictf("%s/%s was created", c.k.pk, c.k.key)
		case !bytes.Equal(v.Value, c.pred):
			return conflictf("%s/%s was changed", c.k.pk, c.k.key)
		}
	}
	return nil
}

// predicate is what SetIf needs for a read: the bytes, or nil for absent.
func (s step) predicate() kv.Predicate {
	if !s.present {
		return nil
	}
	return kv.Predicate(s.pred)
}

func (t *Txn) purgeKeys(ctx context.Context, pk string) ([][]byte, error) {
	it, err := t.s.kv.Scan(ctx, []byte(pk), nil)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", pk, err)
	}
	defer it.Close()
	var keys [][]byte
	for it.Next() {
		if _, written := t.writes[rkey{pk, string(it.Entry().Key)}]; !written {
			keys = append(keys, bytes.Clone(it.Entry().Key))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", pk, err)
	}
	return keys, nil
}

func (t *Txn) commitBatch(ctx context.Context, b kv.Batcher, p plan) error {
	var ops []kv.Op
	for _, c := range p.checks {
		ops = append(ops, kv.Op{Kind: kv.OpCheck, PartitionKey: []byte(c.k.pk), Key: []byte(c.k.key), Predicate: c.predicate()})
	}
	var purged []kv.Op
	for _, pk := range sortedKeys(t.purges) {
		keys, err := t.purgeKeys(ctx, pk)
		if err != nil {
			return err
		}
		for _, k := range keys {
			purged = append(purged, kv.Op{Kind: kv.OpDelete, PartitionKey: []byte(pk), Key: k})
		}
	}
	for i, s := range p.steps {
		if i > 0 && s.w.class == classRepo && p.steps[i-1].w.class != classRepo {
			// Children of purged partitions go before repository records,
			// for readers of the ops' order (the batch itself is atomic).
			ops = append(ops, purged...)
			purged = nil
		}
		op := kv.Op{PartitionKey: []byte(s.k.pk), Key: []byte(s.k.key), Value: s.w.value}
		switch {
		case !s.w.del && s.read:
			op.Kind, op.Predicate = kv.OpSetIf, s.predicate()
		case !s.w.del:
			op.Kind = kv.OpSet
		case s.read && s.present:
			op.Kind, op.Predicate = kv.OpDeleteIf, s.predicate()
		case s.read:
			op.Kind = kv.OpCheck // deleting a key read as absent: still absent?
		default:
			op.Kind = kv.OpDelete
		}
		ops = append(ops, op)
	}
	ops = append(ops, purged...)
	if len(ops) == 0 {
		return nil
	}
	err := b.Batch(ctx, ops)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kv.ErrPredicateFailed):
		return conflictf("a key read by the transaction changed before commit (%v)", err)
	case errors.Is(err, kv.ErrBatchTooLarge):
		return err
	}
	return fmt.Errorf("commit batch of %d ops: %w", len(ops), err)
}

func (t *Txn) commitOrdered(ctx context.Context, p plan) error {
	// Validate everything before the first write, so that a conflict found
	// here leaves nothing behind.
	if err := t.validateChecks(ctx, p.checks); err != nil {
		return err
	}
	var conditional []step
	for _, s := range p.steps {
		if s.read {
			conditional = append(conditional, s)
		}
	}
	if err := t.validateChecks(ctx, conditional); err != nil {
		return err
	}
	// Mark deleted repositories IN_DELETION first: from here on no reader
	// sees them and no transaction writing into them can commit.
	for i, s := range p.steps {
		if s.w.class != classRepo || !s.w.del || !s.present {
			continue
		}
		var rd graveler.RepositoryData
		if err := proto.Unmarshal(s.pred, &rd); err != nil {
			return fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, s.k.pk, s.k.key, err)
		}
		if rd.State == graveler.RepositoryState_IN_DELETION {
			continue
		}
		rd.State = graveler.RepositoryState_IN_DELETION
		marked, err := proto.Marshal(&rd)
		if err != nil {
			return fmt.Errorf("marshal %s/%s: %w", s.k.pk, s.k.key, err)
		}
		if err := t.s.kv.SetIf(ctx, []byte(s.k.pk), []byte(s.k.key), marked, s.predicate()); err != nil {
			if errors.Is(err, kv.ErrPredicateFailed) {
				return conflictf("%s/%s changed before it could be marked IN_DELETION", s.k.pk, s.k.key)
			}
			return fmt.Errorf("mark %s/%s IN_DELETION: %w", s.k.pk, s.k.key, err)
		}
		p.steps[i].pred = marked
	}
	for _, pk := range sortedKeys(t.purges) {
		keys, err := t.purgeKeys(ctx, pk)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := t.s.kv.Delete(ctx, []byte(pk), k); err != nil {
				return fmt.Errorf("delete %s/%s: %w", pk, k, err)
			}
		}
	}
	for n, s := range p.steps {
		if err := t.applyStep(ctx, s); err != nil {
			if errors.Is(err, kv.ErrPredicateFailed) {
				return conflictf("%s/%s changed; %d of %d writes were applied in KV-safe order", s.k.pk, s.k.key, n, len(p.steps))
			}
			return fmt.Errorf("after %d of %d writes: %w", n, len(p.steps), err)
		}
	}
	return nil
}

func (t *Txn) applyStep(ctx context.Context, s step) error {
	pk, key := []byte(s.k.pk), []byte(s.k.key)
	switch {
	case !s.w.del && s.read:
		return t.s.kv.SetIf(ctx, pk, key, s.w.value, s.predicate())
	case !s.w.del:
		return t.s.kv.Set(ctx, pk, key, s.w.value)
	case t.purges[s.k.pk]:
		return t.s.kv.Delete(ctx, pk, key)
	case s.read:
		// No single-key delete-if exists outside Batcher; check, then
		// delete. The window between them is the fallback's limit.
		if b, ok := t.s.kv.(kv.Batcher); ok && s.present {
			err := b.Batch(ctx, []kv.Op{{Kind: kv.OpDeleteIf, PartitionKey: pk, Key: key, Predicate: s.predicate()}})
			if !errors.Is(err, kv.ErrBatchTooLarge) {
				return err
			}
		}
		if err := t.validateChecks(ctx, []step{s}); err != nil {
			return fmt.Errorf("%w (%w)", kv.ErrPredicateFailed, err)
		}
		if !s.present {
			return nil
		}
		return t.s.kv.Delete(ctx, pk, key)
	default:
		return t.s.kv.Delete(ctx, pk, key)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
