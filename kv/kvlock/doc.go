// Package kvlock owns shared/exclusive lease locks kept in a kv.Store, so
// that several processes sharing one store exclude each other without any
// other coordination service.
//
// A lock is one KV entry whose value lists its holders, each with a lease
// expiry. Acquire and Release are compare-and-set loops on that entry. A
// holder whose process dies stops renewing, and its lease expires; any later
// CaS on the entry prunes it. A Manager renews the leases of every lock its
// process holds in the background; when a renewal finds that a lease was
// lost (it expired and someone else took the lock), the Lease's Lost channel
// closes so the owner can abort whatever the lock protected.
//
// Writers are not starved: an exclusive request that has to wait records a
// short-lived intent in the entry, and new shared requests wait behind it,
// as PostgreSQL's lock queue makes them.
package kvlock
