package kvlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/kvlock"
	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// clock is a settable time source shared by the managers of a test, so that
// lease expiry is driven by the test and not by the wall clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func forEachDriver(t *testing.T, f func(t *testing.T, s kv.Store)) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) { f(t, d.New(t)) })
	}
}

// blocked asserts that acquiring would wait: with a short deadline the call
// must end in DeadlineExceeded rather than succeed.
func blocked(t *testing.T, m *kvlock.Manager, key string, mode kvlock.Mode, holder string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	l, err := m.Acquire(ctx, []byte(key), mode, holder)
	if err == nil {
		_ = l.Release(context.Background())
		t.Fatalf("%s %s lock on %q was granted, want it to wait", holder, mode, key)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: err = %v, want DeadlineExceeded", holder, err)
	}
}

func acquire(t *testing.T, m *kvlock.Manager, key string, mode kvlock.Mode, holder string) *kvlock.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := m.Acquire(ctx, []byte(key), mode, holder)
	if err != nil {
		t.Fatalf("%s %s lock on %q: %v", holder, mode, key, err)
	}
	return l
}

func release(t *testing.T, l *kvlock.Lease) {
	t.Helper()
	if err := l.Release(context.Background()); err != nil {
		t.Fatalf("release: %v", err)
	}
}

func TestExclusiveExcludesAcrossManagers(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		// Two managers stand for two proxy processes sharing one store.
		managers := []*kvlock.Manager{kvlock.NewManager(s, kvlock.Options{}), kvlock.NewManager(s, kvlock.Options{})}
		var inside atomic.Int32
		var overlaps atomic.Int32
		counter := 0 // deliberately unsynchronised: only the lock protects it
		var wg sync.WaitGroup
		const workers, rounds = 6, 10
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := managers[w%2]
				for range rounds {
					l, err := m.Acquire(context.Background(), []byte("k"), kvlock.Exclusive, fmt.Sprintf("w%d", w))
					if err != nil {
						t.Error(err)
						return
					}
					if inside.Add(1) != 1 {
						overlaps.Add(1)
					}
					counter++
					inside.Add(-1)
					if err := l.Release(context.Background()); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if overlaps.Load() != 0 {
			t.Fatalf("%d times two holders were inside the exclusive lock", overlaps.Load())
		}
		if counter != workers*rounds {
			t.Fatalf("counter = %d, want %d", counter, workers*rounds)
		}
	})
}

func TestSharedAndExclusive(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		m1 := kvlock.NewManager(s, kvlock.Options{})
		m2 := kvlock.NewManager(s, kvlock.Options{})
		a := acquire(t, m1, "b", kvlock.Shared, "a")
		b := acquire(t, m2, "b", kvlock.Shared, "b") // shared coexist
		blocked(t, m2, "b", kvlock.Exclusive, "c")
		release(t, a)
		blocked(t, m2, "b", kvlock.Exclusive, "c")
		release(t, b)
		c := acquire(t, m2, "b", kvlock.Exclusive, "c")
		blocked(t, m1, "b", kvlock.Shared, "a")
		// Other keys are independent.
		release(t, acquire(t, m1, "other", kvlock.Exclusive, "a"))
		release(t, c)
		release(t, acquire(t, m1, "b", kvlock.Shared, "a"))
		if m1.Held()+m2.Held() != 0 {
			t.Fatalf("managers still hold %d leases", m1.Held()+m2.Held())
		}
	})
}

func TestWaitingWriterIsNotStarved(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		m := kvlock.NewManager(s, kvlock.Options{})
		reader := acquire(t, m, "k", kvlock.Shared, "reader")
		got := make(chan *kvlock.Lease, 1)
		go func() {
			l, err := m.Acquire(context.Background(), []byte("k"), kvlock.Exclusive, "writer")
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		// Once the writer's intent is queued, a new reader waits behind it.
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			l, err := m.Acquire(ctx, []byte("k"), kvlock.Shared, "late-reader")
			cancel()
			if err != nil {
				break // blocked behind the writer's intent
			}
			release(t, l)
			if time.Now().After(deadline) {
				t.Fatal("the writer's intent never blocked new readers")
			}
		}
		// The reader that already holds the lock may re-enter.
		release(t, acquire(t, m, "k", kvlock.Shared, "reader"))
		release(t, reader)
		w := <-got
		if w == nil || w.Mode() != kvlock.Exclusive {
			t.Fatal("writer did not get the lock")
		}
		release(t, w)
	})
}

func TestReentrant(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		m := kvlock.NewManager(s, kvlock.Options{})
		x1 := acquire(t, m, "k", kvlock.Exclusive, "s1")
		x2 := acquire(t, m, "k", kvlock.Exclusive, "s1") // would self-deadlock if not re-entrant
		sh := acquire(t, m, "k", kvlock.Shared, "s1")
		release(t, x1)
		blocked(t, m, "k", kvlock.Shared, "s2")
		release(t, x2)
		blocked(t, m, "k", kvlock.Exclusive, "s2") // s1 still holds shared
		release(t, sh)
		release(t, acquire(t, m, "k", kvlock.Exclusive, "s2"))
	})
}

func TestCancelledWaitLeavesNoIntent(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		m := kvlock.NewManager(s, kvlock.Options{})
		r := acquire(t, m, "k", kvlock.Shared, "r")
		blocked(t, m, "k", kvlock.Exclusive, "w") // queues an intent, then gives up
		// With the intent gone, another reader is granted at once.
		release(t, acquire(t, m, "k", kvlock.Shared, "r2"))
		release(t, r)
	})
}

func TestExpiredLeaseIsTakenOverAndReportedLost(t *testing.T) {
	forEachDriver(t, func(t *testing.T, s kv.Store) {
		clk := newClock()
		opt := kvlock.Options{TTL: 10 * time.Second, Now: clk.Now}
		crashed := kvlock.NewManager(s, opt) // never renews: its process "died"
		survivor := kvlock.NewManager(s, opt)
		old := acquire(t, crashed, "k", kvlock.Exclusive, "dead")
		blocked(t, survivor, "k", kvlock.Exclusive, "alive")
		clk.Advance(11 * time.Second)
		l := acquire(t, survivor, "k", kvlock.Exclusive, "alive")
		crashed.RenewAll(context.Background())
		select {
		case <-old.Lost():
		default:
			t.Fatal("renewal of an expired, taken-over lease did not report it lost")
		}
		if err := old.Release(context.Background()); !errors.Is(err, kvlock.ErrLeaseLost) {
			t.Fatalf("release of a lost lease = %v, want ErrLeaseLost", err)
		}
		// Renewal keeps a live lease: advancing past the TTL after renewing
		// in between leaves it held.
		clk.Advance(6 * time.Second)
		survivor.RenewAll(context.Background())
		clk.Advance(6 * time.Second)
		blocked(t, crashed, "k", kvlock.Shared, "dead2")
		select {
		case <-l.Lost():
			t.Fatal("a renewed lease was reported lost")
		default:
		}
		release(t, l)
	})
}
