package dynamodb

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/kvproxy/kvproxy/kv"
)

// Defaults of a DSN.
const (
	DefaultTableName   = "kvstore"
	DefaultScanLimit   = 1000
	DefaultMaxAttempts = 10
	DefaultMaxBackoff  = 2 * time.Second
)

// Config is a parsed DSN.
type Config struct {
	Endpoint    string
	Region      string
	Table       string
	ScanLimit   int32
	CreateTable bool
	// ReadCapacityUnits and WriteCapacityUnits, when both are set, make
	// create_table provision throughput instead of on-demand billing.
	ReadCapacityUnits  int64
	WriteCapacityUnits int64
	MaxAttempts        int
	MaxBackoff         time.Duration
	Profile            string
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: dynamodb: "+format, append([]any{kv.ErrDriverConfiguration}, args...)...)
}

// ParseDSN parses a dynamodb:// DSN (see the package doc). Errors wrap
// kv.ErrDriverConfiguration and name the offending part.
func ParseDSN(dsn string) (*Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, bad("DSN is not a URL: %w", err)
	}
	if u.Scheme != "dynamodb" {
		return nil, bad("DSN scheme %q: want dynamodb://?region=...&table=...", u.Scheme)
	}
	if u.User != nil || u.Host != "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" || u.Opaque != "" {
		return nil, bad("DSN %q: put every setting in the query (dynamodb://?endpoint=...&table=...); host, path and credentials are not used", redact(u))
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, bad("DSN query: %w", err)
	}
	c := &Config{Table: DefaultTableName, ScanLimit: DefaultScanLimit, MaxAttempts: DefaultMaxAttempts, MaxBackoff: DefaultMaxBackoff}
	for name, vals := range q {
		if len(vals) != 1 {
			return nil, bad("parameter %s given %d times", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "endpoint":
			e, err := url.Parse(v)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
				return nil, bad("endpoint=%q: want an http:// or https:// URL", v)
			}
			c.Endpoint = v
		case "region":
			if v == "" {
				return nil, bad("region is empty")
			}
			c.Region = v
		case "table":
			// DynamoDB's own rule for table names.
			if len(v) < 3 || len(v) > 255 {
				return nil, bad("table=%q: want 3 to 255 characters", v)
			}
			for _, r := range v {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
					return nil, bad("table=%q: only letters, digits, '_', '-' and '.' are allowed", v)
				}
			}
			c.Table = v
		case "scan_limit":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 0 {
				return nil, bad("scan_limit=%q: want an integer >= 0", v)
			}
			c.ScanLimit = int32(n)
		case "create_table":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, bad("create_table=%q: want true or false", v)
			}
			c.CreateTable = b
		case "read_capacity_units", "write_capacity_units":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return nil, bad("%s=%q: want a positive integer", name, v)
			}
			if name == "read_capacity_units" {
				c.ReadCapacityUnits = n
			} else {
				c.WriteCapacityUnits = n
			}
		case "max_attempts":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return nil, bad("max_attempts=%q: want an integer from 1 to 100", v)
			}
			c.MaxAttempts = n
		case "max_backoff":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, bad("max_backoff=%q: want a positive duration such as 2s", v)
			}
			c.MaxBackoff = d
		case "profile":
			c.Profile = v
		default:
			return nil, bad("unknown parameter %q (known: endpoint, region, table, scan_limit, create_table, read_capacity_units, write_capacity_units, max_attempts, max_backoff, profile)", name)
		}
	}
	if (c.ReadCapacityUnits == 0) != (c.WriteCapacityUnits == 0) {
		return nil, bad("read_capacity_units and write_capacity_units go together")
	}
	return c, nil
}

func redact(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = url.User("xxx")
	return c.String()
}
