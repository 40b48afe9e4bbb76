// Package kv owns the key-value abstraction that kvproxy migrates the ref
// store onto: the Store interface, its sentinel errors, and helpers that are
// independent of any backend (prefix scans, argument checks).
//
// The semantics are those of lakeFS's pkg/kv (>= v0.80) so that the data a
// driver writes is readable by lakeFS: Get returns the value together with a
// predicate (the exact value bytes), SetIf with a nil predicate creates only
// if the key is absent, Delete is idempotent, and Scan returns one
// partition's entries in ascending unsigned byte order from an inclusive
// start, paging underneath and tolerating concurrent deletes.
//
// Drivers live in sub-packages (postgres, dynamodb, local, mem) and are
// opened by name through package kv/drivers. Nothing in kv knows about SQL or
// lakeFS entities.
package kv
