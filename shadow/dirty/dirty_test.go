package dirty_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv/kvtest"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/tests/legacy"
	"github.com/kvproxy/kvproxy/translate"
)

func TestKeysOf(t *testing.T) {
	tr := translate.New(translate.Options{})
	ts := time.Date(2022, 6, 21, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		sql    string
		params []translate.Value
		want   []string
	}{
		{legacy.SQLR1, []translate.Value{translate.TextValue("r")}, nil},
		{legacy.SQLR2, []translate.Value{translate.TextValue("r"), translate.TextValue("s3://"), translate.TimestamptzValue(ts), translate.TextValue("main")}, []string{"repositories/r"}},
		{legacy.SQLR4Branches, []translate.Value{translate.TextValue("r")}, []string{"branches/r/*"}},
		{legacy.SQLR4Repositories, []translate.Value{translate.TextValue("r")}, []string{"repositories/r"}},
		{legacy.SQLB3, []translate.Value{translate.TextValue("r"), translate.TextValue("main"), translate.TextValue("t"), translate.TextValue("c")}, []string{"branches/r/main"}},
		{legacy.SQLB4, []translate.Value{translate.TextValue("r"), translate.NullValue(translate.OIDText)}, nil},
		{legacy.SQLT2, []translate.Value{translate.TextValue("r"), translate.TextValue("v1"), translate.TextValue("c")}, []string{"tags/r/v1"}},
		{legacy.SQLS3, []translate.Value{translate.VarcharValue("tok"), translate.ByteaValue([]byte{0, 0xff}), translate.ByteaValue([]byte("i")), translate.ByteaValue([]byte("d"))}, []string{`staging/tok/"\x00\xff"`}},
		{legacy.SQLS5, []translate.Value{translate.TextValue("tok")}, []string{"staging/tok/*"}},
		{legacy.SQLS6, []translate.Value{translate.TextValue("tok"), translate.ByteaValue([]byte("a/")), translate.ByteaValue([]byte("a0"))}, []string{"staging/tok/*"}},
		{legacy.C7SQL([]legacy.GenerationUpdate{{CommitID: "c1", Generation: 1}, {CommitID: "c2", Generation: 2}}), []translate.Value{translate.TextValue("r")}, []string{"commits/r/c1", "commits/r/c2"}},
	}
	for _, tc := range cases {
		t.Run(legacy.Normalize(tc.sql)[:20], func(t *testing.T) {
			p, err := tr.Plan(tc.sql)
			if err != nil {
				t.Fatal(err)
			}
			args, err := p.SlotValues(translate.UTC, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range dirty.KeysOf(p, args) {
				got = append(got, k.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("keys %q, want %q", got, tc.want)
			}
		})
	}
}

func exerciseLog(t *testing.T, l dirty.Log, clock func(d time.Duration)) {
	ctx := context.Background()
	a := dirty.Key{Entity: dirty.Branches, Repository: "r", ID: "main"}
	b := dirty.Key{Entity: dirty.Staging, ID: "tok", StagingKey: []byte{0, 0xff, 'k'}}
	c := dirty.Key{Entity: dirty.Staging, ID: "tok"}
	if err := l.Add(ctx, []dirty.Key{a, b}, "i1"); err != nil {
		t.Fatal(err)
	}
	clock(time.Second)
	if err := l.Add(ctx, []dirty.Key{c}, "i2"); err != nil {
		t.Fatal(err)
	}
	if n, err := l.Count(ctx); err != nil || n != 3 {
		t.Fatalf("count = %d, %v; want 3", n, err)
	}
	all, err := l.List(ctx, time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range all {
		got = append(got, e.Key.String()+"@"+e.Instance)
	}
	want := []string{a.String() + "@i1", b.String() + "@i1", c.String() + "@i2"}
	if !slices.Equal(got, want) {
		t.Fatalf("entries %q, want %q (oldest first, keys intact)", got, want)
	}
	if !all[2].Key.Whole() || all[1].Key.Whole() {
		t.Fatalf("whole-token key did not round trip: %+v", all)
	}
	// Only entries created before the cut-off are listed.
	older, err := l.List(ctx, all[2].Created, 10)
	if err != nil || len(older) != 2 {
		t.Fatalf("entries before the last = %d, %v; want 2", len(older), err)
	}
	if first, _ := l.List(ctx, time.Now().Add(time.Hour), 1); len(first) != 1 || first[0].Ref != all[0].Ref {
		t.Fatalf("limit 1 = %+v", first)
	}
	if err := l.Delete(ctx, []string{all[0].Ref, all[2].Ref}); err != nil {
		t.Fatal(err)
	}
	left, err := l.List(ctx, time.Now().Add(time.Hour), 10)
	if err != nil || len(left) != 1 || left[0].Ref != all[1].Ref {
		t.Fatalf("after delete: %+v, %v", left, err)
	}
}

func TestKVLog(t *testing.T) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			var now atomic.Int64
			now.Store(time.Now().Add(-time.Minute).UnixNano())
			l := dirty.NewKVLog(d.New(t), func() time.Time { return time.Unix(0, now.Load()) })
			exerciseLog(t, l, func(d time.Duration) { now.Add(int64(d)) })
		})
	}
}

func TestPGLog(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.PostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	l := dirty.NewPGLog(pool)
	for range 2 { // idempotent
		if err := l.Setup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An entry logged inside a client transaction that rolls back is gone
	// with it: the log never claims a write that did not happen.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sql, args := dirty.InsertStatement([]dirty.Key{{Entity: dirty.Tags, Repository: "r", ID: "v1"}}, "i0")
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.Count(ctx); n != 0 {
		t.Fatalf("rolled-back entry is logged (%d)", n)
	}
	exerciseLog(t, l, func(d time.Duration) { time.Sleep(10 * time.Millisecond) })
}

type fakeSyncer struct {
	mu     sync.Mutex
	synced []string
	fail   string
	err    error // what a failing Sync returns; default: a write that may have landed
}

func (f *fakeSyncer) Sync(_ context.Context, k dirty.Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k.String() == f.fail {
		if f.err != nil {
			return f.err
		}
		return errors.New("still different after repair")
	}
	f.synced = append(f.synced, k.String())
	return nil
}

// refsOf lists the log's entries for k.
func refsOf(t *testing.T, l dirty.Log, at time.Time, k dirty.Key) []dirty.Entry {
	t.Helper()
	es, err := l.List(context.Background(), at, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []dirty.Entry
	for _, e := range es {
		if e.Key.String() == k.String() {
			out = append(out, e)
		}
	}
	return out
}

func TestRepairer(t *testing.T) {
	ctx := context.Background()
	store := kvtest.Drivers()[0].New(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	l := dirty.NewKVLog(store, clock)
	k1 := dirty.Key{Entity: dirty.Branches, Repository: "r", ID: "a"}
	k2 := dirty.Key{Entity: dirty.Branches, Repository: "r", ID: "b"}
	if err := l.Add(ctx, []dirty.Key{k1, k2, k1}, "i"); err != nil {
		t.Fatal(err)
	}
	s := &fakeSyncer{fail: k2.String()}
	r := &dirty.Repairer{Log: l, Syncer: s, MinAge: 5 * time.Second, Now: clock}
	// Too young: left to the mirror that logged them.
	if n, err := r.RunOnce(ctx); n != 0 || err != nil || len(s.synced) != 0 {
		t.Fatalf("young entries repaired: %d, %v, %v", n, err, s.synced)
	}
	now.Add(int64(6 * time.Second))
	n, err := r.RunOnce(ctx)
	if n != 2 || err == nil {
		t.Fatalf("round 1 cleared %d (want both k1 entries), err %v (want k2's failure)", n, err)
	}
	if fmt.Sprint(s.synced) != fmt.Sprint([]string{k1.String()}) {
		t.Fatalf("synced %v; k1 must be synced once", s.synced)
	}
	left, _ := l.Count(ctx)
	if left != 1 {
		t.Fatalf("%d entries left, want k2's", left)
	}
	// k2's failure may have followed a write of its own, which another
	// instance's repairer could have raced: k2 is logged afresh, by the
	// repairer, and waits MinAge again.
	far := clock().Add(time.Hour)
	if es := refsOf(t, l, far, k2); len(es) != 1 || es[0].Instance != "repairer" || !es[0].Created.Equal(clock()) {
		t.Fatalf("k2's entries after its failure: %+v, want one logged afresh by the repairer at %v", es, clock())
	}
	if n, err := r.RunOnce(ctx); n != 0 || err != nil {
		t.Fatalf("round 2 took the fresh entry: %d, %v", n, err)
	}

	// A failure before the sync wrote anything keeps the entry as it is.
	now.Add(int64(6 * time.Second))
	before := refsOf(t, l, far, k2)
	s.err = fmt.Errorf("secondary unavailable: %w", dirty.ErrNothingWritten)
	if n, err := r.RunOnce(ctx); n != 0 || !errors.Is(err, dirty.ErrNothingWritten) {
		t.Fatalf("round 3: %d, %v", n, err)
	}
	if after := refsOf(t, l, far, k2); len(after) != 1 || after[0].Ref != before[0].Ref {
		t.Fatalf("k2's entries after a failure that wrote nothing: %+v, want %+v", after, before)
	}

	s.fail = ""
	if n, err := r.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("round 4: %d, %v", n, err)
	}
	if left, _ := l.Count(ctx); left != 0 {
		t.Fatalf("%d entries left", left)
	}
}
