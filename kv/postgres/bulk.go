package postgres

import (
	"context"
	"fmt"

	"github.com/kvproxy/kvproxy/kv"
)

var _ kv.BulkInserter = (*Store)(nil)

// InsertIfAbsent inserts every entry whose key is absent with one
// statement (ON CONFLICT DO NOTHING); RETURNING names the inserted keys.
// An entry repeated in entries is inserted once, for its first occurrence.
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
