// Command passproxy runs wire.Server in pure passthrough mode, for the
// benchmark scripts until bin/kvproxy can do the same.
//
//	passproxy -listen 127.0.0.1:6433 -upstream postgres://... [-cpuprofile f]
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/kvproxy/kvproxy/wire"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:6433", "listen address")
	upstream := flag.String("upstream", "", "upstream DSN")
	maxConns := flag.Int("max-connections", 1000, "maximum client connections")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Error("cpuprofile", "err", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cpuprofile", "err", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	srv, err := wire.NewServer(wire.Config{Listen: *listen, UpstreamDSN: *upstream, MaxConnections: *maxConns}, nil, log)
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(context.Background()); err != nil && err != wire.ErrServerClosed {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
