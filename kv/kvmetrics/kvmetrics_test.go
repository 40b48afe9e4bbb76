package kvmetrics

import (
	"context"
	"errors"
	"testing"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// plainStore hides mem's Batch method: a store that is not a kv.Batcher.
type plainStore struct{ kv.Store }

func TestCounters(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Wrap("mem", mem.New())
	pk := []byte("p")
	steps := []struct {
		name    string
		op      string
		call    func() error
		failure bool
	}{
		{"set", OpSet, func() error { return s.Set(ctx, pk, []byte("k"), []byte("v")) }, false},
		{"get hit", OpGet, func() error { _, err := s.Get(ctx, pk, []byte("k")); return err }, false},
		{"get miss is an outcome", OpGet, func() error { _, err := s.Get(ctx, pk, []byte("nope")); return err }, false},
		{"get bad argument", OpGet, func() error { _, err := s.Get(ctx, pk, nil); return err }, true},
		{"setif conflict is an outcome", OpSetIf, func() error { return s.SetIf(ctx, pk, []byte("k"), []byte("w"), nil) }, false},
		{"setif nil value", OpSetIf, func() error { return s.SetIf(ctx, pk, []byte("k"), nil, nil) }, true},
		{"delete", OpDelete, func() error { return s.Delete(ctx, pk, []byte("x")) }, false},
		{"scan", OpScan, func() error { _, err := s.Scan(ctx, pk, nil); return err }, false},
		{"batch", OpBatch, func() error {
			return s.(kv.Batcher).Batch(ctx, []kv.Op{{Kind: kv.OpCheck, PartitionKey: pk, Key: []byte("k")}})
		}, false},
		{"batch cancelled", OpBatch, func() error {
			c, cancel := context.WithCancel(ctx)
			cancel()
			return s.(kv.Batcher).Batch(c, []kv.Op{{Kind: kv.OpSet, PartitionKey: pk, Key: []byte("k"), Value: []byte("v")}})
		}, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			failures := testutil.ToFloat64(m.failures.WithLabelValues("mem", st.op))
			before := histogramCount(t, m, "mem", st.op)
			_ = st.call()
			if got := histogramCount(t, m, "mem", st.op); got != before+1 {
				t.Fatalf("duration count %d -> %d, want +1", before, got)
			}
			want := failures
			if st.failure {
				want++
			}
			if got := testutil.ToFloat64(m.failures.WithLabelValues("mem", st.op)); got != want {
				t.Fatalf("failures %v -> %v, want %v", failures, got, want)
			}
		})
	}
	if n, err := testutil.GatherAndCount(reg, DurationName, FailuresName); err != nil || n == 0 {
		t.Fatalf("registry holds %d series of the metrics: %v", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func histogramCount(t *testing.T, m *Metrics, driver, op string) uint64 {
	t.Helper()
	h, ok := m.duration.WithLabelValues(driver, op).(prometheus.Histogram)
	if !ok {
		t.Fatal("not a histogram")
	}
	var out dto.Metric
	if err := h.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetHistogram().GetSampleCount()
}

func TestScanIteratorFailure(t *testing.T) {
	ctx := context.Background()
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	inner := mem.New()
	_ = inner.Set(ctx, []byte("p"), []byte("k"), []byte("v"))
	s := m.Wrap("mem", inner)
	it, err := s.Scan(ctx, []byte("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for it.Next() {
	}
	it.Next() // a second false Next must not count again
	if !errors.Is(it.Err(), kv.ErrClosed) {
		t.Fatalf("Err = %v", it.Err())
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("mem", OpScan)); got != 1 {
		t.Fatalf("scan failures = %v, want 1", got)
	}
}

func TestBatcherPassThrough(t *testing.T) {
	m, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Wrap("mem", mem.New()).(kv.Batcher); !ok {
		t.Fatal("wrapper of a Batcher is not a Batcher")
	}
	if _, ok := m.Wrap("plain", plainStore{mem.New()}).(kv.Batcher); ok {
		t.Fatal("wrapper of a non-Batcher claims to be a Batcher")
	}
}

func TestSharedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := Wrap(reg, "mem", mem.New())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Wrap(reg, "local", mem.New())
	if err != nil {
		t.Fatalf("second store on the same registry: %v", err)
	}
	_, _ = a.Get(context.Background(), nil, nil)
	_, _ = b.Get(context.Background(), nil, nil)
	if n, err := testutil.GatherAndCount(reg, FailuresName); err != nil || n != 2 {
		t.Fatalf("%d failure series, want 2 (one per driver): %v", n, err)
	}
	if _, err := New(nil); err == nil {
		t.Fatal("nil registerer accepted")
	}
}
