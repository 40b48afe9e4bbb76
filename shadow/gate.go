package shadow

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/wire"
)

// Gate is one instance's admission control for ref-store writes and
// advisory locks. It holds the phase and epoch the instance follows, and
// drains the instance when a switch puts up its barrier:
//
//  1. new advisory locks wait, and the sessions holding one finish (the
//     legacy client's locked functions write on other connections, so
//     their writes must still flow in this stage);
//  2. once no lock is held, new write transactions wait too, and those in
//     flight finish; any still open after DrainTimeout is doomed (its next
//     write or COMMIT gets 40001, which the client retries);
//  3. the instance acknowledges the barrier (Ack).
//
// When the barrier goes away, with a new epoch or not, the waiters go on;
// those whose session routed under an older epoch get 40001 and retry under
// the new phase. Reads never wait.
type Gate struct {
	// Ack publishes this instance's acknowledgement of barrier id.
	Ack func(id string)
	// Fresh reports whether the instance's lease is current; writes are
	// refused when it is not (nil: always fresh).
	Fresh func() bool
	// MaxWait bounds how long a write or lock waits at a barrier before it
	// gets 40001 (default 6s: a little longer than a switch's own bound).
	MaxWait time.Duration
	// DrainTimeout is how long in-flight write transactions get to finish
	// before they are doomed (default 2s).
	DrainTimeout time.Duration
	// OnWait observes how long a write or lock waited at a barrier.
	OnWait func(time.Duration)
	// OnBarrierEnd observes how long a barrier was up, as this instance
	// saw it.
	OnBarrierEnd func(time.Duration)
	// Log, if set, gets one line per barrier stage.
	Log *slog.Logger

	view atomic.Pointer[phaseView]

	mu       sync.Mutex
	onMove   []func()      // OnMove callbacks
	changed  chan struct{} // closed and replaced on every state change
	barrier  *control.Barrier
	seen     time.Time // when this instance saw the barrier go up
	stage    int       // 0 none, 1 locks held back, 2 writes held back too, 3 acknowledged
	lockers  int
	writers  map[*session]struct{}
	bg       map[*session]context.CancelFunc // background writers (repair rounds)
	drainTmr *time.Timer
}

// phaseView is an immutable (phase, epoch) pair, swapped atomically so that
// sessions can compare epochs at every idle point for free.
type phaseView struct {
	phase string
	epoch int64
}

// NewGate returns a gate following rec.
func NewGate(rec control.PhaseRecord) *Gate {
	g := &Gate{changed: make(chan struct{}), writers: map[*session]struct{}{}, bg: map[*session]context.CancelFunc{}}
	g.view.Store(&phaseView{phase: rec.Phase, epoch: rec.Epoch})
	g.Update(rec)
	return g
}

// Phase is the phase in force for new sessions and transactions.
func (g *Gate) Phase() string { return g.view.Load().phase }

// Epoch is the epoch in force.
func (g *Gate) Epoch() int64 { return g.view.Load().epoch }

func (g *Gate) current() *phaseView { return g.view.Load() }

// OnMove registers f, called after every change of the phase or epoch
// in force, once Reroute answers from the new one.
func (g *Gate) OnMove(f func()) {
	g.mu.Lock()
	g.onMove = append(g.onMove, f)
	g.mu.Unlock()
}

// Update follows the phase record (control.Follower's OnChange).
func (g *Gate) Update(rec control.PhaseRecord) {
	prev := g.view.Swap(&phaseView{phase: rec.Phase, epoch: rec.Epoch})
	if prev != nil && (prev.phase != rec.Phase || prev.epoch != rec.Epoch) {
		g.mu.Lock()
		fns := g.onMove
		g.mu.Unlock()
		for _, f := range fns {
			f()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case rec.Barrier == nil:
		g.clearBarrierLocked()
	case g.barrier == nil || g.barrier.ID != rec.Barrier.ID:
		b := *rec.Barrier
		g.barrier, g.stage, g.seen = &b, 1, time.Now()
		// Background rounds stop at their next I/O; the drain waits for
		// them to return.
		for _, cancel := range g.bg {
			cancel()
		}
		if g.Log != nil {
			g.Log.Info("switch barrier: holding new advisory locks", "barrier", b.ID, "target", b.Target, "lockers", g.lockers, "writers", len(g.writers))
		}
		if !b.Deadline.IsZero() {
			// An abandoned barrier (its driver died) lets writes go on.
			time.AfterFunc(time.Until(b.Deadline.Add(control.BarrierGrace)), func() {
				g.mu.Lock()
				defer g.mu.Unlock()
				if g.barrier != nil && g.barrier.ID == b.ID {
					g.clearBarrierLocked()
				}
			})
		}
		g.evaluateLocked()
	}
	g.broadcastLocked()
}

func (g *Gate) clearBarrierLocked() {
	if g.barrier == nil {
		return
	}
	if g.OnBarrierEnd != nil {
		g.OnBarrierEnd(time.Since(g.seen))
	}
	g.barrier, g.stage = nil, 0
	if g.drainTmr != nil {
		g.drainTmr.Stop()
		g.drainTmr = nil
	}
	g.broadcastLocked()
}

func (g *Gate) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// evaluateLocked moves the barrier's stages forward.
func (g *Gate) evaluateLocked() {
	if g.barrier == nil {
		return
	}
	if g.stage == 1 && g.lockers == 0 {
		g.stage = 2
		if g.Log != nil {
			g.Log.Info("switch barrier: no advisory lock held; holding new writes", "barrier", g.barrier.ID, "writers", len(g.writers), "after", time.Since(g.seen))
		}
		id := g.barrier.ID
		g.drainTmr = time.AfterFunc(g.drainTimeout(), func() { g.doom(id) })
	}
	if g.stage == 2 && len(g.writers) == 0 {
		g.stage = 3
		if g.Log != nil {
			g.Log.Info("switch barrier: drained; acknowledging", "barrier", g.barrier.ID, "after", time.Since(g.seen))
		}
		if g.Ack != nil {
			go g.Ack(g.barrier.ID)
		}
	}
}

// doom gives up on the write transactions still open at the drain timeout:
// they can no longer commit, so they no longer hold up the switch.
func (g *Gate) doom(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.barrier == nil || g.barrier.ID != id || g.stage != 2 {
		return
	}
	doomed := 0
	for st := range g.writers {
		if st.committing {
			// Past its commit point: it finishes, and the drain waits
			// for it (a transaction that already committed on one store
			// must not be cut off from its mirror by the switch).
			continue
		}
		st.doomed = true
		delete(g.writers, st)
		doomed++
	}
	if g.Log != nil {
		g.Log.Info("switch barrier: doomed write transactions still open at the drain timeout", "barrier", id, "doomed", doomed, "committing", len(g.writers))
	}
	g.evaluateLocked()
}

func (g *Gate) maxWait() time.Duration {
	if g.MaxWait > 0 {
		return g.MaxWait
	}
	return 6 * time.Second
}

func (g *Gate) drainTimeout() time.Duration {
	if g.DrainTimeout > 0 {
		return g.DrainTimeout
	}
	return 2 * time.Second
}

// wait blocks while held() says the barrier holds the caller back, up to
// MaxWait. Called with g.mu held; returns with it held.
func (g *Gate) wait(ctx context.Context, what string, held func() bool) error {
	if !held() {
		return nil
	}
	start := time.Now()
	deadline := time.NewTimer(g.maxWait())
	defer deadline.Stop()
	defer func() {
		if g.OnWait != nil {
			g.OnWait(time.Since(start))
		}
	}()
	for held() {
		ch := g.changed
		g.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = wire.Errorf("57014", "canceling statement due to user request")
		case <-deadline.C:
			err = wire.Errorf("40001", "kvproxy: a phase switch held this %s for %s; retry", what, g.maxWait())
		}
		g.mu.Lock()
		if err != nil {
			return err
		}
	}
	return nil
}

// AcquireLock admits an advisory lock for st, waiting while a barrier
// drains locks. The caller must ReleaseLock(st) when the session's locks
// are released.
func (g *Gate) AcquireLock(ctx context.Context, st *session) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st.lockCounted {
		return nil
	}
	if g.stage >= 1 && st.writing && !st.wrote {
		// A read-write transaction that has not written yet (the branch
		// locker's) must not hold up the drain while it waits here: it
		// leaves the writers, and rejoins them, checked, once admitted.
		delete(g.writers, st)
		st.writing = false
		g.evaluateLocked()
		defer func() {
			if g.checkLocked(st) == nil {
				st.writing = true
				g.writers[st] = struct{}{}
			}
		}()
	}
	if err := g.wait(ctx, "advisory lock", func() bool { return g.stage >= 1 }); err != nil {
		return err
	}
	if err := g.checkLocked(st); err != nil {
		return err
	}
	st.lockCounted = true
	g.lockers++
	return nil
}

// ReleaseLock ends st's lock holding.
func (g *Gate) ReleaseLock(st *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !st.lockCounted {
		return
	}
	st.lockCounted = false
	g.lockers--
	g.evaluateLocked()
}

// BeginWrite admits a ref-store write of st's transaction (or autocommit
// statement): the first one waits while a barrier holds writes, and every
// one is refused with 40001 when st routed under an older epoch, the
// instance's lease expired, or the transaction was doomed by a drain.
func (g *Gate) BeginWrite(ctx context.Context, st *session) error {
	if err := g.BeginTx(ctx, st); err != nil {
		return err
	}
	g.mu.Lock()
	st.wrote = true
	g.mu.Unlock()
	return nil
}

// BeginTx admits a read-write transaction at its BEGIN: it counts as a
// writer from then on (see BeginWrite), without having written.
func (g *Gate) BeginTx(ctx context.Context, st *session) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !st.writing {
		if err := g.wait(ctx, "write", func() bool { return g.stage >= 2 }); err != nil {
			return err
		}
	}
	if err := g.checkLocked(st); err != nil {
		return err
	}
	if !st.writing {
		st.writing = true
		g.writers[st] = struct{}{}
	}
	return nil
}

// CheckCommit says whether st's transaction may still commit its writes.
// If it may, the transaction is committing from then on: a drain no longer
// dooms it, and waits for its EndWrite.
func (g *Gate) CheckCommit(st *session) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.checkLocked(st); err != nil {
		return err
	}
	st.committing = st.writing
	return nil
}

func (g *Gate) checkLocked(st *session) error {
	v := g.current()
	switch {
	case st.doomed:
		return wire.Errorf("40001", "kvproxy: this transaction was open when a phase switch needed it finished; retry it")
	case st.epoch != v.epoch && !sameRouting(st.phase, v.phase):
		return wire.Errorf("40001", "kvproxy: the phase changed to %s (epoch %d) during this transaction; retry it", v.phase, v.epoch)
	case g.Fresh != nil && !g.Fresh():
		return wire.Errorf("40001", "kvproxy cannot accept ref-store writes right now, retry: %v",
			fmt.Errorf("%w: this instance's lease expired; the phase record could not be re-read", control.ErrStale))
	}
	return nil
}

// Background admits a background writer, such as a repair round that
// copies keys from the authoritative store to the other: it waits while a
// barrier is up, counts as a write in flight until done is called, and its
// context is cancelled when a barrier goes up. A round that started in one
// phase therefore never writes after a switch to the next, when the store
// it copies from is no longer authoritative.
func (g *Gate) Background(ctx context.Context) (bctx context.Context, done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.wait(ctx, "repair round", func() bool { return g.stage >= 1 }); err != nil {
		return nil, nil, err
	}
	// Committing: a drain waits for it rather than dooming it (it has no
	// client to send a 40001 to); its cancelled context makes that short.
	st := &session{writing: true, committing: true, epoch: g.current().epoch}
	bctx, cancel := context.WithCancel(ctx)
	g.writers[st] = struct{}{}
	g.bg[st] = cancel
	return bctx, func() {
		cancel()
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.bg, st)
		delete(g.writers, st)
		g.evaluateLocked()
	}, nil
}

// EndWrite ends st's write transaction, committed or not.
func (g *Gate) EndWrite(st *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st.doomed, st.committing, st.wrote = false, false, false
	if !st.writing {
		return
	}
	st.writing = false
	delete(g.writers, st)
	g.evaluateLocked()
}

// Reroute latches the phase in force on st when the epoch moved, and says
// whether it did (the wire session then routes its statements again).
func (g *Gate) reroute(st *session) bool {
	v := g.current()
	if st.epoch == v.epoch {
		return false
	}
	st.phase, st.epoch = v.phase, v.epoch
	return true
}

// Status is the barrier state, for status and tests.
type GateStatus struct {
	Barrier string
	Stage   int
	Lockers int
	Writers int
}

// Status reports the gate's barrier state.
func (g *Gate) Status() GateStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := GateStatus{Stage: g.stage, Lockers: g.lockers, Writers: len(g.writers)}
	if g.barrier != nil {
		s.Barrier = g.barrier.ID
	}
	return s
}

// sameRouting reports whether a transaction routed under phase a can
// finish under phase b: kv-primary and kv-only answer ref-store statements
// alike (from KV, with compare-and-set); only the mirror to PostgreSQL
// differs, and a mirror after finalize is harmless.
func sameRouting(a, b string) bool {
	kv := func(p string) bool { return p == control.KVPrimary || p == control.KVOnly }
	return a == b || kv(a) && kv(b)
}
