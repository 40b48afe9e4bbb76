// Package shadow owns the migration: the router that decides, per statement
// and by phase, which store answers (Router, a wire.Router), the session
// transaction state of statements answered from KV, and — in sub-packages —
// the phase record and instance coordination (control), dual writes, shadow
// reads, backfill, verify and the switches between phases.
package shadow
