package wire

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// AuthMethod is how the proxy authenticates its clients.
type AuthMethod string

// Client authentication methods, named as in pg_hba.conf.
const (
	AuthTrust    AuthMethod = "trust"
	AuthPassword AuthMethod = "password"
	AuthMD5      AuthMethod = "md5"
	AuthSCRAM    AuthMethod = "scram-sha-256"
)

// Defaults applied by NewServer to zero-valued Config fields.
const (
	DefaultMaxMessageSize = 64 << 20
	DefaultMaxConnections = 1000
	DefaultStartupTimeout = 10 * time.Second
)

// Config configures a Server. The zero value (plus UpstreamDSN) is a trust
// proxy without TLS.
type Config struct {
	// Listen is the TCP address ListenAndServe listens on (host:port).
	Listen string
	// TLSCertFile and TLSKeyFile enable TLS for clients (SSLRequest -> 'S').
	TLSCertFile, TLSKeyFile string
	// TLSConfig, if set, is used instead of the files.
	TLSConfig *tls.Config

	// Auth is the client authentication method; "" means trust.
	Auth AuthMethod
	// UsersFile holds lines `"user" "secret"` (see ParseUsers). Entries in
	// Users take precedence over the file.
	UsersFile string
	// Users maps user name to secret: a plaintext password, "md5" + md5(password
	// + user) in hex, or a SCRAM-SHA-256 verifier as stored in pg_authid.
	Users map[string]string

	// UpstreamDSN is the libpq-style DSN (URL or key=value) the proxy uses to
	// connect to PostgreSQL with its own credentials, sslmode included. Empty
	// means there is no upstream: every statement is answered locally.
	UpstreamDSN string

	// MaxMessageSize bounds any single client message (default 64 MiB).
	MaxMessageSize int
	// MaxConnections bounds concurrent client sessions (default 1000);
	// clients beyond it get FATAL 53300.
	MaxConnections int
	// StartupTimeout bounds the startup and authentication of a client
	// (default 10s); a client that sends nothing is dropped after it.
	StartupTimeout time.Duration
	// IdleInTransactionTimeout, if > 0, closes sessions that stay idle inside
	// a transaction longer than this (FATAL 25P03).
	IdleInTransactionTimeout time.Duration
	// ParameterStatus are reported to clients when there is no upstream, on top
	// of DefaultParameterStatus. With an upstream, the upstream's are used.
	ParameterStatus map[string]string

	// NoEventLoop makes passthrough sessions use two goroutines each instead
	// of the shared epoll loop (Linux, plain TCP, no idle-in-transaction
	// timeout), which costs fewer syscalls and context switches per message.
	NoEventLoop bool
	// RelayCoalesce is how long a relay thread pauses before waiting for
	// more events when at least 16 of its sessions were busy within the
	// last millisecond and its last wait returned only a few events, so
	// that it handles them in batches (fewer wake-ups per statement). 0 or
	// a negative value: no pause (the default). Sessions busy alone or in
	// small groups never pause.
	RelayCoalesce time.Duration

	// UpstreamPoolSize, if > 0, keeps up to this many upstream connections
	// of sessions that ended cleanly (Terminate while idle) for the next
	// sessions with the same startup parameters, after Sync and DISCARD
	// ALL: PgBouncer's session pooling. 0 closes a session's upstream
	// connection with the session.
	UpstreamPoolSize int
	// UpstreamIdleTimeout closes a pooled upstream connection unused for
	// this long (default 60s).
	UpstreamIdleTimeout time.Duration

	// Observer, if set, is told about connections opening and closing.
	Observer Observer
}

// DefaultParameterStatus is what the proxy reports without an upstream.
func DefaultParameterStatus() map[string]string {
	return map[string]string{
		"server_version":              "16.0",
		"server_encoding":             "UTF8",
		"client_encoding":             "UTF8",
		"DateStyle":                   "ISO, MDY",
		"IntervalStyle":               "postgres",
		"integer_datetimes":           "on",
		"standard_conforming_strings": "on",
		"TimeZone":                    "UTC",
		"is_superuser":                "off",
	}
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("wire: invalid configuration")

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.Auth == "" {
		out.Auth = AuthTrust
	}
	switch out.Auth {
	case AuthTrust, AuthPassword, AuthMD5, AuthSCRAM:
	default:
		return out, fmt.Errorf("%w: unknown auth method %q (trust, password, md5, scram-sha-256)", ErrConfig, out.Auth)
	}
	if out.MaxMessageSize <= 0 {
		out.MaxMessageSize = DefaultMaxMessageSize
	}
	if out.MaxConnections <= 0 {
		out.MaxConnections = DefaultMaxConnections
	}
	if out.StartupTimeout <= 0 {
		out.StartupTimeout = DefaultStartupTimeout
	}
	if out.UpstreamPoolSize < 0 {
		return out, fmt.Errorf("%w: upstream pool size %d is negative", ErrConfig, out.UpstreamPoolSize)
	}
	if out.UpstreamIdleTimeout <= 0 {
		out.UpstreamIdleTimeout = DefaultUpstreamIdleTimeout
	}
	users := map[string]string{}
	if out.UsersFile != "" {
		f, err := os.Open(out.UsersFile)
		if err != nil {
			return out, fmt.Errorf("%w: users file: %w", ErrConfig, err)
		}
		fu, err := ParseUsers(f)
		f.Close()
		if err != nil {
			return out, fmt.Errorf("%w: users file %s: %w", ErrConfig, out.UsersFile, err)
		}
		for k, v := range fu {
			users[k] = v
		}
	}
	for k, v := range c.Users {
		users[k] = v
	}
	out.Users = users
	for u, s := range users {
		if _, err := parseSecret(s); err != nil {
			return out, fmt.Errorf("%w: user %q: %w", ErrConfig, u, err)
		}
	}
	if out.Auth != AuthTrust && len(users) == 0 {
		return out, fmt.Errorf("%w: auth %s needs users (UsersFile or Users)", ErrConfig, out.Auth)
	}
	if out.TLSConfig == nil && (out.TLSCertFile != "" || out.TLSKeyFile != "") {
		cert, err := tls.LoadX509KeyPair(out.TLSCertFile, out.TLSKeyFile)
		if err != nil {
			return out, fmt.Errorf("%w: TLS: %w", ErrConfig, err)
		}
		out.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ps := DefaultParameterStatus()
	for k, v := range c.ParameterStatus {
		ps[k] = v
	}
	out.ParameterStatus = ps
	return out, nil
}

// ParseUsers reads a users file: one user per line, `"name" "secret"`, the
// format of PgBouncer's auth_file. Quotes are optional for values without
// spaces; a doubled quote inside quotes is a literal quote; blank lines and
// lines starting with # or ; are ignored.
func ParseUsers(r io.Reader) (map[string]string, error) {
	users := map[string]string{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		var fields []string
		for s != "" && len(fields) < 3 {
			var tok string
			var err error
			tok, s, err = nextToken(s)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			fields = append(fields, tok)
			s = strings.TrimLeft(s, " \t")
		}
		if len(fields) < 2 {
			return nil, fmt.Errorf("line %d: want \"user\" \"secret\"", line)
		}
		if _, err := parseSecret(fields[1]); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		users[fields[0]] = fields[1]
	}
	return users, sc.Err()
}

func nextToken(s string) (tok, rest string, err error) {
	if s[0] != '"' {
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			return s, "", nil
		}
		return s[:i], s[i:], nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String(), s[i+1:], nil
		}
		b.WriteByte(s[i])
	}
	return "", "", errors.New("unterminated quote")
}

// DefaultUpstreamIdleTimeout is UpstreamIdleTimeout's default.
const DefaultUpstreamIdleTimeout = 60 * time.Second

func (c *Config) relayCoalesce() time.Duration { return max(c.RelayCoalesce, 0) }
