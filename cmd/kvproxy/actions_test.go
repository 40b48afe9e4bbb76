package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/internal/testenv"
	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/kv/drivers"
	"github.com/kvproxy/kvproxy/kv/mem"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/tests/legacy"
	"github.com/kvproxy/kvproxy/tests/legacygen"
)

const actionToken = "action-secret"

// actionRig is an admin server with the actions registered, as serve sets
// it up, on a KV store and (optionally) a generated legacy database.
type actionRig struct {
	url   string
	store kv.Store
	ctl   *control.Store
	pool  *pgxpool.Pool
	gen   legacygen.Stats
}

type rigOptions struct {
	upstream bool // a real legacy database filled by legacygen
	loopback bool // serve on 127.0.0.1 (GETs open) instead of httptest's non-loopback handler
}

func newActionRig(t *testing.T, o rigOptions) *actionRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := &actionRig{}
	upstreamDSN := ""
	if o.upstream {
		upstreamDSN = testenv.PostgresDB(t)
		if err := legacy.LoadSchema(ctx, upstreamDSN); err != nil {
			t.Fatal(err)
		}
		var err error
		if r.gen, err = legacygen.Generate(ctx, upstreamDSN, legacygen.Config{Repos: 3, CommitsPerRepo: 40, BranchesPerRepo: 6, TagsPerRepo: 4, StagedPerBranch: 12, Seed: 3}); err != nil {
			t.Fatal(err)
		}
		pool, err := pgxpool.New(ctx, upstreamDSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		// serve creates the dirty-key outbox before it serves.
		if err := dirty.NewPGLog(pool).Setup(ctx); err != nil {
			t.Fatal(err)
		}
		r.pool = pool
		store, err := drivers.Open(ctx, "postgres", testenv.PostgresDB(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(store.Close)
		r.store = store
	} else {
		r.store = mem.New()
		t.Cleanup(r.store.Close)
	}
	if _, err := refstore.New(ctx, r.store, refstore.Options{}); err != nil {
		t.Fatal(err)
	}
	r.ctl = control.NewStore(r.store, nil)
	if _, err := r.ctl.Init(ctx, control.Passthrough, "test"); err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	admin := metrics.NewAdmin(reg, log)
	admin.SetToken(actionToken)
	status := newStatusCollector(r.store, r.ctl, upstreamDSN, metrics.CollectorOptions{Self: "test-instance"})
	admin.SetStatus(status)
	acts, err := registerActions(context.Background(), admin, actionEnv{Store: r.store, Upstream: r.pool, Metrics: metrics.New(reg),
		Log: log, InstanceID: "test-instance", Status: status})
	if err != nil {
		t.Fatal(err)
	}
	if o.loopback {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- admin.Serve(l) }()
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = admin.Shutdown(sctx)
			<-done
		})
		r.url = "http://" + l.Addr().String()
	} else {
		srv := httptest.NewServer(admin.Handler())
		t.Cleanup(srv.Close)
		r.url = srv.URL
	}
	// Runs before the pool and the store close (cleanups run last first).
	t.Cleanup(acts.Close)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// call sends one request and decodes the JSON answer.
func (r *actionRig) call(t *testing.T, method, path, body, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, r.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s = %d with a body that is not a JSON object: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

// must sends a request that must answer code.
func (r *actionRig) must(t *testing.T, code int, method, path, body string) map[string]any {
	t.Helper()
	got, out := r.call(t, method, path, body, actionToken)
	if got != code {
		t.Fatalf("%s %s = %d %v, want %d", method, path, got, out, code)
	}
	return out
}

// wait polls GET /api/v1/{kind} until the job is no longer running.
func (r *actionRig) wait(t *testing.T, kind string) jobInfo {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out := r.must(t, http.StatusOK, http.MethodGet, "/api/v1/"+kind, "")
		var j jobInfo
		remarshal(t, out["job"], &j)
		if j.State != jobRunning {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s job still running after 5 minutes: %+v", kind, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *actionRig) status(t *testing.T) metrics.StatusDocument {
	t.Helper()
	out := r.must(t, http.StatusOK, http.MethodGet, "/api/v1/status", "")
	var doc metrics.StatusDocument
	remarshal(t, out, &doc)
	return doc
}

func remarshal(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func component[T any](t *testing.T, doc metrics.StatusDocument, name string) T {
	t.Helper()
	c := doc.Components[name]
	if c.Summary != "ok" {
		t.Fatalf("status component %s = %+v, want ok", name, c)
	}
	var v T
	remarshal(t, c.Status, &v)
	return v
}

func TestActionsToken(t *testing.T) {
	cases := []struct {
		name     string
		loopback bool
		method   string
		path     string
		token    string
		want     int
	}{
		{"POST without a token", false, "POST", "/api/v1/backfill", "", 401},
		{"POST with a wrong token", false, "POST", "/api/v1/backfill", "nope", 401},
		{"POST with the token reaches the action", false, "POST", "/api/v1/backfill", actionToken, 412},
		{"switch without a token", false, "POST", "/api/v1/cutover?dry_run=true", "", 401},
		{"switch with the token", false, "POST", "/api/v1/cutover?dry_run=true", actionToken, 412},
		{"DELETE without a token", false, "DELETE", "/api/v1/backfill", "", 401},
		{"DELETE with the token", false, "DELETE", "/api/v1/backfill", actionToken, 404},
		{"GET without a token, not loopback", false, "GET", "/api/v1/verify", "", 401},
		{"GET with the token", false, "GET", "/api/v1/verify", actionToken, 404},
		{"GET without a token on loopback", true, "GET", "/api/v1/verify", "", 404},
		{"POST without a token on loopback", true, "POST", "/api/v1/verify", "", 401},
		{"DELETE without a token on loopback", true, "DELETE", "/api/v1/verify", "", 401},
		{"POST with the token on loopback", true, "POST", "/api/v1/finalize", actionToken, 412},
	}
	rigs := map[bool]*actionRig{false: newActionRig(t, rigOptions{}), true: newActionRig(t, rigOptions{loopback: true})}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := rigs[tc.loopback].call(t, tc.method, tc.path, "", tc.token)
			if code != tc.want {
				t.Fatalf("%s %s = %d %v, want %d", tc.method, tc.path, code, out, tc.want)
			}
			if code == 412 && !strings.Contains(out["error"].(string), "no connection to an upstream PostgreSQL") {
				t.Fatalf("412 without the upstream explanation: %v", out)
			}
		})
	}
}

// The routes can be registered once per admin server.
func TestActionsRegisterTwice(t *testing.T) {
	admin := metrics.NewAdmin(metrics.NewRegistry(), slog.New(slog.DiscardHandler))
	store := mem.New()
	defer store.Close()
	acts, err := registerActions(context.Background(), admin, actionEnv{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer acts.Close()
	if _, err := registerActions(context.Background(), admin, actionEnv{Store: store}); err == nil || !strings.Contains(err.Error(), "POST /api/v1/backfill is already registered") {
		t.Fatalf("second registration: %v", err)
	}
	if _, err := registerActions(context.Background(), metrics.NewAdmin(metrics.NewRegistry(), nil), actionEnv{}); err == nil || !strings.Contains(err.Error(), "KV store") {
		t.Fatalf("registration without a store: %v", err)
	}
}

func TestActionsBadParameters(t *testing.T) {
	r := newActionRig(t, rigOptions{})
	cases := []struct {
		path, body string
		want       string
	}{
		{"/api/v1/backfill?max_rows_per_second=fast", "", `parameter max_rows_per_second: "fast" is not a number`},
		{"/api/v1/backfill?max_rows_per_second=-1", "", "parameter max_rows_per_second"},
		{"/api/v1/backfill", `{"max_rows_per_second": "NaN"}`, "parameter max_rows_per_second"},
		{"/api/v1/backfill?include_orphans=maybe", "", `parameter include_orphans: "maybe" is not a boolean`},
		{"/api/v1/backfill?page_size=0", "", "parameter page_size"},
		{"/api/v1/backfill?repair=true", "", `unknown parameter "repair": backfill takes max_rows_per_second, include_orphans, page_size`},
		{"/api/v1/verify?incremental=2x", "", "parameter incremental"},
		{"/api/v1/verify?repair=1&repair=0", "", "parameter repair is given 2 times"},
		{"/api/v1/verify", `{"direction": "kv-to-sql"}`, `unknown parameter "direction"`},
		{"/api/v1/verify", `{"repair": [true]}`, "parameter repair: want a string, number or boolean"},
		{"/api/v1/verify?repair=true", `{"repair": false}`, `parameter repair is "true" in the query and "false" in the body`},
		{"/api/v1/verify", `[1]`, "want a JSON object of parameters"},
		{"/api/v1/cutover?dry_run=perhaps", "", "parameter dry_run"},
		{"/api/v1/cutover?timeout=forever", "", `parameter timeout: "forever" is not a duration`},
		{"/api/v1/rollback?timeout=-5s", "", "parameter timeout"},
		{"/api/v1/finalize", `{"max_dirty_age": 5}`, `parameter max_dirty_age: "5" is not a duration`},
		{"/api/v1/finalize?force=1", "", `unknown parameter "force": finalize takes dry_run, timeout, max_dirty_age`},
	}
	for _, tc := range cases {
		t.Run(tc.path+" "+tc.body, func(t *testing.T) {
			code, out := r.call(t, http.MethodPost, tc.path, tc.body, actionToken)
			msg, _ := out["error"].(string)
			if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
				t.Fatalf("= %d %q, want 400 containing %q", code, msg, tc.want)
			}
		})
	}
}

// Backfill runs in the background, one at a time; it can be stopped and
// resumed; its progress and outcome show in the status document.
func TestActionsBackfillJob(t *testing.T) {
	r := newActionRig(t, rigOptions{upstream: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	out := r.must(t, http.StatusConflict, "POST", "/api/v1/backfill", "")
	if msg := out["error"].(string); !strings.Contains(msg, "the phase is passthrough") || !strings.Contains(msg, "phase set dual-write") {
		t.Fatalf("backfill in passthrough: %q", msg)
	}
	if _, _, err := setPhase(ctx, r.ctl, control.DualWrite); err != nil {
		t.Fatal(err)
	}
	// Slow enough (over a minute) to be caught running; it is stopped long
	// before it ends.
	out = r.must(t, http.StatusAccepted, "POST", "/api/v1/backfill?max_rows_per_second=5&page_size=5", "")
	var first jobInfo
	remarshal(t, out["job"], &first)
	if first.State != jobRunning || !strings.HasPrefix(first.ID, "backfill-") || first.Params["max_rows_per_second"] != "5" {
		t.Fatalf("started job = %+v", first)
	}
	out = r.must(t, http.StatusConflict, "POST", "/api/v1/backfill", `{"include_orphans": true}`)
	if msg := out["error"].(string); !strings.Contains(msg, "already running") || !strings.Contains(msg, first.ID) {
		t.Fatalf("second backfill: %q", msg)
	}
	// A verify is another kind: it may run alongside.
	r.must(t, http.StatusAccepted, "POST", "/api/v1/verify", "")
	r.wait(t, jobVerify)

	// The status document shows the job running, with its total.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p := component[metrics.BackfillProgress](t, r.status(t), metrics.SourceBackfill)
		if p.State != "running" {
			t.Fatalf("backfill status = %+v, want running", p)
		}
		if p.RowsTotal > 0 && p.RowsCopied > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill status never showed progress: %+v", p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	jobs := component[map[string]jobInfo](t, r.status(t), SourceJobs)
	if jobs[jobBackfill].ID != first.ID || jobs[jobVerify].State != jobDone {
		t.Fatalf("jobs = %+v", jobs)
	}

	out = r.must(t, http.StatusOK, "DELETE", "/api/v1/backfill", "")
	var stopped jobInfo
	remarshal(t, out["job"], &stopped)
	if stopped.ID != first.ID || stopped.State != jobStopped || !strings.Contains(stopped.Error, "resume") {
		t.Fatalf("stopped job = %+v", stopped)
	}
	r.must(t, http.StatusNotFound, "DELETE", "/api/v1/backfill", "")
	if p := component[metrics.BackfillProgress](t, r.status(t), metrics.SourceBackfill); p.State != "incomplete" {
		t.Fatalf("backfill status after the stop = %+v, want incomplete", p)
	}

	// The next one resumes from the checkpoint and finishes.
	out = r.must(t, http.StatusAccepted, "POST", "/api/v1/backfill", "")
	var second jobInfo
	remarshal(t, out["job"], &second)
	if second.ID == first.ID {
		t.Fatal("the second job has the first one's id")
	}
	done := r.wait(t, jobBackfill)
	if done.State != jobDone || done.Error != "" || !strings.HasPrefix(done.Summary, "complete: ") {
		t.Fatalf("backfill job = %+v", done)
	}
	var res struct {
		Resumed bool `json:"resumed"`
		Status  struct {
			Runs int `json:"runs"`
		} `json:"status"`
	}
	remarshal(t, done.Result, &res)
	if !res.Resumed || res.Status.Runs != 2 {
		t.Fatalf("backfill result = %+v, want a resumed second run", res)
	}
	p := component[metrics.BackfillProgress](t, r.status(t), metrics.SourceBackfill)
	if p.State != "done" || p.RowsTotal == 0 || p.RowsCopied != p.RowsTotal {
		t.Fatalf("backfill status when done = %+v", p)
	}
}

// The whole migration through the API: dry-run cutover names what is
// missing; backfill, verify (its result in the status document), cutover,
// finalize move the phase record.
func TestActionsCutover(t *testing.T) {
	r := newActionRig(t, rigOptions{upstream: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, _, err := setPhase(ctx, r.ctl, control.DualWrite); err != nil {
		t.Fatal(err)
	}
	before, _, err := r.ctl.Phase(ctx)
	if err != nil {
		t.Fatal(err)
	}

	out := r.must(t, http.StatusPreconditionFailed, "POST", "/api/v1/cutover?dry_run=true", "")
	var failed []control.Check
	remarshal(t, out["failed_checks"], &failed)
	names := map[string]bool{}
	for _, c := range failed {
		names[c.Name] = true
		if c.OK || c.Detail == "" {
			t.Errorf("failed check without a reason: %+v", c)
		}
	}
	if len(failed) != 2 || !names["backfill complete"] || !names["last full verify clean and newer than the backfill"] {
		t.Fatalf("dry-run failed checks = %+v", failed)
	}
	if ev, _ := r.ctl.Events(ctx, 0); len(ev) != 1 { // the phase set only
		t.Fatalf("a dry run recorded an event: %+v", ev)
	}
	// Not a dry run: refused, and the attempt is recorded.
	out = r.must(t, http.StatusPreconditionFailed, "POST", "/api/v1/finalize", "")
	if !strings.Contains(out["error"].(string), "precondition failed: phase") {
		t.Fatalf("finalize in dual-write: %v", out)
	}

	r.must(t, http.StatusAccepted, "POST", "/api/v1/backfill", "")
	if j := r.wait(t, jobBackfill); j.State != jobDone {
		t.Fatalf("backfill = %+v", j)
	}
	r.must(t, http.StatusAccepted, "POST", "/api/v1/verify", `{"repair": true}`)
	j := r.wait(t, jobVerify)
	var vres struct {
		Clean       bool   `json:"clean"`
		Differences int64  `json:"differences"`
		Direction   string `json:"direction"`
	}
	remarshal(t, j.Result, &vres)
	if j.State != jobDone || !vres.Clean || vres.Differences != 0 || vres.Direction != "sql-to-kv" ||
		j.Summary != "clean: 0 differences, 0 repaired (sql-to-kv), 0 not" {
		t.Fatalf("verify = %+v (result %+v)", j, vres)
	}
	if jobs := component[map[string]jobInfo](t, r.status(t), SourceJobs); jobs[jobVerify].Summary != j.Summary || jobs[jobVerify].Result != nil {
		t.Fatalf("jobs in the status document = %+v, want the summary without the result", jobs)
	}
	v := component[metrics.VerifySummary](t, r.status(t), metrics.SourceVerify)
	if !v.Clean || v.Incremental || v.Entities["commits"]["match"] != r.gen.Commits || v.Finished.IsZero() {
		t.Fatalf("verify in the status document = %+v", v)
	}

	out = r.must(t, http.StatusOK, "POST", "/api/v1/cutover", `{"timeout": "30s"}`)
	var ev control.Event
	remarshal(t, out, &ev)
	if !ev.OK || ev.Kind != "cutover" || ev.To != control.KVPrimary || ev.Seq == 0 || ev.Epoch != before.Epoch+1 || !strings.Contains(ev.By, "test-instance") {
		t.Fatalf("cutover event = %+v", ev)
	}
	rec, _, err := r.ctl.Phase(ctx)
	if err != nil || rec.Phase != control.KVPrimary || rec.Epoch != before.Epoch+1 || rec.Barrier != nil {
		t.Fatalf("phase record after cutover = %+v, %v", rec, err)
	}
	out = r.must(t, http.StatusPreconditionFailed, "POST", "/api/v1/cutover", "")
	if !strings.Contains(out["error"].(string), "phase") {
		t.Fatalf("second cutover: %v", out)
	}
	r.must(t, http.StatusConflict, "POST", "/api/v1/backfill", "")

	// In kv-primary, KV is authoritative: verify repairs towards SQL.
	r.must(t, http.StatusAccepted, "POST", "/api/v1/verify?incremental", "")
	j = r.wait(t, jobVerify)
	remarshal(t, j.Result, &vres)
	if j.State != jobDone || !vres.Clean || vres.Direction != "kv-to-sql" || j.Params["incremental"] != "true" {
		t.Fatalf("incremental verify in kv-primary = %+v (result %+v)", j, vres)
	}

	out = r.must(t, http.StatusOK, "POST", "/api/v1/finalize?dry_run=1", "")
	remarshal(t, out, &ev)
	if ev.Seq != 0 || ev.To != control.KVOnly {
		t.Fatalf("finalize dry run = %+v", ev)
	}
	r.must(t, http.StatusOK, "POST", "/api/v1/finalize", "")
	if rec, _, err = r.ctl.Phase(ctx); err != nil || rec.Phase != control.KVOnly {
		t.Fatalf("phase record after finalize = %+v, %v", rec, err)
	}
	doc := r.status(t)
	if doc.Phase != control.KVOnly || len(doc.Events) < 3 || doc.Events[0].Kind != "finalize" || doc.Events[1].Kind != "cutover" {
		t.Fatalf("status after finalize: phase %s, events %+v", doc.Phase, doc.Events)
	}
}

// The actions on a real serve process: jobs run inside it, and its own
// instance acknowledges the cutover's barrier. Skipped while serve does not
// register the actions (they answer 501).
func TestActionsThroughServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	upstream := testenv.PostgresDB(t)
	if err := legacy.LoadSchema(ctx, upstream); err != nil {
		t.Fatal(err)
	}
	if _, err := legacygen.Generate(ctx, upstream, legacygen.Config{Repos: 2, CommitsPerRepo: 30, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	kvDSN := testenv.PostgresDB(t)
	p := testenv.StartProxy(t, "--upstream", upstream, "--phase", "dual-write", "--kv-driver", "postgres", "--kv-dsn", kvDSN,
		"--admin-token", actionToken)
	r := &actionRig{url: adminURL(t, p)}
	if code, out := r.call(t, http.MethodPost, "/api/v1/cutover?dry_run=true", "", actionToken); code == http.StatusNotImplemented {
		t.Skipf("serve does not register the actions yet: %v", out)
	}
	if code, _ := r.call(t, http.MethodPost, "/api/v1/backfill", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("POST without the token = %d, want 401", code)
	}
	r.must(t, http.StatusAccepted, http.MethodPost, "/api/v1/backfill", "")
	if j := r.wait(t, jobBackfill); j.State != jobDone {
		t.Fatalf("backfill = %+v\n%s", j, p.Logs())
	}
	r.must(t, http.StatusAccepted, http.MethodPost, "/api/v1/verify", "")
	if j := r.wait(t, jobVerify); j.State != jobDone {
		t.Fatalf("verify = %+v\n%s", j, p.Logs())
	}
	out := r.must(t, http.StatusOK, http.MethodPost, "/api/v1/cutover", `{"timeout": "30s"}`)
	var ev control.Event
	remarshal(t, out, &ev)
	if !ev.OK || ev.To != control.KVPrimary || ev.Seq == 0 {
		t.Fatalf("cutover event = %+v", ev)
	}
	// The instance follows the new epoch.
	deadline := time.Now().Add(time.Minute)
	for {
		doc := r.status(t)
		if doc.Phase != control.KVPrimary {
			t.Fatalf("phase after cutover = %s", doc.Phase)
		}
		if len(doc.Instances) == 1 && doc.Instances[0].EpochSeen == doc.Epoch && doc.Instances[0].PhaseSeen == control.KVPrimary {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the instance did not follow the cutover: %+v", doc.Instances)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
