package dirty

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SetupSQL creates the outbox in the upstream database. It is idempotent.
const SetupSQL = `CREATE SCHEMA IF NOT EXISTS kvproxy;
CREATE TABLE IF NOT EXISTS kvproxy.dirty_keys (
    id          bigserial   PRIMARY KEY,
    entity      text        NOT NULL,
    repository  text        NOT NULL DEFAULT '',
    key_id      text        NOT NULL DEFAULT '',
    staging_key bytea,
    instance    text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
)`

// InsertStatement is the statement (and its text-format arguments) that logs
// keys in the outbox. It is meant to run on the client's own upstream
// connection inside the client's transaction, so that the log entry commits
// if and only if the write does. Staging keys travel hex-encoded because the
// statement's parameters are sent as text.
func InsertStatement(keys []Key, instance string) (string, []any) {
	var b strings.Builder
	// created_at is the time of the insert, not now(): now() is when the
	// client's transaction began, which can be long before the write
	// commits, and the repairer's MinAge counts from the commit.
	b.WriteString("INSERT INTO kvproxy.dirty_keys (entity, repository, key_id, staging_key, instance, created_at) VALUES ")
	args := make([]any, 0, len(keys)*4+1)
	args = append(args, instance)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		var sk any
		if k.StagingKey != nil {
			sk = hex.EncodeToString(k.StagingKey)
		}
		args = append(args, k.Entity, k.Repository, k.ID, sk)
		fmt.Fprintf(&b, "($%d, $%d, $%d, decode($%d, 'hex'), $1, clock_timestamp())", n+1, n+2, n+3, n+4)
	}
	return b.String(), args
}

// Entry is one logged key. Ref identifies the entry in its log.
type Entry struct {
	Ref      string
	Key      Key
	Instance string
	Created  time.Time
}

// Log is a dirty-key log; PGLog and KVLog implement it.
type Log interface {
	// Add logs keys on behalf of instance.
	Add(ctx context.Context, keys []Key, instance string) error
	// List returns up to limit entries created before the given time,
	// oldest first.
	List(ctx context.Context, before time.Time, limit int) ([]Entry, error)
	// Delete clears entries by Ref; unknown refs are ignored.
	Delete(ctx context.Context, refs []string) error
	// Count is the number of logged entries.
	Count(ctx context.Context) (int64, error)
}

var _ Log = (*PGLog)(nil)

// PGLog reads and clears the outbox with the proxy's own connection pool
// (not a client's session).
type PGLog struct {
	pool *pgxpool.Pool
}

// NewPGLog returns the outbox over pool.
func NewPGLog(pool *pgxpool.Pool) *PGLog { return &PGLog{pool: pool} }

// Setup creates the outbox if it is missing.
func (l *PGLog) Setup(ctx context.Context) error {
	if _, err := l.pool.Exec(ctx, SetupSQL); err != nil {
		return fmt.Errorf("dirty: create kvproxy.dirty_keys: %w", err)
	}
	return nil
}

// Add logs keys in their own transaction (for callers outside a client
// session, e.g. a mirror that failed after the client's commit).
func (l *PGLog) Add(ctx context.Context, keys []Key, instance string) error {
	if len(keys) == 0 {
		return nil
	}
	sql, args := InsertStatement(keys, instance)
	if _, err := l.pool.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("dirty: log %d keys: %w", len(keys), err)
	}
	return nil
}

// List returns up to limit entries created before the given time, oldest
// first. Entries younger than that are left to the mirror that is probably
// still working on them.
func (l *PGLog) List(ctx context.Context, before time.Time, limit int) ([]Entry, error) {
	rows, err := l.pool.Query(ctx, `SELECT id, entity, repository, key_id, staging_key, instance, created_at
FROM kvproxy.dirty_keys WHERE created_at < $1 ORDER BY id LIMIT $2`, before, limit)
	if err != nil {
		return nil, fmt.Errorf("dirty: list: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		var id int64
		if err := rows.Scan(&id, &e.Key.Entity, &e.Key.Repository, &e.Key.ID, &e.Key.StagingKey, &e.Instance, &e.Created); err != nil {
			return nil, fmt.Errorf("dirty: list: %w", err)
		}
		e.Ref = strconv.FormatInt(id, 10)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Delete clears entries by Ref.
func (l *PGLog) Delete(ctx context.Context, refs []string) error {
	if len(refs) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(refs))
	for _, r := range refs {
		id, err := strconv.ParseInt(r, 10, 64)
		if err != nil {
			return fmt.Errorf("dirty: %q is not an outbox entry", r)
		}
		ids = append(ids, id)
	}
	if _, err := l.pool.Exec(ctx, `DELETE FROM kvproxy.dirty_keys WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("dirty: clear %d entries: %w", len(ids), err)
	}
	return nil
}

// Count is the number of logged keys.
func (l *PGLog) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := l.pool.QueryRow(ctx, `SELECT count(*) FROM kvproxy.dirty_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("dirty: count: %w", err)
	}
	return n, nil
}
