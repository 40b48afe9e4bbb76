package dirty

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Syncer makes the secondary store hold what the authoritative store holds
// for one key (a whole key: every row of the set, deleting extras). It must
// be idempotent and safe to run concurrently with writers: it is run for
// keys whose writes may still be in flight.
type Syncer interface {
	Sync(ctx context.Context, k Key) error
}

// Repairer drains a dirty-key log through a Syncer.
type Repairer struct {
	Log    Log
	Syncer Syncer
	// MinAge leaves entries younger than this to the mirror that logged
	// them. Default 5s.
	MinAge time.Duration
	// Batch bounds the entries handled per round. Default 500.
	Batch int
	// Every is the pause between rounds. Default 1s.
	Every time.Duration
	// Workers syncs this many keys at once. Default 8.
	Workers int
	Now     func() time.Time
	Logger  *slog.Logger
	// OnRound, if set, is told the log size and repairs after each round
	// (for metrics).
	OnRound func(remaining int64, repaired int)
	// Instance names the entries the repairer logs afresh (see
	// ErrNothingWritten). Default "repairer".
	Instance string
}

func (r *Repairer) defaults() {
	if r.MinAge <= 0 {
		r.MinAge = 5 * time.Second
	}
	if r.Batch <= 0 {
		r.Batch = 500
	}
	if r.Every <= 0 {
		r.Every = time.Second
	}
	if r.Workers <= 0 {
		r.Workers = 8
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.Instance == "" {
		r.Instance = "repairer"
	}
}

// ErrNothingWritten marks a Syncer error that came before the sync wrote
// anything to the secondary store, so that no write of it can land later.
// The repairer then leaves the key's entries as they are.
//
// After any other error the key is logged afresh. Every instance's
// repairer drains the same log, and a repair write carrying a value read
// before a newer write can land after another instance compared the key
// (finding the stores equal) and cleared its entries; the repairer that
// wrote sees the difference in its re-check and fails, but the entries it
// would have left are gone. The fresh entry is compared after that write.
var ErrNothingWritten = errors.New("nothing written")

// RunOnce repairs one batch of old enough entries. Entries whose key synced
// are cleared; a key that failed keeps its entries (ErrNothingWritten) or
// has them replaced by a fresh one. It returns how many entries it cleared
// and the first sync error.
func (r *Repairer) RunOnce(ctx context.Context) (int, error) {
	r.defaults()
	entries, err := r.Log.List(ctx, r.Now().Add(-r.MinAge), r.Batch)
	if err != nil {
		return 0, err
	}
	// Several entries may name one key: sync it once.
	keys, refs := Distinct(entries)
	errs, firstErr := syncEach(ctx, r.Syncer, keys, r.Workers)
	var done []string
	var again []Key
	cleared := 0
	for _, k := range keys {
		id := k.String()
		err, tried := errs[id]
		switch {
		case !tried, errors.Is(err, ErrNothingWritten):
		case err == nil:
			done = append(done, refs[id]...)
			cleared += len(refs[id])
		default:
			again = append(again, k)
			done = append(done, refs[id]...)
		}
	}
	if len(again) > 0 {
		// Logged before the old entries go, so that a crash in between
		// leaves the key logged twice rather than not at all.
		if err := r.Log.Add(context.WithoutCancel(ctx), again, r.Instance); err != nil {
			return 0, err
		}
	}
	if err := r.Log.Delete(ctx, done); err != nil {
		return 0, err
	}
	return cleared, firstErr
}

// Distinct returns the keys that entries name, each once and in the
// entries' order, and the refs of the entries naming each key (by
// Key.String()).
func Distinct(entries []Entry) ([]Key, map[string][]string) {
	var keys []Key
	refs := map[string][]string{}
	for _, e := range entries {
		id := e.Key.String()
		if _, ok := refs[id]; !ok {
			keys = append(keys, e.Key)
		}
		refs[id] = append(refs[id], e.Ref)
	}
	return keys, refs
}

// SyncKeys syncs keys through s, workers at a time, until they are done
// or ctx ends. It returns the keys that synced and the first error.
func SyncKeys(ctx context.Context, s Syncer, keys []Key, workers int) ([]Key, error) {
	errs, firstErr := syncEach(ctx, s, keys, workers)
	var synced []Key
	for _, k := range keys {
		if err, tried := errs[k.String()]; tried && err == nil {
			synced = append(synced, k)
		}
	}
	return synced, firstErr
}

// syncEach syncs keys through s, workers at a time, until they are done or
// ctx ends. It returns each tried key's result (by Key.String(); nil when
// it synced) and the first error.
func syncEach(ctx context.Context, s Syncer, keys []Key, workers int) (map[string]error, error) {
	var (
		mu       sync.Mutex
		errs     = make(map[string]error, len(keys))
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan Key)
	)
	for range min(max(workers, 1), len(keys)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				err := s.Sync(ctx, k)
				mu.Lock()
				errs[k.String()] = err
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("dirty: repair %s: %w", k, err)
				}
				mu.Unlock()
			}
		}()
	}
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		next <- k
	}
	close(next)
	wg.Wait()
	return errs, firstErr
}

// Run repairs until ctx ends.
func (r *Repairer) Run(ctx context.Context) {
	r.defaults()
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		n, err := r.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			r.Logger.Warn("dirty-key repair", "err", err)
		}
		if r.OnRound != nil {
			if remaining, cerr := r.Log.Count(ctx); cerr == nil {
				r.OnRound(remaining, n)
			}
		}
		if n >= r.Batch && ctx.Err() == nil {
			continue // a backlog: no pause until it is worked off
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
