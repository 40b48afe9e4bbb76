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
// The translate layer maps one SQL transaction onto one Txn. Repository
// instance uids are xids chosen when a repository is created and read back
// from its record for every later access; nothing is cached between
// transactions, so a Store is safe for concurrent use by any number of Txns.
package refstore
