package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kvproxy/kvproxy/internal/rawnet"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// migrateEnv is what backfill and verify run on.
type migrateEnv struct {
	ctx     context.Context
	log     *slog.Logger
	store   kv.Store
	pool    *pgxpool.Pool
	metrics *metrics.Metrics
	tty     bool
	close   func()
	// mirrorTimeout is shadow.mirror_timeout of the configuration.
	mirrorTimeout time.Duration
}

// openMigrateEnv opens the upstream PostgreSQL and the KV store of the
// configuration, and serves /metrics on metricsListen if set.
func openMigrateEnv(cmd *cobra.Command, metricsListen string) (*migrateEnv, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	if cfg.Upstream == "" {
		return nil, errors.New("no upstream PostgreSQL: set upstream (--upstream, KVPROXY_UPSTREAM) to the legacy database")
	}
	log := newLogger(cfg.Log, cmd.ErrOrStderr())
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	e := &migrateEnv{ctx: ctx, log: log, mirrorTimeout: cfg.Shadow.MirrorTimeout}
	closers := []func(){stop}
	e.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	e.store, err = drivers.Open(openCtx, cfg.KV.Driver, cfg.KV.DSN)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("open KV store (kv.driver=%s): %w", cfg.KV.Driver, err)
	}
	closers = append(closers, e.store.Close)
	// The schema version key lets a KV-era lakeFS start on the store.
	if _, err := refstore.New(openCtx, e.store, refstore.Options{}); err != nil {
		e.close()
		return nil, fmt.Errorf("initialise the ref store in the KV store: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.Upstream)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("upstream: %w", err)
	}
	// Repairs and the switches' barrier work run 16 keys at a time.
	pcfg.MaxConns = 16
	pcfg.ConnConfig.DialFunc = rawnet.WrapDial(pcfg.ConnConfig.DialFunc)
	e.pool, err = pgxpool.NewWithConfig(openCtx, pcfg)
	if err == nil {
		err = e.pool.Ping(openCtx)
	}
	if err != nil {
		e.close()
		return nil, fmt.Errorf("connect to the upstream PostgreSQL: %w", err)
	}
	closers = append(closers, e.pool.Close)
	reg := metrics.NewRegistry()
	e.metrics = metrics.New(reg)
	if metricsListen != "" {
		l, err := net.Listen("tcp", metricsListen)
		if err != nil {
			e.close()
			return nil, fmt.Errorf("metrics listen %s: %w", metricsListen, err)
		}
		admin := metrics.NewAdmin(reg, log)
		go func() { _ = admin.Serve(l) }()
		log.Info("metrics server listening", "addr", l.Addr().String())
		closers = append(closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = admin.Shutdown(sctx)
		})
	}
	if f, ok := cmd.ErrOrStderr().(*os.File); ok {
		e.tty = term.IsTerminal(int(f.Fd()))
	}
	return e, nil
}

// Garbage collection of the backfill and verify commands. Both stream
// pages of rows through a small live heap (tens of MiB) that they
// allocate at a high rate; with the default GOGC=100 the collector took a
// quarter of their CPU. A higher GOGC trades that for heap, and the soft
// memory limit makes the collector work harder again before the heap
// nears it, which keeps the process's RSS under issue 7's 256 MiB with
// room for the local store's mapped pages (see local.Options
// MaxResidentMap). GOGC and GOMEMLIMIT in the environment still win.
const (
	migrateGCPercent   = 400
	migrateMemoryLimit = 128 << 20
)

// tuneGC applies the settings above unless the environment sets them.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(migrateGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(migrateMemoryLimit)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newBackfillCmd() *cobra.Command {
	var (
		pageSize       int
		maxRate        float64
		includeOrphans bool
		asJSON         bool
		metricsListen  string
		interval       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backfill",
		Short: "Copy the ref store from the upstream PostgreSQL into the KV store",
		Long: `Copy every ref-store row from the upstream PostgreSQL into the KV store while
dual writes run: repositories, then per repository its commits (reachable from
branches and tags first), branches and tags, then the staged entries of every
token a branch references. Rows already in KV (written by a dual write) are
left alone; rows deleted or changed in PostgreSQL while they were copied are
taken back. Resumes from its checkpoint after a crash; a second run copies
nothing. Records "backfill/status" for cutover.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC(os.Getenv)
			e, err := openMigrateEnv(cmd, metricsListen)
			if err != nil {
				return err
			}
			defer e.close()
			b, err := migrate.NewBackfill(migrate.BackfillOptions{
				Source: e.pool, KV: e.store, PageSize: pageSize, MaxRowsPerSecond: maxRate,
				IncludeOrphans: includeOrphans, Metrics: e.metrics, Log: e.log,
				Progress: migrate.NewProgress("backfill", cmd.ErrOrStderr(), e.tty, e.log, interval),
			})
			if err != nil {
				return err
			}
			res, err := b.Run(e.ctx)
			if err != nil {
				return fmt.Errorf("backfill stopped (rerun to resume from the checkpoint): %w", err)
			}
			e.log.Info("backfill complete", "copied", res.Status.Copied.Sum(), "present", res.Status.Present.Sum(),
				"reverted", res.Status.Reverted.Sum(), "invalid", len(res.Status.Invalid), "orphan_tokens", res.Status.Orphans.Tokens,
				"this_run_copied", res.Copied.Sum(), "this_run_present", res.Present.Sum(), "resumed", res.Resumed)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%-14s %10s %10s %10s\n", "entity", "copied", "present", "reverted")
			for _, en := range migrate.Entities() {
				fmt.Fprintf(out, "%-14s %10d %10d %10d\n", en, res.Status.Copied[en], res.Status.Present[en], res.Status.Reverted[en])
			}
			if n := len(res.Status.Invalid); n > 0 {
				fmt.Fprintf(out, "%d rows cannot be stored in KV and were skipped, e.g. %s: %s\n", n, res.Status.Invalid[0].Key, res.Status.Invalid[0].Reason)
			}
			if o := res.Status.Orphans; o.Tokens > 0 {
				fmt.Fprintf(out, "%d orphan staging tokens (%d rows), e.g. %v; copied: %v\n", o.Tokens, o.Rows, o.SampleTokens, o.Copied)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&pageSize, "page-size", 1000, "rows read and written per step (memory is proportional to it)")
	f.Float64Var(&maxRate, "max-rows-per-second", 0, "cap on the copy rate (0: none); the copy also backs off while upstream reads slow down")
	f.BoolVar(&includeOrphans, "include-orphans", false, "also copy staged entries of tokens no branch references")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve /metrics on this address while running")
	f.DurationVar(&interval, "progress-interval", 10*time.Second, "interval of progress log lines when stderr is not a terminal")
	return cmd
}
