package kvmetrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values.
const (
	OpGet    = "get"
	OpSet    = "set"
	OpSetIf  = "set_if"
	OpDelete = "delete"
	OpScan   = "scan"
	OpBatch  = "batch"
)

// Metric names.
const (
	DurationName = "kvproxy_kv_request_duration_seconds"
	FailuresName = "kvproxy_kv_request_failures_total"
)

// Metrics holds the two metric vectors. One Metrics can wrap several stores
// (each with its own driver label).
type Metrics struct {
	duration *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// New creates the metrics and registers them on reg. If reg already holds
// metrics of the same names and shape (a second store in the same process),
// those are reused.
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("kvmetrics: nil Registerer")
	}
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    DurationName,
		Help:    "Latency of KV store requests by driver and operation.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18), // 50µs .. ~6.5s
	}, []string{"driver", "op"})
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: FailuresName,
		Help: "KV store requests that failed, by driver and operation (not found and predicate failed are not failures).",
	}, []string{"driver", "op"})
	m := &Metrics{duration: duration, failures: failures}
	if err := reg.Register(duration); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil, fmt.Errorf("kvmetrics: register %s: %w", DurationName, err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.HistogramVec)
		if !ok {
			return nil, fmt.Errorf("kvmetrics: register %s: %w", DurationName, err)
		}
		m.duration = existing
	}
	if err := reg.Register(failures); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			return nil, fmt.Errorf("kvmetrics: register %s: %w", FailuresName, err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("kvmetrics: register %s: %w", FailuresName, err)
		}
		m.failures = existing
	}
	return m, nil
}

// Wrap returns s instrumented with driver as the driver label. The result
// implements kv.Batcher exactly when s does.
func (m *Metrics) Wrap(driver string, s kv.Store) kv.Store {
	w := &Store{m: m, driver: driver, s: s}
	if b, ok := s.(kv.Batcher); ok {
		return &BatchStore{Store: w, b: b}
	}
	return w
}

// Wrap is New followed by Metrics.Wrap.
func Wrap(reg prometheus.Registerer, driver string, s kv.Store) (kv.Store, error) {
	m, err := New(reg)
	if err != nil {
		return nil, err
	}
	return m.Wrap(driver, s), nil
}

// IsFailure tells whether err counts as a failure: any error except the
// outcomes kv.ErrNotFound and kv.ErrPredicateFailed.
func IsFailure(err error) bool {
	return err != nil && !errors.Is(err, kv.ErrNotFound) && !errors.Is(err, kv.ErrPredicateFailed)
}

func (m *Metrics) observe(driver, op string, start time.Time, err error) {
	m.duration.WithLabelValues(driver, op).Observe(time.Since(start).Seconds())
	if IsFailure(err) {
		m.failures.WithLabelValues(driver, op).Inc()
	}
}

// Store is an instrumented kv.Store.
type Store struct {
	m      *Metrics
	driver string
	s      kv.Store
}

// Unwrap returns the wrapped store.
func (w *Store) Unwrap() kv.Store { return w.s }

func (w *Store) Get(ctx context.Context, partitionKey, key []byte) (*kv.ValueWithPredicate, error) {
	start := time.Now()
	v, err := w.s.Get(ctx, partitionKey, key)
	w.m.observe(w.driver, OpGet, start, err)
	return v, err
}

func (w *Store) Set(ctx context.Context, partitionKey, key, value []byte) error {
	start := time.Now()
	err := w.s.Set(ctx, partitionKey, key, value)
	w.m.observe(w.driver, OpSet, start, err)
	return err
}

func (w *Store) SetIf(ctx context.Context, partitionKey, key, value []byte, pred kv.Predicate) error {
	start := time.Now()
	err := w.s.SetIf(ctx, partitionKey, key, value, pred)
	w.m.observe(w.driver, OpSetIf, start, err)
	return err
}

func (w *Store) Delete(ctx context.Context, partitionKey, key []byte) error {
	start := time.Now()
	err := w.s.Delete(ctx, partitionKey, key)
	w.m.observe(w.driver, OpDelete, start, err)
	return err
}

func (w *Store) Scan(ctx context.Context, partitionKey, start []byte) (kv.EntriesIterator, error) {
	t := time.Now()
	it, err := w.s.Scan(ctx, partitionKey, start)
	w.m.observe(w.driver, OpScan, t, err)
	if err != nil {
		return nil, err
	}
	return &iterator{EntriesIterator: it, w: w}, nil
}

func (w *Store) Close() { w.s.Close() }

// BatchStore is an instrumented store whose wrapped store is a kv.Batcher.
type BatchStore struct {
	*Store
	b kv.Batcher
}

func (w *BatchStore) Batch(ctx context.Context, ops []kv.Op) error {
	start := time.Now()
	err := w.b.Batch(ctx, ops)
	w.m.observe(w.driver, OpBatch, start, err)
	return err
}

type iterator struct {
	kv.EntriesIterator
	w        *Store
	reported bool
}

func (it *iterator) Next() bool {
	if it.EntriesIterator.Next() {
		return true
	}
	if err := it.Err(); !it.reported && IsFailure(err) {
		it.reported = true
		it.w.m.failures.WithLabelValues(it.w.driver, OpScan).Inc()
	}
	return false
}
