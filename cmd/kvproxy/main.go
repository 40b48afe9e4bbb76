// Command kvproxy is the PostgreSQL wire-protocol sidecar that migrates a
// SQL-era lakeFS ref store onto a KV store. See README.md.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kvproxy:", err)
		os.Exit(1)
	}
}
