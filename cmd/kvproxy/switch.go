package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/cutover"
)

var switchHelp = map[string][2]string{
	cutover.Cutover: {"Make KV authoritative (dual-write -> kv-primary)",
		`Switch from dual-write to kv-primary: KV becomes authoritative, PostgreSQL
is kept current behind it so that rollback stays possible.

Checks first, and names each that fails: the phase is dual-write with no
switch in progress; the backfill finished; the last full verify was clean and
started after the backfill finished; the dirty-key log has no entry older than
--max-dirty-age; every live proxy instance runs on the current epoch.

Then it puts up a write barrier on the shared phase record: every instance
holds new advisory locks until the held ones are released, then holds new
ref-store writes until those in flight finish (or aborts them with 40001), and
acknowledges. The remaining dirty keys are repaired and verified, and the
phase flips with a new epoch, which releases the barrier. Reads flow
throughout. If anything fails or --timeout passes, the barrier is released and
dual-write stays in force. --dry-run only checks.`},
	cutover.Rollback: {"Make PostgreSQL authoritative again (kv-primary -> dual-write)",
		`Switch back from kv-primary to dual-write, behind the same barrier as cutover.
It requires the reverse mirror to be clean: the KV-side dirty-key log has no
entry older than --max-dirty-age; under the barrier the rest is copied from KV
to PostgreSQL and verified before PostgreSQL becomes authoritative again.`},
	cutover.Finalize: {"Stop writing the legacy tables (kv-primary -> kv-only)",
		`Switch from kv-primary to kv-only, behind the same barrier: the KV-side
dirty-key log is drained into PostgreSQL one last time, then the proxies stop
writing the legacy tables. Not reversible without a reverse backfill.`},
}

func newSwitchCmd(kind string) *cobra.Command {
	var (
		dryRun      bool
		asJSON      bool
		timeout     time.Duration
		maxDirtyAge time.Duration
	)
	cmd := &cobra.Command{
		Use:   kind,
		Short: switchHelp[kind][0],
		Long:  switchHelp[kind][1],
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := openMigrateEnv(cmd, "")
			if err != nil {
				return err
			}
			defer e.close()
			host, _ := os.Hostname()
			o := cutover.Options{Kind: kind, KV: e.store, Control: control.NewStore(e.store, nil), Source: e.pool,
				By: fmt.Sprintf("kvproxy %s on %s", kind, host), Timeout: timeout, MaxDirtyAge: maxDirtyAge, DryRun: dryRun,
				MirrorTimeout: e.mirrorTimeout, Log: e.log}
			if !asJSON {
				o.Out = cmd.OutOrStdout()
			}
			o.BeforeFlip = testBarrierHold()
			res, err := cutover.Run(e.ctx, o)
			if asJSON {
				if jerr := writeJSON(cmd.OutOrStdout(), res.Event); jerr != nil {
					return jerr
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the preconditions and print the steps; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the recorded event as JSON instead of progress lines")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up (and keep the old phase) if the barrier is held this long")
	cmd.Flags().DurationVar(&maxDirtyAge, "max-dirty-age", 15*time.Second, "the dirty-key log counts as drained when no entry is older than this")
	return cmd
}

// testBarrierHold is a test hook: KVPROXY_TEST_BARRIER_HOLD=2s holds the
// barrier that long before the flip, so that a test can kill a process or
// stall the KV store while writes are held.
func testBarrierHold() func(context.Context) error {
	d, err := time.ParseDuration(os.Getenv("KVPROXY_TEST_BARRIER_HOLD"))
	if err != nil || d <= 0 {
		return nil
	}
	return func(ctx context.Context) error {
		fmt.Fprintf(os.Stderr, "test hook: holding the barrier for %s\n", d)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
}
