package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/xid"
	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/internal/rawnet"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/kv/kvlock"
	"github.com/kvproxy/kvproxy/kv/kvmetrics"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/shadow"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
	"github.com/kvproxy/kvproxy/translate"
	"github.com/kvproxy/kvproxy/wire"
)

// repairers are the background drains of both dirty-key logs: the outbox
// in the upstream database (dual-write: re-copy keys from PostgreSQL to KV)
// and the KV-side log (kv-primary: re-copy keys from KV to PostgreSQL).
type repairers struct {
	pool   *pgxpool.Pool
	toKV   *dirty.Repairer
	toSQL  *dirty.Repairer
	kvLog  *dirty.KVLog
	mirror *migrate.Syncer // KV -> SQL, for kv-primary's own mirror
}

// startRepairer opens the proxy's own pool to the upstream, creates the
// dirty-key outbox there, and drains the log of the phase in force every
// second. In dual-write and kv-primary the outbox is required; in other
// phases a missing privilege only warns.
func startRepairer(ctx context.Context, upstream string, store kv.Store, phase, instance string, mirrorTimeout time.Duration, gate *shadow.Gate, m *metrics.Metrics, log *slog.Logger) (*repairers, error) {
	pcfg, err := pgxpool.ParseConfig(upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	// The repairer and kv-primary's mirror to PostgreSQL share it.
	pcfg.MaxConns = 16
	pcfg.ConnConfig.DialFunc = rawnet.WrapDial(pcfg.ConnConfig.DialFunc)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	outbox := dirty.NewPGLog(pool)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := outbox.Setup(sctx); err != nil {
		pool.Close()
		if phase == control.DualWrite || phase == control.KVPrimary {
			return nil, fmt.Errorf("the dirty-key log needs schema kvproxy in the upstream database (grant the upstream user CREATE on the database): %w", err)
		}
		log.Warn("dirty-key log unavailable; dual writes will need it", "err", err)
		return nil, nil
	}
	toKV, err := migrate.NewSyncer(migrate.VerifyOptions{Source: pool, KV: store, Direction: migrate.SQLToKV, Log: log})
	if err != nil {
		pool.Close()
		return nil, err
	}
	toSQL, err := migrate.NewSyncer(migrate.VerifyOptions{Source: pool, KV: store, Direction: migrate.KVToSQL, Log: log})
	if err != nil {
		pool.Close()
		return nil, err
	}
	kvLog := dirty.NewKVLog(store, nil)
	rs := &repairers{pool: pool, kvLog: kvLog, mirror: toSQL,
		// An outbox entry is left to its mirror for as long as the mirror
		// may run (it starts at the upstream COMMIT, right after the entry
		// is written, and is bounded by mirror_timeout): a mirror that
		// applied after the repairer had cleared the entry could leave KV
		// behind a newer write of another instance. A switch's barrier
		// waits for in-flight writes and repairs every entry whatever its
		// age, so this does not lengthen it.
		toKV: &dirty.Repairer{Log: outbox, Syncer: toKV, Logger: log, Batch: 1000, Workers: 16, MinAge: mirrorTimeout + time.Second, Instance: instance},
		// The KV-side log holds intents written before their KV commit:
		// an entry is left to its writer until the writer must be done
		// (commit and mirror bounded by mirror_timeout), so that a
		// repairer does not clear it while the commit is in flight.
		toSQL: &dirty.Repairer{Log: kvLog, Syncer: toSQL, Logger: log, Batch: 1000, Workers: 16, MinAge: 2*mirrorTimeout + time.Second, Instance: instance},
	}
	go rs.run(ctx, gate, m, log)
	return rs, nil
}

// run drains, every second, the log that the phase in force writes. After
// a switch the other log is empty: the switch repaired it under its barrier.
func (rs *repairers) run(ctx context.Context, gate *shadow.Gate, m *metrics.Metrics, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		var r *dirty.Repairer
		n := 0
		// A round is a background writer at the gate: a switch's barrier
		// stops it and waits for it, so that it never copies from a store
		// that is no longer authoritative. The phase is read once admitted.
		if rctx, done, err := gate.Background(ctx); err == nil {
			switch gate.Phase() {
			case control.DualWrite:
				r = rs.toKV
			case control.KVPrimary:
				r = rs.toSQL
			}
			if r != nil {
				n, err = r.RunOnce(rctx)
				if err != nil && ctx.Err() == nil && rctx.Err() == nil {
					log.Warn("dirty-key repair", "err", err)
				}
			}
			done()
			if r != nil {
				if remaining, cerr := r.Log.Count(ctx); cerr == nil {
					m.DirtyKeys.Set(float64(remaining))
				}
				m.DirtyKeysRepaired.Add(float64(n))
			}
		}
		if r != nil && n >= r.Batch {
			continue // a backlog: no pause until it is worked off
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// testPauseBeforeMirror is a test hook: KVPROXY_TEST_PAUSE_BEFORE_MIRROR=10s
// holds every dual write between its upstream commit and its KV mirror, so
// that a test can kill the process exactly there.
func testPauseBeforeMirror() func(context.Context) {
	d, err := time.ParseDuration(os.Getenv("KVPROXY_TEST_PAUSE_BEFORE_MIRROR"))
	if err != nil || d <= 0 {
		return nil
	}
	return func(ctx context.Context) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// testLeaseTTL is a test hook: KVPROXY_TEST_LEASE_TTL shortens the
// instance lease (default 10s) so that expiry tests run quickly.
func testLeaseTTL() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("KVPROXY_TEST_LEASE_TTL"))
	return d
}

// testPartitionable is a test hook: while the file named by
// KVPROXY_TEST_PARTITION_FILE exists, the instance's phase-record reads and
// lease renewals fail, as if it were cut off from the KV store.
func testPartitionable(s kv.Store) kv.Store {
	path := os.Getenv("KVPROXY_TEST_PARTITION_FILE")
	if path == "" {
		return s
	}
	return partitioned{Store: s, path: path}
}

type partitioned struct {
	kv.Store
	path string
}

var errPartitioned = errors.New("test hook: partitioned from the KV store")

func (p partitioned) cut() bool { _, err := os.Stat(p.path); return err == nil }

func (p partitioned) Get(ctx context.Context, pk, k []byte) (*kv.ValueWithPredicate, error) {
	if p.cut() {
		return nil, errPartitioned
	}
	return p.Store.Get(ctx, pk, k)
}

func (p partitioned) Set(ctx context.Context, pk, k, v []byte) error {
	if p.cut() {
		return errPartitioned
	}
	return p.Store.Set(ctx, pk, k, v)
}

// instanceName identifies this process among proxy instances.
func instanceName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), xid.New().String()[12:])
}

// connObserver feeds the wire layer's connection events into metrics.
type connObserver struct{ m *metrics.Metrics }

func (o connObserver) ClientConnOpened()          { o.m.ClientConnections.Inc() }
func (o connObserver) ClientConnClosed()          { o.m.ClientConnections.Dec() }
func (o connObserver) ClientConnRejected(string)  {}
func (o connObserver) UpstreamConnOpened()        { o.m.UpstreamConnections.Inc() }
func (o connObserver) UpstreamConnClosed()        { o.m.UpstreamConnections.Dec() }
func (o connObserver) UpstreamConnIdle(delta int) { o.m.UpstreamIdle.Add(float64(delta)) }
func (o connObserver) UpstreamConnReused()        { o.m.UpstreamReused.Inc() }

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
			reg := metrics.NewRegistry()
			if store, err = kvmetrics.Wrap(reg, cfg.KV.Driver, store); err != nil {
				return err
			}
			log.Info("KV store open", "driver", cfg.KV.Driver)

			rs, err := refstore.New(ctx, store, refstore.Options{})
			if err != nil {
				return fmt.Errorf("initialise the ref store in the KV store: %w", err)
			}
			instanceID := instanceName()
			ctl := control.NewStore(store, nil)
			rec, err := ctl.Init(ctx, cfg.Phase, instanceID)
			if err != nil {
				return fmt.Errorf("read the phase record: %w", err)
			}
			if rec.Phase != control.KVOnly && cfg.Upstream == "" {
				return fmt.Errorf("the stored phase is %s, which needs an upstream PostgreSQL: set upstream (--upstream, KVPROXY_UPSTREAM)", rec.Phase)
			}
			// Listen before registering, so that the registration carries the
			// address clients really reach (a ":0" port is resolved here).
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("listen %s: %w", cfg.Listen, err)
			}
			served := false
			defer func() {
				if !served {
					ln.Close()
				}
			}()
			follower := control.NewFollower(control.NewStore(testPartitionable(store), nil),
				control.FollowerOptions{ID: instanceID, Addr: ln.Addr().String(), TTL: testLeaseTTL()})
			if rec, err = follower.Sync(ctx); err != nil {
				return err
			}
			m := metrics.New(reg)
			gate := shadow.NewGate(rec)
			gate.Ack = follower.SetBarrierAck
			gate.Fresh = func() bool { _, fresh := follower.View(); return fresh }
			gate.Log = log
			gate.OnBarrierEnd = func(d time.Duration) { m.BarrierSeconds.Observe(d.Seconds()) }
			follower.OnChange(func(r control.PhaseRecord) {
				gate.Update(r)
				m.SetPhase(r.Phase, r.Epoch, control.Phases)
				if r.Barrier != nil {
					log.Info("switch barrier up: holding new ref-store writes", "target", r.Barrier.Target, "barrier", r.Barrier.ID)
					return
				}
				// Sessions follow at their next idle point (Router.Reroute).
				log.Info("phase", "phase", r.Phase, "epoch", r.Epoch)
			})
			m.SetPhase(rec.Phase, rec.Epoch, control.Phases)
			bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
			defer stopBG()
			go follower.Run(bg, func(err error) { log.Warn("phase record", "err", err) })
			locks := kvlock.NewManager(store, kvlock.Options{})
			go locks.Run(bg)
			var rp *repairers
			if cfg.Upstream != "" {
				if rp, err = startRepairer(bg, cfg.Upstream, store, rec.Phase, instanceID, cfg.Shadow.MirrorTimeout, gate, m, log); err != nil {
					return err
				}
				if rp != nil {
					defer rp.pool.Close()
				}
			}
			ropt := shadow.RouterOptions{
				Translator:         translate.New(translate.Options{}),
				RefStore:           rs,
				Locks:              locks,
				InstanceID:         instanceID,
				Gate:               gate,
				HasUpstream:        cfg.Upstream != "",
				ShadowReadFraction: cfg.Shadow.ReadFraction,
				ShadowReadTimeout:  cfg.Shadow.ReadTimeout,
				MirrorTimeout:      cfg.Shadow.MirrorTimeout,
				BeforeMirror:       testPauseBeforeMirror(),
				Metrics:            m,
				Log:                log,
			}
			if rp != nil {
				ropt.KVLog, ropt.Mirror, ropt.ShadowPool = rp.kvLog, rp.mirror, rp.pool
			}
			router := shadow.NewRouter(ropt)
			srv, err := wire.NewServer(wire.Config{
				Listen:                   cfg.Listen,
				UpstreamDSN:              cfg.Upstream,
				TLSCertFile:              cfg.TLS.CertFile,
				TLSKeyFile:               cfg.TLS.KeyFile,
				Auth:                     wire.AuthMethod(cfg.Auth.Method),
				UsersFile:                cfg.Auth.UsersFile,
				MaxMessageSize:           cfg.Limits.MaxMessageSize,
				MaxConnections:           cfg.Limits.MaxConnections,
				StartupTimeout:           cfg.Limits.StartupTimeout,
				IdleInTransactionTimeout: cfg.Limits.IdleInTransactionTimeout,
				RelayCoalesce:            cfg.Relay.Coalesce,
				UpstreamPoolSize:         cfg.Relay.UpstreamPool,
				UpstreamIdleTimeout:      cfg.Relay.UpstreamIdleTimeout,
				Observer:                 connObserver{m},
			}, router, log)
			if err != nil {
				return err
			}
			admin := metrics.NewAdmin(reg, log, metrics.ReadinessCheck{Name: "kv", Check: func(ctx context.Context) error {
				_, err := store.Get(ctx, []byte("_kvproxy"), []byte("readyz"))
				if errors.Is(err, kv.ErrNotFound) {
					return nil
				}
				return err
			}}, metrics.ReadinessCheck{Name: "phase", Check: func(context.Context) error {
				if _, fresh := follower.View(); !fresh {
					return errors.New("the phase record has not been re-read within its lease")
				}
				return nil
			}})
			statusC := setupAdminAPI(admin, cfg, store, ctl, instanceID, reg)
			var upstreamPool *pgxpool.Pool
			if rp != nil {
				upstreamPool = rp.pool
			}
			acts, err := registerActions(ctx, admin, actionEnv{Store: store, Upstream: upstreamPool, Metrics: m, Log: log, InstanceID: instanceID, Status: statusC, MirrorTimeout: cfg.Shadow.MirrorTimeout})
			if err != nil {
				return err
			}
			defer acts.Close()
			errc := make(chan error, 2)
			if cfg.Admin.Listen != "" {
				l, err := net.Listen("tcp", cfg.Admin.Listen)
				if err != nil {
					return fmt.Errorf("admin.listen %s: %w", cfg.Admin.Listen, err)
				}
				log.Info("admin server listening", "addr", l.Addr().String())
				go func() { errc <- admin.Serve(l) }()
			}
			served = true
			go func() { errc <- srv.Serve(ctx, ln) }()
			log.Info("kvproxy ready", "listen", ln.Addr().String(), "phase", rec.Phase, "epoch", rec.Epoch, "upstream", cfg.Upstream != "", "instance", instanceID)

			select {
			case <-ctx.Done():
			case err := <-errc:
				if err != nil {
					return err
				}
			}
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Limits.ShutdownTimeout)
			defer cancel()
			err = srv.Shutdown(sctx)
			_ = admin.Shutdown(sctx)
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer dcancel()
			_ = follower.Deregister(dctx)
			return err
		},
	}
}
