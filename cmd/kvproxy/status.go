package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// newStatusCollector is the one place where status sources are registered,
// so that `serve` (admin API, status page) and `kvproxy status` (reading
// the KV store directly) report the same thing. Backfill, verify and the
// dirty-key log register here as they land, e.g.
// c.Register(metrics.SourceBackfill, backfill.NewStatusSource(store)).
func newStatusCollector(store kv.Store, ctl *control.Store, opt metrics.CollectorOptions) *metrics.Collector {
	_ = store // read by the sources registered here
	c := metrics.NewCollector(ctl, opt)
	return c
}

// setupAdminAPI gives the admin server its token and status document.
// Actions (backfill, verify, cutover, ...) are registered with
// admin.HandleAction by the components that implement them; until then the
// API answers 501 for them.
//
// It also registers the metrics read from the control records at scrape
// time (barrier held, live instances) on reg.
func setupAdminAPI(admin *metrics.Admin, cfg config.Config, store kv.Store, ctl *control.Store, instanceID string, reg *prometheus.Registry) *metrics.Collector {
	admin.SetToken(cfg.Admin.Token)
	// Registration fails only if serve already registered these names.
	_ = metrics.RegisterControl(reg, ctl)
	c := newStatusCollector(store, ctl, metrics.CollectorOptions{Self: instanceID, Gatherer: reg})
	admin.SetStatus(c)
	return c
}

func newStatusCmd() *cobra.Command {
	var (
		adminURL string
		asJSON   bool
		events   int
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the migration phase, instances, backfill, verify and dirty keys",
		Long: `Show the migration state: phase, epoch, write barrier, live proxy
instances, recent phase events, backfill progress, the last verify and the
dirty-key count. It reads the KV store named by kv.driver/kv.dsn directly,
or, with --admin-url, asks a running proxy's admin API (needed for the local
driver while a proxy holds the store open). --json prints the document of
GET /api/v1/status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var doc metrics.StatusDocument
			if adminURL != "" {
				doc, err = statusFromAdmin(ctx, adminURL, cfg.Admin.Token)
			} else {
				doc, err = statusFromStore(ctx, cfg, events)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(doc)
			}
			return printStatus(cmd.OutOrStdout(), doc, events)
		},
	}
	cmd.Flags().StringVar(&adminURL, "admin-url", "", "read the status from a running proxy's admin server (e.g. http://127.0.0.1:9187) instead of the KV store; sends admin.token if set")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status document as JSON")
	cmd.Flags().IntVar(&events, "events", 10, "number of recent events to show")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func statusFromStore(ctx context.Context, cfg config.Config, events int) (metrics.StatusDocument, error) {
	if cfg.KV.Driver == "mem" {
		return metrics.StatusDocument{}, fmt.Errorf("%w: kv.driver: mem is private to one process; use --admin-url to ask the proxy", config.ErrInvalid)
	}
	store, err := drivers.Open(ctx, cfg.KV.Driver, cfg.KV.DSN)
	if err != nil {
		hint := ""
		if errors.Is(err, kv.ErrStoreLocked) {
			hint = " (a running proxy holds the local store open: use --admin-url)"
		}
		return metrics.StatusDocument{}, fmt.Errorf("open KV store (kv.driver=%s, kv.dsn=%s): %w%s", cfg.KV.Driver, cfg.KV.DSN, err, hint)
	}
	defer store.Close()
	c := newStatusCollector(store, control.NewStore(store, nil), metrics.CollectorOptions{Events: events})
	return c.Status(ctx)
}

func statusFromAdmin(ctx context.Context, base, token string) (metrics.StatusDocument, error) {
	var doc metrics.StatusDocument
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return doc, fmt.Errorf("--admin-url %q: want http://host:port", base)
	}
	u = u.JoinPath("api", "v1", "status")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return doc, fmt.Errorf("--admin-url: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doc, fmt.Errorf("admin API %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return doc, fmt.Errorf("admin API %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return doc, fmt.Errorf("admin API %s: %s: %s", u, resp.Status, e.Error)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return doc, fmt.Errorf("admin API %s: decode status: %w", u, err)
	}
	return doc, nil
}

func printStatus(w io.Writer, d metrics.StatusDocument, maxEvents int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	if d.Phase == "" {
		p("phase:\tnot initialised (no proxy has started on this KV store)\n")
	} else {
		p("phase:\t%s\n", d.Phase)
		p("epoch:\t%d (changed %s by %s)\n", d.Epoch, fmtTime(d.Changed), d.ChangedBy)
	}
	if d.Barrier == nil {
		p("barrier:\tnone\n")
	} else {
		p("barrier:\tto %s, held %.1fs (id %s, by %s)\n", d.Barrier.Target, d.Barrier.HeldSeconds, d.Barrier.ID, d.Barrier.By)
	}
	live := 0
	for _, in := range d.Instances {
		if in.Live {
			live++
		}
	}
	p("instances:\t%d live\n", live)
	for _, in := range d.Instances {
		if !in.Live {
			continue
		}
		stale := ""
		if in.EpochSeen != d.Epoch {
			stale = "  (behind)"
		}
		p("  %s\t%s\t%s/%d%s\tlease until %s\n", in.ID, in.Addr, in.PhaseSeen, in.EpochSeen, stale, fmtTime(in.LeaseExpires))
	}
	p("backfill:\t%s\n", describe(d.Components[metrics.SourceBackfill], metrics.NotRun, fmtBackfill))
	p("verify:\t%s\n", describe(d.Components[metrics.SourceVerify], metrics.NotRun, fmtVerify))
	p("dirty keys:\t%s\n", describe(d.Components[metrics.SourceDirtyKeys], "unknown", fmtDirty))
	if d.Shadow != nil {
		p("shadow reads:\t%.0f, %.0f mismatched (instance %s)\n", d.Shadow.Reads, d.Shadow.Mismatches, d.Instance)
	}
	for name, c := range d.Components {
		switch name {
		case metrics.SourceBackfill, metrics.SourceVerify, metrics.SourceDirtyKeys:
			continue
		}
		p("%s:\t%s\n", name, describe(c, metrics.NotRun, nil))
	}
	if len(d.Events) == 0 {
		p("events:\tnone\n")
		return tw.Flush()
	}
	// Events get their own columns, not the key column's width.
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "events:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, e := range d.Events {
		if maxEvents > 0 && i >= maxEvents {
			break
		}
		res := "ok"
		if !e.OK {
			res = "FAILED: " + e.Error
		}
		from := e.From
		if from == "" {
			from = "-"
		}
		p("  #%d\t%s\t%s %s -> %s\tepoch %d\t%s\t%s\n", e.Seq, fmtTime(e.Started), e.Kind, from, e.To, e.Epoch, e.Duration.Round(time.Millisecond), res)
	}
	return tw.Flush()
}

// describe renders one component: its absent text when there is nothing to
// show, its error, or its value through format (falling back to JSON when
// the value has another shape).
func describe(c metrics.ComponentStatus, absent string, format func(json.RawMessage) (string, bool)) string {
	switch {
	case !c.Available || c.Summary == metrics.NotRun || c.Summary == "":
		return absent
	case c.Summary == "error":
		return "error: " + c.Error
	}
	raw, err := json.Marshal(c.Status)
	if err != nil {
		return fmt.Sprintf("%v", c.Status)
	}
	if format != nil {
		if s, ok := format(raw); ok {
			return s
		}
	}
	return string(raw)
}

func fmtBackfill(raw json.RawMessage) (string, bool) {
	var b metrics.BackfillProgress
	if json.Unmarshal(raw, &b) != nil || (b.State == "" && b.RowsTotal == 0 && b.RowsCopied == 0) {
		return "", false
	}
	pct := 0.0
	if b.RowsTotal > 0 {
		pct = 100 * float64(b.RowsCopied) / float64(b.RowsTotal)
	}
	s := fmt.Sprintf("%s, %d of %d rows (%.1f%%)", b.State, b.RowsCopied, b.RowsTotal, pct)
	if b.RowsPerSecond > 0 {
		s += fmt.Sprintf(", %.0f rows/s", b.RowsPerSecond)
	}
	if b.Error != "" {
		s += ", error: " + b.Error
	}
	return s, true
}

func fmtVerify(raw json.RawMessage) (string, bool) {
	var v metrics.VerifySummary
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &v) != nil || json.Unmarshal(raw, &probe) != nil {
		return "", false
	}
	if _, ok := probe["clean"]; !ok {
		return "", false
	}
	s := "clean"
	if !v.Clean {
		s = fmt.Sprintf("NOT clean, %d mismatches", v.Mismatches)
	}
	if !v.Finished.IsZero() {
		s += ", finished " + fmtTime(v.Finished)
	}
	if v.Error != "" {
		s += ", error: " + v.Error
	}
	return s, true
}

func fmtDirty(raw json.RawMessage) (string, bool) {
	var n int64
	if json.Unmarshal(raw, &n) == nil {
		return fmt.Sprint(n), true
	}
	var d metrics.DirtyKeyCount
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &d) != nil || json.Unmarshal(raw, &probe) != nil {
		return "", false
	}
	if _, ok := probe["count"]; !ok {
		return "", false
	}
	return fmt.Sprint(d.Count), true
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
