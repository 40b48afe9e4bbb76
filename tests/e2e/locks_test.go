package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v4"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// The branch locker's advisory locks (spec §3.5) exclude each other across
// kvproxy instances that share a KV store, are released at COMMIT/ROLLBACK
// and when the holding client disconnects, and shared holders coexist.
func TestAdvisoryLocksAcrossInstances(t *testing.T) {
	for _, kvs := range kvStores() {
		if kvs.driver == "mem" || kvs.driver == "local" {
			continue // one process only: nothing to share
		}
		t.Run(kvs.driver, func(t *testing.T) {
			ctx := testCtx(t, 5*time.Minute)
			dsn := kvs.dsn(t)
			p1 := testenv.StartProxy(t, "--kv-driver", kvs.driver, "--kv-dsn", dsn)
			p2 := testenv.StartProxy(t, "--kv-driver", kvs.driver, "--kv-dsn", dsn)
			const lockSQL = "SELECT pg_advisory_xact_lock($1);"
			const sharedSQL = "SELECT pg_advisory_xact_lock_shared($1);"
			const begin = "begin isolation level read committed read write"
			connect := func(p *testenv.Proxy) *pgx.Conn {
				c, err := pgx.Connect(ctx, p.DSN)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close(context.Background()) })
				return c
			}
			exec := func(c *pgx.Conn, sql string, args ...any) {
				t.Helper()
				if _, err := c.Exec(ctx, sql, args...); err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
			}
			// waits reports whether running sql on c is still blocked after
			// a grace period; the statement keeps running in the background
			// and its completion is returned on the channel.
			start := func(c *pgx.Conn, sql string, key int64) chan error {
				done := make(chan error, 1)
				go func() {
					_, err := c.Exec(ctx, sql, key)
					done <- err
				}()
				return done
			}
			blockedFor := func(done chan error, d time.Duration) bool {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
					return false
				case <-time.After(d):
					return true
				}
			}
			a, b := connect(p1), connect(p2)
			const key = int64(-4242424242)

			exec(a, begin)
			exec(a, lockSQL, key)
			exec(b, begin)
			done := start(b, lockSQL, key)
			if !blockedFor(done, 500*time.Millisecond) {
				t.Fatal("exclusive lock taken through instance 2 while instance 1 held it")
			}
			exec(a, "commit")
			if err := <-done; err != nil {
				t.Fatalf("waiting lock: %v", err)
			}
			exec(b, "rollback")

			// Shared holders coexist; exclusive waits for both.
			c := connect(p1)
			exec(a, begin)
			exec(a, sharedSQL, key)
			exec(b, begin)
			exec(b, sharedSQL, key) // must not block
			exec(c, begin)
			done = start(c, lockSQL, key)
			if !blockedFor(done, 500*time.Millisecond) {
				t.Fatal("exclusive lock granted while two shared holders held the key")
			}
			exec(a, "rollback")
			if !blockedFor(done, 300*time.Millisecond) {
				t.Fatal("exclusive lock granted while one shared holder remained")
			}
			// The last holder disconnects without COMMIT: its lock goes with it.
			b.Close(ctx)
			if err := <-done; err != nil {
				t.Fatalf("exclusive lock after the shared holders left: %v", err)
			}
			exec(c, "commit")

			// Outside a transaction the lock is released at once, as an xact
			// lock is at the end of its implicit transaction.
			exec(a, lockSQL, key)
			exec(c, begin)
			exec(c, lockSQL, key)
			exec(c, "commit")

			// A proxy killed while its client holds a lock stops renewing the
			// lease; the other instance gets the lock once it expires.
			exec(a, begin)
			exec(a, lockSQL, key)
			p1.Kill()
			d := connect(p2)
			exec(d, begin)
			waitStart := time.Now()
			exec(d, lockSQL, key)
			exec(d, "commit")
			t.Logf("lock of the killed instance taken over after %v", time.Since(waitStart).Round(time.Millisecond))
		})
	}
}
