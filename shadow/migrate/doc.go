// Package migrate owns the copy of the SQL-era ref store into KV while
// dual writes run (backfill), the proof that the two stores are equal
// (verify) and the re-copy of what differs (repair). They are one package
// because they share everything below the command: the SQL readers, the
// row <-> KV value conversions and their canonical comparison, the
// create-if-absent and compare-and-delete writers, progress, throttling
// and the records in the "_kvproxy" partition.
//
// # Backfill
//
// Order: repositories (a repository already in KV, e.g. created by a dual
// write, keeps its instance uid; a new one gets an xid, written at once, so
// the uid is chosen once and persisted); then, repository by repository,
// the commits reachable from a branch head or tag through all parents (the
// walk is a recursive query run by PostgreSQL), then every commit the walk
// did not copy (the unreachable ones, and those a branch moved to behind
// the walk's position; a bytewise page of commits is checked against one
// KV range scan), the branches and the tags; then the staged entries of
// every token
// a branch references, in one pass over the staging table; orphan tokens
// are counted and reported, and copied only with IncludeOrphans (in the
// same pass). After each page is written, the rows' versions (xmin) are
// re-read; a row whose version changed or is gone is re-read whole. Each step reads one page by keyset pagination
// (PageSize rows, memory independent of the database size), writes it in
// atomic batches of at most 100 keys, and saves a checkpoint
// ("backfill/checkpoint"), so a killed run resumes where it stopped and
// redoes at most one page. "backfill/status" records start, finish and the
// rows per entity; cutover checks it with CutoverReady.
//
// # Why a backfill racing dual writes is safe
//
// The router applies each ref-store write to PostgreSQL first and then to
// KV (DESIGN.md, dual-write). The backfill writes a row it read at time r
// with create-if-absent at time w, then re-reads the row in PostgreSQL at
// time c > w, and if the row is gone or different it deletes its copy only
// if KV still holds exactly the bytes it wrote (compare-and-delete at d).
//
//   - A dual write (insert or update) of the row whose KV half ran before
//     w makes the create-if-absent fail: the newer value stays. If its KV
//     half runs after w, it overwrites the copy (blind write), so the
//     compare-and-delete at d finds other bytes and does nothing.
//   - A delete whose PostgreSQL half commits before r: the row is not read.
//   - A delete whose PostgreSQL half commits between r and c: the re-read
//     at c misses the row. Its KV half either ran before w (nothing to
//     delete then; our copy is the resurrection, and d removes it), or
//     between w and d (it removed our copy; d finds nothing), or after d
//     (both remove the same key). In every order the key ends absent.
//   - A delete whose PostgreSQL half commits after c: its KV half runs
//     after that, hence after w, and removes our copy itself.
//   - A row changed (or deleted and re-created) between r and c is
//     handled like a delete followed by the dual write of the new value:
//     our stale copy is removed unless the new value already replaced it,
//     and the dual write's KV half, which runs after its PostgreSQL half,
//     stores the new value. A dual write whose KV half is itself a CaS on
//     a value it expected may lose against our delete; the router records
//     such a failed mirror write in the dirty-key log, and verify
//     --incremental --repair fixes it before cutover.
//
// So the backfill never overwrites a dual write and never resurrects a
// deleted row. Tests exercise each order through BackfillOptions.Hook.
//
// # Verify
//
// The SQL side is read from one REPEATABLE READ snapshot, through
// server-side cursors ordered bytewise (COLLATE "C", bytea), merged with KV
// scans in the same order; each key is a match, mismatch, missing in KV or
// extra in KV. Values are compared canonically (timestamps at
// microseconds, metadata as maps, NULL and empty equal, commit ids
// recomputed from the KV fields with the content hash), and a repository
// whose record names a partition without any of its rows (a wrong
// instance uid) is a mismatch. The report is stored as "verify/last"
// ("verify/last-incremental" for --incremental, which checks only the keys
// of a DirtyKeys log); "verify/checkpoint" lets a killed verify resume
// after the last repository it finished (a resumed run reads a new
// snapshot). Repair re-copies each difference from the authoritative store
// (Direction) and re-checks it.
//
// Limits: KV cannot list partitions, so staged entries only KV has are
// found only under tokens a branch (in either store) references, and an
// orphaned KV partition (e.g. left by a wrong instance uid) is not found.
package migrate
