// Package metrics owns kvproxy's observability surface: the Prometheus
// registry every component registers its metrics on, and the admin HTTP
// server that exposes /metrics, /healthz and /readyz (and, as they land, the
// admin API and status page). Components receive a prometheus.Registerer;
// nothing registers on the global default registry.
package metrics
