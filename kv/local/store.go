package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// DriverName is the name local has in kv/drivers.
const DriverName = "local"

// Defaults of Options.
const (
	DefaultScanPageSize = 1000
	DefaultLockTimeout  = time.Second
	// DefaultMaxResidentMap: see Options.MaxResidentMap.
	DefaultMaxResidentMap = 32 << 20
)

var (
	metaBucket  = []byte("kvproxy.meta")
	partsBucket = []byte("kvproxy.partitions")
	formatKey   = []byte("format")
	formatValue = []byte("1")
)

// Options tune a local store. Zero values take the defaults.
type Options struct {
	// ScanPageSize is how many entries one read transaction of a Scan reads.
	ScanPageSize int
	// LockTimeout is how long Open waits for another process to release the
	// file before it fails with kv.ErrStoreLocked.
	LockTimeout time.Duration
	// MaxResidentMap bounds, roughly, how many bytes of the file's memory
	// mapping reads and writes may leave resident in the process. bbolt
	// reads through a mapping of the whole file, and every page a long scan
	// (a verify) or a bulk load (a backfill) touches would otherwise stay
	// in the process's RSS: the RSS would grow with the file. Once this
	// many bytes were read or written, the pages are dropped from the
	// mapping (they stay in the page cache). Negative: never drop.
	MaxResidentMap int64
}

// maxGroup bounds how many writers share one bbolt transaction, so that a
// burst does not build one huge transaction whose failure re-runs them all.
const maxGroup = 256

// Store is the bbolt-backed driver.
type Store struct {
	db       *bolt.DB
	path     string
	pageSize int
	closed   atomic.Bool

	// touched estimates the bytes of the mapping accessed since the last
	// drop; maxResident is Options.MaxResidentMap.
	touched     atomic.Int64
	maxResident int64
	dbPage      int // bbolt's page size

	// Writes go through one committer goroutine (group commit): writers
	// that arrive while a commit is being fsynced are applied together in
	// the next bbolt transaction and share its fsync. reqs is unbuffered
	// so that a request is either taken by the committer (and answered)
	// or refused once stop is closed; none can be left behind in a buffer.
	reqs     chan *writeReq
	stop     chan struct{}
	loopDone chan struct{}
}

// writeReq is one Batch call waiting for the committer.
type writeReq struct {
	ctx  context.Context
	keys []kv.KeyOps
	err  error
	done chan struct{}
}

// Open matches the kv/drivers opener signature: dsn is the file path.
func Open(ctx context.Context, dsn string) (kv.Store, error) {
	s, err := New(ctx, dsn, Options{})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// New opens (creating if needed) the bolt file at path.
func New(ctx context.Context, path string, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: open: %w", err)
	}
	if path == "" {
		return nil, fmt.Errorf("%w: local: empty DSN, want the path of the store file (e.g. ./data/kvproxy.db)", kv.ErrDriverConfiguration)
	}
	if opts.ScanPageSize < 0 || opts.LockTimeout < 0 {
		return nil, fmt.Errorf("%w: local: negative scan page size or lock timeout", kv.ErrDriverConfiguration)
	}
	if opts.ScanPageSize == 0 {
		opts.ScanPageSize = DefaultScanPageSize
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.MaxResidentMap == 0 {
		opts.MaxResidentMap = DefaultMaxResidentMap
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%w: local: %s is a directory, want the path of the store file inside it (e.g. %s)",
			kv.ErrDriverConfiguration, path, filepath.Join(path, "kvproxy.db"))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("%w: local: create directory for %s: %w", kv.ErrSetupFailed, path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s for its file lock)", kv.ErrStoreLocked, path, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: local: open %s: %w", kv.ErrSetupFailed, path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		switch f := meta.Get(formatKey); {
		case f == nil:
			if err := meta.Put(formatKey, formatValue); err != nil {
				return err
			}
		case !bytes.Equal(f, formatValue):
			return fmt.Errorf("unsupported file format %q (this build reads %q)", f, formatValue)
		}
		_, err = tx.CreateBucketIfNotExists(partsBucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%w: local: %s: %w", kv.ErrSetupFailed, path, err)
	}
	st := &Store{db: db, path: path, pageSize: opts.ScanPageSize, maxResident: opts.MaxResidentMap, dbPage: db.Info().PageSize,
		reqs: make(chan *writeReq), stop: make(chan struct{}), loopDone: make(chan struct{})}
	go st.commitLoop()
	return st, nil
}

// Path is the file the store uses.
func (s *Store) Path() string { return s.path }

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return kv.ErrClosed
	}
	return ctx.Err()
}

func (s *Store) wrap(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("local %s: %w", op, kv.ErrClosed)
	}
	if errors.Is(err, kv.ErrPredicateFailed) || errors.Is(err, kv.ErrNotFound) {
		return err
	}
	return fmt.Errorf("local %s: %w", op, err)
}

// lookup returns whether key is in b and a copy of its value. A cursor is
// used rather than b.Get so that an empty value is told apart from absence.
func lookup(b *bolt.Bucket, key []byte) (bool, []byte) {
	if b == nil {
		return false, nil
	}
	k, v := b.Cursor().Seek(key)
	if k == nil || !bytes.Equal(k, key) {
		return false, nil
	}
	return true, append([]byte{}, v...)
}

func (s *Store) Get(ctx context.Context, partitionKey, key []byte) (*kv.ValueWithPredicate, error) {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var (
		found bool
		val   []byte
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		found, val = lookup(tx.Bucket(partsBucket).Bucket(partitionKey), key)
		// A point read touches about one leaf page (the branch pages
		// above it are shared by all reads).
		s.touch(tx, int64(s.dbPage+len(key)+len(val)))
		return nil
	})
	if err != nil {
		return nil, s.wrap("get", err)
	}
	if !found {
		return nil, fmt.Errorf("key=%q: %w", key, kv.ErrNotFound)
	}
	return &kv.ValueWithPredicate{Value: val, Predicate: kv.Predicate(bytes.Clone(val))}, nil
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

// Batch applies ops atomically: every condition is checked against the
// state before the batch, then the writes are applied. It returns once the
// write is on disk. Concurrent calls are group-committed: the committer
// applies them one after the other inside one bbolt transaction (so each
// sees the effects of those before it, a serial order) and one commit, one
// fsync pair, makes them all durable before any of them returns.
func (s *Store) Batch(ctx context.Context, ops []kv.Op) error {
	if err := kv.CheckOps(ops); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	r := &writeReq{ctx: ctx, keys: kv.GroupOps(ops), done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-s.stop:
		return fmt.Errorf("local write: %w", kv.ErrClosed)
	}
	// No select on ctx here: once taken, the request is decided by the
	// committer, and returning early could report a failure for a write
	// that lands on disk.
	<-r.done
	if r.err != nil {
		return s.wrap("write", r.err)
	}
	return nil
}

// commitLoop takes a request, then every request that queued up meanwhile,
// and commits them together.
func (s *Store) commitLoop() {
	defer close(s.loopDone)
	group := make([]*writeReq, 0, maxGroup)
	for {
		select {
		case r := <-s.reqs:
			group = append(group[:0], r)
		case <-s.stop:
			return
		}
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		s.commitGroup(group)
		clear(group)
	}
}

// errPartial marks a request whose failure came after it had started
// writing, so the shared transaction must be rolled back.
type errPartial struct{ err error }

func (e errPartial) Error() string { return e.err.Error() }
func (e errPartial) Unwrap() error { return e.err }

// commitGroup commits the requests in one transaction. A request that fails
// before writing anything (a predicate, a cancelled context: the usual
// failures) is answered with its error and the others go on in the same
// transaction. One that fails after it started writing poisons the shared
// transaction: it is rolled back, the failing request is run alone (its
// own error is what its caller sees) and the others are retried together.
// Re-running is safe because a request is a pure function of the state it
// finds: it captures nothing it mutates.
func (s *Store) commitGroup(group []*writeReq) {
	for len(group) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			var n int64
			for i, r := range group {
				r.err = apply(tx, r.ctx, r.keys)
				var p errPartial
				if errors.As(r.err, &p) {
					failed = i
					return r.err
				}
				for _, k := range r.keys {
					n += int64(len(k.Key) + len(k.Value))
				}
				n += int64(len(r.keys) * s.dbPage)
			}
			// Before the commit: bbolt replaces the mapping only while
			// committing, so it is still the one this transaction reads.
			s.touch(tx, n)
			return nil
		})
		if failed < 0 {
			for _, r := range group {
				if r.err == nil {
					r.err = err // the commit itself failed: nothing was written
				}
				close(r.done)
			}
			return
		}
		r := group[failed]
		r.err = s.db.Update(func(tx *bolt.Tx) error { return apply(tx, r.ctx, r.keys) })
		var p errPartial
		if errors.As(r.err, &p) {
			r.err = p.err
		}
		close(r.done)
		group = append(group[:failed], group[failed+1:]...)
	}
}

// apply checks every condition of one request, then writes. An error
// before the first write leaves tx untouched; one after it is errPartial.
func apply(tx *bolt.Tx, ctx context.Context, keys []kv.KeyOps) error {
	parts := tx.Bucket(partsBucket)
	for _, k := range keys {
		if len(k.Conds) == 0 {
			continue
		}
		exists, cur := lookup(parts.Bucket(k.PartitionKey), k.Key)
		if !k.Holds(exists, cur) {
			return kv.ErrPredicateFailed
		}
	}
	// A cancelled caller gets nothing written: the check sits just before
	// the first write.
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := applyWrite(parts, k); err != nil {
			return errPartial{err}
		}
	}
	return nil
}

func applyWrite(parts *bolt.Bucket, k kv.KeyOps) error {
	switch k.Write {
	case kv.WritePut:
		b, err := parts.CreateBucketIfNotExists(k.PartitionKey)
		if err != nil {
			return fmt.Errorf("partition %q: %w", k.PartitionKey, err)
		}
		if err := b.Put(k.Key, k.Value); err != nil {
			return fmt.Errorf("key %q: %w", k.Key, err)
		}
	case kv.WriteDelete:
		b := parts.Bucket(k.PartitionKey)
		if b == nil {
			return nil
		}
		if err := b.Delete(k.Key); err != nil {
			return fmt.Errorf("key %q: %w", k.Key, err)
		}
		if first, _ := b.Cursor().First(); first == nil {
			if err := parts.DeleteBucket(k.PartitionKey); err != nil {
				return fmt.Errorf("partition %q: %w", k.PartitionKey, err)
			}
		}
	}
	return nil
}

func (s *Store) Scan(ctx context.Context, partitionKey, start []byte) (kv.EntriesIterator, error) {
	if len(partitionKey) == 0 {
		return nil, kv.ErrMissingPartitionKey
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c := &cursor{s: s, pk: bytes.Clone(partitionKey), next: bytes.Clone(start), inclusive: true}
	return kv.NewPager(ctx, s.closed.Load, c.fetch), nil
}

// touch counts n bytes of the mapping accessed by tx and, past
// maxResident, drops the mapping's pages from the process. It must run
// inside tx: a transaction keeps bbolt from replacing the mapping (a
// writer remaps only in its commit, and waits for readers to do so), so
// the range dropped is still the file's mapping and nothing else. Other
// transactions reading concurrently just fault their pages back in.
func (s *Store) touch(tx *bolt.Tx, n int64) {
	if s.maxResident < 0 || s.touched.Add(n) < s.maxResident {
		return
	}
	if s.touched.Swap(0) < s.maxResident {
		return // another reader dropped them meanwhile
	}
	// Failure only costs memory, never data: ignore it.
	_ = dropMapped(s.db.Info().Data, tx.Size())
}

// Close closes the file and releases its lock. It waits for running
// transactions, and the group being committed, to finish.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	close(s.stop)
	<-s.loopDone // the committer finishes the group it holds
	_ = s.db.Close()
}

// firstPageCap is the capacity a scan page starts with: most partitions
// (a staging token's) are far smaller than a page, and a page allocated
// whole was mostly zeroed and dropped again.
const firstPageCap = 128

// cursor is where a scan of one partition goes on.
type cursor struct {
	s         *Store
	pk        []byte
	next      []byte // where the next page starts
	inclusive bool   // whether next itself belongs to the next page
}

// fetch reads the next page in its own read transaction, so that a long
// scan never holds one open.
func (c *cursor) fetch(context.Context) ([]kv.Entry, bool, error) {
	page := make([]kv.Entry, 0, min(c.s.pageSize, firstPageCap))
	done := false
	err := c.s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(partsBucket).Bucket(c.pk)
		if b == nil {
			done = true
			return nil
		}
		cur := b.Cursor()
		var k, v []byte
		if len(c.next) == 0 {
			k, v = cur.First()
		} else {
			k, v = cur.Seek(c.next)
			if k != nil && !c.inclusive && bytes.Equal(k, c.next) {
				k, v = cur.Next()
			}
		}
		var n int64
		for ; k != nil && len(page) < c.s.pageSize; k, v = cur.Next() {
			page = append(page, kv.Entry{PartitionKey: c.pk, Key: bytes.Clone(k), Value: append([]byte{}, v...)})
			n += int64(len(k) + len(v))
		}
		if k == nil {
			done = true
		}
		// Leaf pages are at least half full (bbolt splits at 50%): the
		// pages read hold at most twice the bytes copied.
		c.s.touch(tx, 2*n)
		return nil
	})
	if err != nil {
		return nil, true, c.s.wrap("scan", err)
	}
	if n := len(page); n > 0 {
		c.next, c.inclusive = page[n-1].Key, false
	}
	return page, done, nil
}
