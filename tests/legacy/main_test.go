package legacy

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its pools and stops its workload goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
