package kvlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kvproxy/kvproxy/kv"
)

// Mode is shared or exclusive.
type Mode int

const (
	Shared Mode = iota
	Exclusive
)

func (m Mode) String() string {
	if m == Exclusive {
		return "exclusive"
	}
	return "shared"
}

// ErrLeaseLost is returned by Release when the lease had already expired and
// the lock was taken over; the protected work was not exclusive.
var ErrLeaseLost = errors.New("kvlock: lease lost")

// holder is one entry of a lock's value. Intent marks an exclusive request
// that is waiting; it holds nothing but makes new shared requests wait.
type holder struct {
	ID      string `json:"id"`
	Mode    Mode   `json:"mode"`
	Intent  bool   `json:"intent,omitempty"`
	Count   int    `json:"n,omitempty"` // re-entrant acquisitions by ID in Mode
	Expires int64  `json:"exp"`         // unix nanoseconds
}

type state struct {
	Holders []holder `json:"holders"`
}

// Options tunes a Manager. Zero values take the defaults.
type Options struct {
	// Partition holds the lock entries. Default "_kvproxy_locks": like every
	// kvproxy partition it starts with "_", which no lakeFS partition does.
	Partition string
	// TTL is how long a lease lasts without renewal. Default 10s.
	TTL time.Duration
	// RenewEvery is the renewal period. Default TTL/3.
	RenewEvery time.Duration
	// PollMin and PollMax bound the back-off between attempts of a waiting
	// Acquire. Defaults 1ms and 50ms.
	PollMin, PollMax time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Manager acquires and renews locks for one process.
type Manager struct {
	store kv.Store
	opt   Options

	mu   sync.Mutex
	held map[*Lease]struct{}
}

// Lease is a held lock.
type Lease struct {
	m      *Manager
	key    []byte
	id     string
	mode   Mode
	lost   chan struct{}
	once   sync.Once
	closed bool
}

// NewManager returns a Manager over store. Call Run to renew leases.
func NewManager(store kv.Store, opt Options) *Manager {
	if opt.Partition == "" {
		opt.Partition = "_kvproxy_locks"
	}
	if opt.TTL <= 0 {
		opt.TTL = 10 * time.Second
	}
	if opt.RenewEvery <= 0 {
		opt.RenewEvery = opt.TTL / 3
	}
	if opt.PollMin <= 0 {
		opt.PollMin = time.Millisecond
	}
	if opt.PollMax <= 0 {
		opt.PollMax = 50 * time.Millisecond
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Manager{store: store, opt: opt, held: map[*Lease]struct{}{}}
}

// Run renews every held lease until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.opt.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.RenewAll(ctx)
		}
	}
}

// RenewAll extends every held lease once. A lease found lost is marked so.
func (m *Manager) RenewAll(ctx context.Context) {
	m.mu.Lock()
	leases := make([]*Lease, 0, len(m.held))
	for l := range m.held {
		leases = append(leases, l)
	}
	m.mu.Unlock()
	for _, l := range leases {
		err := m.update(ctx, l.key, func(s *state, now time.Time) (bool, error) {
			i := s.find(l.id, l.mode, false)
			if i < 0 {
				return false, ErrLeaseLost
			}
			s.Holders[i].Expires = now.Add(m.opt.TTL).UnixNano()
			return true, nil
		})
		if errors.Is(err, ErrLeaseLost) {
			l.markLost()
		}
	}
}

// Held returns how many leases this manager holds.
func (m *Manager) Held() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.held)
}

// Acquire blocks until holderID holds key in mode, or ctx ends. holderID
// must be unique across processes (e.g. instance id + session id). As with
// PostgreSQL's advisory locks, a holder that already has the key gets it
// again at once (a shared holder asking for exclusive waits for the others),
// and each Lease is released separately.
func (m *Manager) Acquire(ctx context.Context, key []byte, mode Mode, holderID string) (*Lease, error) {
	if len(key) == 0 {
		return nil, kv.ErrMissingKey
	}
	l := &Lease{m: m, key: key, id: holderID, mode: mode, lost: make(chan struct{})}
	wait := m.opt.PollMin
	intent := false
	for {
		acquired := false
		err := m.update(ctx, key, func(s *state, now time.Time) (bool, error) {
			acquired = false
			exp := now.Add(m.opt.TTL).UnixNano()
			if s.grantable(holderID, mode) {
				s.remove(holderID, mode, true)
				if i := s.find(holderID, mode, false); i >= 0 {
					s.Holders[i].Count++
					s.Holders[i].Expires = exp
				} else {
					s.Holders = append(s.Holders, holder{ID: holderID, Mode: mode, Count: 1, Expires: exp})
				}
				acquired = true
				return true, nil
			}
			if mode == Exclusive {
				// Queue an intent (kept fresh while waiting) so that new
				// shared requests do not overtake this one.
				if i := s.find(holderID, mode, true); i >= 0 {
					s.Holders[i].Expires = exp
				} else {
					s.Holders = append(s.Holders, holder{ID: holderID, Mode: Exclusive, Intent: true, Expires: exp})
				}
				intent = true
				return true, nil
			}
			return false, nil
		})
		if err != nil {
			if intent {
				m.dropIntent(l)
			}
			return nil, err
		}
		if acquired {
			m.mu.Lock()
			m.held[l] = struct{}{}
			m.mu.Unlock()
			return l, nil
		}
		select {
		case <-ctx.Done():
			if intent {
				m.dropIntent(l)
			}
			return nil, fmt.Errorf("kvlock: waiting for %s lock: %w", mode, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, m.opt.PollMax)
	}
}

// dropIntent removes a waiting request's intent with a fresh context, since
// the request's own context may be the reason it gave up.
func (m *Manager) dropIntent(l *Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), m.opt.TTL)
	defer cancel()
	_ = m.update(ctx, l.key, func(s *state, _ time.Time) (bool, error) {
		return s.remove(l.id, l.mode, true), nil
	})
}

// Lost is closed when a renewal found that the lease had been lost.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) markLost() { l.once.Do(func() { close(l.lost) }) }

// Mode is the mode the lease was taken in.
func (l *Lease) Mode() Mode { return l.mode }

// Release gives the lock up. It returns ErrLeaseLost if the lease had
// expired and was pruned before the release.
func (l *Lease) Release(ctx context.Context) error {
	m := l.m
	m.mu.Lock()
	if l.closed {
		m.mu.Unlock()
		return nil
	}
	l.closed = true
	delete(m.held, l)
	m.mu.Unlock()
	found := false
	err := m.update(ctx, l.key, func(s *state, _ time.Time) (bool, error) {
		i := s.find(l.id, l.mode, false)
		if i < 0 {
			return false, nil
		}
		found = true
		if s.Holders[i].Count > 1 {
			s.Holders[i].Count--
		} else {
			s.Holders = slices.Delete(s.Holders, i, i+1)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if !found {
		l.markLost()
		return ErrLeaseLost
	}
	return nil
}

// update runs f on the lock's current state (with expired holders pruned)
// and writes the result with compare-and-set, retrying on conflicts. f
// returns whether it changed anything worth writing.
func (m *Manager) update(ctx context.Context, key []byte, f func(s *state, now time.Time) (bool, error)) error {
	pk := []byte(m.opt.Partition)
	for {
		var s state
		var pred kv.Predicate
		cur, err := m.store.Get(ctx, pk, key)
		switch {
		case errors.Is(err, kv.ErrNotFound):
		case err != nil:
			return fmt.Errorf("kvlock: read lock: %w", err)
		default:
			if err := json.Unmarshal(cur.Value, &s); err != nil {
				return fmt.Errorf("kvlock: lock entry %q is not a lock: %w", key, err)
			}
			pred = cur.Predicate
		}
		now := m.opt.Now()
		pruned := s.prune(now)
		changed, err := f(&s, now)
		if err != nil {
			return err
		}
		if !changed && !pruned {
			return nil
		}
		if len(s.Holders) == 0 {
			if pred == nil {
				return nil
			}
			// Delete only if unchanged since the read: a blind delete could
			// drop a holder that arrived in between.
			if b, ok := m.store.(kv.Batcher); ok {
				err = b.Batch(ctx, []kv.Op{{Kind: kv.OpDeleteIf, PartitionKey: pk, Key: key, Predicate: pred}})
			} else {
				// Without atomic conditional delete, leave an empty entry.
				err = m.store.SetIf(ctx, pk, key, mustJSON(s), pred)
			}
		} else {
			err = m.store.SetIf(ctx, pk, key, mustJSON(s), pred)
		}
		if errors.Is(err, kv.ErrPredicateFailed) {
			continue
		}
		if err != nil {
			return fmt.Errorf("kvlock: write lock: %w", err)
		}
		return nil
	}
}

func mustJSON(s state) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a struct of strings and ints always marshals
	}
	return b
}

func (s *state) prune(now time.Time) bool {
	n := len(s.Holders)
	s.Holders = slices.DeleteFunc(s.Holders, func(h holder) bool { return h.Expires <= now.UnixNano() })
	return len(s.Holders) != n
}

func (s *state) find(id string, mode Mode, intent bool) int {
	return slices.IndexFunc(s.Holders, func(h holder) bool { return h.ID == id && h.Mode == mode && h.Intent == intent })
}

func (s *state) remove(id string, mode Mode, intent bool) bool {
	i := s.find(id, mode, intent)
	if i < 0 {
		return false
	}
	s.Holders = slices.Delete(s.Holders, i, i+1)
	return true
}

// grantable says whether id may take the lock in mode now. Its own entries
// never block it. Exclusive needs no other holder and no other exclusive
// intent queued ahead of its own; shared needs no other exclusive holder and
// no exclusive intent at all, so that waiting writers are not starved.
func (s *state) grantable(id string, mode Mode) bool {
	// Re-entry always succeeds, as in PostgreSQL, when the holder already
	// has the key in this mode or in exclusive mode.
	if s.find(id, mode, false) >= 0 || s.find(id, Exclusive, false) >= 0 {
		return true
	}
	ownIntentSeen := false
	for _, h := range s.Holders {
		if h.ID == id {
			if h.Intent {
				ownIntentSeen = true
			}
			continue
		}
		if !h.Intent {
			if mode == Exclusive || h.Mode == Exclusive {
				return false
			}
			continue
		}
		if !ownIntentSeen {
			return false
		}
	}
	return true
}
