// Package kvtest holds what tests of kv drivers and their users share: the
// list of drivers with a way to open an isolated store on each, and the
// conformance suite every driver must pass.
package kvtest

import (
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
)

// Driver opens fresh, isolated stores of one driver for tests.
type Driver struct {
	Name string
	// New returns an empty store that no other test sees, closed when t ends.
	New func(t testing.TB) kv.Store
}

// Drivers lists every driver. Tests that should hold on every backend range
// over it with t.Run(d.Name, ...).
func Drivers() []Driver {
	return []Driver{
		{Name: mem.DriverName, New: func(t testing.TB) kv.Store {
			s := mem.New()
			t.Cleanup(s.Close)
			return s
		}},
	}
}
