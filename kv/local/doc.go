// Package local is the embedded kv.Store, kvproxy's default: one bbolt file
// on local disk, no server.
//
// DSN: the path of the bolt file, e.g. ./data/kvproxy.db. Missing parent
// directories are created (0750), the file itself with mode 0600.
//
// Layout inside the file (format 1):
//
//	bucket "kvproxy.meta"        key "format" = "1"
//	bucket "kvproxy.partitions"  one nested bucket per partition key,
//	                             holding that partition's keys and values
//
// A nested bucket per partition keeps partitions that are prefixes of each
// other ("a" and "ab") apart without any key encoding, and a partition's keys
// sort in unsigned byte order, which is Scan's order. A partition's bucket is
// removed when its last key is deleted, so short-lived partitions (staging
// tokens) do not accumulate.
//
// Only one process may open the file at a time (bbolt takes an exclusive
// flock). A second process gets an error wrapping kv.ErrStoreLocked and the
// path after LockTimeout (1s by default) instead of hanging.
//
// Writes are durable when they return (bbolt fsyncs every commit). Batch is
// one bbolt read-write transaction. Scan reads one page (ScanPageSize
// entries, 1000 by default) per read transaction, so a long scan never
// blocks writers for long or pins old pages, and keys deleted while a scan
// runs are tolerated. Keys and partition keys are limited to 32 KiB by bbolt.
package local
