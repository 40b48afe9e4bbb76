package postgres

import (
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/kvproxy/kvproxy/internal/rawnet"
	"github.com/kvproxy/kvproxy/kv"
)

// Defaults, as in lakeFS v0.80.
const (
	DefaultTableName    = "kv"
	DefaultPartitions   = 100
	DefaultScanPageSize = 1000
	DefaultMaxConns     = 25
	// DefaultConnectTimeout bounds a connection attempt when the DSN has no
	// connect_timeout, so an unreachable server fails instead of hanging.
	DefaultConnectTimeout = 10 * time.Second

	paramTableName    = "lakefskv_table"
	paramScanPageSize = "scan_page_size"
	// PostgreSQL truncates identifiers to 63 bytes; the partitions add "_99".
	maxTableName = 63 - 3
)

// Config is a parsed DSN.
type Config struct {
	Pool         *pgxpool.Config
	TableName    string
	ScanPageSize int
}

// ParseDSN parses a postgres DSN with kvproxy's extra parameters. Errors wrap
// kv.ErrDriverConfiguration.
func ParseDSN(dsn string) (*Config, error) {
	if dsn == "" {
		return nil, fmt.Errorf("%w: postgres: empty DSN, want a PostgreSQL URL such as postgres://user@host:5432/db", kv.ErrDriverConfiguration)
	}
	// pgconn keeps unknown and pool_* parameters as runtime parameters; read
	// them before pgxpool consumes its own.
	raw, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres: %w", kv.ErrDriverConfiguration, err)
	}
	pool, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres: %w", kv.ErrDriverConfiguration, err)
	}
	// Raw socket reads and writes spare the runtime's monitor thread a
	// wake-up per operation (see internal/rawnet).
	pool.ConnConfig.DialFunc = rawnet.WrapDial(pool.ConnConfig.DialFunc)
	c := &Config{Pool: pool, TableName: DefaultTableName, ScanPageSize: DefaultScanPageSize}
	rp := pool.ConnConfig.RuntimeParams
	if t, ok := rp[paramTableName]; ok {
		if t == "" || len(t) > maxTableName {
			return nil, fmt.Errorf("%w: postgres: %s=%q: want 1 to %d bytes", kv.ErrDriverConfiguration, paramTableName, t, maxTableName)
		}
		c.TableName = t
		delete(rp, paramTableName)
	}
	if s, ok := rp[paramScanPageSize]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: postgres: %s=%q: want a positive integer", kv.ErrDriverConfiguration, paramScanPageSize, s)
		}
		c.ScanPageSize = n
		delete(rp, paramScanPageSize)
	}
	if _, ok := raw.RuntimeParams["pool_max_conns"]; !ok {
		pool.MaxConns = DefaultMaxConns
	}
	if pool.ConnConfig.ConnectTimeout <= 0 {
		pool.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	return c, nil
}
