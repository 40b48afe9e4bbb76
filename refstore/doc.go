// Package refstore owns kvproxy's lakeFS-compatible ref store over kv.Store:
// the entities of lakeFS's graveler (repositories, branches, commits, tags,
// staged entries, branch protection rules) stored exactly as lakeFS >= 0.80
// stores them, and the SQL-era rows they correspond to.
//
// Layout of the package:
//   - graveler/: the protobuf messages (graveler.proto, generated
//     graveler.pb.go; `make proto` regenerates it).
//   - keys.go: partitions and keys (graveler/repos/<id>; <repo>-<uid> with
//     branches/, commits/, tags/, settings/protected_branches; one partition
//     per staging token keyed by the raw object key; the schema version).
//   - rows.go: plain structs mirroring the SQL tables and total, NULL-explicit
//     conversions to and from the protobuf messages.
//   - ident.go: lakeFS's commit content hash (pkg/ident framing).
//   - txn.go: Txn, the optimistic transaction: recorded reads (predicates),
//     recorded scans, buffered writes, and Commit, which validates and writes
//     atomically through kv.Batcher or, failing that, key by key in an order
//     that never exposes a half-made object.
//   - entities.go: the entity operations of a Txn, one per SQL statement of
//     the legacy client, with the outcomes the SQL client sees made explicit
//     (rows affected, ErrAlreadyExists for 23505, ErrConflict for 40001).
//   - ops.go: single-operation conveniences on Store (one Txn each) and the
//     listings, which like lakeFS's iterators run outside any transaction.
//
// The translate layer maps one SQL transaction onto one Txn. A Store is
// safe for concurrent use by any number of Txns.
//
// # Repository record cache
//
// Every entity of a repository lives in the partition named by the
// repository's instance uid, an xid chosen when the repository is created
// and never changed; deleting and recreating a repository (also from
// another proxy instance) gives a new uid. A Store remembers the record
// bytes of active repositories (Options.RepoCacheSize, repocache.go) so
// that an entity access need not read the record first. The cache is a
// hint that may be stale at any time; it is safe because of these rules:
//
//   - A read that finds an entity under the cached uid returns it. Such an
//     entity exists only while that repository instance exists: children
//     are removed atomically with the record (kv.Batcher) or before it
//     (ordered commits, after the record is marked IN_DELETION). So the
//     instance existed when the entity was read, and the answer is the one
//     a reader ordered just before the delete would get. The one weakening:
//     on the ordered path, while a delete is under way (record IN_DELETION,
//     children not yet all removed), a cached reader may still see a child
//     that an uncached reader reports as gone. The same holds if such a
//     delete fails half-way, or if a writer outside this package removes a
//     record without its children; Options.RepoCacheTTL (1s by default)
//     bounds how long after the record changed a cached entry is used.
//   - A read that finds nothing under the cached uid is not trusted: the
//     record is read again (Txn.verifyRepo). Unchanged bytes mean the same
//     instance was active throughout (a record never returns to earlier
//     bytes: the uid is new on every create), so the absence stands. If
//     the record changed, the txn adopts the current record and reads again
//     under its uid, provided nothing else in the txn relied on the old
//     one; otherwise the txn fails with ErrConflict. Listings apply the same
//     rule to an empty result, R1 (GetRepository) always re-reads.
//   - A write never trusts the cache: the cached bytes are recorded as the
//     txn's read of the record, so Commit validates them exactly as it
//     validates a record read from the store (an OpCheck or conditional
//     write in the batch, a re-read on the ordered path). A stale entry
//     turns into ErrConflict, nothing is written, and Commit drops every
//     record the failed txn relied on, so the retry reads them afresh.
//   - Records are cached only when seen ACTIVE (read from the store, or
//     committed by this Store); a committed delete forgets the id.
package refstore
