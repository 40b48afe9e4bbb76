package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSetPhaseMarksExactlyOne(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	all := []string{"passthrough", "dual-write", "kv-primary", "kv-only"}
	m.SetPhase("dual-write", 3, all)
	m.SetPhase("kv-primary", 4, all)
	want := `
# HELP kvproxy_phase 1 for the migration phase in force, 0 for the others.
# TYPE kvproxy_phase gauge
kvproxy_phase{phase="dual-write"} 0
kvproxy_phase{phase="kv-only"} 0
kvproxy_phase{phase="kv-primary"} 1
kvproxy_phase{phase="passthrough"} 0
# HELP kvproxy_phase_epoch Epoch of the phase record this instance follows.
# TYPE kvproxy_phase_epoch gauge
kvproxy_phase_epoch 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kvproxy_phase", "kvproxy_phase_epoch"); err != nil {
		t.Fatal(err)
	}
}

func TestAllNamesArePrefixed(t *testing.T) {
	reg := NewRegistry()
	m := New(reg)
	// Touch the vectors so that they are gathered.
	m.Statements.WithLabelValues("R1", "kv", "ok").Inc()
	m.StatementSeconds.WithLabelValues("kv").Observe(0.001)
	m.ShadowReads.WithLabelValues("R1").Inc()
	m.ShadowMismatches.WithLabelValues("R1").Inc()
	m.BackfillRowsCopied.WithLabelValues("commits").Inc()
	m.BackfillRowsTotal.WithLabelValues("commits").Set(1)
	m.VerifyResults.WithLabelValues("commits", "match").Set(1)
	m.SetPhase("kv-only", 1, []string{"kv-only"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		n++
		if !strings.HasPrefix(name, "kvproxy_") {
			t.Errorf("metric %s lacks the kvproxy_ prefix", name)
		}
	}
	if n != 18 {
		t.Errorf("gathered %d kvproxy metrics, want 18", n)
	}
}
