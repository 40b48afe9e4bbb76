// Package e2e holds kvproxy's end-to-end tests: real kvproxy processes in
// front of the throwaway PostgreSQL, driven by the legacy-client simulator.
package e2e
