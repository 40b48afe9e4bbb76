package wire

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/internal/rawnet"
)

// Observer is told about connections; the metrics layer implements it. Its
// methods are called concurrently and must not block.
type Observer interface {
	ClientConnOpened()
	ClientConnClosed()
	// ClientConnRejected is called for a client refused before its session
	// starts, with the SQLSTATE it was given (53300, 28P01, 08P01, ...).
	ClientConnRejected(code string)
	UpstreamConnOpened()
	UpstreamConnClosed()
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	ClientConns         int64 // open client sessions
	UpstreamConns       int64 // open upstream connections
	ClientConnsTotal    int64 // accepted since start
	UpstreamConnsTotal  int64 // opened since start
	ClientConnsRejected int64
	// UpstreamConnsLost counts upstream connections of sessions that
	// survived losing them (UpstreamOptional).
	UpstreamConnsLost int64
	// UpstreamConnsIdle counts pooled upstream connections (included in
	// UpstreamConns); UpstreamConnsReused counts sessions that got one.
	UpstreamConnsIdle, UpstreamConnsReused int64
}

// UpstreamLossObserver is an optional Observer method, told when a session
// that survives the loss of its upstream connection (UpstreamOptional)
// loses it. UpstreamConnClosed is called for that connection as well.
type UpstreamLossObserver interface {
	UpstreamConnLost()
}

// Server is a PostgreSQL wire-protocol proxy.
type Server struct {
	cfg    Config
	router Router
	log    *slog.Logger
	upCfg  *pgconn.Config

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*Session]struct{}
	closing   bool
	wg        sync.WaitGroup

	loops   []*eventLoop
	loopErr error
	// rerouteNotified: the Router is a RerouteNotifier, so relaying
	// sessions with a Rerouter may use the event loop.
	rerouteNotified bool

	nextPID atomic.Uint32
	active  atomic.Int64 // includes sessions still starting up

	// lastParams: the ParameterStatus values of the newest upstream
	// connection, reported to sessions that start while it is down.
	lastParams map[string]string
	lost       atomic.Int64

	clientConns, upstreamConns, clientTotal, upstreamTotal, rejected atomic.Int64

	// pool keeps idle upstream connections for later sessions; nil when
	// UpstreamPoolSize is 0.
	pool   *upPool
	reused atomic.Int64

	// clientIO keeps the buffers of ended sessions' client connections
	// (*clientIO) for new ones: with short sessions, allocating 64 KiB a
	// session was most of the garbage collector's work.
	clientIO sync.Pool
}

// clientIO is a session's buffered reader and writer on its client
// connection.
type clientIO struct {
	r *bufio.Reader
	w *bufio.Writer
}

// NewServer checks cfg and returns a server. router may be nil: every
// statement is then relayed upstream on the fast path.
func NewServer(cfg Config, router Router, logger *slog.Logger) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: c, router: router, log: logger,
		listeners: map[net.Listener]struct{}{}, sessions: map[*Session]struct{}{}}
	s.clientIO.New = func() any {
		return &clientIO{r: bufio.NewReaderSize(nil, ioBufSize), w: bufio.NewWriterSize(nil, ioBufSize)}
	}
	if c.UpstreamDSN != "" {
		pc, err := pgconn.ParseConfig(c.UpstreamDSN)
		if err != nil {
			return nil, fmt.Errorf("%w: upstream DSN: %w", ErrConfig, err)
		}
		// Upstream connections, TLS or not, read and write with raw system
		// calls (see internal/rawnet).
		pc.DialFunc = rawnet.WrapDial(pc.DialFunc)
		s.upCfg = pc
		if c.UpstreamPoolSize > 0 {
			s.pool = newUpPool(c.UpstreamPoolSize, c.UpstreamIdleTimeout, s.closeUp, s.upstreamIdle)
		}
	} else if router == nil {
		return nil, fmt.Errorf("%w: without an upstream a Router must answer every statement", ErrConfig)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	s.nextPID.Store(binary.BigEndian.Uint32(b[:]) & 0x3fffffff)
	if n, ok := router.(RerouteNotifier); ok {
		if _, ok := router.(Rerouter); ok {
			s.rerouteNotified = true
			n.NotifyReroute(s.rerouteChanged)
		}
	}
	return s, nil
}

// rerouteChanged has the event loops send tracked sessions back to their
// goroutines at their next idle point, to ask the Rerouter.
func (s *Server) rerouteChanged() {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		l.bump()
	}
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{ClientConns: s.clientConns.Load(), UpstreamConns: s.upstreamConns.Load(),
		ClientConnsTotal: s.clientTotal.Load(), UpstreamConnsTotal: s.upstreamTotal.Load(),
		ClientConnsRejected: s.rejected.Load(), UpstreamConnsLost: s.lost.Load(),
		UpstreamConnsIdle: int64(s.pool.idleCount()), UpstreamConnsReused: s.reused.Load()}
}

// ListenAndServe listens on cfg.Listen and serves until Shutdown or ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("wire: listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts clients on ln until Shutdown is called (it then returns
// ErrServerClosed) or ctx ends (every session is closed at once, and it
// returns ctx.Err()). It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.closeAll()
		go func() {
			s.wg.Wait()
			s.stopLoop()
			s.closePool()
		}()
	})
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			// Temporary errors (EMFILE): back off like net/http.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			s.log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		delay = 0
		// No SetNoDelay: the net package sets TCP_NODELAY on every TCP
		// connection it makes.
		if !s.track() {
			conn.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

// Shutdown stops accepting clients, closes idle sessions, lets sessions in a
// transaction (or with a statement running) finish it, and closes each as it
// becomes idle. When ctx ends first, the remaining sessions are closed at
// once and ctx.Err() is returned. Sessions are told FATAL 57P01.
func (s *Server) Shutdown(ctx context.Context) error {
	sessions := s.stopAccepting()
	for _, sess := range sessions {
		sess.beginShutdown()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.stopLoop()
		s.closePool()
		return nil
	case <-ctx.Done():
		s.closeAll()
		<-done
		s.stopLoop()
		s.closePool()
		return ctx.Err()
	}
}

// eventLoop returns the relay event loop for a session, starting the loops
// (one per GOMAXPROCS) on first use; nil if they cannot run.
func (s *Server) eventLoop(pid uint32) *eventLoop {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loops == nil && s.loopErr == nil && !s.closing {
		n := runtime.GOMAXPROCS(0)
		for i := 0; i < n; i++ {
			l, err := newEventLoop(s.cfg.MaxMessageSize, s.cfg.relayCoalesce())
			if err != nil {
				s.loopErr = err
				s.log.Warn("relay event loop unavailable, using goroutines", "err", err)
				break
			}
			s.loops = append(s.loops, l)
		}
	}
	if len(s.loops) == 0 {
		return nil
	}
	return s.loops[int(pid)%len(s.loops)]
}

func (s *Server) closePool() {
	if s.pool != nil {
		s.pool.close()
	}
}

func (s *Server) stopLoop() {
	s.mu.Lock()
	loops := s.loops
	s.loops = nil
	s.loopErr = ErrServerClosed
	s.mu.Unlock()
	for _, l := range loops {
		l.stop()
	}
}

// stopAccepting closes the listeners, refuses new sessions and returns the
// open ones.
func (s *Server) stopAccepting() []*Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	sessions := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	return sessions
}

func (s *Server) closeAll() {
	sessions := s.stopAccepting()
	for _, sess := range sessions {
		sess.forceClose()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) register(sess *Session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) unregister(sess *Session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// cancel finds the session with the proxy's key and cancels its running
// statement.
func (s *Server) cancel(ctx context.Context, pid, key uint32) {
	s.mu.Lock()
	var target *Session
	for sess := range s.sessions {
		if sess.pid == pid && sess.secret == key {
			target = sess
			break
		}
	}
	s.mu.Unlock()
	if target == nil {
		s.log.Debug("cancel request for unknown session", "pid", pid)
		return
	}
	target.cancelRunning(ctx)
}

func (s *Server) obs() Observer { return s.cfg.Observer }

func (s *Server) upstreamOpened() {
	s.upstreamConns.Add(1)
	s.upstreamTotal.Add(1)
	if o := s.obs(); o != nil {
		o.UpstreamConnOpened()
	}
}

func (s *Server) upstreamClosed() {
	s.upstreamConns.Add(-1)
	if o := s.obs(); o != nil {
		o.UpstreamConnClosed()
	}
}

// UpstreamPoolObserver is an optional Observer method set, told as
// upstream connections enter and leave the pool (Config.UpstreamPoolSize)
// and when a session starts on a pooled one. The connections stay open
// meanwhile: no UpstreamConnClosed and UpstreamConnOpened for them.
type UpstreamPoolObserver interface {
	UpstreamConnIdle(delta int)
	UpstreamConnReused()
}

func (s *Server) upstreamIdle(delta int) {
	if o, ok := s.obs().(UpstreamPoolObserver); ok {
		o.UpstreamConnIdle(delta)
	}
}

func (s *Server) upstreamReused() {
	s.reused.Add(1)
	if o, ok := s.obs().(UpstreamPoolObserver); ok {
		o.UpstreamConnReused()
	}
}

func (s *Server) upstreamLost() {
	s.lost.Add(1)
	if o, ok := s.obs().(UpstreamLossObserver); ok {
		o.UpstreamConnLost()
	}
}

// noteParams remembers an upstream's ParameterStatus values.
func (s *Server) noteParams(p map[string]string) {
	c := make(map[string]string, len(p))
	for k, v := range p {
		c[k] = v
	}
	s.mu.Lock()
	s.lastParams = c
	s.mu.Unlock()
}

func (s *Server) lastParamsCopy() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastParams == nil {
		return nil
	}
	c := make(map[string]string, len(s.lastParams))
	for k, v := range s.lastParams {
		c[k] = v
	}
	return c
}

func (s *Server) reject(code string) {
	s.rejected.Add(1)
	if o := s.obs(); o != nil {
		o.ClientConnRejected(code)
	}
}
