package shadow

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/shadow/control"
)

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func newTestGate(t *testing.T) (*Gate, chan string) {
	t.Helper()
	acks := make(chan string, 10)
	g := NewGate(control.PhaseRecord{Phase: control.DualWrite, Epoch: 1})
	g.Ack = func(id string) { acks <- id }
	g.MaxWait = 5 * time.Second
	g.DrainTimeout = 300 * time.Millisecond
	return g, acks
}

func sessionAt(g *Gate) *session {
	st := &session{}
	g.reroute(st)
	return st
}

func barrierRec(id string) control.PhaseRecord {
	return control.PhaseRecord{Phase: control.DualWrite, Epoch: 1,
		Barrier: &control.Barrier{ID: id, Target: control.KVPrimary, Started: time.Now(), Deadline: time.Now().Add(time.Minute)}}
}

func expectAck(t *testing.T, acks chan string, id string) {
	t.Helper()
	select {
	case got := <-acks:
		if got != id {
			t.Fatalf("ack %q, want %q", got, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no ack for %s", id)
	}
}

func expectNoAck(t *testing.T, acks chan string) {
	t.Helper()
	select {
	case got := <-acks:
		t.Fatalf("unexpected ack %q", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// The stages: lock holders first (their writes must still flow), then
// writers, then the ack; new writes wait and then follow the new epoch.
func TestGateBarrierStages(t *testing.T) {
	ctx := context.Background()
	g, acks := newTestGate(t)
	locker, writer, locked := sessionAt(g), sessionAt(g), sessionAt(g)
	if err := g.AcquireLock(ctx, locker); err != nil {
		t.Fatal(err)
	}
	if err := g.BeginWrite(ctx, writer); err != nil {
		t.Fatal(err)
	}
	g.Update(barrierRec("b1"))
	if s := g.Status(); s.Stage != 1 || s.Lockers != 1 || s.Writers != 1 {
		t.Fatalf("status %+v, want stage 1 with one locker and one writer", s)
	}
	// Stage 1: a write of the lock holder's flow still goes through...
	if err := g.BeginWrite(ctx, locked); err != nil {
		t.Fatalf("write during stage 1: %v", err)
	}
	g.EndWrite(locked)
	// ...but a new lock waits.
	newLock := make(chan error, 1)
	go func() { newLock <- g.AcquireLock(ctx, sessionAt(g)) }()
	select {
	case err := <-newLock:
		t.Fatalf("new lock admitted during the barrier: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.ReleaseLock(locker)
	if s := g.Status(); s.Stage != 2 {
		t.Fatalf("stage %d after the last lock, want 2", s.Stage)
	}
	// Stage 2: new writes wait, the open writer holds up the ack.
	newWrite := make(chan error, 1)
	late := sessionAt(g)
	go func() { newWrite <- g.BeginWrite(ctx, late) }()
	expectNoAck(t, acks)
	if err := g.CheckCommit(writer); err != nil {
		t.Fatalf("in-flight writer may commit: %v", err)
	}
	g.EndWrite(writer)
	expectAck(t, acks, "b1")
	select {
	case err := <-newWrite:
		t.Fatalf("write admitted under an acknowledged barrier: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The flip: new epoch, no barrier. The waiting write routed under the
	// old epoch and must be retried; a rerouted session goes through.
	g.Update(control.PhaseRecord{Phase: control.KVPrimary, Epoch: 2})
	if err := <-newWrite; sqlstate(err) != "40001" {
		t.Fatalf("waiting write after the flip: %v, want 40001", err)
	}
	if err := <-newLock; sqlstate(err) != "40001" {
		t.Fatalf("waiting lock after the flip: %v, want 40001 (its session routed under epoch 1)", err)
	}
	if !g.reroute(late) || late.phase != control.KVPrimary {
		t.Fatalf("reroute: session at %s/%d", late.phase, late.epoch)
	}
	if err := g.BeginWrite(ctx, late); err != nil {
		t.Fatalf("rerouted write: %v", err)
	}
	g.EndWrite(late)
}

// A writer that stays open past the drain timeout is doomed: the barrier
// is acknowledged without it and its COMMIT gets 40001.
func TestGateDoomsStragglers(t *testing.T) {
	ctx := context.Background()
	g, acks := newTestGate(t)
	st := sessionAt(g)
	if err := g.BeginWrite(ctx, st); err != nil {
		t.Fatal(err)
	}
	g.Update(barrierRec("b2"))
	expectAck(t, acks, "b2")
	if err := g.CheckCommit(st); sqlstate(err) != "40001" {
		t.Fatalf("doomed commit: %v, want 40001", err)
	}
	if err := g.BeginWrite(ctx, st); sqlstate(err) != "40001" {
		t.Fatalf("doomed write: %v, want 40001", err)
	}
	g.EndWrite(st)
	// Released without a flip: the same epoch writes on.
	g.Update(control.PhaseRecord{Phase: control.DualWrite, Epoch: 1})
	if err := g.BeginWrite(ctx, st); err != nil {
		t.Fatalf("write after the barrier was released: %v", err)
	}
	g.EndWrite(st)
}

// A barrier whose driver died stops holding writes after its deadline.
func TestGateAbandonedBarrier(t *testing.T) {
	ctx := context.Background()
	g, acks := newTestGate(t)
	rec := barrierRec("b3")
	rec.Barrier.Deadline = time.Now().Add(-control.BarrierGrace + 200*time.Millisecond)
	g.Update(rec)
	expectAck(t, acks, "b3")
	start := time.Now()
	if err := g.BeginWrite(ctx, sessionAt(g)); err != nil {
		t.Fatalf("write after the abandoned barrier: %v", err)
	}
	if s := g.Status(); s.Barrier != "" {
		t.Fatalf("barrier still held: %+v (after %s)", s, time.Since(start))
	}
}

// Writes wait at most MaxWait, then get 40001; a stale lease refuses at once.
func TestGateBounds(t *testing.T) {
	ctx := context.Background()
	g, _ := newTestGate(t)
	g.MaxWait = 100 * time.Millisecond
	g.Update(barrierRec("b4"))
	if err := g.BeginWrite(ctx, sessionAt(g)); sqlstate(err) != "40001" {
		t.Fatalf("write past MaxWait: %v, want 40001", err)
	}
	g.Update(control.PhaseRecord{Phase: control.DualWrite, Epoch: 1})
	var fresh atomic.Bool
	g.Fresh = fresh.Load
	if err := g.BeginWrite(ctx, sessionAt(g)); sqlstate(err) != "40001" {
		t.Fatalf("write with an expired lease: %v, want 40001", err)
	}
	fresh.Store(true)
	st := sessionAt(g)
	if err := g.BeginWrite(ctx, st); err != nil {
		t.Fatalf("write with a fresh lease: %v", err)
	}
	g.EndWrite(st)
	cctx, cancel := context.WithCancel(ctx)
	g.Update(barrierRec("b5"))
	cancel()
	if err := g.BeginWrite(cctx, sessionAt(g)); sqlstate(err) != "57014" {
		t.Fatalf("cancelled wait: %v, want 57014", err)
	}
}

// A background round (the repairer) is cancelled when a barrier goes up,
// and the barrier is acknowledged only once the round has returned; no new
// round starts under the barrier.
func TestGateBackgroundRounds(t *testing.T) {
	ctx := context.Background()
	g, acks := newTestGate(t)
	bctx, done, err := g.Background(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.Update(barrierRec("b6"))
	select {
	case <-bctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the round's context was not cancelled by the barrier")
	}
	expectNoAck(t, acks)
	done()
	expectAck(t, acks, "b6")
	started := make(chan error, 1)
	go func() {
		_, done, err := g.Background(ctx)
		if err == nil {
			done()
		}
		started <- err
	}()
	select {
	case err := <-started:
		t.Fatalf("a round started under the barrier (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.Update(control.PhaseRecord{Phase: control.KVPrimary, Epoch: 2})
	if err := <-started; err != nil {
		t.Fatalf("round after the flip: %v", err)
	}
}

// A read-write transaction counts as a writer from BEGIN, but one that has
// not written and waits for an advisory lock (the branch locker's) does not
// hold up the drain; after the flip its lock gets 40001 and is retried.
func TestGateReadWriteTransactions(t *testing.T) {
	ctx := context.Background()
	g, acks := newTestGate(t)
	data, locker := sessionAt(g), sessionAt(g)
	if err := g.BeginTx(ctx, data); err != nil {
		t.Fatal(err)
	}
	if err := g.BeginTx(ctx, locker); err != nil {
		t.Fatal(err)
	}
	g.Update(barrierRec("b7"))
	lockErr := make(chan error, 1)
	go func() { lockErr <- g.AcquireLock(ctx, locker) }()
	expectNoAck(t, acks) // the data transaction is still open
	if err := g.BeginWrite(ctx, data); err != nil {
		t.Fatalf("write of a transaction begun before the barrier: %v", err)
	}
	if err := g.CheckCommit(data); err != nil {
		t.Fatal(err)
	}
	g.EndWrite(data)
	expectAck(t, acks, "b7")
	g.Update(control.PhaseRecord{Phase: control.KVPrimary, Epoch: 2})
	if err := <-lockErr; sqlstate(err) != "40001" {
		t.Fatalf("lock of a transaction begun before the flip: %v, want 40001", err)
	}
	// Begun under dual-write, a transaction cannot go on under kv-primary,
	// but kv-primary and kv-only route alike.
	kp := sessionAt(g)
	if err := g.BeginTx(ctx, kp); err != nil {
		t.Fatal(err)
	}
	g.Update(control.PhaseRecord{Phase: control.KVOnly, Epoch: 3})
	if err := g.BeginWrite(ctx, kp); err != nil {
		t.Fatalf("kv-primary transaction after finalize: %v", err)
	}
	g.EndWrite(kp)
}
