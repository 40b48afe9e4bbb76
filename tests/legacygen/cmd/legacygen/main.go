// Command legacygen fills a legacy ref-store database for benchmarks:
// legacygen -dsn postgres://... -scale 1 loads the schema and 100
// repositories, 100k commits, 10k branches and 1M staged entries (scaled),
// and prints the row counts as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kvproxy/kvproxy/tests/legacy"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

func main() {
	dsn := flag.String("dsn", "", "legacy database DSN")
	scale := flag.Float64("scale", 1, "size relative to 100 repos / 100k commits / 10k branches / 1M staged entries")
	flag.Parse()
	if *dsn == "" || *scale <= 0 {
		fmt.Fprintln(os.Stderr, "legacygen: -dsn and a positive -scale are required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := legacy.LoadSchema(ctx, *dsn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	st, err := legacygen.Generate(ctx, *dsn, legacygen.Bench(*scale))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]int64{"repos": st.Repos, "commits": st.Commits, "branches": st.Branches,
		"tags": st.Tags, "staged": st.Staged, "orphan_rows": st.OrphanRows, "rows": st.Rows()})
}
