package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/metrics/pagetest"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

var instanceRe = regexp.MustCompile(`msg="kvproxy ready" .* instance=(\S+)`)

// instanceOf returns the instance id a started proxy logged.
func instanceOf(t *testing.T, p *testenv.Proxy) string {
	t.Helper()
	m := instanceRe.FindStringSubmatch(p.Logs())
	if m == nil {
		t.Fatalf("no instance id in the proxy's logs:\n%s", p.Logs())
	}
	return m[1]
}

// adminURL is the proxy's admin server reached over loopback.
func adminURL(t *testing.T, p *testenv.Proxy) string {
	t.Helper()
	_, port, err := net.SplitHostPort(p.AdminAddr)
	if err != nil {
		t.Fatalf("admin address %q: %v", p.AdminAddr, err)
	}
	return "http://127.0.0.1:" + port
}

func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return run(ctx, append([]string{"status"}, args...)...)
}

// statusLines maps "key:" to the rest of the line for the top-level lines
// of the text output.
func statusLines(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, " ") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func TestStatusBadConfigurationNamesTheKey(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--kv-driver", ""}, "kv.driver"},
		{[]string{"--kv-driver", "mem"}, "kv.driver: mem is private to one process"},
		{[]string{"--kv-driver", "bogus", "--kv-dsn", "x"}, "kv.driver=bogus"},
		{[]string{"--kv-driver", "postgres", "--kv-dsn", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2", "--timeout", "20s"}, "kv.driver=postgres"},
		{[]string{"--log-level", "loud"}, "log.level"},
		{[]string{"--admin-listen", "0.0.0.0:9187"}, "admin.token"},
		{[]string{"--admin-url", "ftp://example"}, "--admin-url"},
		{[]string{"--admin-url", "http://127.0.0.1:1"}, "admin API http://127.0.0.1:1/api/v1/status"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := runStatus(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// A wrong configuration must end the process with a non-zero status and
// the key on stderr, not just return an error inside the program.
func TestStatusBadConfigurationExitsNonZero(t *testing.T) {
	bin := testenv.ProxyBinary(t)
	cmd := exec.Command(bin, "status", "--kv-driver", "")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("kvproxy status with an empty kv.driver: %v, want a non-zero exit", err)
	}
	if !strings.Contains(stderr.String(), "kv.driver") {
		t.Fatalf("stderr %q does not name kv.driver", stderr.String())
	}
}

func TestStatusFromAdminAPI(t *testing.T) {
	const token = "admin-secret"
	// 0.0.0.0 is not loopback, so the proxy demands the token even for GET.
	p := testenv.StartProxy(t, "--kv-driver", "mem", "--admin-listen", "0.0.0.0:0", "--admin-token", token)
	id := instanceOf(t, p)
	base := adminURL(t, p)

	if _, err := runStatus(t, "--admin-url", base); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("status without the token: %v, want a 401 error", err)
	}
	t.Setenv("KVPROXY_ADMIN_TOKEN", "wrong")
	if _, err := runStatus(t, "--admin-url", base); err == nil || !strings.Contains(err.Error(), "bearer token") {
		t.Fatalf("status with a wrong token: %v, want a token error", err)
	}
	t.Setenv("KVPROXY_ADMIN_TOKEN", token)
	out, err := runStatus(t, "--admin-url", base)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	lines := statusLines(out)
	want := map[string]string{
		"phase":      "kv-only",
		"barrier":    "none",
		"instances":  "1 live",
		"backfill":   "not run",
		"verify":     "not run",
		"dirty keys": "0",
		"events":     "none",
	}
	for k, v := range want {
		if lines[k] != v {
			t.Errorf("%s: %q, want %q\n%s", k, lines[k], v, out)
		}
	}
	if !strings.HasPrefix(lines["epoch"], "1 ") {
		t.Errorf("epoch: %q", lines["epoch"])
	}
	if !strings.Contains(out, "  "+id) {
		t.Errorf("the live instance %s is not listed:\n%s", id, out)
	}

	out, err = runStatus(t, "--admin-url", base, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var doc metrics.StatusDocument
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("--json output is not a status document: %v\n%s", err, out)
	}
	if doc.Phase != "kv-only" || doc.Instance != id || len(doc.Instances) != 1 || !doc.Instances[0].Live || !doc.Instances[0].Self {
		t.Fatalf("document = %+v", doc)
	}
	if c := doc.Components[metrics.SourceBackfill]; c.Summary != metrics.NotRun {
		t.Fatalf("backfill = %+v", c)
	}

	// serve exports the KV request metrics (its store is wrapped) and the
	// metrics read from the control records.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	prom, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kvproxy_kv_request_duration_seconds_count{driver="mem",op="get"}`,
		"kvproxy_live_instances 1",
		"kvproxy_control_up 1",
		"kvproxy_barrier_held_seconds 0",
		`kvproxy_phase{phase="kv-only"} 1`,
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Without an upstream every migration action is refused.
	for _, action := range metrics.ActionNames() {
		code, body := post(t, base+"/api/v1/"+action, token)
		if code != 412 || !strings.Contains(body, "no connection to an upstream PostgreSQL") {
			t.Errorf("POST %s = %d %s, want 412", action, code, body)
		}
	}
}

// status reads the KV store directly while a proxy runs on it (postgres
// driver: shared between processes), and agrees with the admin API.
func TestStatusFromKVStore(t *testing.T) {
	dsn := testenv.PostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := drivers.Open(ctx, "postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctl := control.NewStore(store, nil)
	// An earlier switch attempt, so that the event log is not empty.
	if _, err := ctl.AddEvent(ctx, control.Event{Kind: "cutover", From: control.DualWrite, To: control.KVPrimary, By: "operator",
		Started: time.Now().Add(-time.Minute), Error: "verify not clean", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	store.Close()

	p := testenv.StartProxy(t, "--kv-driver", "postgres", "--kv-dsn", dsn)
	id := instanceOf(t, p)
	out, err := runStatus(t, "--kv-driver", "postgres", "--kv-dsn", dsn)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	lines := statusLines(out)
	if lines["phase"] != "kv-only" || lines["instances"] != "1 live" || lines["backfill"] != "not run" || lines["dirty keys"] != "0" {
		t.Errorf("status output:\n%s", out)
	}
	if !strings.Contains(out, "  "+id) {
		t.Errorf("instance %s missing:\n%s", id, out)
	}
	if !regexp.MustCompile(`#1\s+\S+\s+cutover dual-write -> kv-primary\s+epoch 1\s+0s\s+FAILED: verify not clean`).MatchString(out) {
		t.Errorf("event #1 missing or wrong:\n%s", out)
	}
	if _, ok := lines["shadow reads"]; ok {
		t.Errorf("shadow counters are per process; reading the store cannot know them:\n%s", out)
	}

}

// The status page served by a real serve process, rendered by headless
// Chromium. The local driver needs no server, so this runs everywhere
// Chromium does; an event is stored before the proxy starts so that the
// timeline has something to show.
func TestStatusPageFromServe(t *testing.T) {
	bin := pagetest.Chromium(t)
	path := filepath.Join(t.TempDir(), "kv.db")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := drivers.Open(ctx, "local", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := control.NewStore(store, nil).AddEvent(ctx, control.Event{Kind: "cutover", From: control.DualWrite, To: control.KVPrimary, By: "operator",
		Started: time.Now().Add(-time.Minute), Error: "verify not clean", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	store.Close()

	p := testenv.StartProxy(t, "--kv-driver", "local", "--kv-dsn", path)
	id := instanceOf(t, p)
	dom := pagetest.DumpDOM(t, bin, adminURL(t, p)+"/status")
	for _, want := range []string{
		`id="phase" class="badge">kv-only<`,
		`class="instance" data-id="` + id + `"`,
		id + " (this)",
		"verify not clean",
		`class="step current" data-phase="kv-only"`,
		`id="dirty-keys">0<`,
		`id="backfill-text" class="mute">not run<`,
		`id="shadow-mismatches">0<`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	_, img := pagetest.Screenshot(t, bin, adminURL(t, p)+"/", "status-page-serve.png")
	if n := pagetest.CountColor(img, 0x3867d6, 8); n < 2000 {
		t.Errorf("screenshot has %d accent pixels; the page did not render", n)
	}
}

// With the local driver a running proxy holds the file: status says to use
// --admin-url; once the proxy stopped cleanly, status reads the file and
// shows no live instance.
func TestStatusLocalStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	p := testenv.StartProxy(t, "--kv-driver", "local", "--kv-dsn", path)
	_, err := runStatus(t, "--kv-driver", "local", "--kv-dsn", path)
	if err == nil || !strings.Contains(err.Error(), "--admin-url") {
		t.Fatalf("status on a held local store: %v, want a hint to use --admin-url", err)
	}
	out, err := runStatus(t, "--kv-driver", "local", "--kv-dsn", path, "--admin-url", adminURL(t, p))
	if err != nil || statusLines(out)["instances"] != "1 live" {
		t.Fatalf("status through the admin API: %v\n%s", err, out)
	}
	p.Stop(t)
	out, err = runStatus(t, "--kv-driver", "local", "--kv-dsn", path)
	if err != nil {
		t.Fatal(err)
	}
	if l := statusLines(out); l["phase"] != "kv-only" || l["instances"] != "0 live" {
		t.Fatalf("after a clean stop:\n%s", out)
	}
}

func TestPrintStatus(t *testing.T) {
	started := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := func() metrics.StatusDocument {
		return metrics.StatusDocument{
			Phase: "dual-write", Epoch: 7, Changed: started, ChangedBy: "op",
			Instances: []metrics.InstanceStatus{
				{Instance: control.Instance{ID: "p1", Addr: "10.0.0.1:6432", EpochSeen: 7, PhaseSeen: "dual-write", LeaseExpires: started}, Live: true},
				{Instance: control.Instance{ID: "p2", EpochSeen: 6, PhaseSeen: "dual-write", LeaseExpires: started}, Live: true},
				{Instance: control.Instance{ID: "p3"}, Live: false},
			},
			Components: map[string]metrics.ComponentStatus{},
		}
	}
	cases := []struct {
		name   string
		edit   func(*metrics.StatusDocument)
		want   []string
		absent []string
	}{
		{"nothing run", func(*metrics.StatusDocument) {}, []string{
			"phase: dual-write", "epoch: 7 (changed 2026-03-01T12:00:00Z by op)", "instances: 2 live",
			"p2", "dual-write/6 (behind)", "backfill: not run", "verify: not run", "dirty keys: unknown", "events: none",
		}, []string{"p3"}},
		{"sources report", func(d *metrics.StatusDocument) {
			d.Components[metrics.SourceBackfill] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: metrics.BackfillProgress{State: "running", RowsCopied: 1, RowsTotal: 4, RowsPerSecond: 9}}
			d.Components[metrics.SourceVerify] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: metrics.VerifySummary{Clean: false, Mismatches: 2}}
			d.Components[metrics.SourceDirtyKeys] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: 12}
			d.Components["reverse_mirror"] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: map[string]int{"lag": 3}}
		}, []string{"running, 1 of 4 rows (25.0%), 9 rows/s", "NOT clean, 2 mismatches", "dirty keys: 12", `reverse_mirror:`, `{"lag":3}`}, nil},
		{"as JSON maps (from the admin API)", func(d *metrics.StatusDocument) {
			d.Components[metrics.SourceVerify] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: map[string]any{"clean": true}}
			d.Components[metrics.SourceDirtyKeys] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: map[string]any{"count": 0}}
		}, []string{"verify: clean", "dirty keys: 0"}, []string{"NOT clean"}},
		{"source errors and odd shapes", func(d *metrics.StatusDocument) {
			d.Components[metrics.SourceBackfill] = metrics.ComponentStatus{Available: true, Summary: "error", Error: "kv unreachable"}
			d.Components[metrics.SourceVerify] = metrics.ComponentStatus{Available: true, Summary: "ok", Status: []int{1, 2}}
		}, []string{"error: kv unreachable", "[1,2]"}, nil},
		{"barrier and events", func(d *metrics.StatusDocument) {
			d.Barrier = &metrics.BarrierStatus{Barrier: control.Barrier{ID: "b9", Target: "kv-primary", By: "op"}, HeldSeconds: 4.25}
			d.Events = []control.Event{
				{Seq: 2, Kind: "cutover", From: "dual-write", To: "kv-primary", OK: true, Epoch: 7, Started: started, Duration: 1500 * time.Millisecond},
				{Seq: 1, Kind: "init", To: "passthrough", OK: true, Epoch: 1, Started: started},
			}
		}, []string{"to kv-primary, held 4.2s (id b9, by op)", "#2", "cutover dual-write -> kv-primary", "1.5s", "init - -> passthrough"}, nil},
		{"no phase yet", func(d *metrics.StatusDocument) { d.Phase = "" }, []string{"not initialised"}, []string{"epoch:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := base()
			tc.edit(&d)
			var b bytes.Buffer
			if err := printStatus(&b, d, 10); err != nil {
				t.Fatal(err)
			}
			// Column widths depend on the longest key; compare with runs
			// of spaces collapsed.
			out := strings.Join(strings.Fields(b.String()), " ")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.absent {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func post(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The status sources read the records backfill, verify and the dirty-key
// log keep; status shows them once they exist.
func TestStatusSourcesFromRecords(t *testing.T) {
	ctx := context.Background()
	put := func(t *testing.T, store kv.Store, key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Set(ctx, []byte(control.Partition), []byte(key), b); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC)
	finished := started.Add(time.Hour)
	keys := []dirty.Key{{Entity: dirty.Staging, ID: "tok", StagingKey: []byte("a")}, {Entity: "branches", Repository: "r", ID: "main"}}
	cases := []struct {
		name     string
		upstream bool
		setup    func(t *testing.T, store kv.Store, upstream string)
		want     map[string]string
	}{
		{"nothing recorded", false, func(*testing.T, kv.Store, string) {},
			map[string]string{"backfill": "not run", "verify": "not run", "dirty keys": "0"}},
		{"backfill running, verify not clean, dirty keys in KV", false, func(t *testing.T, store kv.Store, _ string) {
			put(t, store, migrate.KeyBackfillStatus, migrate.Status{Started: started, Copied: migrate.Counts{"commits": 5}, Present: migrate.Counts{"branches": 2}})
			put(t, store, migrate.KeyBackfillCheckpoint, map[string]any{"stage": "commits"})
			put(t, store, migrate.KeyVerifyLast, migrate.Report{Started: started, Finished: finished, Entities: map[string]*migrate.EntityReport{"commits": {Match: 10, Mismatch: 1}}})
			if err := dirty.NewKVLog(store, nil).Add(ctx, keys, "test"); err != nil {
				t.Fatal(err)
			}
		}, map[string]string{
			"backfill":   "incomplete, 7 rows so far (total not known yet), at commits",
			"verify":     "NOT clean, 1 mismatches, finished 2026-04-01T11:00:00Z",
			"dirty keys": "2",
		}},
		{"backfill done, verify clean", false, func(t *testing.T, store kv.Store, _ string) {
			put(t, store, migrate.KeyBackfillStatus, migrate.Status{Started: started, Finished: &finished, Copied: migrate.Counts{"commits": 5}, Present: migrate.Counts{"branches": 2}})
			put(t, store, migrate.KeyVerifyLast, migrate.Report{Started: finished, Finished: finished, Entities: map[string]*migrate.EntityReport{"commits": {Match: 10}}})
		}, map[string]string{"backfill": "done, 7 of 7 rows (100.0%)", "verify": "clean, finished 2026-04-01T11:00:00Z"}},
		{"corrupt record", false, func(t *testing.T, store kv.Store, _ string) {
			if err := store.Set(ctx, []byte(control.Partition), []byte(migrate.KeyVerifyLast), []byte("{")); err != nil {
				t.Fatal(err)
			}
		}, map[string]string{"verify": "error: "}},
		{"upstream without an outbox", true, func(t *testing.T, store kv.Store, _ string) {
			if err := dirty.NewKVLog(store, nil).Add(ctx, keys[:1], "test"); err != nil {
				t.Fatal(err)
			}
		}, map[string]string{"dirty keys": "1"}},
		{"outbox and KV log add up", true, func(t *testing.T, store kv.Store, upstream string) {
			if err := dirty.NewKVLog(store, nil).Add(ctx, keys[:1], "test"); err != nil {
				t.Fatal(err)
			}
			pool, err := pgxpool.New(ctx, upstream)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			log := dirty.NewPGLog(pool)
			if err := log.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			if err := log.Add(ctx, keys, "test"); err != nil {
				t.Fatal(err)
			}
		}, map[string]string{"dirty keys": "3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upstream := ""
			if tc.upstream {
				upstream = testenv.PostgresDB(t)
			}
			store := mem.New()
			defer store.Close()
			tc.setup(t, store, upstream)
			doc, err := newStatusCollector(store, control.NewStore(store, nil), upstream, metrics.CollectorOptions{}).Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := printStatus(&b, doc, 10); err != nil {
				t.Fatal(err)
			}
			lines := statusLines(b.String())
			for k, v := range tc.want {
				if got := lines[k]; !strings.HasPrefix(got, v) || (!strings.HasSuffix(v, " ") && got != v) {
					t.Errorf("%s: %q, want %q\n%s", k, got, v, b.String())
				}
			}
		})
	}
}
