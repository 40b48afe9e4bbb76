package main

import (
	"testing"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// The kvproxy binary the tests start is built once and removed at the end.
func TestMain(m *testing.M) { testenv.Main(m) }
