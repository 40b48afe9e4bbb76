package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/metrics"
)

func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy",
		Long: `Run the proxy: accept PostgreSQL clients on --listen, answer ref-store
statements according to the migration phase, forward the rest to --upstream.
With no configuration it runs on the embedded local KV store in ./data with
no upstream (phase kv-only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			log := newLogger(cfg.Log, cmd.ErrOrStderr())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			store, err := drivers.Open(openCtx, cfg.KV.Driver, cfg.KV.DSN)
			cancel()
			if err != nil {
				return fmt.Errorf("open KV store (kv.driver=%s, kv.dsn=%s): %w", cfg.KV.Driver, cfg.KV.DSN, err)
			}
			defer store.Close()
			log.Info("KV store open", "driver", cfg.KV.Driver)

			reg := metrics.NewRegistry()
			admin := metrics.NewAdmin(reg, log, metrics.ReadinessCheck{Name: "kv", Check: func(ctx context.Context) error {
				_, err := store.Get(ctx, []byte("kvproxy"), []byte("readyz"))
				if errors.Is(err, kv.ErrNotFound) {
					return nil
				}
				return err
			}})
			errc := make(chan error, 2)
			if cfg.Admin.Listen != "" {
				l, err := net.Listen("tcp", cfg.Admin.Listen)
				if err != nil {
					return fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
				}
				log.Info("admin server listening", "addr", l.Addr().String())
				go func() { errc <- admin.Serve(l) }()
			}
			log.Info("kvproxy ready", "listen", cfg.Listen, "phase", cfg.Phase, "upstream", cfg.Upstream != "")

			select {
			case <-ctx.Done():
			case err := <-errc:
				if err != nil {
					return err
				}
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return admin.Shutdown(sctx)
		},
	}
}
