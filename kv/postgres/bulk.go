package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvproxy/kvproxy/kv"
)

var _ kv.BulkInserter = (*Store)(nil)

// copySkip is how many calls InsertIfAbsent goes straight to the
// statement after a COPY failed on a present key: keys that are already
// there tend to come in runs (a resumed or repeated backfill), and a
// failed COPY is wasted work.
const copySkip = 16

// InsertIfAbsent inserts every entry whose key is absent. It first tries
// a binary COPY of all entries, which PostgreSQL runs about twice as fast
// as an INSERT; COPY is atomic and fails as a whole (unique violation) if
// any key is present, and then one INSERT ... ON CONFLICT DO NOTHING
// inserts the absent ones, RETURNING naming them. An entry repeated in
// entries is inserted once, for its first occurrence.
func (s *Store) InsertIfAbsent(ctx context.Context, entries []kv.Entry) ([]bool, error) {
	for i, e := range entries {
		if err := kv.CheckWrite(e.PartitionKey, e.Key, e.Value); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	inserted := make([]bool, len(entries))
	if len(entries) == 0 {
		return inserted, nil
	}
	if s.copySkip.Load() > 0 {
		s.copySkip.Add(-1)
	} else {
		ok, err := s.copyAll(ctx, entries)
		if err != nil {
			return nil, err
		}
		if ok {
			for i := range inserted {
				inserted[i] = true
			}
			return inserted, nil
		}
		s.copySkip.Store(copySkip)
	}
	pks := make([][]byte, len(entries))
	keys := make([][]byte, len(entries))
	vals := make([][]byte, len(entries))
	at := make(map[string]int, len(entries))
	for i, e := range entries {
		pks[i], keys[i], vals[i] = e.PartitionKey, e.Key, e.Value
		id := string(e.PartitionKey) + "\x00" + string(e.Key)
		if _, dup := at[id]; !dup {
			at[id] = i
		}
	}
	rows, err := s.pool.Query(ctx, `INSERT INTO `+s.table+`(partition_key,key,value)
		SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) ON CONFLICT DO NOTHING RETURNING partition_key, key`, pks, keys, vals)
	if err != nil {
		return nil, wrapErr(ctx, "insert if absent", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pk, key []byte
		if err := rows.Scan(&pk, &key); err != nil {
			return nil, wrapErr(ctx, "insert if absent", err)
		}
		if i, ok := at[string(pk)+"\x00"+string(key)]; ok {
			inserted[i] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, wrapErr(ctx, "insert if absent", err)
	}
	return inserted, nil
}

// copyAll inserts all entries with one COPY; ok is false, and nothing was
// inserted, if a key was present (or repeated in entries).
func (s *Store) copyAll(ctx context.Context, entries []kv.Entry) (ok bool, err error) {
	_, err = s.pool.CopyFrom(ctx, pgx.Identifier{s.tableName}, []string{"partition_key", "key", "value"},
		pgx.CopyFromSlice(len(entries), func(i int) ([]any, error) {
			e := entries[i]
			return []any{e.PartitionKey, e.Key, e.Value}, nil
		}))
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &pgErr) && pgErr.Code == "23505": // unique_violation
		return false, nil
	default:
		return false, wrapErr(ctx, "insert if absent", err)
	}
}
