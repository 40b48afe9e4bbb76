package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// errNotClean makes verify exit non-zero when the stores differ, so that
// scripts can gate on it.
type errNotClean struct{ n int64 }

func (e errNotClean) Error() string {
	return fmt.Sprintf("verify found %d differences between PostgreSQL and KV", e.n)
}

func newVerifyCmd() *cobra.Command {
	var (
		pageSize       int
		samples        int
		includeOrphans bool
		asJSON         bool
		incremental    bool
		repair         bool
		direction      string
		metricsListen  string
		interval       time.Duration
		maxRate        float64
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove the KV store holds what the upstream PostgreSQL holds",
		Long: `Compare PostgreSQL (one snapshot) and the KV store entity by entity on
canonical values, and report matching, mismatched, missing-in-KV and
extra-in-KV rows with sample keys. The result is stored as "verify/last" for
cutover. --incremental checks only the keys of the dirty-key log; --repair
re-copies each difference from the authoritative store (--direction) and
re-checks it. Resumes after a crash. Exits 1 if the stores differ (after
repair, if any difference could not be repaired).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := migrate.ParseDirection(direction)
			if err != nil {
				return err
			}
			tuneGC(os.Getenv)
			e, err := openMigrateEnv(cmd, metricsListen)
			if err != nil {
				return err
			}
			defer e.close()
			o := migrate.VerifyOptions{
				Source: e.pool, KV: e.store, PageSize: pageSize, Samples: samples, IncludeOrphans: includeOrphans,
				Repair: repair, Direction: dir, MaxRowsPerSecond: maxRate, Incremental: incremental, Metrics: e.metrics, Log: e.log,
				Progress: migrate.NewProgress("verify", cmd.ErrOrStderr(), e.tty, e.log, interval),
			}
			// The dirty-key log of the phase in force: the outbox in the
			// upstream database in dual-write (written in the client's own
			// transaction), the KV-side log in kv-primary. --incremental
			// checks its keys; a full verify counts differences on them
			// as pending repair.
			var l dirty.Log = dirty.NewPGLog(e.pool)
			rec, _, perr := control.NewStore(e.store, nil).Phase(e.ctx)
			if perr == nil && rec.Phase == control.KVPrimary {
				l = dirty.NewKVLog(e.store, nil)
			}
			switch {
			case incremental:
				o.Dirty = migrate.FromDirtyLog(l, 0)
			case !repair && perr == nil && (rec.Phase == control.DualWrite || rec.Phase == control.KVPrimary):
				o.Pending = migrate.FromDirtyLog(l, 0)
			}
			v, err := migrate.NewVerifier(o)
			if err != nil {
				return err
			}
			rep, err := v.Run(e.ctx)
			if err != nil {
				return fmt.Errorf("verify stopped (rerun to resume): %w", err)
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printReport(cmd.OutOrStdout(), rep)
			}
			if !rep.Clean() {
				return errNotClean{rep.Differences() - rep.Repaired}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&pageSize, "page-size", 1000, "rows fetched per round trip")
	f.Float64Var(&maxRate, "max-rows-per-second", 0, "cap on the compare rate (0: none)")
	f.IntVar(&samples, "samples", 10, "sample keys named per entity")
	f.BoolVar(&includeOrphans, "include-orphans", false, "also verify staged entries of tokens no branch references")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&incremental, "incremental", false, "check only the keys of the dirty-key log")
	f.BoolVar(&repair, "repair", false, "re-copy differences from the authoritative store and re-check them")
	f.StringVar(&direction, "direction", "sql-to-kv", "repair direction: sql-to-kv (dual-write) or kv-to-sql (kv-primary)")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve /metrics on this address while running")
	f.DurationVar(&interval, "progress-interval", 10*time.Second, "interval of progress log lines when stderr is not a terminal")
	return cmd
}

func printReport(w io.Writer, r migrate.Report) {
	fmt.Fprintf(w, "%-14s %10s %10s %14s %12s\n", "entity", "match", "mismatch", "missing_in_kv", "extra_in_kv")
	for _, en := range migrate.Entities() {
		e := r.Entities[en]
		if e == nil {
			continue
		}
		fmt.Fprintf(w, "%-14s %10d %10d %14d %12d\n", en, e.Match, e.Mismatch, e.MissingInKV, e.ExtraInKV)
	}
	for _, en := range migrate.Entities() {
		e := r.Entities[en]
		if e == nil {
			continue
		}
		for _, s := range e.Samples {
			fmt.Fprintf(w, "  %-13s %s %s\n", s.Result, s.Key, s.Detail)
		}
		if e.SourceHashMismatch > 0 {
			fmt.Fprintf(w, "  note: %d PostgreSQL commits do not hash to their id\n", e.SourceHashMismatch)
		}
	}
	state := "clean"
	if !r.Clean() {
		state = "NOT clean"
	}
	if r.Repair {
		fmt.Fprintf(w, "repaired %d, repair failed %d (%s)\n", r.Repaired, r.RepairFailed, r.Direction)
	}
	if r.Pending > 0 {
		fmt.Fprintf(w, "%d differences are on keys of the dirty-key log: pending repair, not counted\n", r.Pending)
	}
	if r.Rechecked > 0 {
		fmt.Fprintf(w, "%d differences vanished when re-read (writes in flight during the verify); counted as matches\n", r.Rechecked)
	}
	fmt.Fprintf(w, "%s: %d differences\n", state, r.Differences())
}
