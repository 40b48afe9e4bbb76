package metrics_test

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/metrics/pagetest"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// The status page renders every part of the document: this feeds it a
// migration in the middle of a cutover with all three sources reporting,
// loads it in headless Chromium and reads the rendered DOM.
func TestStatusPageRendersInChromium(t *testing.T) {
	bin := pagetest.Chromium(t)
	ctx := context.Background()
	ctl := control.NewStore(mem.New(), nil)
	if _, err := ctl.Init(ctx, control.DualWrite, "operator"); err != nil {
		t.Fatal(err)
	}
	rec, pred, err := ctl.Phase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.Epoch = 4
	rec.Barrier = &control.Barrier{ID: "b-42", Target: control.KVPrimary, Started: time.Now().Add(-2 * time.Second), By: "operator"}
	if err := ctl.Update(ctx, pred, rec); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, in := range []control.Instance{
		{ID: "proxy-a", Addr: "10.1.0.7:6432", LeaseExpires: now.Add(time.Hour), EpochSeen: 4, PhaseSeen: control.DualWrite},
		{ID: "proxy-b", Addr: "10.1.0.8:6432", LeaseExpires: now.Add(time.Hour), EpochSeen: 3, PhaseSeen: control.DualWrite},
		{ID: "proxy-gone", LeaseExpires: now.Add(-time.Hour), EpochSeen: 1, PhaseSeen: control.Passthrough},
	} {
		if err := ctl.PutInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []control.Event{
		{Kind: "init", To: control.Passthrough, OK: true, Epoch: 1, Started: now.Add(-time.Hour)},
		{Kind: "switch", From: control.Passthrough, To: control.DualWrite, OK: true, Epoch: 2, Started: now.Add(-50 * time.Minute), Duration: 1500 * time.Millisecond},
		{Kind: "cutover", From: control.DualWrite, To: control.KVPrimary, OK: false, Error: "dirty-key log not empty", Epoch: 3, Started: now.Add(-time.Minute),
			Checks: []control.Check{{Name: "backfill complete", OK: true}, {Name: "dirty keys empty", OK: false}}},
	} {
		if _, err := ctl.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	reg := metrics.NewRegistry()
	m := metrics.New(reg)
	m.ShadowMismatches.WithLabelValues("B3").Add(2)
	c := metrics.NewCollector(ctl, metrics.CollectorOptions{Self: "proxy-a", Gatherer: reg})
	c.Register(metrics.SourceBackfill, metrics.StatusFunc(func(context.Context) (any, error) {
		return metrics.BackfillProgress{State: "running", RowsCopied: 750, RowsTotal: 1000, RowsPerSecond: 125}, nil
	}))
	c.Register(metrics.SourceVerify, metrics.StatusFunc(func(context.Context) (any, error) {
		return metrics.VerifySummary{Clean: false, Mismatches: 3, Entities: map[string]map[string]int64{"commits": {"match": 10, "mismatch": 3}}}, nil
	}))
	c.Register(metrics.SourceDirtyKeys, metrics.StatusFunc(func(context.Context) (any, error) {
		return metrics.DirtyKeyCount{Count: 7}, nil
	}))
	a := metrics.NewAdmin(reg, slog.New(slog.DiscardHandler))
	a.SetStatus(c)
	base := serveAdmin(t, a, "127.0.0.1:0")

	dom := pagetest.DumpDOM(t, bin, base+"/")
	byID := func(id string) string {
		re := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`)
		if m := re.FindStringSubmatch(dom); m != nil {
			return m[1]
		}
		return "<missing>"
	}
	cases := []struct{ id, want string }{
		{"phase", "dual-write"},
		{"epoch", "4"},
		{"self", "proxy-a"},
		{"dirty-keys", "7"},
		{"verify-mismatches", "3"},
		{"shadow-mismatches", "2"},
		{"verify-text", "NOT clean"},
		{"backfill-text", "running: 750 of 1,000 rows (75.0%), 125 rows/s"},
	}
	for _, tc := range cases {
		if got := byID(tc.id); got != tc.want {
			t.Errorf("#%s = %q, want %q", tc.id, got, tc.want)
		}
	}
	for _, want := range []string{
		`id="backfill-bar" style="width: 75%;"`,
		`class="step current" data-phase="dual-write"`,
		`class="step done" data-phase="passthrough"`,
		`data-id="proxy-a"`, `data-id="proxy-b"`,
		"barrier to kv-primary held",
		"dirty-key log not empty",
		"✗ dirty keys empty",
		"mismatch=3",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if strings.Contains(dom, `data-id="proxy-gone"`) {
		t.Error("an instance with an expired lease is listed as live")
	}
	if strings.Contains(dom, "cannot read /api/v1/status") && !strings.Contains(dom, `id="error" style="display: none;"`) {
		t.Error("the page shows an API error")
	}

	_, img := pagetest.Screenshot(t, bin, base+"/", "status-page-cutover.png")
	// The current phase step and the badge are drawn in the accent colour,
	// the backfill bar in green: a page without its CSS has neither.
	if n := pagetest.CountColor(img, 0x3867d6, 8); n < 2000 {
		t.Errorf("screenshot has %d accent pixels; the page did not render its styles", n)
	}
	if n := pagetest.CountColor(img, 0x1f9d55, 8); n < 1000 {
		t.Errorf("screenshot has %d progress-bar pixels; the backfill bar is not drawn", n)
	}
}

// On a non-loopback listener the page needs the token: without it the page
// says so, with #token=... in the URL it renders the status.
func TestStatusPageTokenFromFragment(t *testing.T) {
	bin := pagetest.Chromium(t)
	base := serveAdmin(t, newAdmin(t, "tok-123"), "0.0.0.0:0")
	cases := []struct {
		name, url string
		want      []string
		absent    []string
	}{
		{"no token", base + "/", []string{"cannot read /api/v1/status: missing or wrong bearer token", "#token=", `id="phase" class="badge">…<`}, nil},
		{"wrong token", base + "/#token=nope", []string{"missing or wrong bearer token"}, nil},
		{"token in the fragment", base + "/#token=tok-123", []string{`id="phase" class="badge">dual-write<`, `id="error" style="display: none;"`}, []string{"tok-123"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dom := pagetest.DumpDOM(t, bin, tc.url)
			for _, w := range tc.want {
				if !strings.Contains(dom, w) {
					t.Errorf("DOM lacks %q", w)
				}
			}
			for _, w := range tc.absent {
				if strings.Contains(dom, w) {
					t.Errorf("DOM contains %q", w)
				}
			}
		})
	}
}
