package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/shadow/control"
)

func newPhaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "phase",
		Short: "Set the migration phase where no barrier is needed",
	}
	var timeout time.Duration
	set := &cobra.Command{
		Use:   "set passthrough|dual-write",
		Short: "Move between passthrough and dual-write",
		Long: `Move the shared phase record between passthrough and dual-write. In both,
PostgreSQL is authoritative, so no write barrier is needed: the phase record's
epoch is bumped and the change is recorded as an event. Running proxies follow
within a second, each client session at its next idle point, without
reconnecting. The switches to and from kv-primary
(cutover, rollback, finalize) need the barrier and are separate commands.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			if target != control.Passthrough && target != control.DualWrite {
				return fmt.Errorf("%w: phase set takes passthrough or dual-write, not %q; kv-primary and kv-only are reached with cutover and finalize", config.ErrInvalid, target)
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if cfg.KV.Driver == "mem" {
				return fmt.Errorf("%w: kv.driver: mem is private to one process; name the shared KV store", config.ErrInvalid)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			store, err := drivers.Open(ctx, cfg.KV.Driver, cfg.KV.DSN)
			if err != nil {
				return fmt.Errorf("open KV store (kv.driver=%s, kv.dsn=%s): %w", cfg.KV.Driver, cfg.KV.DSN, err)
			}
			defer store.Close()
			from, to, err := setPhase(ctx, control.NewStore(store, nil), target)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if from.Epoch == to.Epoch {
				_, err = fmt.Fprintf(out, "phase is already %s\n", to)
				return err
			}
			_, err = fmt.Fprintf(out, "phase %s -> %s\nrunning proxies follow within a second; each session at its next idle point\n", from, to)
			return err
		},
	}
	set.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	cmd.AddCommand(set)
	return cmd
}

// setPhase moves the phase record to target (passthrough or dual-write)
// with compare-and-set, and records the change.
func setPhase(ctx context.Context, ctl *control.Store, target string) (from, to control.PhaseRecord, err error) {
	by, _ := os.Hostname()
	by = "kvproxy phase set on " + by
	cur, pred, err := ctl.Phase(ctx)
	if errors.Is(err, kv.ErrNotFound) {
		r, err := ctl.Init(ctx, target, by)
		return control.PhaseRecord{}, r, err
	}
	if err != nil {
		return cur, cur, fmt.Errorf("read the phase record: %w", err)
	}
	switch {
	case cur.Barrier != nil:
		return cur, cur, fmt.Errorf("a switch to %s is in progress (barrier %s); wait for it or let it time out", cur.Barrier.Target, cur.Barrier.ID)
	case cur.Phase == target:
		return cur, cur, nil
	case cur.Phase != control.Passthrough && cur.Phase != control.DualWrite:
		return cur, cur, fmt.Errorf("the phase is %s: KV is authoritative, so leaving it needs rollback (with its barrier), not phase set", cur.Phase)
	}
	next := cur
	next.Phase, next.Epoch, next.Changed, next.By = target, cur.Epoch+1, ctl.Now().UTC(), by
	if err := ctl.Update(ctx, pred, next); err != nil {
		return cur, cur, fmt.Errorf("set the phase: %w (retry)", err)
	}
	_, err = ctl.AddEvent(ctx, control.Event{Kind: "phase-set", From: cur.Phase, To: target, By: by,
		Started: next.Changed, OK: true, Epoch: next.Epoch})
	return cur, next, err
}
