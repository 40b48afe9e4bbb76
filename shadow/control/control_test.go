package control_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/shadow/control"
)

type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// partitionable cuts a store off from its caller, standing in for a network
// partition between one proxy instance and the KV server.
type partitionable struct {
	kv.Store
	cut atomic.Bool
}

var errPartitioned = errors.New("test: partitioned from the KV store")

func (p *partitionable) Get(ctx context.Context, pk, k []byte) (*kv.ValueWithPredicate, error) {
	if p.cut.Load() {
		return nil, errPartitioned
	}
	return p.Store.Get(ctx, pk, k)
}

func (p *partitionable) Set(ctx context.Context, pk, k, v []byte) error {
	if p.cut.Load() {
		return errPartitioned
	}
	return p.Store.Set(ctx, pk, k, v)
}

func forEachDriver(t *testing.T, f func(t *testing.T, s kv.Store)) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) { f(t, d.New(t)) })
	}
}

func TestInitIsIdempotentAndValidates(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		ctx := context.Background()
		st := control.NewStore(s, nil)
		if _, _, err := st.Phase(ctx); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("phase before init: %v, want ErrNotFound", err)
		}
		if _, err := st.Init(ctx, "sideways", "test"); !errors.Is(err, control.ErrInvalidPhase) {
			t.Fatalf("init with a bad phase: %v", err)
		}
		r, err := st.Init(ctx, control.DualWrite, "a")
		if err != nil || r.Phase != control.DualWrite || r.Epoch != 1 {
			t.Fatalf("first init = %+v, %v", r, err)
		}
		// A second instance configured differently keeps the stored phase.
		r, err = st.Init(ctx, control.KVOnly, "b")
		if err != nil || r.Phase != control.DualWrite || r.By != "a" {
			t.Fatalf("second init = %+v, %v; want the stored dual-write record", r, err)
		}
	})
}

func TestUpdateIsCompareAndSet(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		ctx := context.Background()
		st := control.NewStore(s, nil)
		if _, err := st.Init(ctx, control.DualWrite, "t"); err != nil {
			t.Fatal(err)
		}
		r, pred, err := st.Phase(ctx)
		if err != nil {
			t.Fatal(err)
		}
		next := r
		next.Phase, next.Epoch = control.KVPrimary, r.Epoch+1
		if err := st.Update(ctx, pred, next); err != nil {
			t.Fatal(err)
		}
		// The old predicate no longer matches.
		again := r
		again.Epoch = r.Epoch + 1
		if err := st.Update(ctx, pred, again); !errors.Is(err, control.ErrConflict) {
			t.Fatalf("update with a stale predicate = %v, want ErrConflict", err)
		}
		got, _, _ := st.Phase(ctx)
		if got.Phase != control.KVPrimary || got.Epoch != 2 {
			t.Fatalf("phase = %+v, want kv-primary epoch 2", got)
		}
	})
}

func TestFollowerGatesWrites(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		ctx := context.Background()
		clk := newClock()
		p := &partitionable{Store: s}
		st := control.NewStore(p, clk.Now)
		admin := control.NewStore(s, clk.Now)
		if _, err := admin.Init(ctx, control.DualWrite, "t"); err != nil {
			t.Fatal(err)
		}
		f := control.NewFollower(st, control.FollowerOptions{ID: "i1", TTL: 10 * time.Second})
		var changes []int64
		f.OnChange(func(r control.PhaseRecord) { changes = append(changes, r.Epoch) })
		if err := f.CheckWrite(1); !errors.Is(err, control.ErrStale) {
			t.Fatalf("before the first sync: %v, want ErrStale", err)
		}
		r, err := f.Sync(ctx)
		if err != nil || r.Epoch != 1 {
			t.Fatalf("sync = %+v, %v", r, err)
		}
		if err := f.CheckWrite(1); err != nil {
			t.Fatalf("fresh view refused a write: %v", err)
		}

		// Partitioned from the KV store: syncs fail, and once the lease
		// runs out, writes are refused.
		p.cut.Store(true)
		clk.Advance(5 * time.Second)
		if _, err := f.Sync(ctx); !errors.Is(err, errPartitioned) {
			t.Fatalf("sync while partitioned = %v", err)
		}
		if err := f.CheckWrite(1); err != nil {
			t.Fatalf("within the lease a write must still pass: %v", err)
		}
		clk.Advance(6 * time.Second)
		if err := f.CheckWrite(1); !errors.Is(err, control.ErrStale) {
			t.Fatalf("after the lease expired: %v, want ErrStale", err)
		}
		p.cut.Store(false)
		if _, err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.CheckWrite(1); err != nil {
			t.Fatalf("after recovering: %v", err)
		}

		// A switch: barrier up refuses writes; a new epoch refuses writes
		// planned under the old one.
		cur, pred, _ := admin.Phase(ctx)
		cur.Barrier = &control.Barrier{ID: "b1", Target: control.KVPrimary}
		if err := admin.Update(ctx, pred, cur); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.CheckWrite(1); !errors.Is(err, control.ErrStale) {
			t.Fatalf("during a barrier: %v, want ErrStale", err)
		}
		cur, pred, _ = admin.Phase(ctx)
		cur.Barrier, cur.Phase, cur.Epoch = nil, control.KVPrimary, 2
		if err := admin.Update(ctx, pred, cur); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := f.CheckWrite(1); !errors.Is(err, control.ErrStale) {
			t.Fatalf("write planned under epoch 1 after epoch 2: %v, want ErrStale", err)
		}
		if err := f.CheckWrite(2); err != nil {
			t.Fatal(err)
		}
		// The first read, the barrier going up, the flip.
		if fmt.Sprint(changes) != "[1 1 2]" {
			t.Fatalf("OnChange saw epochs %v, want [1 1 2]", changes)
		}
	})
}

func TestInstancesAndLiveness(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		ctx := context.Background()
		clk := newClock()
		st := control.NewStore(s, clk.Now)
		if _, err := st.Init(ctx, control.DualWrite, "t"); err != nil {
			t.Fatal(err)
		}
		a := control.NewFollower(st, control.FollowerOptions{ID: "a", TTL: 10 * time.Second})
		b := control.NewFollower(st, control.FollowerOptions{ID: "b", TTL: 10 * time.Second})
		a.SetBarrierAck("bar-1")
		for _, f := range []*control.Follower{a, b} {
			if _, err := f.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(8 * time.Second)
		if _, err := b.Sync(ctx); err != nil { // only b keeps renewing
			t.Fatal(err)
		}
		clk.Advance(4 * time.Second)
		ins, err := st.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		live := map[string]bool{}
		acks := map[string]string{}
		for _, in := range ins {
			live[in.ID] = in.Live(clk.Now())
			acks[in.ID] = in.BarrierAck
		}
		if len(ins) != 2 || live["a"] || !live["b"] {
			t.Fatalf("instances = %+v; want a expired, b live", ins)
		}
		if acks["a"] != "bar-1" || acks["b"] != "" {
			t.Fatalf("barrier acks = %v", acks)
		}
		if err := a.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
		ins, _ = st.Instances(ctx)
		if len(ins) != 1 || ins[0].ID != "b" {
			t.Fatalf("after deregistering a: %+v", ins)
		}
	})
}

func TestEventsAreOrderedAndUnique(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		ctx := context.Background()
		st := control.NewStore(s, nil)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.AddEvent(ctx, control.Event{Kind: "cutover", By: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		all, err := st.Events(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 8 {
			t.Fatalf("%d events, want 8", len(all))
		}
		for i, e := range all {
			if want := int64(8 - i); e.Seq != want {
				t.Fatalf("event %d has seq %d, want %d (newest first, no gaps or duplicates)", i, e.Seq, want)
			}
		}
		last, _ := st.Events(ctx, 3)
		if len(last) != 3 || last[0].Seq != 8 {
			t.Fatalf("Events(3) = %+v", last)
		}
	})
}
