// Package postgres is the kv.Store on PostgreSQL, in exactly the table
// lakeFS (>= v0.80) uses, so that a lakeFS binary can open the same database
// after the migration.
//
// DSN: a PostgreSQL URL or keyword/value string as pgx understands it, plus
// these parameters, which are removed before connecting (PostgreSQL would
// reject them as unknown settings):
//
//	lakefskv_table   table name (default "kv"), lakeFS's own parameter
//	scan_page_size   entries per Scan query (default 1000)
//
// pgxpool's own pool_* parameters apply (pool_max_conns, pool_min_conns,
// pool_max_conn_lifetime, ...). Without pool_max_conns the pool holds up to
// 25 connections, lakeFS's default. Without connect_timeout, connecting
// gives up after 10 s. Example:
//
//	postgres://kv:secret@db:5432/lakefs?sslmode=require&lakefskv_table=kv&pool_max_conns=50
//
// Open creates, under an advisory lock (the one lakeFS takes, so lakeFS and
// several kvproxy instances can start together), the statements lakeFS runs:
// the table hash-partitioned on partition_key into <table>_0 ..
// <table>_99, and the view <table>_v. Get, Set, SetIf, Delete and Scan are
// lakeFS's single statements. Batch is one READ COMMITTED transaction that
// visits keys in (partition_key, key) order; a condition on a present key
// locks its row (SELECT ... FOR UPDATE), a condition on an absent key holds a
// placeholder row (INSERT ... ON CONFLICT DO NOTHING, deleted again before
// commit unless the batch writes the key), so that no concurrent writer can
// slip in between the check and the commit.
package postgres
