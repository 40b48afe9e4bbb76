package kv_test

import (
	"testing"

	"github.com/kvproxy/kvproxy/kv/kvtest"
)

// TestConformance runs the shared contract on every driver.
func TestConformance(t *testing.T) {
	for _, d := range kvtest.Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			kvtest.RunConformance(t, d)
		})
	}
}
