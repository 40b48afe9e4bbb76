package cutover_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/cutover"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// env is an upstream database with the legacy schema, a KV store and the
// phase record at dual-write.
type env struct {
	pool *pgxpool.Pool
	kv   kv.Store
	ctl  *control.Store
}

func newEnv(t *testing.T, ctx context.Context) *env {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schema, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "tests", "legacy", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(schema)); err != nil {
		t.Fatal(err)
	}
	if err := dirty.NewPGLog(pool).Setup(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{pool: pool, kv: mem.New()}
	e.ctl = control.NewStore(e.kv, nil)
	if _, err := e.ctl.Init(ctx, control.DualWrite, "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

// ready runs a backfill and a clean full verify, as the runbook does.
func (e *env) ready(t *testing.T, ctx context.Context) {
	t.Helper()
	b, err := migrate.NewBackfill(migrate.BackfillOptions{Source: e.pool, KV: e.kv})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := migrate.NewVerifier(migrate.VerifyOptions{Source: e.pool, KV: e.kv})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := v.Run(ctx); err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}

// instance is a stand-in proxy instance: a follower that acknowledges a
// barrier after ackDelay (its in-flight writes finishing), or never.
type instance struct {
	f *control.Follower
}

func startInstance(t *testing.T, ctx context.Context, e *env, id string, ackDelay time.Duration, never bool) *instance {
	t.Helper()
	f := control.NewFollower(e.ctl, control.FollowerOptions{ID: id, TTL: time.Minute, Poll: 10 * time.Millisecond})
	f.OnChange(func(r control.PhaseRecord) {
		if r.Barrier == nil || never {
			return
		}
		id := r.Barrier.ID
		time.AfterFunc(ackDelay, func() { f.SetBarrierAck(id) })
	})
	if _, err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go f.Run(rctx, nil)
	return &instance{f: f}
}

func failedChecks(ev control.Event) []string {
	var out []string
	for _, c := range ev.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

func TestPreconditionsAreNamed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	// A live instance that has not seen the current epoch.
	if err := e.ctl.PutInstance(ctx, control.Instance{ID: "laggard", LeaseExpires: time.Now().Add(time.Minute), EpochSeen: 0}); err != nil {
		t.Fatal(err)
	}
	if err := dirty.NewPGLog(e.pool).Add(ctx, []dirty.Key{{Entity: "branches", Repository: "r", ID: "b"}}, "x"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		kind string
		want []string
	}{
		{cutover.Cutover, []string{cutover.CheckBackfill, cutover.CheckVerify, cutover.CheckInstances}},
		{cutover.Rollback, []string{cutover.CheckPhase, cutover.CheckInstances}},
		{cutover.Finalize, []string{cutover.CheckPhase, cutover.CheckInstances}},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			var out bytes.Buffer
			res, err := cutover.Run(ctx, cutover.Options{Kind: c.kind, KV: e.kv, Control: e.ctl, Source: e.pool, Out: &out, MaxDirtyAge: time.Hour, Timeout: 500 * time.Millisecond})
			if !errors.Is(err, cutover.ErrPrecondition) {
				t.Fatalf("err %v, want ErrPrecondition", err)
			}
			if got := failedChecks(res.Event); strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("failed checks %q, want %q\n%s", got, c.want, out.String())
			}
			for _, name := range c.want {
				if !strings.Contains(out.String(), "FAIL "+name) {
					t.Fatalf("output does not name %q:\n%s", name, out.String())
				}
			}
			ev, err := e.ctl.Events(ctx, 1)
			if err != nil || len(ev) != 1 || ev[0].OK || ev[0].Kind != c.kind {
				t.Fatalf("event %+v, %v: want a failed %s", ev, err, c.kind)
			}
		})
	}
	// An old dirty entry fails the drain check.
	res, _ := cutover.Run(ctx, cutover.Options{Kind: cutover.Cutover, KV: e.kv, Control: e.ctl, Source: e.pool, MaxDirtyAge: time.Nanosecond, DryRun: true, Timeout: 500 * time.Millisecond})
	if got := failedChecks(res.Event); !strings.Contains(strings.Join(got, ","), cutover.CheckDirty) {
		t.Fatalf("failed checks %q, want %q among them", got, cutover.CheckDirty)
	}
}

func TestCutoverRollbackFinalize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	e.ready(t, ctx)
	startInstance(t, ctx, e, "a", 0, false)
	startInstance(t, ctx, e, "b", 300*time.Millisecond, false)
	// A dirty key left by dual-write: repaired under the barrier.
	if _, err := e.pool.Exec(ctx, `INSERT INTO graveler_repositories (id, storage_namespace, creation_date, default_branch) VALUES ('r1', 's3://x', now(), 'main')`); err != nil {
		t.Fatal(err)
	}
	if err := dirty.NewPGLog(e.pool).Add(ctx, []dirty.Key{{Entity: migrate.EntityRepositories, ID: "r1"}}, "a"); err != nil {
		t.Fatal(err)
	}
	before, _, _ := e.ctl.Phase(ctx)

	var out bytes.Buffer
	res, err := cutover.Run(ctx, cutover.Options{Kind: cutover.Cutover, KV: e.kv, Control: e.ctl, Source: e.pool, DryRun: true, Out: &out})
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	if now, _, _ := e.ctl.Phase(ctx); now.Epoch != before.Epoch || now.Phase != control.DualWrite {
		t.Fatalf("dry run changed the phase to %s", now)
	}
	if !strings.Contains(out.String(), "dry run: would") {
		t.Fatalf("dry run output:\n%s", out.String())
	}

	res, err = cutover.Run(ctx, cutover.Options{Kind: cutover.Cutover, KV: e.kv, Control: e.ctl, Source: e.pool, By: "test", Out: &out})
	if err != nil {
		t.Fatalf("cutover: %v\n%s", err, out.String())
	}
	if res.To.Phase != control.KVPrimary || res.To.Epoch != before.Epoch+1 || res.CaughtUp+res.Synced+res.Repaired != 1 {
		t.Fatalf("cutover result %+v", res)
	}
	if res.Held < 300*time.Millisecond {
		t.Fatalf("barrier held %s, but instance b acknowledged only after 300ms", res.Held)
	}
	ev, _ := e.ctl.Events(ctx, 1)
	if len(ev) != 1 || !ev[0].OK || ev[0].Kind != cutover.Cutover || ev[0].By != "test" || len(ev[0].Checks) == 0 {
		t.Fatalf("event %+v", ev)
	}
	// kv-primary: rollback and finalize start from here.
	if _, err := cutover.Run(ctx, cutover.Options{Kind: cutover.Rollback, KV: e.kv, Control: e.ctl, Source: e.pool}); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if now, _, _ := e.ctl.Phase(ctx); now.Phase != control.DualWrite || now.Epoch != before.Epoch+2 {
		t.Fatalf("after rollback: %s", now)
	}
	e.ready(t, ctx) // a newer verify for the second cutover
	// Keys logged by writes that were mirrored: both stores agree, so the
	// barrier verifies and clears them without repairing anything.
	log := dirty.NewPGLog(e.pool)
	if err := log.Add(ctx, []dirty.Key{{Entity: migrate.EntityRepositories, ID: "r1"}, {Entity: migrate.EntityRepositories, ID: "never-written"}}, "a"); err != nil {
		t.Fatal(err)
	}
	res, err = cutover.Run(ctx, cutover.Options{Kind: cutover.Cutover, KV: e.kv, Control: e.ctl, Source: e.pool})
	if err != nil {
		t.Fatalf("second cutover: %v", err)
	}
	if n, err := log.Count(ctx); err != nil || n != 0 || res.Repaired != 0 || res.CaughtUp != 0 {
		t.Fatalf("second cutover: %d entries left (%v), result %+v; want the 2 matching keys cleared without repair", n, err, res)
	}
	if _, err := cutover.Run(ctx, cutover.Options{Kind: cutover.Finalize, KV: e.kv, Control: e.ctl, Source: e.pool}); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if now, _, _ := e.ctl.Phase(ctx); now.Phase != control.KVOnly || now.Epoch != before.Epoch+4 || now.Barrier != nil {
		t.Fatalf("after finalize: %s", now)
	}
}

// A switch that cannot finish releases the barrier and keeps the phase:
// an instance that never drains, or a failure right before the flip.
func TestAbortKeepsOldPhase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cases := []struct {
		name   string
		never  bool
		before func(context.Context) error
		want   string
	}{
		{"instance never acknowledges", true, nil, "did not drain and acknowledge in time: stuck"},
		{"failure before the flip", false, func(context.Context) error { return errors.New("injected") }, "injected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, ctx)
			e.ready(t, ctx)
			startInstance(t, ctx, e, "stuck", 0, c.never)
			before, _, _ := e.ctl.Phase(ctx)
			start := time.Now()
			_, err := cutover.Run(ctx, cutover.Options{Kind: cutover.Cutover, KV: e.kv, Control: e.ctl, Source: e.pool,
				Timeout: time.Second, BeforeFlip: c.before})
			if !errors.Is(err, cutover.ErrAborted) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want ErrAborted naming %q", err, c.want)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Fatalf("abort took %s", took)
			}
			now, _, _ := e.ctl.Phase(ctx)
			if now.Phase != before.Phase || now.Epoch != before.Epoch || now.Barrier != nil {
				t.Fatalf("after abort the phase record is %s, want %s without a barrier", now, before)
			}
			ev, _ := e.ctl.Events(ctx, 1)
			if len(ev) != 1 || ev[0].OK || !strings.Contains(ev[0].Error, c.want) {
				t.Fatalf("event %+v", ev)
			}
		})
	}
}
