package metrics

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// Well-known status source names. The status page and `kvproxy status`
// render these three specially (progress bar, verify table, dirty-key
// count); any other registered name is shown as raw JSON.
const (
	SourceBackfill  = "backfill"
	SourceVerify    = "verify"
	SourceDirtyKeys = "dirty_keys"
)

// NotRun is the summary of a component that has no record yet (or whose
// source is not part of this build).
const NotRun = "not run"

// ErrNotRun may be returned (wrapped) by a StatusSource to say that its
// component has never run; returning (nil, nil) or an error wrapping
// kv.ErrNotFound means the same.
var ErrNotRun = errors.New("not run")

// StatusSource reports one component's state (backfill progress, last
// verify, dirty keys, ...) as a JSON-marshallable value. Sources read their
// records from the KV store, so the same source works inside `serve` and in
// `kvproxy status` reading the store directly.
type StatusSource interface {
	Status(ctx context.Context) (any, error)
}

// StatusFunc adapts a function to StatusSource.
type StatusFunc func(ctx context.Context) (any, error)

// Status calls f.
func (f StatusFunc) Status(ctx context.Context) (any, error) { return f(ctx) }

// BackfillProgress is the suggested shape for the backfill source: the
// status page draws a progress bar from RowsCopied/RowsTotal.
type BackfillProgress struct {
	State         string           `json:"state"` // running, incomplete, done, failed
	Stage         string           `json:"stage,omitempty"`
	RowsCopied    int64            `json:"rows_copied"`
	RowsTotal     int64            `json:"rows_total"`
	RowsPerSecond float64          `json:"rows_per_second"`
	Entities      map[string]int64 `json:"entities,omitempty"` // rows copied by entity
	Started       time.Time        `json:"started,omitzero"`
	Updated       time.Time        `json:"updated,omitzero"`
	Error         string           `json:"error,omitempty"`
}

// VerifySummary is the suggested shape for the verify source.
type VerifySummary struct {
	Finished time.Time `json:"finished,omitzero"`
	Clean    bool      `json:"clean"`
	// Incremental verifies check only the dirty keys; cutover needs a full one.
	Incremental bool                        `json:"incremental,omitempty"`
	Mismatches  int64                       `json:"mismatches"`
	Entities    map[string]map[string]int64 `json:"entities,omitempty"` // entity -> result -> count
	Error       string                      `json:"error,omitempty"`
}

// DirtyKeyCount is the suggested shape for the dirty-key source.
type DirtyKeyCount struct {
	Count  int64     `json:"count"`
	Oldest time.Time `json:"oldest,omitzero"`
}

// ComponentStatus is one source's entry in the status document.
type ComponentStatus struct {
	// Available is false when no source is registered in this build.
	Available bool `json:"available"`
	// Summary is "not run", "ok" or "error".
	Summary string `json:"summary"`
	Status  any    `json:"status,omitempty"`
	Error   string `json:"error,omitempty"`
}

// BarrierStatus is the phase record's barrier with how long it has been
// held.
type BarrierStatus struct {
	control.Barrier
	HeldSeconds float64 `json:"held_seconds"`
}

// InstanceStatus is one registered proxy instance.
type InstanceStatus struct {
	control.Instance
	Live bool `json:"live"`
	// Self marks the instance that answered (admin API only).
	Self bool `json:"self,omitempty"`
}

// ShadowCounts are this instance's shadow-read counters (admin API only:
// they live in process memory, not in the KV store).
type ShadowCounts struct {
	Reads      float64            `json:"reads"`
	Mismatches float64            `json:"mismatches"`
	ByShape    map[string]float64 `json:"mismatches_by_shape,omitempty"`
}

// StatusDocument is GET /api/v1/status and `kvproxy status --json`.
type StatusDocument struct {
	Generated time.Time        `json:"generated"`
	Instance  string           `json:"instance,omitempty"` // who answered; empty when read from the KV store directly
	Phase     string           `json:"phase"`
	Epoch     int64            `json:"epoch"`
	Changed   time.Time        `json:"changed,omitzero"`
	ChangedBy string           `json:"changed_by,omitempty"`
	Barrier   *BarrierStatus   `json:"barrier"`
	Instances []InstanceStatus `json:"instances"` // live ones first, then expired
	Events    []control.Event  `json:"events"`
	// Components always has backfill, verify and dirty_keys, plus any other
	// registered source.
	Components map[string]ComponentStatus `json:"components"`
	Shadow     *ShadowCounts              `json:"shadow,omitempty"`
}

// Collector assembles the status document from the control records and the
// registered sources.
type Collector struct {
	ctl      *control.Store
	self     string
	gatherer prometheus.Gatherer
	events   int

	mu      sync.Mutex
	sources map[string]StatusSource
}

// CollectorOptions tunes a Collector.
type CollectorOptions struct {
	// Self is the id of the instance serving the document, if any.
	Self string
	// Gatherer, if set, is read for this instance's shadow-read counters.
	Gatherer prometheus.Gatherer
	// Events is how many recent events to include (default 20).
	Events int
}

// NewCollector returns a collector over ctl with no sources.
func NewCollector(ctl *control.Store, opt CollectorOptions) *Collector {
	if opt.Events <= 0 {
		opt.Events = 20
	}
	return &Collector{ctl: ctl, self: opt.Self, gatherer: opt.Gatherer, events: opt.Events, sources: map[string]StatusSource{}}
}

// Register adds (or replaces) the source called name.
func (c *Collector) Register(name string, src StatusSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[name] = src
}

// Status builds the document. A missing phase record is reported as phase
// "" with epoch 0 (nothing has initialised the store yet); other read
// errors are returned. A failing source is reported in its entry, not as an
// error of the whole document.
func (c *Collector) Status(ctx context.Context) (StatusDocument, error) {
	now := c.ctl.Now().UTC()
	doc := StatusDocument{Generated: now, Instance: c.self, Instances: []InstanceStatus{}, Events: []control.Event{}, Components: map[string]ComponentStatus{}}
	rec, _, err := c.ctl.Phase(ctx)
	switch {
	case errors.Is(err, kv.ErrNotFound):
	case err != nil:
		return doc, fmt.Errorf("read the phase record: %w", err)
	default:
		doc.Phase, doc.Epoch, doc.Changed, doc.ChangedBy = rec.Phase, rec.Epoch, rec.Changed, rec.By
		if rec.Barrier != nil {
			doc.Barrier = &BarrierStatus{Barrier: *rec.Barrier, HeldSeconds: now.Sub(rec.Barrier.Started).Seconds()}
		}
	}
	ins, err := c.ctl.Instances(ctx)
	if err != nil {
		return doc, fmt.Errorf("read the instance registrations: %w", err)
	}
	for _, in := range ins {
		doc.Instances = append(doc.Instances, InstanceStatus{Instance: in, Live: in.Live(now), Self: c.self != "" && in.ID == c.self})
	}
	sort.SliceStable(doc.Instances, func(i, j int) bool {
		a, b := doc.Instances[i], doc.Instances[j]
		if a.Live != b.Live {
			return a.Live
		}
		return a.ID < b.ID
	})
	ev, err := c.ctl.Events(ctx, c.events)
	if err != nil {
		return doc, fmt.Errorf("read the event log: %w", err)
	}
	doc.Events = append(doc.Events, ev...)

	c.mu.Lock()
	sources := make(map[string]StatusSource, len(c.sources))
	for k, v := range c.sources {
		sources[k] = v
	}
	c.mu.Unlock()
	for _, name := range []string{SourceBackfill, SourceVerify, SourceDirtyKeys} {
		doc.Components[name] = ComponentStatus{Summary: NotRun}
	}
	for name, src := range sources {
		doc.Components[name] = component(ctx, src)
	}
	if c.gatherer != nil {
		doc.Shadow = shadowCounts(c.gatherer)
	}
	return doc, nil
}

func component(ctx context.Context, src StatusSource) ComponentStatus {
	v, err := src.Status(ctx)
	switch {
	case errors.Is(err, ErrNotRun) || errors.Is(err, kv.ErrNotFound) || (err == nil && v == nil):
		return ComponentStatus{Available: true, Summary: NotRun}
	case err != nil:
		return ComponentStatus{Available: true, Summary: "error", Error: err.Error()}
	}
	return ComponentStatus{Available: true, Summary: "ok", Status: v}
}

// shadowCounts sums the shadow-read counters of this process; a gather
// error leaves them out rather than failing the document.
func shadowCounts(g prometheus.Gatherer) *ShadowCounts {
	mfs, err := g.Gather()
	if err != nil {
		return nil
	}
	s := &ShadowCounts{ByShape: map[string]float64{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "kvproxy_shadow_reads_total":
			for _, m := range mf.GetMetric() {
				s.Reads += m.GetCounter().GetValue()
			}
		case "kvproxy_shadow_mismatches_total":
			for _, m := range mf.GetMetric() {
				v := m.GetCounter().GetValue()
				s.Mismatches += v
				for _, l := range m.GetLabel() {
					if l.GetName() == "shape" {
						s.ByShape[l.GetValue()] += v
					}
				}
			}
		}
	}
	return s
}
