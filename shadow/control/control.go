package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kvproxy/kvproxy/kv"
)

// Partition is where control records live.
const Partition = "_kvproxy"

var (
	keyPhase        = []byte("phase")
	prefixInstances = []byte("instances/")
	prefixEvents    = []byte("events/")
)

// Phase names, in migration order.
const (
	Passthrough = "passthrough"
	DualWrite   = "dual-write"
	KVPrimary   = "kv-primary"
	KVOnly      = "kv-only"
)

// Phases lists the phases in migration order.
var Phases = []string{Passthrough, DualWrite, KVPrimary, KVOnly}

var (
	// ErrStale means this instance cannot vouch for the current phase: its
	// lease expired or the stored epoch moved on. Ref-store writes must be
	// refused with a retryable error until the instance has caught up.
	ErrStale = errors.New("control: phase view is stale")
	// ErrConflict means the phase record changed between read and write.
	ErrConflict = errors.New("control: phase record changed concurrently")
	// ErrInvalidPhase names a phase that does not exist.
	ErrInvalidPhase = errors.New("control: invalid phase")
	// ErrCorrupt means a control record could not be decoded.
	ErrCorrupt = errors.New("control: corrupt record")
)

// ValidPhase reports whether p is a phase name.
func ValidPhase(p string) bool {
	switch p {
	case Passthrough, DualWrite, KVPrimary, KVOnly:
		return true
	}
	return false
}

// Barrier is set on the phase record while a switch is in progress.
type Barrier struct {
	ID      string    `json:"id"`
	Target  string    `json:"target"`
	Started time.Time `json:"started"`
	By      string    `json:"by"`
	// Deadline is when the switch gives up. The driver never flips the
	// phase after it; instances stop holding writes for a barrier whose
	// deadline passed (plus BarrierGrace for clock skew), so a driver that
	// died mid-switch cannot stop writes for longer than that.
	Deadline time.Time `json:"deadline"`
}

// BarrierGrace is how long past its deadline an instance still honours a
// barrier: the allowance for clock skew between the driver and instances.
const BarrierGrace = 2 * time.Second

// Abandoned reports whether the barrier's driver has given up for sure.
func (b *Barrier) Abandoned(now time.Time) bool {
	return b != nil && !b.Deadline.IsZero() && now.After(b.Deadline.Add(BarrierGrace))
}

// BarrierID is the barrier's id, "" when none is set.
func (r PhaseRecord) BarrierID() string {
	if r.Barrier == nil {
		return ""
	}
	return r.Barrier.ID
}

// PhaseRecord is the single global phase.
type PhaseRecord struct {
	Phase   string    `json:"phase"`
	Epoch   int64     `json:"epoch"`
	Changed time.Time `json:"changed"`
	By      string    `json:"by"`
	Barrier *Barrier  `json:"barrier,omitempty"`
}

// Instance is one proxy instance's registration.
type Instance struct {
	ID           string    `json:"id"`
	Addr         string    `json:"addr,omitempty"`
	Started      time.Time `json:"started"`
	LeaseExpires time.Time `json:"lease_expires"`
	EpochSeen    int64     `json:"epoch_seen"`
	PhaseSeen    string    `json:"phase_seen"`
	// BarrierAck is the id of the barrier this instance has acknowledged:
	// it holds new ref-store writes and has none in flight.
	BarrierAck string `json:"barrier_ack,omitempty"`
}

// Live reports whether the instance's lease is current at now.
func (i Instance) Live(now time.Time) bool { return now.Before(i.LeaseExpires) }

// Store reads and writes control records.
type Store struct {
	kv  kv.Store
	now func() time.Time
}

// NewStore wraps a KV store. now may be nil (time.Now).
func NewStore(s kv.Store, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{kv: s, now: now}
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Phase returns the phase record and its predicate, or kv.ErrNotFound.
func (s *Store) Phase(ctx context.Context) (PhaseRecord, kv.Predicate, error) {
	var r PhaseRecord
	v, err := s.kv.Get(ctx, []byte(Partition), keyPhase)
	if err != nil {
		return r, nil, err
	}
	if err := json.Unmarshal(v.Value, &r); err != nil {
		return r, nil, fmt.Errorf("%w: phase: %v", ErrCorrupt, err)
	}
	return r, v.Predicate, nil
}

// Init stores the initial phase if none is stored yet, and returns the
// record in force either way.
func (s *Store) Init(ctx context.Context, phase, by string) (PhaseRecord, error) {
	if !ValidPhase(phase) {
		return PhaseRecord{}, fmt.Errorf("%w: %q", ErrInvalidPhase, phase)
	}
	r := PhaseRecord{Phase: phase, Epoch: 1, Changed: s.now().UTC(), By: by}
	err := s.kv.SetIf(ctx, []byte(Partition), keyPhase, mustJSON(r), nil)
	if errors.Is(err, kv.ErrPredicateFailed) {
		cur, _, err := s.Phase(ctx)
		return cur, err
	}
	if err != nil {
		return PhaseRecord{}, fmt.Errorf("control: init phase: %w", err)
	}
	return r, nil
}

// Update replaces the phase record with r, provided it is unchanged since it
// was read with predicate pred; otherwise it returns ErrConflict.
func (s *Store) Update(ctx context.Context, pred kv.Predicate, r PhaseRecord) error {
	if !ValidPhase(r.Phase) {
		return fmt.Errorf("%w: %q", ErrInvalidPhase, r.Phase)
	}
	err := s.kv.SetIf(ctx, []byte(Partition), keyPhase, mustJSON(r), pred)
	if errors.Is(err, kv.ErrPredicateFailed) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("control: update phase: %w", err)
	}
	return nil
}

// PutInstance writes an instance registration.
func (s *Store) PutInstance(ctx context.Context, in Instance) error {
	if err := s.kv.Set(ctx, []byte(Partition), append(append([]byte{}, prefixInstances...), in.ID...), mustJSON(in)); err != nil {
		return fmt.Errorf("control: register instance %s: %w", in.ID, err)
	}
	return nil
}

// DeleteInstance removes an instance registration (clean shutdown).
func (s *Store) DeleteInstance(ctx context.Context, id string) error {
	return s.kv.Delete(ctx, []byte(Partition), append(append([]byte{}, prefixInstances...), id...))
}

// Instances lists every registration, live or not.
func (s *Store) Instances(ctx context.Context) ([]Instance, error) {
	it, err := kv.ScanPrefix(ctx, s.kv, []byte(Partition), prefixInstances, nil)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Instance
	for it.Next() {
		var in Instance
		if err := json.Unmarshal(it.Entry().Value, &in); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, it.Entry().Key, err)
		}
		out = append(out, in)
	}
	return out, it.Err()
}

// Event records one switch attempt.
type Event struct {
	Seq      int64         `json:"seq"`
	Kind     string        `json:"kind"` // cutover, rollback, finalize, init
	From     string        `json:"from"`
	To       string        `json:"to"`
	By       string        `json:"by"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
	Checks   []Check       `json:"checks,omitempty"`
	Epoch    int64         `json:"epoch"`
}

// Check is one precondition of a switch and its outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// AddEvent appends e with the next sequence number.
func (s *Store) AddEvent(ctx context.Context, e Event) (Event, error) {
	events, err := s.Events(ctx, 1)
	if err != nil {
		return e, err
	}
	next := int64(1)
	if len(events) > 0 {
		next = events[0].Seq + 1
	}
	for {
		e.Seq = next
		err := s.kv.SetIf(ctx, []byte(Partition), eventKey(next), mustJSON(e), nil)
		if errors.Is(err, kv.ErrPredicateFailed) {
			next++ // another writer took this number
			continue
		}
		if err != nil {
			return e, fmt.Errorf("control: record event: %w", err)
		}
		return e, nil
	}
}

// Events returns up to limit events, newest first (limit <= 0: all).
func (s *Store) Events(ctx context.Context, limit int) ([]Event, error) {
	it, err := kv.ScanPrefix(ctx, s.kv, []byte(Partition), prefixEvents, nil)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var all []Event
	for it.Next() {
		var e Event
		if err := json.Unmarshal(it.Entry().Value, &e); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, it.Entry().Key, err)
		}
		all = append(all, e)
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

func eventKey(seq int64) []byte { return fmt.Appendf(append([]byte{}, prefixEvents...), "%020d", seq) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings, ints and times always marshal
	}
	return b
}

// Follower keeps one instance's view of the phase fresh: it re-reads the
// phase record and renews the instance's lease every Refresh, and answers
// whether ref-store writes may proceed.
type Follower struct {
	store   *Store
	id      string
	addr    string
	ttl     time.Duration
	refresh time.Duration
	started time.Time

	poll time.Duration
	kick chan struct{}

	mu         sync.Mutex
	view       PhaseRecord
	validUntil time.Time // lease expiry as last written successfully
	renewed    time.Time // when the lease was last written
	barrierAck string
	ackSent    string // barrierAck as last published
	onChange   []func(PhaseRecord)
}

// FollowerOptions tunes a Follower.
type FollowerOptions struct {
	ID   string // unique instance id
	Addr string // where clients reach it, for status
	// TTL is the lease length; default 30s. An instance that cannot reach
	// the KV store keeps accepting writes for up to this long (PostgreSQL
	// is authoritative in dual-write, so a KV outage shorter than the lease
	// does not stop writes), and a switch waits up to this long for an
	// unreachable instance's lease to run out before going on without it.
	TTL time.Duration
	// Refresh is how often the lease is renewed; default 2s (or TTL/5 when
	// that is shorter).
	Refresh time.Duration
	// Poll is how often the phase record is re-read (one KV read); default
	// 100ms. A switch's write pause is bounded below by it: instances learn
	// of a barrier and of its release this late.
	Poll time.Duration
}

// NewFollower returns a follower; call Sync once, then Run.
func NewFollower(store *Store, opt FollowerOptions) *Follower {
	if opt.TTL <= 0 {
		opt.TTL = 30 * time.Second
	}
	if opt.Refresh <= 0 {
		opt.Refresh = min(2*time.Second, opt.TTL/5)
	}
	if opt.Poll <= 0 {
		opt.Poll = 100 * time.Millisecond
	}
	return &Follower{store: store, id: opt.ID, addr: opt.Addr, ttl: opt.TTL, refresh: opt.Refresh, poll: opt.Poll,
		kick: make(chan struct{}, 1), started: store.Now().UTC()}
}

// OnChange registers f to be called (from Sync) whenever the epoch or the
// barrier changes.
func (f *Follower) OnChange(fn func(PhaseRecord)) {
	f.mu.Lock()
	f.onChange = append(f.onChange, fn)
	f.mu.Unlock()
}

// SetBarrierAck records that this instance has drained for barrier id and
// has Run publish it at once.
func (f *Follower) SetBarrierAck(id string) {
	f.mu.Lock()
	f.barrierAck = id
	f.mu.Unlock()
	f.Kick()
}

// Kick makes Run re-read the phase and renew the lease now.
func (f *Follower) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Sync reads the phase record and renews the lease once.
func (f *Follower) Sync(ctx context.Context) (PhaseRecord, error) {
	r, _, err := f.store.Phase(ctx)
	if err != nil {
		return PhaseRecord{}, fmt.Errorf("control: read phase: %w", err)
	}
	now := f.store.Now()
	f.mu.Lock()
	ack := f.barrierAck
	f.mu.Unlock()
	in := Instance{ID: f.id, Addr: f.addr, Started: f.started, LeaseExpires: now.Add(f.ttl).UTC(), EpochSeen: r.Epoch, PhaseSeen: r.Phase, BarrierAck: ack}
	if err := f.store.PutInstance(ctx, in); err != nil {
		return r, err
	}
	f.mu.Lock()
	f.renewed, f.ackSent = now, ack
	// The lease is only as good as the moment it was written: count it
	// from before the write, so a slow write cannot extend it.
	f.validUntil = now.Add(f.ttl)
	f.mu.Unlock()
	f.apply(r)
	return r, nil
}

// apply installs r as the view and tells the hooks when the epoch or the
// barrier changed.
func (f *Follower) apply(r PhaseRecord) {
	f.mu.Lock()
	changed := r.Epoch != f.view.Epoch || r.BarrierID() != f.view.BarrierID()
	f.view = r
	hooks := append([]func(PhaseRecord){}, f.onChange...)
	f.mu.Unlock()
	if changed {
		for _, h := range hooks {
			h(r)
		}
	}
}

// pollOnce re-reads the phase record, and renews the lease (Sync) when it is
// due, when the epoch moved (EpochSeen is what a switch checks), or when a
// barrier acknowledgement waits to be published.
func (f *Follower) pollOnce(ctx context.Context) error {
	f.mu.Lock()
	due := f.store.Now().Sub(f.renewed) >= f.refresh || f.barrierAck != f.ackSent
	epoch := f.view.Epoch
	f.mu.Unlock()
	if due {
		_, err := f.Sync(ctx)
		return err
	}
	r, _, err := f.store.Phase(ctx)
	if err != nil {
		return fmt.Errorf("control: read phase: %w", err)
	}
	if r.Epoch != epoch {
		_, err := f.Sync(ctx)
		return err
	}
	f.apply(r)
	return nil
}

// Run polls the phase record every Poll and renews the lease every Refresh
// until ctx ends. Errors leave the previous view in place; it goes stale
// when the lease runs out.
func (f *Follower) Run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(f.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
		if err := f.pollOnce(ctx); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
	}
}

// View returns the phase as last read, and whether it is still vouched for
// by an unexpired lease.
func (f *Follower) View() (PhaseRecord, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view, f.store.Now().Before(f.validUntil)
}

// CheckWrite says whether a ref-store write planned under epoch may go
// ahead: the lease must be current, the epoch unchanged, and no barrier up.
// It returns an error wrapping ErrStale otherwise.
func (f *Follower) CheckWrite(epoch int64) error {
	v, fresh := f.View()
	switch {
	case !fresh:
		return fmt.Errorf("%w: lease of instance %s expired; the phase record could not be re-read", ErrStale, f.id)
	case v.Epoch != epoch:
		return fmt.Errorf("%w: epoch moved from %d to %d", ErrStale, epoch, v.Epoch)
	case v.Barrier != nil:
		return fmt.Errorf("%w: a %s switch is in progress", ErrStale, v.Barrier.Target)
	}
	return nil
}

// Deregister removes this instance's registration (clean shutdown).
func (f *Follower) Deregister(ctx context.Context) error { return f.store.DeleteInstance(ctx, f.id) }

// String is for logs.
func (r PhaseRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (epoch %d)", r.Phase, r.Epoch)
	if r.Barrier != nil {
		fmt.Fprintf(&b, ", barrier %s to %s", r.Barrier.ID, r.Barrier.Target)
	}
	return b.String()
}
