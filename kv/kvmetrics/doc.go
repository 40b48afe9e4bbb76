// Package kvmetrics wraps any kv.Store with Prometheus metrics:
//
//	kvproxy_kv_request_duration_seconds{driver,op}  histogram
//	kvproxy_kv_request_failures_total{driver,op}    counter
//
// op is one of get, set, set_if, delete, scan, batch. Every call is timed.
// kv.ErrNotFound and kv.ErrPredicateFailed are outcomes the caller asked
// about, not failures, so they are timed but not counted; every other error
// (argument errors, kv.ErrClosed, connection failures, a cancelled context)
// counts as a failure. For scan the duration is that of the Scan call (the
// first page for lazy drivers is fetched by the first Next), and an iterator
// that ends with an error counts one scan failure.
//
// The metrics are registered on a caller-supplied prometheus.Registerer;
// nothing touches the global registry.
package kvmetrics
