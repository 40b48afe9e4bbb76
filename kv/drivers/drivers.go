// Package drivers opens a kv.Store by driver name. It is the only package
// that imports every driver, so that the rest of kvproxy depends on kv alone.
package drivers

import (
	"context"
	"fmt"
	"sort"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/dynamodb"
	"github.com/kvproxy/kvproxy/kv/local"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/kv/postgres"
)

// Opener opens a store from a driver-specific DSN.
type Opener func(ctx context.Context, dsn string) (kv.Store, error)

// openers is fixed at compile time: drivers are chosen by name, but nothing
// registers itself at run time.
var openers = map[string]Opener{
	mem.DriverName:      mem.Open,
	local.DriverName:    local.Open,
	postgres.DriverName: postgres.Open,
	dynamodb.DriverName: dynamodb.Open,
}

// Open opens the store of the named driver.
func Open(ctx context.Context, driver, dsn string) (kv.Store, error) {
	open, ok := openers[driver]
	if !ok {
		return nil, fmt.Errorf("%w: %q (known: %v)", kv.ErrUnknownDriver, driver, Names())
	}
	return open(ctx, dsn)
}

// Names lists the known drivers, sorted.
func Names() []string {
	names := make([]string, 0, len(openers))
	for n := range openers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
