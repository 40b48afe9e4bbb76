// Package cutover switches the authoritative ref store while the legacy
// client runs: cutover (dual-write -> kv-primary), rollback (kv-primary ->
// dual-write) and finalize (kv-primary -> kv-only).
//
// A switch checks its preconditions by name, then puts a barrier on the
// shared phase record. Every proxy instance (shadow.Gate) drains: new
// advisory locks wait until held ones are released, then new write
// transactions wait until those in flight finish (or are doomed with
// 40001), and the instance acknowledges. With every live instance drained,
// the driver repairs the remaining dirty keys from the authoritative
// store, verifies them, and flips the phase with a new epoch, which also
// releases the barrier. Any failure, timeout or lost instance releases the
// barrier and keeps the old phase; a driver that dies mid-switch cannot
// hold writes past the barrier's deadline, because instances stop honouring
// it then. Every attempt is recorded as a control.Event.
package cutover
