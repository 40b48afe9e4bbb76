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
// atomic. Writes are group-committed: one committer goroutine applies every
// write that queued up while the previous commit was being fsynced in one
// bbolt transaction, one after the other (each sees the ones before it, so
// the order is serial), and answers them all after that transaction's
// fsync. Concurrent writers thus share fsyncs instead of queueing for one
// each, and a lone writer waits for no timer (unlike bbolt's DB.Batch). A
// write whose condition fails is answered with kv.ErrPredicateFailed and
// does not disturb the others in its group. Scan reads one page (ScanPageSize
// entries, 1000 by default) per read transaction, so a long scan never
// blocks writers for long or pins old pages, and keys deleted while a scan
// runs are tolerated. Keys and partition keys are limited to 32 KiB by bbolt.
//
// bbolt reads through a memory mapping of the whole file, so every page a
// long scan or a bulk load touches would stay resident in the process and
// its RSS would grow with the file. The store counts the bytes it reads
// and writes and, every Options.MaxResidentMap (32 MiB by default), drops
// the mapping's pages from the process with madvise(MADV_DONTNEED) on
// Linux; they stay in the page cache, and a later access faults them back
// in unchanged. It does so inside a transaction, so bbolt cannot replace
// the mapping meanwhile.
package local
