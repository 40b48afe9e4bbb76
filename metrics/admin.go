package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// ReadinessCheck reports whether one dependency is usable; a nil error means
// ready.
type ReadinessCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Admin is the admin HTTP server.
type Admin struct {
	mux    *http.ServeMux
	srv    *http.Server
	checks []ReadinessCheck
	log    *slog.Logger

	token    string      // admin API bearer token; see SetToken
	loopback atomic.Bool // set by Serve from the listener's address

	mu      sync.Mutex
	status  *Collector
	actions map[string]ActionFunc
	routes  map[string]bool // patterns added by HandleActionHTTP
}

// NewAdmin builds the admin server over reg. /readyz runs checks in order
// and answers 503 naming the first that fails.
func NewAdmin(reg *prometheus.Registry, log *slog.Logger, checks ...ReadinessCheck) *Admin {
	a := &Admin{mux: http.NewServeMux(), checks: checks, log: log, actions: map[string]ActionFunc{}}
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.routeAPI()
	a.routeProfiles()
	a.srv = &http.Server{Handler: a.mux, ReadHeaderTimeout: 10 * time.Second}
	return a
}

// HandleActionHTTP routes method /api/v1/{name} to h behind the token rules
// of SetToken (a GET is a read, anything else needs the token), for actions
// that need more than an ActionFunc: query parameters, answers other than
// 200 (202 for a job started in the background, 412 for a failed
// precondition), or a DELETE that stops a job. The route takes precedence
// over a HandleAction of the same name. Each method and name can be routed
// once; a second registration is an error.
func (a *Admin) HandleActionHTTP(method, name string, h http.HandlerFunc) error {
	if method == "" || name == "" || strings.ContainsAny(method+name, " /{}") {
		return fmt.Errorf("admin API route %q %q: want a method and a plain action name", method, name)
	}
	pattern := method + " /api/v1/" + name
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.routes[pattern] {
		return fmt.Errorf("admin API route %s is already registered", pattern)
	}
	if a.routes == nil {
		a.routes = map[string]bool{}
	}
	a.routes[pattern] = true
	a.mux.HandleFunc(pattern, a.authorized(h))
	return nil
}

// WriteJSON answers with v as indented JSON, as every admin API endpoint
// does.
func WriteJSON(w http.ResponseWriter, code int, v any) { writeJSON(w, code, v) }

// WriteError answers {"error": msg}, as every admin API endpoint does.
func WriteError(w http.ResponseWriter, code int, msg string) { writeError(w, code, msg) }

// routeProfiles serves Go's runtime profiles under /debug/pprof/, behind the
// admin API's token rules: a CPU profile costs the proxy CPU while it runs,
// and a goroutine dump shows what every session is doing.
func (a *Admin) routeProfiles() {
	a.mux.HandleFunc("GET /debug/pprof/", a.authorized(pprof.Index))
	a.mux.HandleFunc("GET /debug/pprof/cmdline", a.authorized(pprof.Cmdline))
	a.mux.HandleFunc("GET /debug/pprof/profile", a.authorized(pprof.Profile))
	a.mux.HandleFunc("GET /debug/pprof/symbol", a.authorized(pprof.Symbol))
	a.mux.HandleFunc("GET /debug/pprof/trace", a.authorized(pprof.Trace))
}

// Handle adds a route, for components that expose their own endpoints.
func (a *Admin) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Handler is the admin server's root handler, for tests. Until Serve runs,
// it treats every request as coming through a non-loopback listener.
func (a *Admin) Handler() http.Handler { return a.mux }

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, c := range a.checks {
		if err := c.Check(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s: %v\n", c.Name, err)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// Serve serves on l until Shutdown. Whether l is a loopback address decides
// which admin API requests need the token (see SetToken).
func (a *Admin) Serve(l net.Listener) error {
	a.loopback.Store(isLoopbackAddr(l.Addr()))
	err := a.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (a *Admin) Shutdown(ctx context.Context) error { return a.srv.Shutdown(ctx) }
