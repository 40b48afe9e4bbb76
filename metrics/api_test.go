package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveAdmin runs a on a real listener at addr and returns the base URL
// (always reached through 127.0.0.1).
func serveAdmin(t *testing.T, a *metrics.Admin, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return "http://127.0.0.1:" + port
}

func do(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, url, raw)
	}
	return resp.StatusCode, out
}

func newAdmin(t *testing.T, token string) *metrics.Admin {
	t.Helper()
	a := metrics.NewAdmin(metrics.NewRegistry(), slog.New(slog.DiscardHandler))
	a.SetToken(token)
	ctl := control.NewStore(mem.New(), nil)
	if _, err := ctl.Init(context.Background(), control.DualWrite, "test"); err != nil {
		t.Fatal(err)
	}
	a.SetStatus(metrics.NewCollector(ctl, metrics.CollectorOptions{}))
	a.HandleAction("verify", func(_ context.Context, body []byte) (any, error) {
		var p struct{ Entity string }
		if len(body) > 0 {
			if err := json.Unmarshal(body, &p); err != nil {
				return nil, err
			}
		}
		switch p.Entity {
		case "bad":
			return nil, fmt.Errorf("entity %q: %w", p.Entity, metrics.ErrBadRequest)
		case "busy":
			return nil, fmt.Errorf("a backfill is running: %w", metrics.ErrConflict)
		case "boom":
			return nil, errors.New("kv store unreachable")
		}
		return map[string]any{"clean": true, "entity": p.Entity}, nil
	})
	return a
}

func TestAdminAPIAuthorization(t *testing.T) {
	const token = "s3cret-token"
	cases := []struct {
		name     string
		listen   string // listener address
		token    string // configured token
		method   string
		path     string
		send     string // token sent
		wantCode int
	}{
		{"loopback GET status is open", "127.0.0.1:0", token, "GET", "/api/v1/status", "", 200},
		{"loopback POST needs the token", "127.0.0.1:0", token, "POST", "/api/v1/verify", "", 401},
		{"loopback POST with a wrong token", "127.0.0.1:0", token, "POST", "/api/v1/verify", "s3cret-tokeN", 401},
		{"loopback POST with a prefix of the token", "127.0.0.1:0", token, "POST", "/api/v1/verify", "s3cret", 401},
		{"loopback POST with the token", "127.0.0.1:0", token, "POST", "/api/v1/verify", token, 200},
		{"loopback POST without a configured token", "127.0.0.1:0", "", "POST", "/api/v1/verify", "", 200},
		{"wildcard GET status needs the token", "0.0.0.0:0", token, "GET", "/api/v1/status", "", 401},
		{"wildcard GET status with the token", "0.0.0.0:0", token, "GET", "/api/v1/status", token, 200},
		{"wildcard POST with the token", "0.0.0.0:0", token, "POST", "/api/v1/verify", token, 200},
		{"wildcard POST with a wrong token", "0.0.0.0:0", token, "POST", "/api/v1/verify", "nope", 401},
		{"wildcard without a configured token refuses", "0.0.0.0:0", "", "GET", "/api/v1/status", "", 403},
		{"wildcard without a configured token refuses any token", "0.0.0.0:0", "", "POST", "/api/v1/verify", "anything", 403},
		{"wildcard metrics stay open for scrapers", "0.0.0.0:0", token, "GET", "/readyz", "", 200},
		{"loopback profiles are open", "127.0.0.1:0", token, "GET", "/debug/pprof/goroutine?debug=1", "", 200},
		{"wildcard profiles need the token", "0.0.0.0:0", token, "GET", "/debug/pprof/heap", "", 401},
		{"wildcard profiles with the token", "0.0.0.0:0", token, "GET", "/debug/pprof/heap", token, 200},
		{"wildcard profiles without a configured token refuse", "0.0.0.0:0", "", "GET", "/debug/pprof/", "", 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := serveAdmin(t, newAdmin(t, tc.token), tc.listen)
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			if tc.send != "" {
				req.Header.Set("Authorization", "Bearer "+tc.send)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.wantCode)
			}
			if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestAdminActions(t *testing.T) {
	const token = "tok"
	base := serveAdmin(t, newAdmin(t, token), "127.0.0.1:0")
	cases := []struct {
		path, body string
		wantCode   int
		wantField  string // key of the response object
		wantIn     string // substring of the JSON response
	}{
		{"/api/v1/verify", `{"entity":"commits"}`, 200, "result", `"entity":"commits"`},
		{"/api/v1/verify", ``, 200, "result", `"clean":true`},
		{"/api/v1/verify", `{"entity":"bad"}`, 400, "error", `entity \"bad\": bad request`},
		{"/api/v1/verify", `{"entity":"busy"}`, 409, "error", "a backfill is running"},
		{"/api/v1/verify", `{"entity":"boom"}`, 500, "error", "kv store unreachable"},
		{"/api/v1/verify", `{not json`, 400, "error", "not valid JSON"},
		{"/api/v1/backfill", `{}`, 501, "error", `action \"backfill\" is not available in this build`},
		{"/api/v1/cutover", ``, 501, "error", `action \"cutover\" is not available in this build`},
		{"/api/v1/rollback", ``, 501, "error", "not available in this build"},
		{"/api/v1/finalize", ``, 501, "error", "not available in this build"},
	}
	for _, tc := range cases {
		t.Run(tc.path+" "+tc.body, func(t *testing.T) {
			code, out := do(t, "POST", base+tc.path, token, tc.body)
			raw, _ := json.Marshal(out)
			if code != tc.wantCode {
				t.Fatalf("code = %d (%s), want %d", code, raw, tc.wantCode)
			}
			if _, ok := out[tc.wantField]; !ok {
				t.Errorf("response %s has no %q", raw, tc.wantField)
			}
			if !strings.Contains(string(raw), tc.wantIn) {
				t.Errorf("response %s does not contain %s", raw, tc.wantIn)
			}
		})
	}
}

func TestAdminHandlerWithoutServeIsStrict(t *testing.T) {
	// Before Serve has seen its listener, the API must not assume loopback.
	a := newAdmin(t, "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Handler()}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	code, _ := do(t, "GET", "http://"+l.Addr().String()+"/api/v1/status", "", "")
	if code != 403 {
		t.Fatalf("GET /api/v1/status through Handler() = %d, want 403", code)
	}
}

func TestStatusPageIsSelfContained(t *testing.T) {
	base := serveAdmin(t, newAdmin(t, "tok"), "0.0.0.0:0")
	for _, path := range []string{"/", "/status"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, want := range []string{`id="phase"`, `id="instances"`, `id="backfill-bar"`, `id="dirty-keys"`, `id="events"`, "api/v1/status", "setInterval"} {
			if !strings.Contains(page, want) {
				t.Errorf("page lacks %s", want)
			}
		}
		for _, bad := range []string{"http://", "https://", "<link", "src="} {
			if strings.Contains(page, bad) {
				t.Errorf("page references an external asset (%q)", bad)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("CSP = %q", csp)
		}
	}
	// Unknown paths are not the page.
	resp, err := http.Get(base + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /nope = %d, want 404", resp.StatusCode)
	}
}

func TestStatusNotAvailable(t *testing.T) {
	a := metrics.NewAdmin(metrics.NewRegistry(), slog.New(slog.DiscardHandler))
	base := serveAdmin(t, a, "127.0.0.1:0")
	code, out := do(t, "GET", base+"/api/v1/status", "", "")
	if code != 501 || !strings.Contains(fmt.Sprint(out["error"]), "not available") {
		t.Fatalf("GET /api/v1/status without a collector = %d %v", code, out)
	}
}
