package kv_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a driver leaves goroutines behind after its
// stores are closed. Idle HTTP keep-alive connections of the AWS SDK's
// shared transport are not the drivers' and are ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}
