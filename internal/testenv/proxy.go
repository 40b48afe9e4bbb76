package testenv

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proxy is a kvproxy process started for a test.
type Proxy struct {
	Cmd       *exec.Cmd
	Addr      string // client listener host:port
	AdminAddr string // admin listener host:port, if enabled
	DSN       string // postgres://... DSN for clients

	mu   sync.Mutex
	logs []string
	done chan struct{}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Main runs a package's tests and then removes the kvproxy binary
// ProxyBinary built for them: a package that starts proxies calls it from
// TestMain (or RemoveProxyBinary from its own), or every run leaves a
// binary in the temporary folder.
func Main(m *testing.M) {
	code := m.Run()
	RemoveProxyBinary()
	os.Exit(code)
}

// RemoveProxyBinary removes what ProxyBinary built, if anything.
func RemoveProxyBinary() {
	if buildPath != "" {
		_ = os.RemoveAll(filepath.Dir(buildPath))
	}
}

// ProxyBinary builds cmd/kvproxy once per test binary and returns its path.
func ProxyBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvproxy-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "kvproxy")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/kvproxy")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/kvproxy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

var (
	readyRe = regexp.MustCompile(`msg="kvproxy ready" listen=(\S+)`)
	adminRe = regexp.MustCompile(`msg="admin server listening" addr=(\S+)`)
)

// StartProxy runs `kvproxy serve` with args (plus --listen and
// --admin-listen on free loopback ports unless given), waits until it is
// ready, and stops it (SIGTERM, then SIGKILL) when the test ends.
func StartProxy(t testing.TB, args ...string) *Proxy {
	t.Helper()
	return StartProxyEnv(t, nil, args...)
}

// StartProxyEnv is StartProxy with extra environment variables (KEY=VALUE).
func StartProxyEnv(t testing.TB, env []string, args ...string) *Proxy {
	t.Helper()
	bin := ProxyBinary(t)
	all := append([]string{"serve"}, args...)
	joined := " " + strings.Join(args, " ")
	if !strings.Contains(joined, " --listen") {
		all = append(all, "--listen", "127.0.0.1:0")
	}
	if !strings.Contains(joined, " --admin-listen") {
		all = append(all, "--admin-listen", "127.0.0.1:0")
	}
	cmd := exec.Command(bin, all...)
	cmd.Env = append(append(os.Environ(), "KVPROXY_LOG_LEVEL=debug"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			if m := adminRe.FindStringSubmatch(line); m != nil {
				p.AdminAddr = m[1]
			}
			if m := readyRe.FindStringSubmatch(line); m != nil && !signalled {
				p.Addr = m[1]
				p.DSN = "postgres://kvproxy@" + m[1] + "/kvproxy?sslmode=disable"
				signalled = true
				close(ready)
			}
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.Stop(t) })
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("kvproxy exited before it was ready:\n%s", p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("kvproxy not ready after 60s:\n%s", p.Logs())
	}
	return p
}

// Logs returns what the process logged so far.
func (p *Proxy) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.logs, "\n")
}

// Stop ends the process: SIGTERM, then SIGKILL after 20s.
func (p *Proxy) Stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Logf("kvproxy did not stop on SIGTERM; killing it")
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process with SIGKILL (a crash).
func (p *Proxy) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Exited tells whether the process has ended.
func (p *Proxy) Exited(ctx context.Context) bool {
	select {
	case <-p.done:
		return true
	case <-ctx.Done():
		return false
	}
}
