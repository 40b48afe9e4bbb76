package wire

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/kvproxy/kvproxy/internal/testenv"
)

var processedRE = regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)
var failedRE = regexp.MustCompile(`number of failed transactions: (\d+)`)

// runPgbench runs pgbench and returns the transactions processed.
func runPgbench(t *testing.T, bin string, args ...string) int {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	m := processedRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("pgbench output without a transaction count:\n%s", out)
	}
	if f := failedRE.FindSubmatch(out); f != nil && string(f[1]) != "0" {
		t.Fatalf("pgbench failures:\n%s", out)
	}
	if string(m[1]) != string(m[2]) {
		t.Fatalf("pgbench processed %s of %s:\n%s", m[1], m[2], out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestPgbench(t *testing.T) {
	bin := filepath.Join(testenv.PostgresBinDir(t), "pgbench")
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			up := testenv.PostgresDB(t)
			p := startProxy(t, Config{UpstreamDSN: up, NoEventLoop: m.noLoop}, m.router)
			runPgbench0 := func(dsn string, args ...string) {
				if out, err := exec.Command(bin, append(args, dsn)...).CombinedOutput(); err != nil {
					t.Fatalf("pgbench %v: %v\n%s", args, err, out)
				}
			}
			// Initialised through the proxy: exercises COPY FROM STDIN.
			runPgbench0(p.dsn("", ""), "-i", "-s", "1", "-q")
			const clients, txs = 4, 200
			direct := runPgbench(t, bin, "-n", "-c", strconv.Itoa(clients), "-j", "2", "-t", strconv.Itoa(txs), up)
			total := direct
			for _, mode := range []string{"simple", "extended", "prepared"} {
				n := runPgbench(t, bin, "-n", "-M", mode, "-c", strconv.Itoa(clients), "-j", "2", "-t", strconv.Itoa(txs), p.dsn("", ""))
				if n != direct {
					t.Fatalf("-M %s through the proxy processed %d, direct %d", mode, n, direct)
				}
				total += n
			}
			// Every transaction moved the same delta through all tables.
			conn := connect(t, ctxT(t), up)
			var hist, hsum, asum, bsum, tsum int64
			err := conn.QueryRow(ctxT(t), `SELECT (SELECT count(*) FROM pgbench_history), (SELECT coalesce(sum(delta),0) FROM pgbench_history),
				(SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers)`).
				Scan(&hist, &hsum, &asum, &bsum, &tsum)
			if err != nil {
				t.Fatal(err)
			}
			if hist != int64(total) || asum != hsum || bsum != hsum || tsum != hsum {
				t.Fatalf("history %d rows (want %d), sums: history %d accounts %d branches %d tellers %d", hist, total, hsum, asum, bsum, tsum)
			}
		})
	}
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// BenchmarkPgbenchRelay reports pgbench's select-only throughput (prepared
// protocol) through the relay, with and without a Router that watches for
// phase switches (Reroute) on every idle point.
func BenchmarkPgbenchRelay(b *testing.B) {
	bin := filepath.Join(testenv.PostgresBinDir(b), "pgbench")
	up := testenv.PostgresDB(b)
	if out, err := exec.Command(bin, "-i", "-s", "1", "-q", up).CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, tg := range []struct {
		name   string
		router Router
	}{{"direct", nil}, {"relay", nil}, {"relay-rerouter", benchPassRouter{}}} {
		b.Run(tg.name, func(b *testing.B) {
			dsn := up
			if tg.name != "direct" {
				dsn = startProxy(b, Config{UpstreamDSN: up}, tg.router).dsn("", "")
			}
			var tps float64
			for i := 0; i < b.N; i++ {
				out, err := exec.Command(bin, "-n", "-S", "-M", "prepared", "-c", "4", "-j", "2", "-T", "5", dsn).CombinedOutput()
				if err != nil {
					b.Fatalf("pgbench: %v\n%s", err, out)
				}
				m := tpsRE.FindSubmatch(out)
				if m == nil {
					b.Fatalf("pgbench output without tps:\n%s", out)
				}
				v, _ := strconv.ParseFloat(string(m[1]), 64)
				tps += v
			}
			b.ReportMetric(tps/float64(b.N), "tps")
		})
	}
}
