// Package dirty owns the dirty-key log of the live migration: the durable
// record of every ref-store key whose mirror write (to the secondary store)
// may not have landed, and the repairer that re-copies such keys from the
// authoritative store and clears them.
//
// A key is logged before the mirror is attempted and cleared after it
// succeeded, so a mirror that fails, races another writer, or is cut short
// by a crash (kill -9) leaves its key behind for the repairer. Where the log
// lives follows the phase:
//
//   - dual-write (PostgreSQL authoritative): an outbox row in the table
//     kvproxy.dirty_keys of the upstream database, inserted in the same
//     upstream transaction as the client's write. It commits exactly when the
//     write commits, and it survives an outage of the KV store.
//   - kv-primary (KV authoritative): an entry in the KV partition
//     "_kvproxy_dirty", written before the KV commit. It survives an outage
//     of PostgreSQL. A key logged for a commit that then failed is harmless:
//     repairing it copies the authoritative value, which is unchanged.
//
// Keys name rows at the granularity a write touches them. Bulk statements
// (DELETE ... WHERE repository_id = $1, dropping a staging token) log a
// whole-entity or whole-token key, which the repairer syncs as a set.
package dirty
