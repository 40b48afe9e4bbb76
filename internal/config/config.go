package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// Phases, in migration order.
const (
	PhasePassthrough = "passthrough"
	PhaseDualWrite   = "dual-write"
	PhaseKVPrimary   = "kv-primary"
	PhaseKVOnly      = "kv-only"
)

// Phases lists the valid phase names in migration order.
var Phases = []string{PhasePassthrough, PhaseDualWrite, PhaseKVPrimary, PhaseKVOnly}

// Config is every setting of kvproxy.
type Config struct {
	Listen   string       `yaml:"listen" desc:"address for PostgreSQL client connections"`
	Upstream string       `yaml:"upstream" desc:"DSN of the upstream PostgreSQL (postgres://user:pass@host:port/db?sslmode=...); empty: no upstream, everything is answered from the KV store"`
	Phase    string       `yaml:"phase" desc:"initial migration phase when none is stored yet: passthrough, dual-write, kv-primary or kv-only"`
	KV       KVConfig     `yaml:"kv"`
	TLS      TLSConfig    `yaml:"tls"`
	Auth     AuthConfig   `yaml:"auth"`
	Limits   LimitsConfig `yaml:"limits"`
	Relay    RelayConfig  `yaml:"relay"`
	Shadow   ShadowConfig `yaml:"shadow"`
	Admin    AdminConfig  `yaml:"admin"`
	Log      LogConfig    `yaml:"log"`
}

// TLSConfig enables TLS for clients.
type TLSConfig struct {
	CertFile string `yaml:"cert_file" desc:"PEM certificate for client TLS (SSLRequest); empty: clients are answered 'N' and stay in the clear"`
	KeyFile  string `yaml:"key_file" desc:"PEM private key for tls.cert_file"`
}

// AuthConfig is how clients authenticate to the proxy. The proxy
// authenticates to the upstream with the credentials of upstream.
type AuthConfig struct {
	Method    string `yaml:"method" desc:"client authentication: trust, scram-sha-256, md5 or password (password only over TLS)"`
	UsersFile string `yaml:"users_file" desc:"file of \"user\" \"secret\" lines (PgBouncer auth_file format; secrets: plaintext, md5..., or SCRAM-SHA-256 verifiers)"`
}

// LimitsConfig bounds what clients can make the proxy do.
type LimitsConfig struct {
	MaxMessageSize           int           `yaml:"max_message_size" desc:"largest client message in bytes; larger ones get 08P01 and a closed connection"`
	MaxConnections           int           `yaml:"max_connections" desc:"client sessions at once; more get FATAL 53300"`
	StartupTimeout           time.Duration `yaml:"startup_timeout" desc:"time a new client has to finish startup and authentication"`
	IdleInTransactionTimeout time.Duration `yaml:"idle_in_transaction_timeout" desc:"close sessions idle inside a transaction this long (FATAL 25P03); 0 disables"`
	ShutdownTimeout          time.Duration `yaml:"shutdown_timeout" desc:"on SIGTERM, how long open transactions may take to finish before sessions are closed"`
}

// RelayConfig tunes the passthrough relay.
type RelayConfig struct {
	Coalesce time.Duration `yaml:"coalesce" desc:"pause of a relay thread before it waits for more events while 16 or more of its sessions are busy, so that it handles them in batches; 0 (the default) disables"`
	// UpstreamPool is PgBouncer's session pooling for passthrough sessions.
	UpstreamPool        int           `yaml:"upstream_pool" desc:"upstream connections kept, reset with DISCARD ALL, for later clients after their client ended while idle (PgBouncer's session pooling); 0 closes each with its session"`
	UpstreamIdleTimeout time.Duration `yaml:"upstream_idle_timeout" desc:"how long a kept upstream connection may wait for a client before it is closed"`
}

// KVConfig selects the KV store.
type KVConfig struct {
	Driver string `yaml:"driver" desc:"KV driver: local, postgres, dynamodb or mem"`
	DSN    string `yaml:"dsn" desc:"driver-specific location of the KV store (local: file path; postgres: postgres URL; dynamodb: dynamodb://?endpoint=...&region=...&table=...)"`
}

// ShadowConfig tunes the live migration's checks and mirrors.
type ShadowConfig struct {
	ReadFraction  float64       `yaml:"read_fraction" desc:"fraction (0 to 1) of ref-store reads also run on the secondary store and compared, in dual-write"`
	ReadTimeout   time.Duration `yaml:"read_timeout" desc:"longest a shadow read may delay the client's answer; slower ones are abandoned"`
	MirrorTimeout time.Duration `yaml:"mirror_timeout" desc:"longest a dual write waits for the secondary store before acknowledging anyway (the key stays in the dirty-key log)"`
}

// AdminConfig is the admin HTTP server (/metrics, /healthz, /readyz, API).
type AdminConfig struct {
	Listen string `yaml:"listen" desc:"address of the admin HTTP server (metrics, health, API); empty disables it"`
	Token  string `yaml:"token" desc:"bearer token for the admin API (/api/v1/...): required for its POST actions, and for every /api request when admin.listen is not a loopback address, where it must be set"`
}

// LogConfig controls log/slog output.
type LogConfig struct {
	Level  string `yaml:"level" desc:"log level: debug, info, warn or error"`
	Format string `yaml:"format" desc:"log format: text or json"`
}

// Default is the embedded default: local KV store in ./data, clients on
// 127.0.0.1:6432, admin on 127.0.0.1:9187, phase kv-only, no upstream.
func Default() Config {
	return Config{
		Listen: "127.0.0.1:6432",
		Phase:  PhaseKVOnly,
		KV:     KVConfig{Driver: "local", DSN: "./data/kvproxy.db"},
		Auth:   AuthConfig{Method: "trust"},
		Limits: LimitsConfig{MaxMessageSize: 64 << 20, MaxConnections: 1000, StartupTimeout: 10 * time.Second, ShutdownTimeout: 30 * time.Second},
		Relay:  RelayConfig{UpstreamPool: 20, UpstreamIdleTimeout: time.Minute},
		Shadow: ShadowConfig{ReadFraction: 0.05, ReadTimeout: 50 * time.Millisecond, MirrorTimeout: 2 * time.Second},
		Admin:  AdminConfig{Listen: "127.0.0.1:9187"},
		Log:    LogConfig{Level: "info", Format: "text"},
	}
}

// Setting is one configuration key with its derived names.
type Setting struct {
	Key   string // YAML path, e.g. kv.driver
	Flag  string // e.g. kv-driver
	Env   string // e.g. KVPROXY_KV_DRIVER
	Desc  string
	field reflect.Value
}

// Settings lists every setting of c, in declaration order. The returned
// settings write into c.
func Settings(c *Config) []Setting {
	var out []Setting
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			key := prefix + f.Tag.Get("yaml")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
				walk(v.Field(i), key+".")
				continue
			}
			norm := strings.NewReplacer(".", "-", "_", "-").Replace(key)
			out = append(out, Setting{
				Key:   key,
				Flag:  norm,
				Env:   "KVPROXY_" + strings.ToUpper(strings.ReplaceAll(norm, "-", "_")),
				Desc:  f.Tag.Get("desc"),
				field: v.Field(i),
			})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// Set parses s into the setting's field.
func (s Setting) Set(value string) error {
	switch s.field.Interface().(type) {
	case string:
		s.field.SetString(value)
	case time.Duration:
		d, err := time.ParseDuration(value)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not a duration (e.g. 5s, 250ms)", ErrInvalid, s.Key, value)
		}
		s.field.SetInt(int64(d))
	case int:
		n, err := strconv.Atoi(value)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not an integer", ErrInvalid, s.Key, value)
		}
		s.field.SetInt(int64(n))
	case float64:
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not a number", ErrInvalid, s.Key, value)
		}
		s.field.SetFloat(f)
	case bool:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%w: %s: %q is not true or false", ErrInvalid, s.Key, value)
		}
		s.field.SetBool(b)
	default:
		return fmt.Errorf("%w: %s: unsupported type %s", ErrInvalid, s.Key, s.field.Type())
	}
	return nil
}

// String renders the setting's current value.
func (s Setting) String() string {
	if d, ok := s.field.Interface().(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(s.field.Interface())
}

// RegisterFlags adds one flag per setting to fs. Flags only record that they
// were given; Load applies them last so that they win over file and env.
func RegisterFlags(fs *pflag.FlagSet) {
	def := Default()
	for _, s := range Settings(&def) {
		fs.String(s.Flag, s.String(), s.Desc+" (env "+s.Env+")")
	}
}

// Load builds the configuration: defaults, then the YAML file (if path is
// not empty), then KVPROXY_* variables from environ, then the flags of fs
// that were set. It validates the result.
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, error) {
	c := Default()
	if path != "" {
		if err := loadFile(&c, path); err != nil {
			return c, err
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "KVPROXY_") {
			env[k] = v
		}
	}
	settings := Settings(&c)
	known := map[string]bool{"KVPROXY_CONFIG": true}
	for _, s := range settings {
		known[s.Env] = true
		if v, ok := env[s.Env]; ok {
			if err := s.Set(v); err != nil {
				return c, fmt.Errorf("%w (from environment variable %s)", err, s.Env)
			}
		}
	}
	for k := range env {
		if !known[k] && !strings.HasPrefix(k, "KVPROXY_TEST_") {
			return c, fmt.Errorf("%w: unknown environment variable %s (see deploy/kvproxy.example.yaml for the keys)", ErrInvalid, k)
		}
	}
	if fs != nil {
		for _, s := range settings {
			f := fs.Lookup(s.Flag)
			if f != nil && f.Changed {
				if err := s.Set(f.Value.String()); err != nil {
					return c, fmt.Errorf("%w (from flag --%s)", err, s.Flag)
				}
			}
		}
	}
	return c, c.Validate()
}

func loadFile(c *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: config file: %w", ErrInvalid, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) { // an empty file sets nothing
			return nil
		}
		return fmt.Errorf("%w: config file %s: %v", ErrInvalid, path, err)
	}
	return nil
}

// Validate checks every setting and names the first wrong key.
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, key, fmt.Sprintf(format, args...))
	}
	if err := checkHostPort(c.Listen); err != nil {
		return bad("listen", "%v", err)
	}
	if !oneOf(c.Phase, Phases...) {
		return bad("phase", "%q is not a phase; use one of %s", c.Phase, strings.Join(Phases, ", "))
	}
	if c.Upstream == "" && c.Phase != PhaseKVOnly {
		return bad("upstream", "phase %s needs an upstream PostgreSQL; set upstream (--upstream, KVPROXY_UPSTREAM) or use phase kv-only", c.Phase)
	}
	if c.Upstream != "" {
		if err := checkDSN(c.Upstream); err != nil {
			return bad("upstream", "%v", err)
		}
	}
	if c.KV.Driver == "" {
		return bad("kv.driver", "empty; use local, postgres, dynamodb or mem")
	}
	if c.KV.Driver != "mem" && c.KV.DSN == "" {
		return bad("kv.dsn", "empty; driver %s needs a DSN", c.KV.Driver)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return bad("tls.key_file", "tls.cert_file and tls.key_file go together; set both or neither")
	}
	for key, path := range map[string]string{"tls.cert_file": c.TLS.CertFile, "tls.key_file": c.TLS.KeyFile, "auth.users_file": c.Auth.UsersFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return bad(key, "%v", err)
		}
	}
	if !oneOf(c.Auth.Method, "trust", "scram-sha-256", "md5", "password") {
		return bad("auth.method", "%q; use trust, scram-sha-256, md5 or password", c.Auth.Method)
	}
	if c.Auth.Method != "trust" && c.Auth.UsersFile == "" {
		return bad("auth.users_file", "auth.method %s needs the users and their secrets", c.Auth.Method)
	}
	if c.Auth.Method == "password" && c.TLS.CertFile == "" {
		return bad("auth.method", "password sends passwords in the clear and needs TLS (tls.cert_file, tls.key_file); use scram-sha-256")
	}
	if c.Limits.MaxMessageSize < 1024 {
		return bad("limits.max_message_size", "%d bytes is too small; use at least 1024 (default 67108864)", c.Limits.MaxMessageSize)
	}
	if c.Limits.MaxConnections < 1 {
		return bad("limits.max_connections", "%d; use at least 1", c.Limits.MaxConnections)
	}
	for key, d := range map[string]time.Duration{"limits.startup_timeout": c.Limits.StartupTimeout, "limits.shutdown_timeout": c.Limits.ShutdownTimeout} {
		if d <= 0 {
			return bad(key, "%v; use a positive duration such as 10s", d)
		}
	}
	if c.Relay.UpstreamPool < 0 {
		return bad("relay.upstream_pool", "%d; use 0 (off) or a positive number of connections, e.g. 20", c.Relay.UpstreamPool)
	}
	if c.Relay.UpstreamIdleTimeout <= 0 {
		return bad("relay.upstream_idle_timeout", "%v; use a positive duration, e.g. 60s", c.Relay.UpstreamIdleTimeout)
	}
	if c.Relay.Coalesce < 0 || c.Relay.Coalesce >= time.Second {
		return bad("relay.coalesce", "%v; use 0 (off) or a positive duration below a second, e.g. 30us", c.Relay.Coalesce)
	}
	if c.Limits.IdleInTransactionTimeout < 0 {
		return bad("limits.idle_in_transaction_timeout", "%v; use 0 (off) or a positive duration", c.Limits.IdleInTransactionTimeout)
	}
	if c.Shadow.ReadFraction < 0 || c.Shadow.ReadFraction > 1 {
		return bad("shadow.read_fraction", "%v; use a number from 0 (off) to 1 (every read)", c.Shadow.ReadFraction)
	}
	for key, d := range map[string]time.Duration{"shadow.read_timeout": c.Shadow.ReadTimeout, "shadow.mirror_timeout": c.Shadow.MirrorTimeout} {
		if d <= 0 {
			return bad(key, "%v; use a positive duration", d)
		}
	}
	if c.Admin.Listen != "" {
		if err := checkHostPort(c.Admin.Listen); err != nil {
			return bad("admin.listen", "%v", err)
		}
		if c.Admin.Token == "" && !isLoopback(c.Admin.Listen) {
			return bad("admin.token", "required because admin.listen %s is not a loopback address", c.Admin.Listen)
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		return bad("log.level", "%q; use debug, info, warn or error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		return bad("log.format", "%q; use text or json", c.Log.Format)
	}
	return nil
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

func checkDSN(dsn string) error {
	if _, err := pgconn.ParseConfig(dsn); err != nil {
		return fmt.Errorf("not a valid PostgreSQL DSN: %v", err)
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
