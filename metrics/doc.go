// Package metrics owns kvproxy's observability surface: the Prometheus
// registry every component registers its metrics on (New, RegisterControl;
// the KV request metrics live in kv/kvmetrics), and the admin HTTP server
// (Admin) that exposes /metrics, /healthz, /readyz, the admin API
// (GET /api/v1/status from a Collector of named StatusSources, POST
// /api/v1/{action} routed to handlers registered with HandleAction, behind a
// bearer token) and the embedded status page at / and /status. Components
// receive a prometheus.Registerer; nothing registers on the global default
// registry. Subpackage pagetest drives headless Chromium for the page's
// tests.
package metrics
