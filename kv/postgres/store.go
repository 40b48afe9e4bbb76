package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/kvproxy/kvproxy/kv"
)

// DriverName is the name postgres has in kv/drivers.
const DriverName = "postgres"

// Store is the PostgreSQL driver.
type Store struct {
	pool      *pgxpool.Pool
	table     string // sanitized
	tableName string
	pageSize  int
	closed    atomic.Bool
	// copySkip counts down the InsertIfAbsent calls that skip COPY.
	copySkip atomic.Int32

	sqlGet, sqlSet, sqlInsert, sqlUpdateIf, sqlDelete string
	sqlScanAll, sqlScanFrom, sqlScanAfter             string
	sqlLockRow, sqlDeleteIf                           string
	sqlShareRow, sqlUpdate                            string
}

// Open matches the kv/drivers opener signature.
func Open(ctx context.Context, dsn string) (kv.Store, error) {
	s, err := New(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// New parses dsn, connects, and creates the table if it does not exist.
func New(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	return NewWithConfig(ctx, cfg)
}

// NewWithConfig is New with an already parsed DSN.
func NewWithConfig(ctx context.Context, cfg *Config) (*Store, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg.Pool)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres: %w", kv.ErrConnectFailed, err)
	}
	if err := setup(ctx, pool, cfg.TableName); err != nil {
		pool.Close()
		return nil, err
	}
	t := pgx.Identifier{cfg.TableName}.Sanitize()
	return &Store{
		pool:      pool,
		table:     t,
		tableName: cfg.TableName,
		pageSize:  cfg.ScanPageSize,

		sqlGet:       `SELECT value FROM ` + t + ` WHERE key = $1 AND partition_key = $2`,
		sqlSet:       `INSERT INTO ` + t + `(partition_key,key,value) VALUES($1,$2,$3) ON CONFLICT (partition_key,key) DO UPDATE SET value = $3`,
		sqlInsert:    `INSERT INTO ` + t + `(partition_key,key,value) VALUES($1,$2,$3) ON CONFLICT DO NOTHING`,
		sqlUpdateIf:  `UPDATE ` + t + ` SET value=$3 WHERE key=$2 AND partition_key=$1 AND value=$4`,
		sqlDelete:    `DELETE FROM ` + t + ` WHERE partition_key=$1 AND key=$2`,
		sqlScanAll:   `SELECT key,value FROM ` + t + ` WHERE partition_key=$1 ORDER BY key LIMIT $2`,
		sqlScanFrom:  `SELECT key,value FROM ` + t + ` WHERE partition_key=$1 AND key >= $2 ORDER BY key LIMIT $3`,
		sqlScanAfter: `SELECT key,value FROM ` + t + ` WHERE partition_key=$1 AND key > $2 ORDER BY key LIMIT $3`,
		sqlLockRow:   `SELECT value FROM ` + t + ` WHERE partition_key=$1 AND key=$2 FOR UPDATE`,
		sqlDeleteIf:  `DELETE FROM ` + t + ` WHERE partition_key=$1 AND key=$2 AND value=$3`,
		sqlShareRow:  `SELECT value FROM ` + t + ` WHERE partition_key=$1 AND key=$2 FOR SHARE`,
		sqlUpdate:    `UPDATE ` + t + ` SET value=$3 WHERE key=$2 AND partition_key=$1`,
	}, nil
}

// AdvisoryLockID is the key of the session advisory lock lakeFS holds while
// it creates the table; kvproxy takes the same one so that both serialize.
func AdvisoryLockID(table string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte("lakefs:" + table))
	return int64(h.Sum32())
}

// SetupStatements are the DDL statements lakeFS v0.80 runs on every Open,
// byte for byte (including the missing space after the second EXISTS).
func SetupStatements(table string) []string {
	t := pgx.Identifier{table}.Sanitize()
	stmts := []string{`CREATE TABLE IF NOT EXISTS ` + t + ` (
		partition_key BYTEA NOT NULL,
		key BYTEA NOT NULL,
		value BYTEA NOT NULL,
		PRIMARY KEY (partition_key, key))
	PARTITION BY HASH (partition_key)`}
	for i := range DefaultPartitions {
		stmts = append(stmts, `CREATE TABLE IF NOT EXISTS`+pgx.Identifier{table + "_" + strconv.Itoa(i)}.Sanitize()+
			` PARTITION OF `+t+` FOR VALUES WITH (MODULUS `+strconv.Itoa(DefaultPartitions)+`,REMAINDER `+strconv.Itoa(i)+`)`)
	}
	stmts = append(stmts, `CREATE OR REPLACE VIEW `+pgx.Identifier{table + "_v"}.Sanitize()+
		` AS SELECT ENCODE(partition_key, 'escape') AS partition_key, ENCODE(key, 'escape') AS key, value FROM `+t)
	return stmts
}

// setup runs the DDL in one transaction under lakeFS's advisory lock (as a
// transaction lock, so a crash cannot leave it held). The lock serializes
// concurrent openers, whose CREATE TABLE IF NOT EXISTS would otherwise race
// on pg_type and fail with a unique violation.
func setup(ctx context.Context, pool *pgxpool.Pool, table string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return wrapErr(ctx, "connect", err)
	}
	defer conn.Release()
	// One simple-protocol query: a single round trip and one implicit
	// transaction for the lock and all statements.
	sql := "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(AdvisoryLockID(table), 10) + ");\n" +
		strings.Join(SetupStatements(table), ";\n")
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		var pgErr *pgconn.PgError
		// An opener that does not take the lock (an old lakeFS) can still
		// race us; the statements are idempotent, so try again.
		if attempt < 3 && errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07") {
			continue
		}
		break
	}
	if err != nil {
		if isConnErr(err) || ctx.Err() != nil {
			return wrapErr(ctx, "setup", err)
		}
		return fmt.Errorf("%w: postgres: create table %s: %w", kv.ErrSetupFailed, table, err)
	}
	return nil
}

func isConnErr(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// wrapErr names the operation and makes the cause matchable: a cancelled or
// expired context as context.Canceled / DeadlineExceeded, a failed
// connection as kv.ErrConnectFailed.
func wrapErr(ctx context.Context, op string, err error) error {
	switch {
	case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
		return fmt.Errorf("postgres %s: %w (%w)", op, ctx.Err(), err)
	case isConnErr(err):
		return fmt.Errorf("postgres %s: %w: %w", op, kv.ErrConnectFailed, err)
	default:
		return fmt.Errorf("postgres %s: %w", op, err)
	}
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return kv.ErrClosed
	}
	return ctx.Err()
}

func (s *Store) Get(ctx context.Context, partitionKey, key []byte) (*kv.ValueWithPredicate, error) {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	var val []byte
	err := s.pool.QueryRow(ctx, s.sqlGet, key, partitionKey).Scan(&val)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("key=%q: %w", key, kv.ErrNotFound)
	}
	if err != nil {
		return nil, wrapErr(ctx, "get", err)
	}
	if val == nil {
		val = []byte{} // the column is NOT NULL: nil can only mean empty
	}
	return &kv.ValueWithPredicate{Value: val, Predicate: kv.Predicate(bytes.Clone(val))}, nil
}

func (s *Store) Set(ctx context.Context, partitionKey, key, value []byte) error {
	if err := kv.CheckWrite(partitionKey, key, value); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.sqlSet, partitionKey, key, value); err != nil {
		return wrapErr(ctx, "set", err)
	}
	return nil
}

func (s *Store) SetIf(ctx context.Context, partitionKey, key, value []byte, pred kv.Predicate) error {
	if err := kv.CheckWrite(partitionKey, key, value); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	var (
		tag pgconn.CommandTag
		err error
	)
	if pred == nil {
		tag, err = s.pool.Exec(ctx, s.sqlInsert, partitionKey, key, value)
	} else {
		tag, err = s.pool.Exec(ctx, s.sqlUpdateIf, partitionKey, key, value, []byte(pred))
	}
	if err != nil {
		return wrapErr(ctx, "setIf", err)
	}
	if tag.RowsAffected() != 1 {
		return kv.ErrPredicateFailed
	}
	return nil
}

func (s *Store) Delete(ctx context.Context, partitionKey, key []byte) error {
	if err := kv.CheckKey(partitionKey, key); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, s.sqlDelete, partitionKey, key); err != nil {
		return wrapErr(ctx, "delete", err)
	}
	return nil
}

var errPlaceholderRace = errors.New("key was inserted and deleted concurrently while locking it")

// Batch applies ops in one transaction; see the package doc for how
// conditions are held until commit.
func (s *Store) Batch(ctx context.Context, ops []kv.Op) error {
	if err := kv.CheckOps(ops); err != nil {
		return err
	}
	if err := s.check(ctx); err != nil {
		return err
	}
	keys := kv.GroupOps(ops)
	if len(keys) == 0 {
		return nil
	}
	if len(keys) == 1 {
		if err, ok := s.batchOne(ctx, keys[0]); ok {
			return err
		}
	}
	if err, ok := s.batchPipelined(ctx, keys); ok {
		return err
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return wrapErr(ctx, "batch", err)
	}
	// Rollback after Commit is a no-op; it also runs on every early return.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Conditions first, each holding its row lock until commit; then the
	// writes, pipelined in one round trip.
	var writes pgx.Batch
	for _, k := range keys {
		if err := s.batchKey(ctx, tx, k, &writes); err != nil {
			if errors.Is(err, kv.ErrPredicateFailed) {
				return err
			}
			return wrapErr(ctx, "batch", err)
		}
	}
	if writes.Len() > 0 {
		if err := tx.SendBatch(ctx, &writes).Close(); err != nil {
			return wrapErr(ctx, "batch", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return wrapErr(ctx, "batch commit", err)
	}
	return nil
}

// expectation says what every condition on a key needs: the key absent,
// the key present (with some value), or a mix (only the sequential path
// handles that).
func expectation(k kv.KeyOps) (absent, present bool) {
	for _, c := range k.Conds {
		if c.Predicate == nil && c.Kind != kv.OpDeleteIf {
			absent = true
		} else {
			present = true
		}
	}
	return absent, present
}

// batchPipelined is Batch in two round trips: BEGIN and every condition's
// lock in one pipeline, then the writes and COMMIT in another (one
// pipeline in all when there are no conditions). A key whose conditions
// all need it absent gets a placeholder row (inserted: it was absent, and
// our uncommitted row makes concurrent inserts wait; not inserted: it
// exists, the condition fails); one whose conditions all need it present
// is locked with SELECT ... FOR UPDATE, or FOR SHARE when it is only
// checked (absent: the condition fails). Statements of a pipeline run in
// order, so locks are still taken in GroupOps' key order. ok is false, and
// nothing was sent, when a key mixes both kinds of condition.
func (s *Store) batchPipelined(ctx context.Context, keys []kv.KeyOps) (err error, ok bool) {
	type probe struct {
		k           *kv.KeyOps
		placeholder bool
	}
	var probes []probe
	for i := range keys {
		k := &keys[i]
		if len(k.Conds) == 0 {
			continue
		}
		absent, present := expectation(*k)
		if absent && present {
			return nil, false
		}
		probes = append(probes, probe{k: k, placeholder: absent})
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return wrapErr(ctx, "batch", err), true
	}
	defer conn.Release()
	open := false
	defer func() {
		if !open {
			return
		}
		// The transaction is still open (a failed condition, an error):
		// end it, or drop the connection so the pool cannot reuse it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, rerr := conn.Exec(rctx, "ROLLBACK"); rerr != nil {
			_ = conn.Conn().Close(rctx)
		}
	}()
	var b pgx.Batch
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	for _, p := range probes {
		switch {
		case p.placeholder:
			b.Queue(s.sqlInsert, p.k.PartitionKey, p.k.Key, []byte{})
		case p.k.Write == kv.WriteNone:
			b.Queue(s.sqlShareRow, p.k.PartitionKey, p.k.Key)
		default:
			b.Queue(s.sqlLockRow, p.k.PartitionKey, p.k.Key)
		}
	}
	inserted := make(map[*kv.KeyOps]bool, len(probes))
	if len(probes) > 0 {
		open = true
		br := conn.SendBatch(ctx, &b)
		failed := false
		_, err := br.Exec()
		for _, p := range probes {
			if err != nil {
				break
			}
			if p.placeholder {
				var tag pgconn.CommandTag
				tag, err = br.Exec()
				inserted[p.k] = tag.RowsAffected() == 1
				failed = failed || (err == nil && !inserted[p.k])
				continue
			}
			var cur []byte
			err = br.QueryRow().Scan(&cur)
			exists := err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil
			}
			if cur == nil {
				cur = []byte{}
			}
			failed = failed || (err == nil && !p.k.Holds(exists, cur))
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return wrapErr(ctx, "batch", err), true
		}
		if failed {
			return kv.ErrPredicateFailed, true
		}
		b = pgx.Batch{}
	}
	for i := range keys {
		k := &keys[i]
		switch {
		case k.Write == kv.WritePut:
			b.Queue(s.sqlSet, k.PartitionKey, k.Key, k.Value)
		case k.Write == kv.WriteDelete || inserted[k]:
			b.Queue(s.sqlDelete, k.PartitionKey, k.Key)
		}
	}
	b.Queue("COMMIT")
	open = true
	br := conn.SendBatch(ctx, &b)
	var tag pgconn.CommandTag
	for range b.Len() {
		if tag, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return wrapErr(ctx, "batch", err), true
	}
	// COMMIT of a transaction that failed answers ROLLBACK, not an error.
	if tag.String() != "COMMIT" {
		return wrapErr(ctx, "batch commit", fmt.Errorf("transaction was rolled back (%s)", tag)), true
	}
	open = false
	return nil, true
}

// batchKey checks the key's conditions under a row lock and queues its
// write (or the removal of a placeholder row) into writes.
func (s *Store) batchKey(ctx context.Context, tx pgx.Tx, k kv.KeyOps, writes *pgx.Batch) error {
	placeholder := false
	if len(k.Conds) > 0 {
		// A key that is only checked needs to stay unchanged, not to be
		// ours: a share lock lets concurrent batches check it too (every
		// writer of a repository checks its record).
		exists, cur, err := s.lockKey(ctx, tx, k.PartitionKey, k.Key, k.Write == kv.WriteNone)
		if err != nil {
			return err
		}
		placeholder = !exists
		if !k.Holds(exists, cur) {
			return kv.ErrPredicateFailed
		}
	}
	switch {
	case k.Write == kv.WritePut:
		writes.Queue(s.sqlSet, k.PartitionKey, k.Key, k.Value)
	case k.Write == kv.WriteDelete || placeholder:
		writes.Queue(s.sqlDelete, k.PartitionKey, k.Key)
	}
	return nil
}

// batchOne applies a batch on a single key as one statement, without a
// transaction: one round trip instead of four or more. Conditional writes
// are compare-and-set statements (PostgreSQL re-checks an UPDATE's or
// DELETE's WHERE on the latest row version, so they are atomic); a pure
// check is one read. ok is false for shapes it does not cover (several
// conditions on the key), which take the transaction path.
func (s *Store) batchOne(ctx context.Context, k kv.KeyOps) (err error, ok bool) {
	var (
		tag   pgconn.CommandTag
		query string
		args  []any
	)
	switch len(k.Conds) {
	case 0:
		switch k.Write {
		case kv.WritePut:
			_, err = s.pool.Exec(ctx, s.sqlSet, k.PartitionKey, k.Key, k.Value)
		case kv.WriteDelete:
			_, err = s.pool.Exec(ctx, s.sqlDelete, k.PartitionKey, k.Key)
		default:
			return nil, true
		}
		if err != nil {
			return wrapErr(ctx, "batch", err), true
		}
		return nil, true
	case 1:
	default:
		return nil, false
	}
	c := k.Conds[0]
	wantAbsent := c.Predicate == nil && c.Kind != kv.OpDeleteIf
	switch {
	case k.Write == kv.WriteNone || (wantAbsent && k.Write == kv.WriteDelete):
		// Nothing to write (deleting a key required to be absent is a
		// no-op): the condition alone decides, read once.
		var cur []byte
		err := s.pool.QueryRow(ctx, s.sqlGet, k.Key, k.PartitionKey).Scan(&cur)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return wrapErr(ctx, "batch", err), true
		}
		if cur == nil {
			cur = []byte{}
		}
		if !k.Holds(exists, cur) {
			return kv.ErrPredicateFailed, true
		}
		return nil, true
	case wantAbsent: // put if absent
		query, args = s.sqlInsert, []any{k.PartitionKey, k.Key, k.Value}
	case k.Write == kv.WritePut && c.Predicate == nil: // present, any value
		query, args = s.sqlUpdate, []any{k.PartitionKey, k.Key, k.Value}
	case k.Write == kv.WritePut:
		query, args = s.sqlUpdateIf, []any{k.PartitionKey, k.Key, k.Value, []byte(c.Predicate)}
	case c.Predicate == nil: // delete if present
		query, args = s.sqlDelete, []any{k.PartitionKey, k.Key}
	default:
		query, args = s.sqlDeleteIf, []any{k.PartitionKey, k.Key, []byte(c.Predicate)}
	}
	tag, err = s.pool.Exec(ctx, query, args...)
	if err != nil {
		return wrapErr(ctx, "batch", err), true
	}
	if tag.RowsAffected() != 1 {
		return kv.ErrPredicateFailed, true
	}
	return nil, true
}

// lockKey returns the key's current state and keeps it from changing until
// the transaction ends: a present row is locked FOR UPDATE; an absent key
// gets a placeholder row whose uncommitted index entry makes concurrent
// inserts of the key wait for us.
func (s *Store) lockKey(ctx context.Context, tx pgx.Tx, pk, key []byte, shared bool) (bool, []byte, error) {
	lock := s.sqlLockRow
	if shared {
		lock = s.sqlShareRow
	}
	for range 5 {
		var cur []byte
		err := tx.QueryRow(ctx, lock, pk, key).Scan(&cur)
		if err == nil {
			if cur == nil {
				cur = []byte{}
			}
			return true, cur, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return false, nil, err
		}
		tag, err := tx.Exec(ctx, s.sqlInsert, pk, key, []byte{})
		if err != nil {
			return false, nil, err
		}
		if tag.RowsAffected() == 1 {
			return false, nil, nil
		}
		// Inserted by someone else between our SELECT and INSERT: read again.
	}
	return false, nil, errPlaceholderRace
}

func (s *Store) Scan(ctx context.Context, partitionKey, start []byte) (kv.EntriesIterator, error) {
	if len(partitionKey) == 0 {
		return nil, kv.ErrMissingPartitionKey
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c := &cursor{s: s, pk: bytes.Clone(partitionKey), next: bytes.Clone(start), inclusive: true}
	return kv.NewPager(ctx, s.closed.Load, c.fetch), nil
}

// Close closes the pool. Later calls return kv.ErrClosed.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.pool.Close()
}

// Pool exposes the connection pool, for tests and health checks.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// firstPageCap is the capacity a scan page starts with: most partitions
// (a staging token's) are far smaller than a page, and a page allocated
// whole was mostly zeroed and dropped again.
const firstPageCap = 128

// cursor is where a scan of one partition goes on.
type cursor struct {
	s         *Store
	pk        []byte
	next      []byte
	inclusive bool
}

// fetch runs one page query, lakeFS style: key >= start for the first page,
// key > last for the next ones.
func (c *cursor) fetch(ctx context.Context) ([]kv.Entry, bool, error) {
	var (
		rows pgx.Rows
		err  error
	)
	switch {
	case len(c.next) == 0:
		rows, err = c.s.pool.Query(ctx, c.s.sqlScanAll, c.pk, c.s.pageSize)
	case c.inclusive:
		rows, err = c.s.pool.Query(ctx, c.s.sqlScanFrom, c.pk, c.next, c.s.pageSize)
	default:
		rows, err = c.s.pool.Query(ctx, c.s.sqlScanAfter, c.pk, c.next, c.s.pageSize)
	}
	if err != nil {
		return nil, true, wrapErr(ctx, "scan", err)
	}
	defer rows.Close()
	page := make([]kv.Entry, 0, min(c.s.pageSize, firstPageCap))
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, true, wrapErr(ctx, "scan", err)
		}
		if v == nil {
			v = []byte{}
		}
		page = append(page, kv.Entry{PartitionKey: c.pk, Key: k, Value: v})
	}
	if err := rows.Err(); err != nil {
		return nil, true, wrapErr(ctx, "scan", err)
	}
	if n := len(page); n > 0 {
		c.next, c.inclusive = page[n-1].Key, false
	}
	return page, len(page) < c.s.pageSize, nil
}
