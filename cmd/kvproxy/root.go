package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/shadow/cutover"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kvproxy",
		Short:         "PostgreSQL wire-protocol sidecar that moves a lakeFS ref store onto a KV store",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "YAML configuration file (env KVPROXY_CONFIG)")
	// A CPU profile of one command run (backfill, verify): where its time
	// goes, for tuning; hidden because it is not an operator setting.
	var cpuProfile string
	var stopProfile func()
	root.PersistentFlags().StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the command to this file")
	_ = root.PersistentFlags().MarkHidden("cpu-profile")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return fmt.Errorf("cpu profile: %w", err)
		}
		stopProfile = func() { pprof.StopCPUProfile(); _ = f.Close() }
		return nil
	}
	root.PersistentPostRun = func(*cobra.Command, []string) {
		if stopProfile != nil {
			stopProfile()
		}
	}
	config.RegisterFlags(root.PersistentFlags())
	root.AddCommand(newServeCmd(), newVersionCmd())
	root.AddCommand(newStatusCmd())
	root.AddCommand(newBackfillCmd(), newVerifyCmd())
	root.AddCommand(newPhaseCmd())
	root.AddCommand(newSwitchCmd(cutover.Cutover), newSwitchCmd(cutover.Rollback), newSwitchCmd(cutover.Finalize))
	return root
}

// loadConfig reads the configuration for cmd: file (--config or
// KVPROXY_CONFIG), then KVPROXY_* variables, then flags.
func loadConfig(cmd *cobra.Command) (config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		path = os.Getenv("KVPROXY_CONFIG")
	}
	return config.Load(path, os.Environ(), cmd.Flags())
}

func newLogger(c config.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "kvproxy", version)
			return err
		},
	}
}
