package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestDefaultIsEmbeddedStore(t *testing.T) {
	c, err := Load("", nil, flags(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:6432", Phase: "kv-only",
		KV:     KVConfig{Driver: "local", DSN: "./data/kvproxy.db"},
		Auth:   AuthConfig{Method: "trust"},
		Limits: LimitsConfig{MaxMessageSize: 64 << 20, MaxConnections: 1000, StartupTimeout: 10 * time.Second, ShutdownTimeout: 30 * time.Second},
		Relay:  RelayConfig{UpstreamPool: 20, UpstreamIdleTimeout: time.Minute},
		Shadow: ShadowConfig{ReadFraction: 0.05, ReadTimeout: 50 * time.Millisecond, MirrorTimeout: 2 * time.Second},
		Admin:  AdminConfig{Listen: "127.0.0.1:9187"},
		Log:    LogConfig{Level: "info", Format: "text"},
	}
	if c != want {
		t.Fatalf("defaults = %+v, want %+v", c, want)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kvproxy.yaml")
	file := "listen: 127.0.0.1:7000\nkv:\n  driver: postgres\n  dsn: postgres://file/kv\nlog:\n  level: debug\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"KVPROXY_KV_DSN=postgres://env/kv", "KVPROXY_LISTEN=127.0.0.1:7001", "HOME=/x"}
	c, err := Load(path, env, flags(t, "--listen", "127.0.0.1:7002"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ key, got, want string }{
		{"listen (flag beats env and file)", c.Listen, "127.0.0.1:7002"},
		{"kv.dsn (env beats file)", c.KV.DSN, "postgres://env/kv"},
		{"kv.driver (file beats default)", c.KV.Driver, "postgres"},
		{"log.level (file)", c.Log.Level, "debug"},
		{"log.format (default)", c.Log.Format, "text"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.key, tc.got, tc.want)
		}
	}
}

func TestNamesAreDerivedFromKeys(t *testing.T) {
	var c Config
	got := map[string][2]string{}
	for _, s := range Settings(&c) {
		got[s.Key] = [2]string{s.Flag, s.Env}
		if s.Desc == "" {
			t.Errorf("%s has no desc tag", s.Key)
		}
	}
	want := map[string][2]string{
		"listen":       {"listen", "KVPROXY_LISTEN"},
		"upstream":     {"upstream", "KVPROXY_UPSTREAM"},
		"phase":        {"phase", "KVPROXY_PHASE"},
		"kv.driver":    {"kv-driver", "KVPROXY_KV_DRIVER"},
		"kv.dsn":       {"kv-dsn", "KVPROXY_KV_DSN"},
		"admin.listen": {"admin-listen", "KVPROXY_ADMIN_LISTEN"},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: flag/env = %v, want %v", k, got[k], w)
		}
	}
}

func TestInvalidNamesTheKey(t *testing.T) {
	cases := []struct {
		name string
		file string
		env  []string
		args []string
		want string // substring naming the key and the fix
	}{
		{"unknown phase", "", nil, []string{"--phase", "dual"}, "phase: \"dual\" is not a phase"},
		{"phase needs upstream", "", nil, []string{"--phase", "dual-write"}, "upstream: phase dual-write needs an upstream"},
		{"bad upstream", "", nil, []string{"--upstream", "postgres://h:notaport/db"}, "upstream: not a valid PostgreSQL DSN"},
		{"bad listen", "", nil, []string{"--listen", "6432"}, "listen: \"6432\" is not host:port"},
		{"empty dsn", "", []string{"KVPROXY_KV_DSN="}, nil, "kv.dsn: empty"},
		{"admin token on public listener", "", nil, []string{"--admin-listen", "0.0.0.0:9187"}, "admin.token: required"},
		{"bad log level", "", []string{"KVPROXY_LOG_LEVEL=loud"}, nil, "log.level"},
		{"unknown env", "", []string{"KVPROXY_LISTNE=x"}, nil, "unknown environment variable KVPROXY_LISTNE"},
		{"unknown file key", "listne: x\n", nil, nil, "field listne not found"},
		{"file type error", "kv: 3\n", nil, nil, "config file"},
		{"tls half set", "", nil, []string{"--tls-cert-file", "/etc/hosts"}, "tls.key_file: tls.cert_file and tls.key_file go together"},
		{"missing cert file", "", nil, []string{"--tls-cert-file", "/nonexistent.pem", "--tls-key-file", "/nonexistent.key"}, "tls."},
		{"unknown auth", "", nil, []string{"--auth-method", "kerberos"}, "auth.method: \"kerberos\""},
		{"scram needs users", "", nil, []string{"--auth-method", "scram-sha-256"}, "auth.users_file: auth.method scram-sha-256 needs"},
		{"password needs tls", "", nil, []string{"--auth-method", "password", "--auth-users-file", "/etc/hosts"}, "needs TLS"},
		{"bad duration", "", []string{"KVPROXY_LIMITS_STARTUP_TIMEOUT=soon"}, nil, "limits.startup_timeout: \"soon\" is not a duration"},
		{"zero startup timeout", "", nil, []string{"--limits-startup-timeout", "0s"}, "limits.startup_timeout: 0s"},
		{"shadow fraction", "", []string{"KVPROXY_SHADOW_READ_FRACTION=1.5"}, nil, "shadow.read_fraction: 1.5"},
		{"negative coalescing", "", nil, []string{"--relay-coalesce", "-1us"}, "relay.coalesce: -1µs; use 0 (off)"},
		{"coalescing of a second", "relay:\n  coalesce: 2s\n", nil, nil, "relay.coalesce: 2s"},
		{"negative upstream pool", "", []string{"KVPROXY_RELAY_UPSTREAM_POOL=-1"}, nil, "relay.upstream_pool: -1; use 0 (off)"},
		{"zero upstream idle timeout", "", nil, []string{"--relay-upstream-idle-timeout", "0s"}, "relay.upstream_idle_timeout: 0s"},
		{"tiny messages", "limits:\n  max_message_size: 10\n", nil, nil, "limits.max_message_size: 10 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(path, tc.env, flags(t, tc.args...))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil, nil)
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrInvalid wrapping ErrNotExist", err)
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c != Default() {
		t.Fatalf("got %+v, want defaults", c)
	}
}
