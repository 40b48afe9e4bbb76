package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/shadow/dirty"
)

// dirtyLogKeys reads the keys of a dirty.Log.
type dirtyLogKeys struct {
	log   dirty.Log
	limit int
}

// FromDirtyLog adapts the dirty-key log to DirtyKeys: the keys of up to
// limit entries (<= 0: 100000) logged before now, whole keys included.
func FromDirtyLog(l dirty.Log, limit int) DirtyKeys {
	if limit <= 0 {
		limit = 100000
	}
	return dirtyLogKeys{log: l, limit: limit}
}

func (d dirtyLogKeys) List(ctx context.Context) ([]Key, error) {
	es, err := d.log.List(ctx, time.Now(), d.limit)
	if err != nil {
		return nil, err
	}
	out := make([]Key, len(es))
	for i, e := range es {
		out[i] = Key(e.Key)
	}
	return out, nil
}

// Syncer repairs keys of the dirty-key log (it is a dirty.Syncer): each
// Sync makes KV (or PostgreSQL, with Direction KVToSQL) hold what the
// authoritative store holds for the key, re-checked; a whole key syncs
// every row of its set, extras deleted.
type Syncer struct {
	o VerifyOptions
	// whole bounds the whole-key syncs running at once: each holds a
	// snapshot transaction on one pool connection and needs a second one
	// to write or re-check, so more of them than half the pool could wait
	// for each other forever.
	whole chan struct{}
}

// poolSizer is what a *pgxpool.Pool tells about its size.
type poolSizer interface{ Stat() *pgxpool.Stat }

var _ dirty.Syncer = (*Syncer)(nil)

// NewSyncer returns a Syncer; Source and KV are required, Direction says
// which store is authoritative.
func NewSyncer(o VerifyOptions) (*Syncer, error) {
	o.Repair, o.Incremental, o.Dirty = true, false, nil
	if _, err := NewVerifier(o); err != nil {
		return nil, err
	}
	n := 2
	if ps, ok := o.Source.(poolSizer); ok {
		n = max(1, int(ps.Stat().MaxConns())/2)
	}
	return &Syncer{o: o, whole: make(chan struct{}, n)}, nil
}

// Sync repairs one key. It is safe to call concurrently.
func (s *Syncer) Sync(ctx context.Context, dk dirty.Key) error {
	v, err := NewVerifier(s.o)
	if err != nil {
		return err
	}
	v.noRecheck = true
	k := Key(dk)
	if !k.whole() {
		if err := k.check(); err != nil {
			return unwritten(err)
		}
		// Almost every logged key was mirrored already: compare first and
		// write only a difference, so the repairer does not add a write
		// (an fsync, on the local store) to every client write. A match
		// read fresh on both sides is enough to clear the entry: its write
		// committed before the entry was listed, so the read sees it or a
		// newer one, and a newer write has an entry of its own.
		if res, _, _, err := v.compareKey(ctx, v.o.Source, k); err == nil && res == ResultMatch {
			return nil
		}
		return v.repair(ctx, k, "")
	}
	select {
	case s.whole <- struct{}{}:
	case <-ctx.Done():
		return unwritten(ctx.Err())
	}
	defer func() { <-s.whole }()
	tx, err := s.o.Source.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return unwritten(fmt.Errorf("begin snapshot: %w", err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	v.tx = tx
	if err := v.wholeKey(ctx, k); err != nil {
		return err
	}
	if v.rep.RepairFailed > 0 {
		return fmt.Errorf("%s: %d rows could not be repaired: %w", k, v.rep.RepairFailed, ErrRepairRaced)
	}
	return nil
}
