package main

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: backfill and verify raise GOGC and set a memory limit,
// unless the environment sets either.
func TestTuneGC(t *testing.T) {
	gc, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })
	setDefaults := func() { debug.SetGCPercent(100); debug.SetMemoryLimit(1 << 62) }

	setDefaults()
	tuneGC(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != migrateGCPercent {
		t.Errorf("GOGC = %d, want %d", got, migrateGCPercent)
	}
	if got := debug.SetMemoryLimit(-1); got != migrateMemoryLimit {
		t.Errorf("memory limit = %d, want %d", got, migrateMemoryLimit)
	}

	setDefaults()
	tuneGC(func(k string) string { return map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}[k] })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC = %d with GOGC set, want it left alone", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<62 {
		t.Errorf("memory limit = %d with GOMEMLIMIT set, want it left alone", got)
	}
}
