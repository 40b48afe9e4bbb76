//go:build !linux

package local

// dropMapped is a no-op where MADV_DONTNEED's semantics for shared file
// mappings are not relied upon.
func dropMapped(uintptr, int64) error { return nil }
