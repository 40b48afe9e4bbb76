package kv

import "context"

// BulkInserter is implemented by drivers that can insert many keys, each
// only if it is absent, in one round trip (the backfill's copy). Unlike
// Batch the keys are independent: some are inserted while others, already
// present, are left as they are. inserted[i] tells which.
type BulkInserter interface {
	InsertIfAbsent(ctx context.Context, entries []Entry) (inserted []bool, err error)
}
