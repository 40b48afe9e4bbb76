// Command legacysim drives a PostgreSQL (or kvproxy) endpoint the way a
// fleet of SQL-era lakeFS v0.68 processes would, then checks that every
// acknowledged write is in the tables. It is the load generator behind
// demos and live-migration runs; see tests/legacy for the library.
//
//	legacysim -dsn postgres://... -load-schema -clients 16 -duration 30s -verify
//	legacysim -dsn A -diff-dsn B -seed 42 -steps 1000   # differential run
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/kvproxy/kvproxy/tests/legacy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "legacysim:", err)
		os.Exit(1)
	}
}

func run() error {
	dsn := flag.String("dsn", os.Getenv("LEGACYSIM_DSN"), "DSN of PostgreSQL or kvproxy (env LEGACYSIM_DSN)")
	diffDSN := flag.String("diff-dsn", "", "run the seeded script against -dsn and this DSN and compare every outcome")
	loadSchema := flag.Bool("load-schema", false, "load the ref-store schema first (idempotent)")
	clients := flag.Int("clients", 16, "concurrent lakeFS processes")
	steps := flag.Int("steps", 0, "flows per client (0: until -duration)")
	duration := flag.Duration("duration", 30*time.Second, "run time when -steps is 0")
	seed := flag.Int64("seed", time.Now().UnixNano()%1e6, "workload seed")
	version := flag.String("lakefs", "0.68", "lakeFS behaviour: 0.68 or 0.70")
	shared := flag.Bool("shared", true, "also write per-client branches of one shared repository")
	tolerant := flag.Bool("tolerant", false, "keep going after failed operations (phase switches, restarts)")
	verify := flag.Bool("verify", true, "check the ledger of acknowledged writes at the end")
	flag.Parse()
	if *dsn == "" {
		return errors.New("-dsn is required")
	}
	v := legacy.V068
	switch *version {
	case "0.68":
	case "0.70":
		v = legacy.V070
	default:
		return fmt.Errorf("-lakefs %q: want 0.68 or 0.70", *version)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *loadSchema {
		for _, d := range []string{*dsn, *diffDSN} {
			if d == "" {
				continue
			}
			if err := legacy.LoadSchema(ctx, d); err != nil {
				return err
			}
		}
	}
	if *diffDSN != "" {
		n := *steps
		if n == 0 {
			n = 1000
		}
		if err := legacy.Differential(ctx, *dsn, *diffDSN, legacy.ScriptConfig{Seed: *seed, Steps: n, Version: v}); err != nil {
			return fmt.Errorf("differential (seed %d): %w", *seed, err)
		}
		fmt.Printf("differential: seed %d, %d steps: identical outcomes\n", *seed, n)
		return nil
	}
	runCtx := ctx
	if *steps == 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	res, err := legacy.RunConcurrent(runCtx, legacy.RunConfig{
		DSN: *dsn, Clients: *clients, Steps: *steps, Seed: *seed, Version: v, SharedRepo: *shared, Tolerant: *tolerant,
	})
	if res != nil {
		fmt.Printf("seed %d: %d flows in %v (%.0f flows/s), %d tolerated failures\n%s\n",
			*seed, res.Total, res.Elapsed.Round(time.Millisecond), float64(res.Total)/res.Elapsed.Seconds(), len(res.Failures), legacy.FormatStats(res.Steps))
	}
	if err != nil {
		return err
	}
	if *verify {
		if err := res.Ledger.Verify(ctx, *dsn); err != nil {
			return err
		}
		r, b, t, c, s := res.Ledger.Counts()
		fmt.Printf("verify: ok (%d repositories, %d branches, %d tags, %d commits, %d staged facts)\n", r, b, t, c, s)
	}
	return nil
}
