package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
)

func TestControlMetrics(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		setup func(*control.Store, *mem.Store)
		want  string
	}{
		{"empty store", func(*control.Store, *mem.Store) {}, `
kvproxy_barrier_held_seconds 0
kvproxy_control_up 1
kvproxy_live_instances 0
`},
		{"barrier up 90s, one of two instances live", func(ctl *control.Store, _ *mem.Store) {
			if _, err := ctl.Init(ctx, control.DualWrite, "x"); err != nil {
				t.Fatal(err)
			}
			rec, pred, _ := ctl.Phase(ctx)
			rec.Barrier = &control.Barrier{ID: "b", Target: control.KVPrimary, Started: t0.Add(-90 * time.Second)}
			if err := ctl.Update(ctx, pred, rec); err != nil {
				t.Fatal(err)
			}
			_ = ctl.PutInstance(ctx, control.Instance{ID: "a", LeaseExpires: t0.Add(time.Second)})
			_ = ctl.PutInstance(ctx, control.Instance{ID: "b", LeaseExpires: t0.Add(-time.Second)})
		}, `
kvproxy_barrier_held_seconds 90
kvproxy_control_up 1
kvproxy_live_instances 1
`},
		{"unreadable store", func(_ *control.Store, s *mem.Store) { s.Close() }, `
kvproxy_control_up 0
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mem.New()
			ctl := control.NewStore(s, func() time.Time { return t0 })
			tc.setup(ctl, s)
			reg := prometheus.NewRegistry()
			if err := metrics.RegisterControl(reg, ctl); err != nil {
				t.Fatal(err)
			}
			// Only values matter here; HELP/TYPE lines are added from the
			// registry's own output.
			want := ""
			for _, line := range strings.Split(strings.TrimSpace(tc.want), "\n") {
				name := strings.Fields(line)[0]
				want += "# HELP " + name + " " + help(t, reg, name) + "\n# TYPE " + name + " gauge\n" + line + "\n"
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metrics.BarrierHeldName, metrics.LiveInstancesName, metrics.ControlUpName); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func help(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("%s not gathered", name)
	return ""
}
