package wire

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/kvproxy/kvproxy/internal/testenv"
)

// BenchmarkSelect measures one round trip (pgx, extended protocol) directly
// and through the proxy's two paths.
func BenchmarkSelect(b *testing.B) {
	up := testenv.PostgresDB(b)
	targets := []struct {
		name   string
		router Router
		direct bool
	}{{"direct", nil, true}, {"relay", nil, false}, {"relay-rerouter", benchPassRouter{}, false},
		{"routed", forwardAll{}, false}, {"local", &testRouter{}, false}}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			dsn := up
			q := `SELECT $1::int8`
			if !tg.direct {
				p := startProxy(b, Config{UpstreamDSN: up}, tg.router)
				dsn = p.dsn("", "")
			}
			if tg.name == "local" {
				q = `/*local*/ ECHO $1`
			}
			ctx := b.Context()
			conn := connect0(b, dsn)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var v int64
				if err := conn.QueryRow(ctx, q, int64(i)).Scan(&v); err != nil || v != int64(i) {
					b.Fatalf("%d %v", v, err)
				}
			}
		})
	}
}

// benchPassRouter keeps sessions on the relay and never re-routes: the
// cost of watching for a phase switch on the fast path.
type benchPassRouter struct{ forwardAll }

func (benchPassRouter) Passthrough(*Session) bool { return true }
func (benchPassRouter) Reroute(*Session) bool     { return false }
func (benchPassRouter) NotifyReroute(func())      {}

// BenchmarkRelayTrack is the relay's added work per request when its
// Router is a Rerouter: one Sync (or Query) and its ReadyForQuery, and
// for prepared-statement clients the occasional Parse.
func BenchmarkRelayTrack(b *testing.B) {
	parse := encodeAll(&pgproto3.Parse{Name: "stmtcache_0123456789abcdef", Query: "SELECT $1::int8", ParameterOIDs: []uint32{20}})[5:]
	b.Run("sync", func(b *testing.B) {
		tr := &relayTrack{stmts: map[string]trackedStmt{}}
		for b.Loop() {
			tr.client('S', nil)
			tr.upstream('Z')
		}
	})
	b.Run("parse-sync", func(b *testing.B) {
		tr := &relayTrack{stmts: map[string]trackedStmt{}}
		for b.Loop() {
			tr.client('P', parse)
			tr.client('S', nil)
			tr.upstream('1')
			tr.upstream('Z')
		}
	})
}
