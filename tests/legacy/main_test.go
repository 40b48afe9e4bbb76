package legacy

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

// Every test closes its pools and stops its workload goroutines. pgxpool
// starts a fire-and-forget goroutine that sleeps 500ms after a connection
// is destroyed (killed-connection tests); it ends by itself. The benchmarks'
// kvproxy binary is removed at the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/jackc/pgx/v4/pgxpool.(*Pool).triggerHealthCheck.func1"),
		goleak.Cleanup(func(int) { testenv.RemoveProxyBinary() }))
}
