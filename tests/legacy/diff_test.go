package legacy

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// Two fresh databases running the same seeded script give identical
// outcome streams; this is the harness the proxy is checked with.
func TestDifferentialTwoDatabases(t *testing.T) {
	cases := []struct {
		name string
		sc   ScriptConfig
	}{
		{"v0.68", ScriptConfig{Seed: 42, Steps: 1500, Version: V068, Global: true}},
		{"v0.70 small pages", ScriptConfig{Seed: 7, Steps: 800, Version: V070, PageSize: 3, Global: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			a, b := freshDB(t), freshDB(t)
			outA, ledger, err := RunScript(ctx, a, tc.sc)
			check(t, err)
			outB, _, err := RunScript(ctx, b, tc.sc)
			check(t, err)
			if err := Compare(outA, outB); err != nil {
				t.Fatal(err)
			}
			if len(outA) < tc.sc.Steps*5 {
				t.Fatalf("only %d outcomes for %d steps", len(outA), tc.sc.Steps)
			}
			seen := map[string]int{}
			errs := map[string]int{}
			for _, o := range outA {
				seen[o.Stmt]++
				if o.SQLState != "" {
					errs[o.Stmt+":"+o.SQLState]++
				}
			}
			var missing []string
			for _, id := range []string{IDR1, IDR2, IDR3, IDR4, IDB1, IDB2, IDB3, IDB4, IDB5, IDB6, IDT1, IDT2, IDT3, IDT4,
				IDC1, IDC2, IDC3, IDC5, IDC6, IDC7, IDL1, IDL2, IDS1, IDS2, IDS3, IDS4, IDS5, IDS6, IDS7, IDPing, IDMigrate, IDDiagnostics, IDRollback} {
				if seen[id] == 0 {
					missing = append(missing, id)
				}
			}
			if tc.sc.Version == V068 && seen[IDC4] == 0 {
				missing = append(missing, IDC4)
			}
			if len(missing) > 0 {
				t.Errorf("script never sent %v", missing)
			}
			if errs[IDR2+":23505"] == 0 || errs[IDDiagnostics+":42P01"] == 0 {
				t.Errorf("expected error outcomes missing: %v", errs)
			}
			check(t, ledger.Verify(ctx, a))
			check(t, ledger.Verify(ctx, b))
			t.Logf("%d outcomes; statements %s; errors %s", len(outA), fmtCounts(seen), fmtCounts(errs))
		})
	}
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return b.String()
}

// Compare must catch a database that answers differently: B already holds
// the repository the script creates first, so R2 fails there with 23505.
func TestDifferentialCatchesADifference(t *testing.T) {
	ctx := testCtx(t)
	a, b := freshDB(t), freshDB(t)
	if _, err := adminConn(t, b).Exec(ctx, `INSERT INTO graveler_repositories VALUES ('s-r1', 'x', now(), 'main')`); err != nil {
		t.Fatal(err)
	}
	sc := ScriptConfig{Seed: 42, Steps: 50}
	err := Differential(ctx, a, b, sc)
	if err == nil {
		t.Fatal("Differential found no difference")
	}
	if !strings.Contains(err.Error(), "(R2) differs: sqlstate") {
		t.Fatalf("difference not named precisely: %v", err)
	}
	// And a value-level difference: a changed storage namespace shows in R1 rows.
	a2, b2 := freshDB(t), freshDB(t)
	outA, _, errA := RunScript(ctx, a2, ScriptConfig{Seed: 3, Steps: 40})
	check(t, errA)
	if _, err := adminConn(t, b2).Exec(ctx, `CREATE RULE ns AS ON INSERT TO graveler_repositories DO ALSO UPDATE graveler_repositories SET storage_namespace = 'changed'`); err != nil {
		t.Fatal(err)
	}
	outB, _, _ := RunScript(ctx, b2, ScriptConfig{Seed: 3, Steps: 40})
	err = Compare(outA, outB)
	if err == nil || errors.Is(err, ErrOutcomeCount) && !strings.Contains(err.Error(), "differs") {
		t.Fatalf("Compare missed a changed column value: %v", err)
	}
	t.Logf("caught: %v", err)
}
