package metrics

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ActionNames are the actions the admin API documents; each answers 501
// until a handler is registered with HandleAction.
func ActionNames() []string { return []string{"backfill", "verify", "cutover", "rollback", "finalize"} }

// ActionFunc runs one admin action. body is the request body (JSON or
// empty); the result is returned to the caller as JSON.
type ActionFunc func(ctx context.Context, body []byte) (any, error)

// ErrBadRequest may be wrapped by an ActionFunc error to answer 400 instead
// of 500 (bad parameters, preconditions the caller can fix).
var ErrBadRequest = errors.New("bad request")

// ErrConflict may be wrapped by an ActionFunc error to answer 409 (the
// action cannot run in the current phase, or another one is in progress).
var ErrConflict = errors.New("conflict")

// maxActionBody bounds POST bodies: actions take a few parameters at most.
const maxActionBody = 1 << 20

// SetToken sets the bearer token for the admin API. It must be called
// before Serve. With a token, every POST needs it; on a listener that is
// not loopback every /api/ request needs it, and with no token configured
// such requests are refused (config validation normally prevents that).
func (a *Admin) SetToken(token string) { a.token = token }

// SetStatus makes GET /api/v1/status answer from c.
func (a *Admin) SetStatus(c *Collector) {
	a.mu.Lock()
	a.status = c
	a.mu.Unlock()
}

// HandleAction routes POST /api/v1/{name} to fn. Names not in ActionNames are
// accepted too, for components that add their own.
func (a *Admin) HandleAction(name string, fn ActionFunc) {
	a.mu.Lock()
	a.actions[name] = fn
	a.mu.Unlock()
}

func (a *Admin) routeAPI() {
	a.mux.HandleFunc("GET /api/v1/status", a.authorized(a.getStatus))
	a.mux.HandleFunc("POST /api/v1/{action}", a.authorized(a.postAction))
	a.mux.HandleFunc("GET /{$}", a.page)
	a.mux.HandleFunc("GET /status", a.page)
}

// authorized enforces the token rules of SetToken.
func (a *Admin) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		need := !read || !a.loopback.Load()
		if !need {
			// Loopback GETs are open even with a token, so that the status
			// page and `kvproxy status --admin-url` work on the host.
			h(w, r)
			return
		}
		if a.token == "" {
			if a.loopback.Load() {
				h(w, r) // loopback without a token: only local users can reach it
				return
			}
			writeError(w, http.StatusForbidden, "the admin API is disabled: admin.listen is not a loopback address and no admin.token is configured")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !tokenEqual(got, a.token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvproxy"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <admin.token>)")
			return
		}
		h(w, r)
	}
}

// tokenEqual compares digests so that neither the contents nor the length
// of the token leak through timing.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

func (a *Admin) getStatus(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	c := a.status
	a.mu.Unlock()
	if c == nil {
		writeError(w, http.StatusNotImplemented, "status is not available in this build")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	doc, err := c.Status(ctx)
	if err != nil {
		a.log.Warn("admin status", "err", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func (a *Admin) postAction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("action")
	a.mu.Lock()
	fn := a.actions[name]
	a.mu.Unlock()
	if fn == nil {
		writeError(w, http.StatusNotImplemented, fmt.Sprintf("action %q is not available in this build", name))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxActionBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body: %v", err))
		return
	}
	if len(body) > 0 && !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "request body is not valid JSON")
		return
	}
	a.log.Info("admin action", "action", name, "remote", r.RemoteAddr)
	res, err := fn(r.Context(), body)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, ErrConflict):
			code = http.StatusConflict
		}
		a.log.Warn("admin action failed", "action", name, "err", err)
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": name, "result": res})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"error": msg})
	_, _ = w.Write(append(b, '\n'))
}

// isLoopbackAddr tells whether a listener address only accepts local
// connections.
func isLoopbackAddr(addr net.Addr) bool {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusPage is a string so that nothing can modify it.
//
//go:embed statuspage.html
var statusPage string

// page serves the status page. It holds no data itself (it reads
// /api/v1/status from the browser), so it is served without the token.
func (a *Admin) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	// Everything is inline; forbid anything else so that the page cannot
	// be made to load outside code.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
	_, _ = io.WriteString(w, statusPage)
}
