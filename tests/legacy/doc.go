// Package legacy is the legacy-client simulator: a Go client that behaves
// on the wire like SQL-era lakeFS v0.68 (or v0.70 with V070) talking to its
// ref store. It owns
//
//   - the exact statement texts lakeFS sends (statements.go, one table of
//     named constants that the proxy's tests reuse),
//   - the driver setup (pgx/v4, pgxpool, two pools DB and LockDB, the
//     prepare statement cache), lakeFS's Transact with its serialization
//     retry and error mapping, and the advisory-lock branch locker,
//   - the ref-manager and staging-manager statements and the graveler flows
//     of spec §4 built from them (create repository, stage, commit, merge,
//     revert, reset, tags, log, listings, GC iterators, refs-restore,
//     diagnostics), with object storage replaced by an in-memory RangeStore,
//   - a Recorder of every statement's outcome with Compare for differential
//     runs (PostgreSQL vs kvproxy), deterministic under a seed through an
//     injected Clock and UUIDSource,
//   - a seeded workload generator, a concurrent runner of N clients with a
//     Ledger of acknowledged writes, and Verify that checks a database
//     against the ledger.
//
// Point Config.DSN at PostgreSQL or at kvproxy; nothing else changes.
package legacy
