package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds every kvproxy_* metric that is not owned by a lower layer
// (the KV request metrics live with the kv metrics wrapper). Components get
// the vectors they record into; there is one Metrics per process.
type Metrics struct {
	// Statements counts client statements by recognised shape (R1, B3, ...,
	// "passthrough", "unsupported"), the route taken (upstream, kv, both)
	// and the outcome (ok, error, conflict).
	Statements *prometheus.CounterVec
	// StatementSeconds is the statement latency by route.
	StatementSeconds *prometheus.HistogramVec
	// UnsupportedStatements counts graveler statements that matched no known
	// shape and were refused with 0A000.
	UnsupportedStatements prometheus.Counter
	// ShadowReads and ShadowMismatches count sampled shadow reads and the
	// ones whose canonical results differed, by shape.
	ShadowReads      *prometheus.CounterVec
	ShadowMismatches *prometheus.CounterVec
	// DirtyKeys is the size of the dirty-key log; DirtyKeysRepaired counts
	// repairs.
	DirtyKeys         prometheus.Gauge
	DirtyKeysRepaired prometheus.Counter
	// BackfillRowsCopied / BackfillRowsTotal / BackfillRowsPerSecond show the
	// backfill's progress by entity.
	BackfillRowsCopied    *prometheus.CounterVec
	BackfillRowsTotal     *prometheus.GaugeVec
	BackfillRowsPerSecond prometheus.Gauge
	// VerifyResults counts the last verify's entities by entity and result
	// (match, mismatch, missing_in_kv, extra_in_kv).
	VerifyResults *prometheus.GaugeVec
	// Phase is 1 for the phase in force and 0 for the others; Epoch is the
	// phase record's epoch.
	Phase *prometheus.GaugeVec
	Epoch prometheus.Gauge
	// BarrierSeconds is how long switch barriers held writes.
	BarrierSeconds prometheus.Histogram
	// ClientConnections and UpstreamConnections are open connections.
	ClientConnections   prometheus.Gauge
	UpstreamConnections prometheus.Gauge
	// UpstreamIdle are pooled upstream connections (included in
	// UpstreamConnections); UpstreamReused counts sessions that got one.
	UpstreamIdle   prometheus.Gauge
	UpstreamReused prometheus.Counter
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Statements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_statements_total", Help: "Client statements by shape, route and outcome.",
		}, []string{"shape", "route", "outcome"}),
		StatementSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvproxy_statement_duration_seconds", Help: "Statement latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18), // 50µs .. ~6.5s
		}, []string{"route"}),
		UnsupportedStatements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvproxy_unsupported_statements_total", Help: "Ref-store statements that matched no known shape (answered 0A000).",
		}),
		ShadowReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_shadow_reads_total", Help: "Sampled shadow reads by shape.",
		}, []string{"shape"}),
		ShadowMismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_shadow_mismatches_total", Help: "Shadow reads whose canonical result differed from the authoritative one, by shape.",
		}, []string{"shape"}),
		DirtyKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_dirty_keys", Help: "Keys in the dirty-key log awaiting repair.",
		}),
		DirtyKeysRepaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvproxy_dirty_keys_repaired_total", Help: "Dirty keys re-copied from the authoritative store.",
		}),
		BackfillRowsCopied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvproxy_backfill_rows_copied_total", Help: "Rows copied by backfill, by entity.",
		}, []string{"entity"}),
		BackfillRowsTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kvproxy_backfill_rows_total", Help: "Rows backfill has to copy, by entity (estimate until counted).",
		}, []string{"entity"}),
		BackfillRowsPerSecond: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_backfill_rows_per_second", Help: "Current backfill copy rate.",
		}),
		VerifyResults: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kvproxy_verify_entities", Help: "Entities of the last verify by entity and result.",
		}, []string{"entity", "result"}),
		Phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kvproxy_phase", Help: "1 for the migration phase in force, 0 for the others.",
		}, []string{"phase"}),
		Epoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_phase_epoch", Help: "Epoch of the phase record this instance follows.",
		}),
		BarrierSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvproxy_barrier_duration_seconds", Help: "How long switch barriers held ref-store writes.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12), // 10ms .. ~20s
		}),
		ClientConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_client_connections", Help: "Open client connections.",
		}),
		UpstreamConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_upstream_connections", Help: "Open connections to the upstream PostgreSQL.",
		}),
		UpstreamIdle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvproxy_upstream_connections_idle", Help: "Upstream connections kept for later clients (relay.upstream_pool); included in kvproxy_upstream_connections.",
		}),
		UpstreamReused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvproxy_upstream_connections_reused_total", Help: "Client sessions that started on a kept upstream connection instead of a new one.",
		}),
	}
	reg.MustRegister(m.Statements, m.StatementSeconds, m.UnsupportedStatements, m.ShadowReads, m.ShadowMismatches,
		m.DirtyKeys, m.DirtyKeysRepaired, m.BackfillRowsCopied, m.BackfillRowsTotal, m.BackfillRowsPerSecond,
		m.VerifyResults, m.Phase, m.Epoch, m.BarrierSeconds, m.ClientConnections, m.UpstreamConnections,
		m.UpstreamIdle, m.UpstreamReused)
	return m
}

// SetPhase marks phase as the one in force.
func (m *Metrics) SetPhase(phase string, epoch int64, all []string) {
	for _, p := range all {
		v := 0.0
		if p == phase {
			v = 1
		}
		m.Phase.WithLabelValues(p).Set(v)
	}
	m.Epoch.Set(float64(epoch))
}
