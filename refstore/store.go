package refstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/rs/xid"
)

// Options tunes a Store. Zero values take the defaults.
type Options struct {
	// NewInstanceUID returns the instance uid of a new repository. Default:
	// a fresh xid, as lakeFS's NewRepoInstanceID.
	NewInstanceUID func() string
	// BranchUpdateMaxTries bounds UpdateBranch's attempts. Default 10, as
	// lakeFS's BranchUpdateMaxTries.
	BranchUpdateMaxTries int
	// BackoffInitial and BackoffMax bound the exponential back-off between
	// UpdateBranch attempts (with full jitter). Defaults 2ms and 500ms:
	// lakeFS waits 0.5s-5s, too long for a proxy in front of a client that
	// has its own retry loop.
	BackoffInitial, BackoffMax time.Duration
	// RepoCacheSize bounds how many repository records (instance uids) a
	// Store remembers between transactions. 0 means DefaultRepoCacheSize;
	// negative disables the cache (every access reads the record).
	RepoCacheSize int
	// RepoCacheTTL is how long a cached record is used before it is read
	// again. 0 means DefaultRepoCacheTTL; negative disables the cache.
	RepoCacheTTL time.Duration
}

// Store is the lakeFS ref store over a kv.Store.
type Store struct {
	kv    kv.Store
	opts  Options
	repos *repoCache // nil when disabled
}

// New returns a Store over store and writes the KV schema version ("1")
// if it is absent, so that a lakeFS >= 0.80 started on this store neither
// asks for a migration nor drops the kv table.
func New(ctx context.Context, store kv.Store, opts Options) (*Store, error) {
	if opts.NewInstanceUID == nil {
		opts.NewInstanceUID = func() string { return xid.New().String() }
	}
	if opts.BranchUpdateMaxTries <= 0 {
		opts.BranchUpdateMaxTries = 10
	}
	if opts.BackoffInitial <= 0 {
		opts.BackoffInitial = 2 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 500 * time.Millisecond
	}
	err := store.SetIf(ctx, []byte(SchemaPartition), []byte(SchemaVersionKey), []byte(SchemaVersion), nil)
	if err != nil && !errors.Is(err, kv.ErrPredicateFailed) {
		return nil, fmt.Errorf("write KV schema version: %w", err)
	}
	if opts.RepoCacheSize == 0 {
		opts.RepoCacheSize = DefaultRepoCacheSize
	}
	if opts.RepoCacheTTL == 0 {
		opts.RepoCacheTTL = DefaultRepoCacheTTL
	}
	return &Store{kv: store, opts: opts, repos: newRepoCache(opts.RepoCacheSize, opts.RepoCacheTTL)}, nil
}

// KV returns the underlying store.
func (s *Store) KV() kv.Store { return s.kv }

// backoff sleeps before attempt n (1-based) or returns ctx's error.
func (s *Store) backoff(ctx context.Context, n int) error {
	d := s.opts.BackoffInitial
	for i := 1; i < n && d < s.opts.BackoffMax; i++ {
		d = d * 3 / 2
	}
	d = min(d, s.opts.BackoffMax)
	d = time.Duration(rand.Int64N(int64(d)) + 1)
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
