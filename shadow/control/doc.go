// Package control owns the migration's shared state in the KV store: the one
// global phase with its epoch, the registry of live proxy instances (each
// with a heartbeat lease), the record of past switches, and the write gate
// that makes an instance refuse ref-store writes while its view of the phase
// may be stale (DESIGN.md invariant 6).
//
// Everything lives in the partition "_kvproxy". lakeFS never produces a
// partition that starts with "_": repository ids match ^[a-z0-9][a-z0-9-]*$
// and every repository and staging partition starts with one. So kvproxy's
// records can share a KV store with lakeFS without colliding.
//
// Keys:
//
//	phase              the phase record (JSON): phase, epoch, barrier
//	instances/<id>     one per proxy instance (JSON): lease, epoch seen, acks
//	events/<seq>       one per switch attempt (JSON), seq zero-padded
package control
