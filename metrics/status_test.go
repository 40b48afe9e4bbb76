package metrics_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// clock is a settable time source for control.Store.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestCollectorReportsControlRecords(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	ctl := control.NewStore(mem.New(), clk.now)
	if _, err := ctl.Init(ctx, control.DualWrite, "op"); err != nil {
		t.Fatal(err)
	}
	rec, pred, err := ctl.Phase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.Epoch = 2
	rec.Barrier = &control.Barrier{ID: "b1", Target: control.KVPrimary, Started: clk.t.Add(-3 * time.Second), By: "a"}
	if err := ctl.Update(ctx, pred, rec); err != nil {
		t.Fatal(err)
	}
	for _, in := range []control.Instance{
		{ID: "b-live", Addr: "10.0.0.2:6432", LeaseExpires: clk.t.Add(5 * time.Second), EpochSeen: 2, PhaseSeen: control.DualWrite},
		{ID: "a-expired", LeaseExpires: clk.t.Add(-time.Second), EpochSeen: 1, PhaseSeen: control.DualWrite},
		{ID: "c-self", LeaseExpires: clk.t.Add(time.Second), EpochSeen: 1, PhaseSeen: control.DualWrite},
	} {
		if err := ctl.PutInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 25 {
		if _, err := ctl.AddEvent(ctx, control.Event{Kind: "cutover", From: control.DualWrite, To: control.KVPrimary, OK: i%2 == 0, Epoch: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}

	c := metrics.NewCollector(ctl, metrics.CollectorOptions{Self: "c-self", Events: 5})
	doc, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if doc.Phase != control.DualWrite || doc.Epoch != 2 || doc.ChangedBy != "op" || doc.Instance != "c-self" {
		t.Errorf("phase/epoch/by/instance = %s/%d/%s/%s", doc.Phase, doc.Epoch, doc.ChangedBy, doc.Instance)
	}
	if doc.Barrier == nil || doc.Barrier.Target != control.KVPrimary || doc.Barrier.HeldSeconds != 3 {
		t.Errorf("barrier = %+v, want to kv-primary held 3s", doc.Barrier)
	}
	var got []string
	for _, in := range doc.Instances {
		got = append(got, fmt.Sprintf("%s live=%v self=%v", in.ID, in.Live, in.Self))
	}
	want := []string{"b-live live=true self=false", "c-self live=true self=true", "a-expired live=false self=false"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Errorf("instances = %q, want %q (live first)", got, want)
	}
	if len(doc.Events) != 5 || doc.Events[0].Seq != 25 || doc.Events[4].Seq != 21 {
		t.Errorf("events: %d, first seq %d; want the 5 newest", len(doc.Events), doc.Events[0].Seq)
	}
	for _, name := range []string{metrics.SourceBackfill, metrics.SourceVerify, metrics.SourceDirtyKeys} {
		if cs := doc.Components[name]; cs.Available || cs.Summary != metrics.NotRun {
			t.Errorf("%s = %+v, want unavailable and not run", name, cs)
		}
	}
	if doc.Shadow != nil {
		t.Errorf("shadow counts without a gatherer: %+v", doc.Shadow)
	}
}

func TestCollectorSources(t *testing.T) {
	ctx := context.Background()
	ctl := control.NewStore(mem.New(), nil)
	if _, err := ctl.Init(ctx, control.DualWrite, "op"); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	m := metrics.New(reg)
	m.ShadowReads.WithLabelValues("R1").Add(10)
	m.ShadowMismatches.WithLabelValues("R1").Add(2)
	m.ShadowMismatches.WithLabelValues("B3").Add(1)

	c := metrics.NewCollector(ctl, metrics.CollectorOptions{Gatherer: reg})
	c.Register(metrics.SourceBackfill, metrics.StatusFunc(func(context.Context) (any, error) {
		return metrics.BackfillProgress{State: "running", RowsCopied: 50, RowsTotal: 200}, nil
	}))
	c.Register(metrics.SourceVerify, metrics.StatusFunc(func(context.Context) (any, error) { return nil, nil }))
	c.Register(metrics.SourceDirtyKeys, metrics.StatusFunc(func(context.Context) (any, error) {
		return nil, fmt.Errorf("scan dirty log: %w", kv.ErrOperationFailed)
	}))
	c.Register("reverse_mirror", metrics.StatusFunc(func(context.Context) (any, error) {
		return nil, fmt.Errorf("no record: %w", kv.ErrNotFound)
	}))
	c.Register("extra", metrics.StatusFunc(func(context.Context) (any, error) {
		return nil, fmt.Errorf("never: %w", metrics.ErrNotRun)
	}))
	doc, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, summary, errIn string
		available            bool
	}{
		{metrics.SourceBackfill, "ok", "", true},
		{metrics.SourceVerify, metrics.NotRun, "", true},
		{metrics.SourceDirtyKeys, "error", "scan dirty log", true},
		{"reverse_mirror", metrics.NotRun, "", true},
		{"extra", metrics.NotRun, "", true},
	}
	for _, tc := range cases {
		cs, ok := doc.Components[tc.name]
		if !ok || cs.Summary != tc.summary || cs.Available != tc.available || !strings.Contains(cs.Error, tc.errIn) {
			t.Errorf("%s = %+v (present %v), want summary %q available %v error containing %q", tc.name, cs, ok, tc.summary, tc.available, tc.errIn)
		}
	}
	if b, ok := doc.Components[metrics.SourceBackfill].Status.(metrics.BackfillProgress); !ok || b.RowsCopied != 50 {
		t.Errorf("backfill status = %#v", doc.Components[metrics.SourceBackfill].Status)
	}
	if doc.Shadow == nil || doc.Shadow.Reads != 10 || doc.Shadow.Mismatches != 3 || doc.Shadow.ByShape["R1"] != 2 || doc.Shadow.ByShape["B3"] != 1 {
		t.Errorf("shadow = %+v", doc.Shadow)
	}
	// The document is what the API serves: it must marshal, with
	// "barrier": null rather than missing so clients can rely on the key.
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"barrier":null`) || !strings.Contains(string(raw), `"rows_copied":50`) {
		t.Errorf("document JSON = %s", raw)
	}
}

func TestCollectorEmptyStoreAndErrors(t *testing.T) {
	ctx := context.Background()
	doc, err := metrics.NewCollector(control.NewStore(mem.New(), nil), metrics.CollectorOptions{}).Status(ctx)
	if err != nil || doc.Phase != "" || doc.Epoch != 0 || doc.Instances == nil || doc.Events == nil {
		t.Fatalf("empty store: %+v, %v; want no phase, empty (non-nil) lists", doc, err)
	}
	s := mem.New()
	if err := s.Set(ctx, []byte(control.Partition), []byte("phase"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	_, err = metrics.NewCollector(control.NewStore(s, nil), metrics.CollectorOptions{}).Status(ctx)
	if !errors.Is(err, control.ErrCorrupt) {
		t.Fatalf("corrupt phase record: err = %v, want control.ErrCorrupt", err)
	}
	s.Close()
	_, err = metrics.NewCollector(control.NewStore(s, nil), metrics.CollectorOptions{}).Status(ctx)
	if !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("closed store: err = %v, want kv.ErrClosed", err)
	}
}
