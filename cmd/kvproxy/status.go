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

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kvproxy/kvproxy/internal/config"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// newStatusCollector is the one place where status sources are registered,
// so that `serve` (admin API, status page) and `kvproxy status` (reading
// the KV store directly) report the same thing. The sources read the
// records backfill, verify and the dirty-key log keep in the KV store (and,
// for the dirty-key outbox, the upstream database when one is configured).
func newStatusCollector(store kv.Store, ctl *control.Store, upstream string, opt metrics.CollectorOptions) *metrics.Collector {
	c := metrics.NewCollector(ctl, opt)
	c.Register(metrics.SourceBackfill, metrics.StatusFunc(func(ctx context.Context) (any, error) { return backfillStatus(ctx, store) }))
	c.Register(metrics.SourceVerify, metrics.StatusFunc(func(ctx context.Context) (any, error) { return verifyStatus(ctx, store) }))
	c.Register(metrics.SourceDirtyKeys, metrics.StatusFunc(func(ctx context.Context) (any, error) { return dirtyKeyStatus(ctx, store, upstream) }))
	return c
}

// backfillStatus turns the "backfill/status" record into the status page's
// progress shape. The record has no row total until the backfill finishes
// (the total is only known by the process running it, as the
// kvproxy_backfill_rows_total gauge), so RowsTotal stays 0 while it runs.
func backfillStatus(ctx context.Context, store kv.Store) (any, error) {
	st, err := migrate.BackfillStatus(ctx, store)
	if errors.Is(err, migrate.ErrNoRecord) {
		return nil, metrics.ErrNotRun
	}
	if err != nil {
		return nil, err
	}
	p := metrics.BackfillProgress{State: "incomplete", Started: st.Started, Entities: map[string]int64{}}
	for e, n := range st.Copied {
		p.Entities[e] += n
	}
	for e, n := range st.Present {
		p.Entities[e] += n
	}
	p.RowsCopied = st.Copied.Sum() + st.Present.Sum()
	if st.Complete() {
		p.State, p.RowsTotal, p.Updated = "done", p.RowsCopied, *st.Finished
	} else {
		// The checkpoint names the stage a resumed run starts from.
		var cp struct {
			Stage string `json:"stage"`
		}
		v, err := store.Get(ctx, []byte(control.Partition), []byte(migrate.KeyBackfillCheckpoint))
		if err == nil && json.Unmarshal(v.Value, &cp) == nil {
			p.Stage = cp.Stage
		}
	}
	return p, nil
}

func verifyStatus(ctx context.Context, store kv.Store) (any, error) {
	r, err := migrate.LastVerify(ctx, store)
	if errors.Is(err, migrate.ErrNoRecord) {
		return nil, metrics.ErrNotRun
	}
	if err != nil {
		return nil, err
	}
	v := metrics.VerifySummary{Finished: r.Finished, Clean: r.Clean(), Mismatches: r.Differences(), Incremental: r.Incremental,
		Entities: map[string]map[string]int64{}}
	for name, e := range r.Entities {
		if e == nil {
			continue
		}
		v.Entities[name] = map[string]int64{"match": e.Match, "mismatch": e.Mismatch, "missing_in_kv": e.MissingInKV, "extra_in_kv": e.ExtraInKV}
	}
	return v, nil
}

// dirtyKeyStatus counts both halves of the dirty-key log: the KV side
// (kv-primary) and the upstream outbox (dual-write). An outbox that was
// never created holds nothing.
func dirtyKeyStatus(ctx context.Context, store kv.Store, upstream string) (any, error) {
	n, err := dirty.NewKVLog(store, nil).Count(ctx)
	if err != nil {
		return nil, err
	}
	if upstream != "" {
		m, err := outboxCount(ctx, upstream)
		if err != nil {
			return nil, err
		}
		n += m
	}
	return metrics.DirtyKeyCount{Count: n}, nil
}

func outboxCount(ctx context.Context, upstream string) (int64, error) {
	cfg, err := pgxpool.ParseConfig(upstream)
	if err != nil {
		return 0, fmt.Errorf("upstream: %w", err)
	}
	cfg.MaxConns = 1
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("upstream: %w", err)
	}
	defer pool.Close()
	n, err := dirty.NewPGLog(pool).Count(ctx)
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	return n, err
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
	c := newStatusCollector(store, ctl, cfg.Upstream, metrics.CollectorOptions{Self: instanceID, Gatherer: reg})
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
	c := newStatusCollector(store, control.NewStore(store, nil), cfg.Upstream, metrics.CollectorOptions{Events: events})
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
	var s string
	if b.RowsTotal > 0 {
		s = fmt.Sprintf("%s, %d of %d rows (%.1f%%)", b.State, b.RowsCopied, b.RowsTotal, 100*float64(b.RowsCopied)/float64(b.RowsTotal))
	} else {
		s = fmt.Sprintf("%s, %d rows so far (total not known yet)", b.State, b.RowsCopied)
	}
	if b.Stage != "" {
		s += ", at " + b.Stage
	}
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
	if v.Incremental {
		s += " (incremental: dirty keys only)"
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
