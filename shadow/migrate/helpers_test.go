package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/tests/legacy"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func benchCtx(b *testing.B, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	b.Cleanup(cancel)
	return ctx
}

// legacyPoolB is legacyPool for benchmarks.
func legacyPoolB(b *testing.B, ctx context.Context, cfg legacygen.Config) (*pgxpool.Pool, legacygen.Stats) {
	b.Helper()
	dsn := testenv.PostgresDB(b)
	if err := legacy.LoadSchema(ctx, dsn); err != nil {
		b.Fatal(err)
	}
	st, err := legacygen.Generate(ctx, dsn, cfg)
	if err != nil {
		b.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool, st
}

// legacyPool returns a pool on a fresh legacy database filled by the
// generator with cfg.
func legacyPool(t *testing.T, ctx context.Context, cfg legacygen.Config) (*pgxpool.Pool, legacygen.Stats) {
	t.Helper()
	dsn := testenv.PostgresDB(t)
	if err := legacy.LoadSchema(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := legacygen.Generate(ctx, dsn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, st
}

var smallData = legacygen.Config{Repos: 3, CommitsPerRepo: 40, BranchesPerRepo: 6, TagsPerRepo: 4, StagedPerBranch: 12, OrphanTokens: 2, Seed: 7}

func backfill(t *testing.T, ctx context.Context, pool *pgxpool.Pool, s kv.Store, mod func(*BackfillOptions)) BackfillResult {
	t.Helper()
	o := BackfillOptions{Source: pool, KV: s, PageSize: 25}
	if mod != nil {
		mod(&o)
	}
	b, err := NewBackfill(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Run(ctx)
	if err != nil {
		t.Fatalf("backfill: %v", err)
	}
	return res
}

func verify(t *testing.T, ctx context.Context, pool *pgxpool.Pool, s kv.Store, mod func(*VerifyOptions)) Report {
	t.Helper()
	o := VerifyOptions{Source: pool, KV: s, PageSize: 17}
	if mod != nil {
		mod(&o)
	}
	v, err := NewVerifier(o)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := v.Run(ctx)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func newRefStore(t *testing.T, ctx context.Context, s kv.Store) *refstore.Store {
	t.Helper()
	rs, err := refstore.New(ctx, s, refstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// dirtyLog is the in-test dirty-key log.
type dirtyLog struct {
	mu   sync.Mutex
	keys []Key
}

func (d *dirtyLog) add(k Key) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keys = append(d.keys, k)
}

func (d *dirtyLog) List(context.Context) ([]Key, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Key(nil), d.keys...), nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, refstore.ErrNotFound) || errors.Is(err, refstore.ErrAlreadyExists) {
		return nil
	}
	return err
}

func sumDiff(r Report) (n int64) { return r.Differences() }

func strp(s string) *string { return &s }

func slogText(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func (r Report) String() string {
	var b strings.Builder
	for _, e := range Entities() {
		if x := r.Entities[e]; x != nil {
			fmt.Fprintf(&b, "%s: %+v\n", e, *x)
		}
	}
	return b.String()
}

// smallEnv is the usual start of a test: a context, the small generated
// legacy database and an empty mem store.
func smallEnv(t *testing.T) (context.Context, *pgxpool.Pool, *mem.Store) {
	t.Helper()
	ctx := testCtx(t, 3*time.Minute)
	pool, _ := legacyPool(t, ctx, smallData)
	s := mem.New()
	t.Cleanup(s.Close)
	return ctx, pool, s
}
