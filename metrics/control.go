package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/shadow/control"
)

// Names of the metrics read from the control records at scrape time.
const (
	BarrierHeldName   = "kvproxy_barrier_held_seconds"
	LiveInstancesName = "kvproxy_live_instances"
	ControlUpName     = "kvproxy_control_up"
)

// controlCollector reads the phase record and the instance registrations
// when scraped. The barrier duration histogram only records a barrier once
// it is released; a barrier that is stuck must be visible while it is up,
// which only the stored record can tell.
type controlCollector struct {
	ctl     *control.Store
	timeout time.Duration
	held    *prometheus.Desc
	live    *prometheus.Desc
	up      *prometheus.Desc
}

// RegisterControl registers the metrics read from the control records:
// kvproxy_barrier_held_seconds (0 when no barrier is up),
// kvproxy_live_instances and kvproxy_control_up (0 when the records could
// not be read at scrape time; the other two are then left out).
func RegisterControl(reg prometheus.Registerer, ctl *control.Store) error {
	return reg.Register(&controlCollector{
		ctl:     ctl,
		timeout: 2 * time.Second,
		held:    prometheus.NewDesc(BarrierHeldName, "How long the current phase-switch barrier has held ref-store writes (0: no barrier).", nil, nil),
		live:    prometheus.NewDesc(LiveInstancesName, "Proxy instances with an unexpired lease.", nil, nil),
		up:      prometheus.NewDesc(ControlUpName, "1 if the control records (phase, instances) could be read at scrape time.", nil, nil),
	})
}

func (c *controlCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.held
	ch <- c.live
	ch <- c.up
}

func (c *controlCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	now := c.ctl.Now()
	rec, _, err := c.ctl.Phase(ctx)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ins, err := c.ctl.Instances(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	held := 0.0
	if rec.Barrier != nil {
		held = max(now.Sub(rec.Barrier.Started).Seconds(), 0)
	}
	live := 0
	for _, in := range ins {
		if in.Live(now) {
			live++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, held)
	ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(live))
}
