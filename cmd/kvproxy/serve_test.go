package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

func run(ctx context.Context, args ...string) (string, error) {
	var out testenv.SyncBuffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestBadConfigurationExitsBeforeListening(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--phase", "sideways"}, "phase: \"sideways\" is not a phase"},
		{[]string{"serve", "--kv-driver", "bogus", "--kv-dsn", "x"}, "kv.driver=bogus"},
		{[]string{"serve", "--listen", "nope"}, "listen: \"nope\" is not host:port"},
		{[]string{"serve", "--config", "/nonexistent/kvproxy.yaml"}, "config file"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := run(ctx, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, err := run(context.Background(), "version")
	if err != nil || !strings.HasPrefix(out, "kvproxy ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestServeAdminEndpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out testenv.SyncBuffer
	cmd := newRootCmd()
	cmd.SetArgs([]string{"serve", "--kv-driver", "mem", "--admin-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	addrRe := regexp.MustCompile(`admin server listening" addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == "" && time.Now().Before(deadline); {
		if m := addrRe.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if addr == "" {
		cancel()
		t.Fatalf("admin server never listened; output:\n%s", out.String())
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "go_goroutines"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after its context was cancelled")
	}
}
