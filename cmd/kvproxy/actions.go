package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/xid"

	"github.com/kvproxy/kvproxy/kv"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/cutover"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/shadow/migrate"
)

// actionEnv is what the admin API's actions run on: the running proxy's
// own stores, so that an operator can migrate without a second process
// (which the local KV driver would not even allow while the proxy holds
// the file).
type actionEnv struct {
	// Store is the proxy's KV store.
	Store kv.Store
	// Upstream is the proxy's pool to the upstream PostgreSQL; nil when it
	// has none, and then every action answers 412.
	Upstream *pgxpool.Pool
	// Metrics are the proxy's, so that backfill and verify gauges appear on
	// its /metrics; nil: none.
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// InstanceID names this proxy in the events a switch records.
	InstanceID string
	// Status, if set, gets a "jobs" source (this instance's backfill and
	// verify jobs with their live progress), and its backfill source shows
	// a backfill running here as "running" with its row total and rate.
	Status *metrics.Collector
	// MirrorTimeout is shadow.mirror_timeout, which switches need to know
	// how long a write's mirror may run.
	MirrorTimeout time.Duration
}

// Job kinds: one of each may run at a time per process.
const (
	jobBackfill = "backfill"
	jobVerify   = "verify"
)

// Job states.
const (
	jobRunning = "running"
	jobDone    = "done"
	jobFailed  = "failed"
	jobStopped = "stopped"
)

// SourceJobs is the status source listing this instance's API jobs.
const SourceJobs = "jobs"

// jobInfo is a background job as the API and the status document show it.
type jobInfo struct {
	ID            string            `json:"id"`
	Kind          string            `json:"kind"`
	State         string            `json:"state"`
	Params        map[string]string `json:"params,omitempty"`
	By            string            `json:"by"`
	Started       time.Time         `json:"started"`
	Finished      time.Time         `json:"finished,omitzero"`
	Stage         string            `json:"stage,omitempty"`
	Rows          int64             `json:"rows"`
	RowsTotal     int64             `json:"rows_total"`
	RowsPerSecond float64           `json:"rows_per_second"`
	Error         string            `json:"error,omitempty"`
	// Summary is one line about the result; the status document carries
	// it instead of the whole Result.
	Summary string `json:"summary,omitempty"`
	Result  any    `json:"result,omitempty"`
}

type job struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	info jobInfo
}

func (j *job) snapshot() jobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.info
}

// actions serves the admin API's actions of one proxy process.
type actions struct {
	env actionEnv
	ctx context.Context // ends when the proxy shuts down
	log *slog.Logger

	mu   sync.Mutex
	jobs map[string]*job // kind -> current or last job
	wg   sync.WaitGroup

	switching sync.Mutex // one switch at a time from this process
	stopJobs  context.CancelFunc
}

// registerActions routes POST (and, for jobs, GET and DELETE)
// /api/v1/{backfill,verify,cutover,rollback,finalize} on admin to env.
// Jobs started through the API run under ctx; Close stops them and waits.
func registerActions(ctx context.Context, admin *metrics.Admin, env actionEnv) (*actions, error) {
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	if env.Store == nil {
		return nil, errors.New("admin actions need the KV store")
	}
	jctx, stop := context.WithCancel(ctx)
	a := &actions{env: env, ctx: jctx, log: env.Log, jobs: map[string]*job{}, stopJobs: stop}
	routes := []struct {
		method, name string
		h            http.HandlerFunc
	}{
		{http.MethodPost, jobBackfill, a.postBackfill},
		{http.MethodPost, jobVerify, a.postVerify},
		{http.MethodGet, jobBackfill, a.getJob(jobBackfill)},
		{http.MethodGet, jobVerify, a.getJob(jobVerify)},
		{http.MethodDelete, jobBackfill, a.deleteJob(jobBackfill)},
		{http.MethodDelete, jobVerify, a.deleteJob(jobVerify)},
		{http.MethodPost, cutover.Cutover, a.postSwitch(cutover.Cutover)},
		{http.MethodPost, cutover.Rollback, a.postSwitch(cutover.Rollback)},
		{http.MethodPost, cutover.Finalize, a.postSwitch(cutover.Finalize)},
	}
	for _, r := range routes {
		if err := admin.HandleActionHTTP(r.method, r.name, r.h); err != nil {
			stop()
			return nil, err
		}
	}
	if env.Status != nil {
		env.Status.Register(SourceJobs, metrics.StatusFunc(a.jobsStatus))
		env.Status.Register(metrics.SourceBackfill, metrics.StatusFunc(a.backfillStatus))
	}
	return a, nil
}

// Close stops the running jobs (they resume from their checkpoints when
// started again) and waits for them to end.
func (a *actions) Close() {
	a.stopJobs()
	a.wg.Wait()
}

// errNoUpstream is the answer of every action on a proxy without an
// upstream pool.
const errNoUpstream = "this proxy has no connection to an upstream PostgreSQL (upstream is not set, or the dirty-key outbox could not be created there: see its log); the migration actions need one"

// phase reads the phase record.
func (a *actions) phase(ctx context.Context) (control.PhaseRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rec, _, err := control.NewStore(a.env.Store, nil).Phase(ctx)
	if err != nil {
		return rec, fmt.Errorf("read the phase record: %w", err)
	}
	return rec, nil
}

func (a *actions) postBackfill(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(r, jobBackfill, "max_rows_per_second", "include_orphans", "page_size")
	if err != nil {
		metrics.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	o := migrate.BackfillOptions{Source: a.env.Upstream, KV: a.env.Store, Metrics: a.env.Metrics}
	if o.MaxRowsPerSecond, err = p.float("max_rows_per_second", 0); err == nil {
		if o.IncludeOrphans, err = p.bool("include_orphans", false); err == nil {
			o.PageSize, err = p.int("page_size", 1000, 1, 100000)
		}
	}
	if err != nil {
		metrics.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := a.ready(w, r, jobBackfill, control.DualWrite); !ok {
		return
	}
	a.start(w, r, jobBackfill, p, func(ctx context.Context, j *job) (any, error) {
		o.Log = a.log.With("job", j.info.ID)
		o.Progress = migrate.NewProgress(jobBackfill, io.Discard, false, slog.New(&progressSink{j: j, next: o.Log.Handler()}), time.Second)
		b, err := migrate.NewBackfill(o)
		if err != nil {
			return nil, err
		}
		res, err := b.Run(ctx)
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

func (a *actions) postVerify(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(r, jobVerify, "incremental", "repair", "include_orphans", "max_rows_per_second", "page_size")
	if err != nil {
		metrics.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	o := migrate.VerifyOptions{Source: a.env.Upstream, KV: a.env.Store, Metrics: a.env.Metrics}
	for _, step := range []func() error{
		func() (err error) { o.Incremental, err = p.bool("incremental", false); return },
		func() (err error) { o.Repair, err = p.bool("repair", false); return },
		func() (err error) { o.IncludeOrphans, err = p.bool("include_orphans", false); return },
		func() (err error) { o.MaxRowsPerSecond, err = p.float("max_rows_per_second", 0); return },
		func() (err error) { o.PageSize, err = p.int("page_size", 1000, 1, 100000); return },
	} {
		if err := step(); err != nil {
			metrics.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	rec, ok := a.ready(w, r, jobVerify, control.DualWrite, control.KVPrimary)
	if !ok {
		return
	}
	// The phase in force decides which store is authoritative, hence the
	// repair direction and which half of the dirty-key log holds the keys
	// to check; a caller cannot ask for the unsafe direction.
	var log dirty.Log = dirty.NewPGLog(a.env.Upstream)
	if rec.Phase == control.KVPrimary {
		o.Direction = migrate.KVToSQL
		log = dirty.NewKVLog(a.env.Store, nil)
	}
	if o.Incremental {
		o.Dirty = migrate.FromDirtyLog(log, 0)
	}
	p.vals["direction"] = o.Direction.String()
	a.start(w, r, jobVerify, p, func(ctx context.Context, j *job) (any, error) {
		o.Log = a.log.With("job", j.info.ID)
		o.Progress = migrate.NewProgress(jobVerify, io.Discard, false, slog.New(&progressSink{j: j, next: o.Log.Handler()}), time.Second)
		v, err := migrate.NewVerifier(o)
		if err != nil {
			return nil, err
		}
		rep, err := v.Run(ctx)
		if err != nil {
			return nil, err
		}
		return verifyResult{Clean: rep.Clean(), Differences: rep.Differences(), Report: rep}, nil
	})
}

// verifyResult puts the verdict first in a verify job's result.
type verifyResult struct {
	Clean       bool  `json:"clean"`
	Differences int64 `json:"differences"`
	migrate.Report
}

// ready answers 412 without an upstream and 409 when the phase is not one
// of phases, naming the job's precondition; otherwise it returns the phase
// record.
func (a *actions) ready(w http.ResponseWriter, r *http.Request, kind string, phases ...string) (control.PhaseRecord, bool) {
	if a.env.Upstream == nil {
		metrics.WriteError(w, http.StatusPreconditionFailed, errNoUpstream)
		return control.PhaseRecord{}, false
	}
	rec, err := a.phase(r.Context())
	if err != nil {
		metrics.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return rec, false
	}
	if !slices.Contains(phases, rec.Phase) {
		why := map[string]string{
			jobBackfill: "backfill runs in dual-write, where every write is mirrored to KV while the copy runs: run kvproxy phase set dual-write first",
			jobVerify:   "verify compares the stores while both are written (dual-write or kv-primary)",
		}[kind]
		metrics.WriteError(w, http.StatusConflict, fmt.Sprintf("the phase is %s (epoch %d): %s", rec.Phase, rec.Epoch, why))
		return rec, false
	}
	return rec, true
}

// start runs fn as the job of kind in the background and answers 202 with
// it, or 409 with the job of that kind already running.
func (a *actions) start(w http.ResponseWriter, r *http.Request, kind string, p *params, fn func(context.Context, *job) (any, error)) {
	a.mu.Lock()
	if cur := a.jobs[kind]; cur != nil {
		if info := cur.snapshot(); info.State == jobRunning {
			a.mu.Unlock()
			metrics.WriteJSON(w, http.StatusConflict, map[string]any{
				"error":   fmt.Sprintf("a %s is already running on this instance: job %s, started %s; stop it with DELETE /api/v1/%s", kind, info.ID, info.Started.Format(time.RFC3339), kind),
				"running": info,
			})
			return
		}
	}
	if err := a.ctx.Err(); err != nil {
		a.mu.Unlock()
		metrics.WriteError(w, http.StatusServiceUnavailable, "the proxy is shutting down")
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	j := &job{cancel: cancel, done: make(chan struct{}), info: jobInfo{
		ID: kind + "-" + xid.New().String(), Kind: kind, State: jobRunning, Params: p.vals,
		By: r.RemoteAddr, Started: time.Now().UTC(),
	}}
	a.jobs[kind] = j
	a.wg.Add(1)
	a.mu.Unlock()
	a.log.Info("admin job started", "job", j.info.ID, "params", p.vals, "remote", r.RemoteAddr)
	go func() {
		defer a.wg.Done()
		defer close(j.done)
		defer cancel()
		res, err := fn(ctx, j)
		j.mu.Lock()
		j.info.Finished = time.Now().UTC()
		switch {
		case err == nil:
			j.info.State, j.info.Result, j.info.Summary = jobDone, res, summarize(res)
		case ctx.Err() != nil:
			j.info.State, j.info.Error = jobStopped, fmt.Sprintf("stopped (%v); POST again to resume from the checkpoint", err)
		default:
			j.info.State, j.info.Error = jobFailed, err.Error()
		}
		info := j.info
		j.mu.Unlock()
		lvl := slog.LevelInfo
		if info.State == jobFailed {
			lvl = slog.LevelWarn
		}
		a.log.Log(context.Background(), lvl, "admin job ended", "job", info.ID, "state", info.State, "err", info.Error,
			"seconds", info.Finished.Sub(info.Started).Seconds())
	}()
	w.Header().Set("Location", "/api/v1/"+kind)
	metrics.WriteJSON(w, http.StatusAccepted, map[string]any{"job": j.snapshot()})
}

// getJob answers the running or last job of kind.
func (a *actions) getJob(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		j := a.jobs[kind]
		a.mu.Unlock()
		if j == nil {
			metrics.WriteError(w, http.StatusNotFound, fmt.Sprintf("no %s has been started through this instance's API", kind))
			return
		}
		metrics.WriteJSON(w, http.StatusOK, map[string]any{"job": j.snapshot()})
	}
}

// deleteJob stops the running job of kind and waits (up to 30s) for it to
// save its checkpoint: 200 with the stopped job, or 202 if it is still
// stopping.
func (a *actions) deleteJob(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		j := a.jobs[kind]
		a.mu.Unlock()
		if j == nil || j.snapshot().State != jobRunning {
			metrics.WriteError(w, http.StatusNotFound, fmt.Sprintf("no %s is running on this instance", kind))
			return
		}
		a.log.Info("admin job stop requested", "job", j.info.ID, "remote", r.RemoteAddr)
		j.cancel()
		select {
		case <-j.done:
			metrics.WriteJSON(w, http.StatusOK, map[string]any{"job": j.snapshot()})
		case <-time.After(30 * time.Second):
			metrics.WriteJSON(w, http.StatusAccepted, map[string]any{"job": j.snapshot()})
		case <-r.Context().Done():
		}
	}
}

// jobsStatus is the "jobs" status source: the current or last job of each
// kind started through this instance.
func (a *actions) jobsStatus(context.Context) (any, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.jobs) == 0 {
		return nil, metrics.ErrNotRun
	}
	out := map[string]jobInfo{}
	for k, j := range a.jobs {
		info := j.snapshot()
		info.Result = nil // GET /api/v1/{kind} has it; the document stays small
		out[k] = info
	}
	return out, nil
}

// summarize describes a job's result in one line.
func summarize(res any) string {
	switch r := res.(type) {
	case migrate.BackfillResult:
		return fmt.Sprintf("complete: %d rows copied, %d already present, %d reverted (this run: %d copied)",
			r.Status.Copied.Sum(), r.Status.Present.Sum(), r.Status.Reverted.Sum(), r.Copied.Sum())
	case verifyResult:
		s := "clean"
		if !r.Clean {
			s = "NOT clean"
		}
		s = fmt.Sprintf("%s: %d differences", s, r.Differences)
		if r.Repair {
			s += fmt.Sprintf(", %d repaired (%s), %d not", r.Repaired, r.Direction, r.RepairFailed)
		}
		return s
	}
	return ""
}

// backfillStatus overlays the record-based backfill status with what only
// this process knows while its job runs: the row total, the rate, and how
// the last run ended.
func (a *actions) backfillStatus(ctx context.Context) (any, error) {
	v, err := backfillStatus(ctx, a.env.Store)
	a.mu.Lock()
	j := a.jobs[jobBackfill]
	a.mu.Unlock()
	if j == nil {
		return v, err
	}
	info := j.snapshot()
	p, ok := v.(metrics.BackfillProgress)
	switch {
	case info.State == jobRunning && (ok || errors.Is(err, metrics.ErrNotRun)):
		if !ok {
			p = metrics.BackfillProgress{Started: info.Started}
		}
		p.State, p.RowsTotal, p.RowsPerSecond, p.Updated = "running", info.RowsTotal, info.RowsPerSecond, time.Now().UTC()
		if info.Stage != "" {
			p.Stage = info.Stage
		}
		// The record is written per page; the job's count is fresher.
		p.RowsCopied = max(p.RowsCopied, info.Rows)
		return p, nil
	case info.State == jobFailed && ok && p.State != "done":
		p.State, p.Error = "failed", info.Error
		return p, nil
	}
	return v, err
}

// postSwitch runs cutover, rollback or finalize synchronously: 200 with
// the recorded event, 412 when a precondition fails (the event names the
// checks), 409 when the switch started and was aborted (old phase kept).
func (a *actions) postSwitch(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := readParams(r, kind, "dry_run", "timeout", "max_dirty_age")
		if err != nil {
			metrics.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		o := cutover.Options{Kind: kind, KV: a.env.Store, Control: control.NewStore(a.env.Store, nil), Source: a.env.Upstream,
			By: fmt.Sprintf("admin API of %s (from %s)", a.env.InstanceID, r.RemoteAddr), MirrorTimeout: a.env.MirrorTimeout}
		if o.DryRun, err = p.bool("dry_run", false); err == nil {
			if o.Timeout, err = p.duration("timeout", 5*time.Second, 5*time.Minute); err == nil {
				o.MaxDirtyAge, err = p.duration("max_dirty_age", 15*time.Second, 24*time.Hour)
			}
		}
		if err != nil {
			metrics.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if a.env.Upstream == nil {
			metrics.WriteError(w, http.StatusPreconditionFailed, errNoUpstream)
			return
		}
		if !a.switching.TryLock() {
			metrics.WriteError(w, http.StatusConflict, "another switch is in progress on this instance")
			return
		}
		defer a.switching.Unlock()
		o.Log = a.log.With("remote", r.RemoteAddr)
		// A client that hangs up must not cut a switch short: it is bounded
		// by its own timeout, and its outcome is in the event log. Shutting
		// the proxy down still ends it (which releases the barrier).
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), o.Timeout+2*time.Minute)
		defer cancel()
		defer context.AfterFunc(a.ctx, cancel)()
		a.log.Info("admin switch", "switch", kind, "dry_run", o.DryRun, "remote", r.RemoteAddr)
		res, err := cutover.Run(ctx, o)
		if err == nil {
			metrics.WriteJSON(w, http.StatusOK, res.Event)
			return
		}
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, cutover.ErrPrecondition):
			code = http.StatusPreconditionFailed
		case errors.Is(err, cutover.ErrAborted):
			code = http.StatusConflict
		}
		body := map[string]any{"error": err.Error(), "event": res.Event}
		var failed []control.Check
		for _, c := range res.Event.Checks {
			if !c.OK {
				failed = append(failed, c)
			}
		}
		if len(failed) > 0 {
			body["failed_checks"] = failed
		}
		metrics.WriteJSON(w, code, body)
	}
}

// progressSink is the slog handler a job's migrate.Progress logs to: it
// keeps the latest stage, row counts and rate for the status document, and
// passes a line on to the proxy's log every 10 seconds and at the end.
type progressSink struct {
	j    *job
	next slog.Handler

	mu   sync.Mutex
	last time.Time
}

func (s *progressSink) Enabled(context.Context, slog.Level) bool { return true }

func (s *progressSink) Handle(ctx context.Context, r slog.Record) error {
	final := false
	s.j.mu.Lock()
	r.Attrs(func(at slog.Attr) bool {
		v := at.Value.Resolve()
		// Kinds are checked: Value's accessors panic on another kind.
		switch k := v.Kind(); {
		case at.Key == "stage":
			s.j.info.Stage = v.String()
		case at.Key == "rows" && k == slog.KindInt64:
			s.j.info.Rows = v.Int64()
		case at.Key == "total" && k == slog.KindInt64:
			s.j.info.RowsTotal = v.Int64()
		case at.Key == "rows_per_second" && k == slog.KindInt64:
			s.j.info.RowsPerSecond = float64(v.Int64())
		case at.Key == "rows_per_second" && k == slog.KindFloat64:
			s.j.info.RowsPerSecond = v.Float64()
		case at.Key == "done" && k == slog.KindBool:
			final = v.Bool()
		}
		return true
	})
	s.j.mu.Unlock()
	s.mu.Lock()
	pass := final || time.Since(s.last) >= 10*time.Second
	if pass {
		s.last = time.Now()
	}
	s.mu.Unlock()
	if pass && s.next.Enabled(ctx, r.Level) {
		return s.next.Handle(ctx, r)
	}
	return nil
}

func (s *progressSink) WithAttrs(as []slog.Attr) slog.Handler {
	return &progressSink{j: s.j, next: s.next.WithAttrs(as)}
}

func (s *progressSink) WithGroup(name string) slog.Handler {
	return &progressSink{j: s.j, next: s.next.WithGroup(name)}
}

// params are an action's parameters, from the query string and/or a JSON
// object body (the same name in both must agree).
type params struct {
	action string
	vals   map[string]string
}

// readParams collects the parameters of r, refusing names not in allowed.
func readParams(r *http.Request, action string, allowed ...string) (*params, error) {
	p := &params{action: action, vals: map[string]string{}}
	unknown := func(name string) error {
		return fmt.Errorf("unknown parameter %q: %s takes %s", name, action, strings.Join(allowed, ", "))
	}
	for name, vs := range r.URL.Query() {
		if !slices.Contains(allowed, name) {
			return nil, unknown(name)
		}
		if len(vs) > 1 {
			return nil, fmt.Errorf("parameter %s is given %d times", name, len(vs))
		}
		p.vals[name] = vs[0]
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("request body: want a JSON object of parameters: %w", err)
	}
	for name, v := range obj {
		if !slices.Contains(allowed, name) {
			return nil, unknown(name)
		}
		var s string
		switch v := v.(type) {
		case nil:
			continue
		case string:
			s = v
		case bool:
			s = strconv.FormatBool(v)
		case json.Number:
			s = v.String()
		default:
			return nil, fmt.Errorf("parameter %s: want a string, number or boolean, not %s", name, strings.TrimSpace(string(mustMarshal(v))))
		}
		if q, ok := p.vals[name]; ok && q != s {
			return nil, fmt.Errorf("parameter %s is %q in the query and %q in the body", name, q, s)
		}
		p.vals[name] = s
	}
	return p, nil
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// bool reads a flag; present without a value (?dry_run) means true.
func (p *params) bool(name string, def bool) (bool, error) {
	s, ok := p.vals[name]
	if !ok {
		return def, nil
	}
	if s == "" {
		p.vals[name] = "true"
		return true, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("parameter %s: %q is not a boolean (true or false)", name, s)
	}
	return b, nil
}

// float reads a non-negative finite number.
func (p *params) float(name string, def float64) (float64, error) {
	s, ok := p.vals[name]
	if !ok {
		return def, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("parameter %s: %q is not a number >= 0 (0: no limit)", name, s)
	}
	return f, nil
}

// int reads an integer in [lo, hi].
func (p *params) int(name string, def, lo, hi int) (int, error) {
	s, ok := p.vals[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("parameter %s: %q is not an integer from %d to %d", name, s, lo, hi)
	}
	return n, nil
}

// duration reads a Go duration ("5s", "1m30s") in (0, hi].
func (p *params) duration(name string, def, hi time.Duration) (time.Duration, error) {
	s, ok := p.vals[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > hi {
		return 0, fmt.Errorf("parameter %s: %q is not a duration above 0 and at most %s (e.g. 5s)", name, s, hi)
	}
	return d, nil
}
