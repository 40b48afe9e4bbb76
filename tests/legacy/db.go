package legacy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// Version selects which SQL-era lakeFS the client imitates.
type Version int

const (
	// V068 is lakeFS v0.68.0: single-row reads (R1, B1, T1, C1) run in
	// their own serializable read-only transaction, Log uses C4, staging
	// Set runs serializable.
	V068 Version = iota
	// V070 is lakeFS v0.70.x: those reads run without a transaction, Log
	// uses C1, staging Set runs read committed. Statement texts are equal.
	V070
)

func (v Version) String() string {
	if v == V070 {
		return "v0.70"
	}
	return "v0.68"
}

// Errors of the db layer (lakeFS pkg/db).
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrSerialization = errors.New("serialization error")
	// ErrTxCommitRollback is pgx's: "commit" answered with the tag ROLLBACK.
	ErrTxCommitRollback = pgx.ErrTxCommitRollback
)

// Retry policy of lakeFS's Transact.
const (
	SerializationRetryMaxAttempts = 10
	SerializationRetryInterval    = 2 * time.Millisecond
)

// Config configures a Client, which is one legacy lakeFS process.
type Config struct {
	// DSN of PostgreSQL or of kvproxy. pgx DSN parameters apply, e.g.
	// statement_cache_mode and statement_cache_capacity (default prepare/512).
	DSN string
	// Pool sizes of the DB pool; lakeFS defaults are 25/25 (MaxConns/MinConns).
	// Zero MaxConns means 25; MinConns is used as given.
	MaxConns, MinConns int32
	// Pool sizes of the LockDB pool (the branch locker's); zero LockMaxConns
	// means MaxConns.
	LockMaxConns, LockMinConns int32
	// MaxConnLifetime of both pools; zero means 5m.
	MaxConnLifetime time.Duration
	// Version of lakeFS to imitate (V068 by default).
	Version Version
	// PageSize of listings (R3, B5, B6, T4, C5, C6, S7); zero means 1000.
	PageSize int
	// Clock and UUIDs make ids, timestamps and tokens deterministic; nil
	// means wall clock and random UUIDs.
	Clock Clock
	UUIDs UUIDSource
	// Ranges is the committed-data store (lakeFS's object storage); clients
	// that share repositories must share it. nil means a private one.
	Ranges *RangeStore
	// Recorder receives every statement's outcome; nil records nothing.
	Recorder *Recorder
	// OnStatement, if set, is told how long each statement took as the
	// client saw it (sent to result read), for latency benchmarks.
	OnStatement func(id string, elapsed time.Duration)
}

// Client is one legacy lakeFS process: two pools with the same DSN, DB for
// everything and LockDB for the branch locker.
type Client struct {
	DB     *pgxpool.Pool
	LockDB *pgxpool.Pool
	cfg    Config
}

// Open connects both pools. The pools connect lazily beyond MinConns.
func Open(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.DSN == "" {
		return nil, errors.New("legacy: empty DSN")
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 25
	}
	if cfg.MaxConns < 0 || cfg.MinConns < 0 || cfg.LockMaxConns < 0 || cfg.LockMinConns < 0 {
		return nil, fmt.Errorf("legacy: negative pool size")
	}
	if cfg.LockMaxConns == 0 {
		cfg.LockMaxConns = cfg.MaxConns
	}
	if cfg.MaxConnLifetime == 0 {
		cfg.MaxConnLifetime = 5 * time.Minute
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.PageSize < 1 {
		return nil, fmt.Errorf("legacy: page size %d", cfg.PageSize)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.UUIDs == nil {
		cfg.UUIDs = RandomUUIDs{}
	}
	if cfg.Ranges == nil {
		cfg.Ranges = NewRangeStore()
	}
	db, err := openPool(ctx, cfg.DSN, cfg.MaxConns, cfg.MinConns, cfg.MaxConnLifetime)
	if err != nil {
		return nil, err
	}
	lockDB, err := openPool(ctx, cfg.DSN, cfg.LockMaxConns, cfg.LockMinConns, cfg.MaxConnLifetime)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Client{DB: db, LockDB: lockDB, cfg: cfg}, nil
}

func openPool(ctx context.Context, dsn string, maxConns, minConns int32, lifetime time.Duration) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("legacy: parse DSN: %w", err)
	}
	pc.MaxConns = maxConns
	pc.MinConns = minConns
	pc.MaxConnLifetime = lifetime
	p, err := pgxpool.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("legacy: connect: %w", err)
	}
	return p, nil
}

// Close closes both pools.
func (c *Client) Close() {
	c.DB.Close()
	c.LockDB.Close()
}

// Config returns the effective configuration.
func (c *Client) Config() Config { return c.cfg }

// Recorder returns the recorder (nil if none).
func (c *Client) Recorder() *Recorder { return c.cfg.Recorder }

// TxMode is the BEGIN statement Transact sends.
type TxMode int

const (
	// TxReadWrite is lakeFS's default: serializable read write.
	TxReadWrite TxMode = iota
	// TxReadOnly is db.ReadOnly(): serializable read only.
	TxReadOnly
	// TxReadCommitted is WithIsolationLevel(pgx.ReadCommitted).
	TxReadCommitted
)

func (m TxMode) begin() string {
	switch m {
	case TxReadOnly:
		return SQLBeginSerializableRO
	case TxReadCommitted:
		return SQLBeginReadCommitted
	default:
		return SQLBeginSerializableRW
	}
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...interface{}) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...interface{}) (pgx.Rows, error)
}

// Q runs recorded statements on a transaction's connection or on a pool.
type Q struct {
	c *Client
	q querier
}

// NoTx returns a Q that runs each statement on the DB pool without a
// transaction (lakeFS's db.Get/Select/Exec outside Transact).
func (c *Client) NoTx() Q { return Q{c: c, q: c.DB} }

// Transact is lakeFS's db.Transact on the DB pool.
func (c *Client) Transact(ctx context.Context, mode TxMode, fn func(q Q) error) error {
	return c.transact(ctx, c.DB, mode, fn)
}

// transact runs fn between BEGIN and COMMIT on one connection of pool,
// retrying serialization failures (SQLSTATE 40001) of fn or of the commit
// up to 10 attempts with 2ms×attempt pauses, as lakeFS does.
func (c *Client) transact(ctx context.Context, pool *pgxpool.Pool, mode TxMode, fn func(q Q) error) error {
	var err error
	for attempt := 0; attempt < SerializationRetryMaxAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(SerializationRetryInterval * time.Duration(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		err = c.transactOnce(ctx, pool, mode, fn)
		if err == nil || !IsSerializationFailure(err) {
			return err
		}
	}
	// lakeFS returns a bare ErrSerialization: the 40001 must not stay in
	// the chain, or an enclosing Transact (the branch locker) would retry too.
	return fmt.Errorf("%w: %v", ErrSerialization, err)
}

func (c *Client) transactOnce(ctx context.Context, pool *pgxpool.Pool, mode TxMode, fn func(q Q) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// Release destroys a connection left inside a transaction (TxStatus
	// not idle), so a failed rollback cannot leak an open transaction.
	defer conn.Release()
	q := Q{c: c, q: conn}
	if _, err := q.exec(ctx, IDBegin, mode.begin()); err != nil {
		return err
	}
	if err := fn(q); err != nil {
		_, _ = q.exec(context.WithoutCancel(ctx), IDRollback, SQLRollback)
		return err
	}
	tag, err := q.exec(ctx, IDCommit, SQLCommit)
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" {
		return ErrTxCommitRollback
	}
	return nil
}

// IsSerializationFailure reports whether err carries SQLSTATE 40001.
func IsSerializationFailure(err error) bool {
	return SQLState(err) == "40001"
}

// SQLState returns the SQLSTATE of a PostgreSQL error in err's chain, or "".
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// mapErr is lakeFS's handleSQLError: 23505 becomes ErrAlreadyExists, other
// errors are prefixed with the statement. The driver error stays in the
// chain so SQLState still works.
func mapErr(id string, err error) error {
	if err == nil {
		return nil
	}
	if SQLState(err) == "23505" {
		return fmt.Errorf("%s: %w: %w", id, ErrAlreadyExists, err)
	}
	return fmt.Errorf("%s: %w", id, err)
}

// exec runs a statement and records its outcome.
func (q Q) exec(ctx context.Context, id, sql string, args ...interface{}) (pgconn.CommandTag, error) {
	start := time.Now()
	tag, err := q.q.Exec(ctx, sql, args...)
	q.c.timed(id, start)
	q.c.record(id, sql, args, nil, nil, tag, err)
	return tag, mapErr(id, err)
}

// query runs a statement, reads all rows as normalised values and records
// the outcome.
func (q Q) query(ctx context.Context, id, sql string, args ...interface{}) ([][]any, error) {
	start := time.Now()
	rows, err := q.q.Query(ctx, sql, args...)
	if err != nil {
		q.c.timed(id, start)
		q.c.record(id, sql, args, nil, nil, nil, err)
		return nil, mapErr(id, err)
	}
	var out [][]any
	var cols []Column
	for rows.Next() {
		if cols == nil {
			cols = columnsOf(rows.FieldDescriptions())
		}
		row, err := normalizeRow(rows)
		if err != nil {
			rows.Close()
			q.c.record(id, sql, args, cols, out, nil, err)
			return nil, mapErr(id, err)
		}
		out = append(out, row)
	}
	rows.Close()
	q.c.timed(id, start)
	if cols == nil {
		cols = columnsOf(rows.FieldDescriptions())
	}
	err = rows.Err()
	q.c.record(id, sql, args, cols, out, rows.CommandTag(), err)
	return out, mapErr(id, err)
}

func (c *Client) timed(id string, start time.Time) {
	if c.cfg.OnStatement != nil {
		c.cfg.OnStatement(id, time.Since(start))
	}
}

// queryOne is scany's Get: exactly the first row, ErrNotFound when none.
func (q Q) queryOne(ctx context.Context, id, sql string, args ...interface{}) ([]any, error) {
	rows, err := q.query(ctx, id, sql, args...)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return rows[0], nil
}

// read runs fn the way the imitated version runs single-row reads: in a
// serializable read-only transaction (v0.68) or directly on the pool (v0.70).
func (c *Client) read(ctx context.Context, fn func(q Q) error) error {
	if c.cfg.Version == V070 {
		return fn(c.NoTx())
	}
	return c.Transact(ctx, TxReadOnly, fn)
}

// Exec runs any statement through the recorder (statement id id), with
// lakeFS's error mapping; tests use it for statements outside the flows.
func (q Q) Exec(ctx context.Context, id, sql string, args ...any) (pgconn.CommandTag, error) {
	return q.exec(ctx, id, sql, args...)
}

// Query runs any statement through the recorder and returns its rows as
// the recorder's normalised values.
func (q Q) Query(ctx context.Context, id, sql string, args ...any) ([][]any, error) {
	return q.query(ctx, id, sql, args...)
}
