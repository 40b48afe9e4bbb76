// Package deploy holds no code: it owns the deployment artefacts of kvproxy
// (example configuration, Dockerfile, Kubernetes sidecar manifests, Grafana
// dashboard, Prometheus alert rules) and the test that keeps them parseable
// and in step with the metrics kvproxy exports.
package deploy
