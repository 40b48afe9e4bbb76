package kv

import (
	"context"
	"errors"
)

// Sentinel errors. Drivers wrap them with %w so callers match with errors.Is.
var (
	ErrNotFound            = errors.New("kv: not found")
	ErrPredicateFailed     = errors.New("kv: predicate failed")
	ErrMissingPartitionKey = errors.New("kv: missing partition key")
	ErrMissingKey          = errors.New("kv: missing key")
	ErrMissingValue        = errors.New("kv: missing value")
	ErrClosed              = errors.New("kv: store is closed")
	ErrClosedEntries       = errors.New("kv: iterator is closed")
	ErrConnectFailed       = errors.New("kv: connect failed")
	ErrDriverConfiguration = errors.New("kv: driver configuration")
	ErrUnknownDriver       = errors.New("kv: unknown driver")
	ErrSetupFailed         = errors.New("kv: setup failed")
	ErrOperationFailed     = errors.New("kv: operation failed")
	ErrStoreLocked         = errors.New("kv: store is in use by another process")
	ErrBatchTooLarge       = errors.New("kv: batch too large for an atomic write")
)

// Predicate is the exact value bytes a SetIf expects to replace. A nil
// Predicate means "only if the key is absent".
type Predicate []byte

// ValueWithPredicate is what Get returns: the value and the predicate to pass
// to SetIf for a compare-and-set against exactly this value.
type ValueWithPredicate struct {
	Value     []byte
	Predicate Predicate
}

// Entry is one key-value pair of a partition.
type Entry struct {
	PartitionKey []byte
	Key          []byte
	Value        []byte
}

// EntriesIterator walks the entries of a Scan. After Next returns false, Err
// tells whether the walk ended or failed. Close is idempotent.
type EntriesIterator interface {
	Next() bool
	Entry() *Entry
	Err() error
	Close()
}

// Store is the key-value store interface every driver implements.
type Store interface {
	// Get returns the value of key in partitionKey, or ErrNotFound.
	Get(ctx context.Context, partitionKey, key []byte) (*ValueWithPredicate, error)
	// Set writes value unconditionally.
	Set(ctx context.Context, partitionKey, key, value []byte) error
	// SetIf writes value only if the current value equals pred byte for byte,
	// or, with a nil pred, only if the key is absent. Otherwise it returns
	// ErrPredicateFailed.
	SetIf(ctx context.Context, partitionKey, key, value []byte, pred Predicate) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, partitionKey, key []byte) error
	// Scan returns the entries of partitionKey with key >= start, ascending
	// by unsigned byte order. A nil or empty start scans the whole partition.
	Scan(ctx context.Context, partitionKey, start []byte) (EntriesIterator, error)
	// Close releases the store's resources. Later calls return ErrClosed.
	Close()
}

// OpKind says what one operation of an atomic batch does.
type OpKind int

const (
	// OpSet writes Value unconditionally.
	OpSet OpKind = iota
	// OpSetIf writes Value if the current value equals Predicate (nil:
	// absent).
	OpSetIf
	// OpDelete removes the key unconditionally.
	OpDelete
	// OpDeleteIf removes the key if its current value equals Predicate.
	OpDeleteIf
	// OpCheck writes nothing; it fails the batch unless the current value
	// equals Predicate (nil: absent). It validates what a transaction read.
	OpCheck
)

// Op is one operation of an atomic batch.
type Op struct {
	Kind         OpKind
	PartitionKey []byte
	Key          []byte
	Value        []byte
	Predicate    Predicate
}

// Batcher is implemented by drivers that can apply several operations
// atomically (a PostgreSQL transaction, DynamoDB TransactWriteItems, a bbolt
// transaction). Either every operation is applied or none is; a failed
// condition returns ErrPredicateFailed. A batch that the backend cannot take
// in one transaction returns ErrBatchTooLarge before anything is written, and
// callers then fall back to ordered single-key writes.
type Batcher interface {
	Batch(ctx context.Context, ops []Op) error
}
