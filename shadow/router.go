package shadow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvproxy/kvproxy/kv/kvlock"
	"github.com/kvproxy/kvproxy/metrics"
	"github.com/kvproxy/kvproxy/refstore"
	"github.com/kvproxy/kvproxy/shadow/control"
	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/translate"
	"github.com/kvproxy/kvproxy/wire"
)

// RouterOptions configure a Router.
type RouterOptions struct {
	Translator *translate.Translator
	RefStore   *refstore.Store
	Locks      *kvlock.Manager
	// InstanceID names this proxy process in lock holders and logs.
	InstanceID string
	// Gate follows the phase and admits writes and locks. Required.
	Gate *Gate
	// HasUpstream says whether statements can be forwarded.
	HasUpstream bool
	// ShadowReadFraction (0 to 1) of ref-store reads in dual-write are also
	// run on KV and compared; ShadowReadTimeout bounds the delay that adds.
	ShadowReadFraction float64
	ShadowReadTimeout  time.Duration
	// MirrorTimeout bounds how long a dual write waits for KV before the
	// client's COMMIT is released anyway (the key stays in the dirty-key log).
	// Default 2s.
	MirrorTimeout time.Duration
	// KVLog and Mirror carry kv-primary's writes to PostgreSQL: the keys of
	// a write are logged in KVLog before its KV commit, Mirror copies them
	// from KV to PostgreSQL after it, and a key whose copy failed stays in
	// the log for the repairer. Both are required for kv-primary.
	KVLog  *dirty.KVLog
	Mirror dirty.Syncer
	// ShadowPool is the proxy's own pool to the upstream: kv-primary's
	// shadow reads and the confirmation of differences run on it.
	ShadowPool *pgxpool.Pool
	// BeforeMirror, if set, runs after the upstream commit and before the
	// KV mirror of a dual write. Tests use it to crash the proxy there.
	BeforeMirror func(ctx context.Context)
	// AutocommitRetries bounds how often a single autocommit statement that
	// lost an optimistic race is re-run before 40001 reaches the client.
	// Default 8. Statements inside an explicit transaction are never re-run:
	// the client's own retry loop owns that.
	AutocommitRetries int
	Metrics           *metrics.Metrics
	Log               *slog.Logger
}

// Router is the wire.Router of kvproxy.
type Router struct {
	opt RouterOptions

	logMu      sync.Mutex
	logged     map[string]time.Time // last mismatch log line per shape
	confirmSem chan struct{}        // bounds background shadow-read confirmations
}

// NewRouter returns a Router.
func NewRouter(opt RouterOptions) *Router {
	if opt.AutocommitRetries <= 0 {
		opt.AutocommitRetries = 8
	}
	if opt.MirrorTimeout <= 0 {
		opt.MirrorTimeout = 2 * time.Second
	}
	if opt.ShadowReadTimeout <= 0 {
		opt.ShadowReadTimeout = 50 * time.Millisecond
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Router{opt: opt, logged: map[string]time.Time{}, confirmSem: make(chan struct{}, 8)}
}

var (
	_ wire.Router           = (*Router)(nil)
	_ wire.SessionOpener    = (*Router)(nil)
	_ wire.Passthrough      = (*Router)(nil)
	_ wire.Rerouter         = (*Router)(nil)
	_ wire.RerouteNotifier  = (*Router)(nil)
	_ wire.UpstreamOptional = (*Router)(nil)
)

// Passthrough makes sessions that start in phase passthrough pure relays,
// the fast path of the wire layer.
func (r *Router) Passthrough(sess *wire.Session) bool {
	return state(sess).phase == control.Passthrough
}

// UpstreamOptional lets a session outlive its upstream connection in the
// phases where ref-store statements are answered from KV: a PostgreSQL
// restart then reaches only statements that need PostgreSQL.
func (r *Router) UpstreamOptional(sess *wire.Session) bool {
	ph := state(sess).phase
	return ph == control.KVPrimary || ph == control.KVOnly
}

// Reroute has a session route again at its next idle point once the epoch
// moved: every session follows a phase switch between two transactions,
// without reconnecting.
func (r *Router) Reroute(sess *wire.Session) bool { return r.opt.Gate.reroute(state(sess)) }

// NotifyReroute lets relaying sessions wait for a phase switch on the
// wire layer's event loop instead of asking Reroute at every idle point.
func (r *Router) NotifyReroute(changed func()) { r.opt.Gate.OnMove(changed) }

// session is the state of one client session answered from KV.
type session struct {
	tsess  *translate.Session
	holder string
	tx     *refstore.Txn // open explicit transaction, or nil
	inTx   bool
	failed bool
	// failReason says why (logged when the client commits anyway).
	failReason string
	readOnly   bool
	locks      []*kvlock.Lease
	pending    []pendingOp // dual-write: writes awaiting COMMIT
	// kv-only with an upstream: the client's BEGIN, run upstream only when
	// a statement of the transaction first goes there.
	beginSQL string
	upBegun  bool

	// The phase and epoch the session routes by, latched between
	// transactions (Reroute).
	phase string
	epoch int64
	// Gate bookkeeping (guarded by the Gate's mutex).
	writing     bool // the transaction has written (counted by the gate)
	doomed      bool // a drain gave up on the transaction
	committing  bool // past CheckCommit: a drain waits for it
	wrote       bool // a ref-store write ran (BeginWrite), not only BEGIN
	lockCounted bool // the session holds or awaits advisory locks (counted)
	holdsLocks  bool // a forwarded advisory lock succeeded in this transaction
	// kv-primary: keys written by the open transaction, to mirror.
	kpKeys []dirty.Key
}

// OpenSession attaches the session state and releases its locks however the
// session ends.
func (r *Router) OpenSession(ctx context.Context, sess *wire.Session) error {
	ts, err := translate.NewSession(sess.ParameterStatus("TimeZone"), sess.ParameterStatus("DateStyle"))
	if err != nil {
		ts = translate.UTC
	}
	st := &session{tsess: ts, holder: r.opt.InstanceID + "/" + strconv.FormatUint(uint64(sess.ID()), 10)}
	r.opt.Gate.reroute(st)
	sess.SetState(st)
	sess.OnClose(func(ctx context.Context) { r.endTx(ctx, st) })
	return nil
}

func state(sess *wire.Session) *session {
	if st, ok := sess.State().(*session); ok {
		return st
	}
	// OpenSession always runs first; this keeps a misuse from panicking.
	st := &session{tsess: translate.UTC, holder: "unknown", phase: control.KVOnly}
	sess.SetState(st)
	return st
}

// Route decides who answers sql.
func (r *Router) Route(ctx context.Context, sess *wire.Session, sql string) (wire.Handler, error) {
	phase := state(sess).phase
	if phase == control.Passthrough {
		return wire.Forward(), nil
	}
	p, err := r.opt.Translator.Plan(sql)
	if err != nil {
		if r.opt.HasUpstream {
			return wire.Forward(), nil // let PostgreSQL report it exactly
		}
		return wire.Local(errStatement{err: pgError(err)}), nil
	}
	switch phase {
	case control.DualWrite:
		return r.routeDualWrite(p), nil
	}
	switch p.Kind {
	case translate.Passthrough:
		if r.opt.HasUpstream {
			return r.forwardInTx(), nil
		}
		return wire.Local(errStatement{err: wire.Errorf("0A000",
			"kvproxy has no upstream PostgreSQL, so it answers only ref-store statements; cannot run: %s", short(sql))}), nil
	case translate.Unsupported:
		if r.opt.Metrics != nil {
			r.opt.Metrics.UnsupportedStatements.Inc()
		}
		r.opt.Log.Warn("unsupported ref-store statement", "sql", short(sql))
		return wire.Local(errStatement{err: pgError(p.Err)}), nil
	case translate.RefStore:
		if r.opt.HasUpstream && phase == control.KVOnly && (p.Shape == translate.L1 || p.Shape == translate.L2) {
			// PostgreSQL's own advisory locks, so that clients still
			// connected to PostgreSQL directly and clients of every proxy
			// instance exclude each other; they live in the upstream
			// transaction that begin opened there too. (kv-primary keeps
			// them in KV instead: its clients must not notice a PostgreSQL
			// restart.)
			return wire.ForwardHooks(r.lockBefore(r.beginUpstream), r.lockAfter(r.observeForwarded)), nil
		}
	case translate.Utility:
		switch p.Shape {
		case translate.EmptyQuery, translate.Deallocate, translate.DeallocateAll, translate.DiagCountRefTable:
			// Answered here: the ref-store tables are in KV now.
		default:
			if r.opt.HasUpstream {
				return r.forwardInTx(), nil
			}
		}
	}
	return wire.Local(&kvStatement{r: r, p: p}), nil
}

// forwardInTx forwards a statement of a kv-only session with an upstream:
// inside a transaction, the upstream transaction is opened just before the
// first statement that needs it (most ref-store transactions never do), and
// an error there aborts the whole transaction.
func (r *Router) forwardInTx() wire.Handler {
	return wire.ForwardHooks(r.beginUpstream, r.observeForwarded)
}

// lockBefore admits a forwarded advisory lock at the gate (a switch's
// barrier holds new locks back), then runs next.
func (r *Router) lockBefore(next wire.BeforeFunc) wire.BeforeFunc {
	return func(ctx context.Context, sess *wire.Session) error {
		st := state(sess)
		if err := r.opt.Gate.AcquireLock(ctx, st); err != nil {
			return err
		}
		if next != nil {
			if err := next(ctx, sess); err != nil {
				if !st.inTx {
					r.opt.Gate.ReleaseLock(st)
				}
				return err
			}
		}
		return nil
	}
}

// lockAfter ends the gate's count of a forwarded lock that PostgreSQL did
// not keep: it failed, or it ran outside a transaction (released at once).
func (r *Router) lockAfter(next wire.InspectFunc) wire.InspectFunc {
	return func(ctx context.Context, sess *wire.Session, res *wire.Inspected) error {
		st := state(sess)
		var err error
		if next != nil {
			err = next(ctx, sess, res)
		}
		if !st.inTx || res.Err != nil && !st.holdsLocks {
			r.opt.Gate.ReleaseLock(st)
		} else if res.Err == nil {
			st.holdsLocks = true
		}
		return err
	}
}

func (r *Router) beginUpstream(ctx context.Context, sess *wire.Session) error {
	st := state(sess)
	if !st.inTx {
		return nil
	}
	if st.failed {
		return wire.Errorf("25P02", "current transaction is aborted, commands ignored until end of transaction block")
	}
	if st.upBegun {
		return nil
	}
	if _, err := sess.Upstream().Exec(ctx, st.beginSQL); err != nil {
		return err
	}
	st.upBegun = true
	return nil
}

// observeForwarded watches statements forwarded inside a transaction that
// the proxy also holds in KV: an error upstream aborts the whole
// transaction, so later ref-store statements get 25P02 and COMMIT rolls
// back both sides, as PostgreSQL would.
func (r *Router) observeForwarded(_ context.Context, sess *wire.Session, res *wire.Inspected) error {
	if res.Err != nil {
		if st := state(sess); st.inTx {
			st.failed, st.failReason = true, "forwarded statement failed: "+res.Err.Message
		}
	}
	return nil
}

func short(sql string) string {
	if len(sql) > 200 {
		return sql[:200] + "..."
	}
	return sql
}

// errStatement answers every execution with one error.
type errStatement struct{ err error }

func (e errStatement) Describe(context.Context, *wire.Session, []uint32) (wire.Description, error) {
	return wire.Description{}, e.err
}

func (e errStatement) Execute(context.Context, *wire.Session, wire.Params, *wire.RowWriter) (string, error) {
	return "", e.err
}

// kvStatement is a statement answered from the KV ref store.
type kvStatement struct {
	r *Router
	p *translate.Plan
}

func (k *kvStatement) Describe(_ context.Context, _ *wire.Session, paramOIDs []uint32) (wire.Description, error) {
	if err := k.p.CheckParamTypes(paramOIDs); err != nil {
		return wire.Description{}, pgError(err)
	}
	d := wire.Description{ParamOIDs: k.p.ParamOIDs}
	if d.ParamOIDs == nil {
		d.ParamOIDs = []uint32{}
	}
	if k.p.Fields != nil {
		d.Columns = make([]wire.Column, len(k.p.Fields))
		for i, f := range k.p.Fields {
			d.Columns[i] = wire.Column{Name: f.Name, TypeOID: f.TypeOID, TypeSize: f.TypeSize, TypeModifier: f.TypeMod,
				TableOID: f.TableOID, AttrNumber: uint16(f.AttrNum)}
		}
	}
	return d, nil
}

func (k *kvStatement) Execute(ctx context.Context, sess *wire.Session, params wire.Params, w *wire.RowWriter) (string, error) {
	start := time.Now()
	tag, err := k.execute(ctx, sess, params, w)
	k.r.observe(k.p, "kv", start, err)
	return tag, err
}

// observe records a statement answered by the proxy: its metrics, and its
// error at debug level (the client got it; the log tells which shape).
func (r *Router) observe(p *translate.Plan, route string, start time.Time, err error) {
	if err != nil {
		r.opt.Log.Debug("statement failed", "shape", p.Shape.String(), "route", route, "err", err)
	}
	if m := r.opt.Metrics; m != nil {
		m.Statements.WithLabelValues(p.Shape.String(), route, outcomeOf(err)).Inc()
		m.StatementSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
}

func (k *kvStatement) execute(ctx context.Context, sess *wire.Session, params wire.Params, w *wire.RowWriter) (string, error) {
	r, p, st := k.r, k.p, state(sess)
	if p.Kind == translate.Transaction {
		return r.transaction(ctx, sess, st, p)
	}
	if st.failed {
		// Failed here, or a forwarded statement of the same transaction
		// failed upstream (observeForwarded).
		return "", wire.Errorf("25P02", "current transaction is aborted, commands ignored until end of transaction block")
	}
	tag, err := r.statement(ctx, st, p, params, w)
	if err != nil && st.inTx {
		st.failed, st.failReason = true, p.Shape.String()+": "+err.Error()
	}
	return tag, err
}

// transaction runs BEGIN, COMMIT and ROLLBACK. With an upstream they run
// there too, on the session's own connection, so that statements forwarded
// inside the transaction (auth, actions, ...) commit or roll back with the
// ref-store statements answered from KV. COMMIT applies the KV side first:
// if it loses a race, the upstream side is rolled back and the client gets
// 40001 for the whole transaction, which it retries.
func (r *Router) transaction(ctx context.Context, sess *wire.Session, st *session, p *translate.Plan) (string, error) {
	// Only a transaction that opened its upstream side ends it there; one
	// that was answered wholly from KV never touched PostgreSQL.
	upstream := func(sql string) (string, error) {
		if !r.opt.HasUpstream || !st.upBegun {
			return "", nil
		}
		st.upBegun = false
		res, err := sess.Upstream().Exec(ctx, sql)
		if err != nil {
			return "", err
		}
		return res.Tag, nil
	}
	switch p.Shape {
	case translate.TxBegin, translate.TxStart:
		if st.inTx { // BEGIN inside a transaction only warns in PostgreSQL
			return p.Command(), nil
		}
		if !p.Tx.ReadOnly {
			// A read-write transaction is a writer from its BEGIN: a
			// switch's barrier holds it here, or waits for it to finish,
			// rather than refusing its first write (lakeFS 0.68 ignores
			// some errors of a transaction's first statement).
			if err := r.opt.Gate.BeginTx(ctx, st); err != nil {
				return "", err
			}
		}
		st.inTx, st.failed, st.readOnly = true, false, p.Tx.ReadOnly
		st.beginSQL, st.upBegun = p.SQL, false
		st.tx = r.opt.RefStore.Begin()
		sess.SetTxStatus('T')
		return p.Command(), nil
	case translate.TxCommit:
		if !st.inTx {
			return "COMMIT", nil
		}
		tx, failed, readOnly := st.tx, st.failed, st.readOnly
		if st.upBegun && sess.TxStatus() == 'E' {
			// The upstream side of the transaction was lost (PostgreSQL
			// restarted): the whole transaction rolls back, as it would
			// have on PostgreSQL.
			failed, st.failReason = true, "the upstream transaction was lost"
		}
		st.tx = nil
		defer func() {
			r.endTx(ctx, st)
			sess.SetTxStatus('I')
		}()
		if failed {
			r.opt.Log.Debug("COMMIT of a failed transaction rolled back", "holder", st.holder, "reason", st.failReason)
			tx.Rollback()
			if _, err := upstream("ROLLBACK"); err != nil {
				return "", err
			}
			return "ROLLBACK", nil
		}
		if !readOnly && st.writing {
			// Reads of a read-only transaction are not re-validated: it
			// wrote nothing, and every read was current when it ran.
			if err := r.opt.Gate.CheckCommit(st); err != nil {
				tx.Rollback()
				_, _ = upstream("ROLLBACK")
				return "", err
			}
			refs, err := r.logIntent(ctx, st.kpKeys)
			if err != nil {
				tx.Rollback()
				_, _ = upstream("ROLLBACK")
				return "", err
			}
			if err := tx.Commit(ctx); err != nil {
				_, _ = upstream("ROLLBACK")
				return "", pgError(translateErr(err))
			}
			r.mirrorToSQL(ctx, st, st.kpKeys, refs)
		} else {
			tx.Rollback()
		}
		tag, err := upstream("COMMIT")
		if err != nil {
			return "", err
		}
		if tag == "" {
			tag = "COMMIT"
		}
		return tag, nil
	case translate.TxRollback:
		_, err := upstream("ROLLBACK")
		r.endTx(ctx, st)
		sess.SetTxStatus('I')
		if err != nil {
			return "", err
		}
		return "ROLLBACK", nil
	}
	return "", wire.Errorf("XX000", "unexpected transaction statement %s", p.Shape)
}

// endTx discards the open transaction and releases its locks.
func (r *Router) endTx(ctx context.Context, st *session) {
	if st.tx != nil {
		st.tx.Rollback()
	}
	st.tx, st.inTx, st.failed, st.readOnly, st.failReason = nil, false, false, false, ""
	st.beginSQL, st.upBegun = "", false
	st.pending, st.kpKeys = nil, nil
	r.opt.Gate.EndWrite(st)
	r.releaseLocks(ctx, st)
}

func (r *Router) releaseLocks(ctx context.Context, st *session) {
	for _, l := range st.locks {
		// Release with a fresh context: the session's may be cancelled
		// (client gone), and a lock left behind blocks others until its
		// lease expires.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := l.Release(rctx); err != nil && !errors.Is(err, kvlock.ErrLeaseLost) {
			r.opt.Log.Warn("release advisory lock", "holder", st.holder, "err", err)
		}
		cancel()
	}
	st.locks, st.holdsLocks = nil, false
	r.opt.Gate.ReleaseLock(st)
}

func (r *Router) statement(ctx context.Context, st *session, p *translate.Plan, params wire.Params, w *wire.RowWriter) (string, error) {
	vals, err := p.DecodeParams(st.tsess, "", params.Formats, params.Values)
	if err != nil {
		return "", pgError(err)
	}
	args, err := p.SlotValues(st.tsess, vals)
	if err != nil {
		return "", pgError(err)
	}
	switch p.Kind {
	case translate.Utility:
		return r.utility(ctx, st, p, w)
	case translate.RefStore:
	default:
		return "", wire.Errorf("XX000", "unexpected %s statement %s", p.Kind, p.Shape)
	}
	if p.Shape == translate.L1 || p.Shape == translate.L2 {
		return r.advisoryLock(ctx, st, p, args, w)
	}
	write := p.Fields == nil
	if write && st.inTx && st.readOnly {
		return "", wire.Errorf("25006", "cannot execute %s in a read-only transaction", p.Command())
	}
	if write {
		if err := r.opt.Gate.BeginWrite(ctx, st); err != nil {
			return "", err
		}
		if !st.inTx {
			defer r.opt.Gate.EndWrite(st)
		}
	}
	if !write && st.phase == control.KVPrimary {
		defer r.shadowReadPrimary(st, p, params)
	}
	if st.inTx {
		res, err := translate.Exec(ctx, r.opt.RefStore, st.tx, p, args)
		if err != nil {
			return "", pgError(err)
		}
		if write && st.phase == control.KVPrimary {
			st.kpKeys = append(st.kpKeys, dirty.KeysOf(p, args)...)
		}
		return r.writeResult(st, p, res, w)
	}
	// Autocommit: one transaction per statement. Being a single statement,
	// it can be re-run safely when it loses a race.
	var keys []dirty.Key
	var refs []string
	if write && st.phase == control.KVPrimary {
		keys = dirty.KeysOf(p, args)
		if refs, err = r.logIntent(ctx, keys); err != nil {
			return "", err
		}
	}
	for attempt := 1; ; attempt++ {
		tx := r.opt.RefStore.Begin()
		res, err := translate.Exec(ctx, r.opt.RefStore, tx, p, args)
		if err == nil && write {
			err = translateErr(tx.Commit(ctx))
		} else {
			tx.Rollback()
		}
		if err == nil {
			if write {
				r.mirrorToSQL(ctx, st, keys, refs)
			}
			return r.writeResult(st, p, res, w)
		}
		var te *translate.Error
		if attempt < r.opt.AutocommitRetries && errors.As(err, &te) && te.Code == "40001" {
			continue
		}
		return "", pgError(err)
	}
}

func (r *Router) writeResult(st *session, p *translate.Plan, res *translate.Result, w *wire.RowWriter) (string, error) {
	var dst [][]byte
	var buf []byte
	for _, row := range res.Rows {
		var err error
		dst, buf, err = p.EncodeRow(st.tsess, w.Formats(), row, dst[:0], buf[:0])
		if err != nil {
			return "", pgError(err)
		}
		if err := w.WriteRawRow(dst); err != nil {
			return "", err
		}
	}
	return res.Tag(p), nil
}

// advisoryLock is L1/L2: a transaction-scoped shared or exclusive lock,
// kept in the KV store so that every proxy instance sees it. Outside an
// explicit transaction it is released at once, as PostgreSQL releases an
// xact lock at the end of the implicit transaction.
func (r *Router) advisoryLock(ctx context.Context, st *session, p *translate.Plan, args []translate.Value, w *wire.RowWriter) (string, error) {
	if r.opt.Locks == nil {
		return "", wire.Errorf("0A000", "advisory locks need a lock manager")
	}
	if args[0].Null {
		// pg_advisory_xact_lock is strict: NULL in, NULL out, no lock.
		return r.writeResult(st, p, &translate.Result{Rows: [][]translate.Value{{translate.NullValue(p.Fields[0].TypeOID)}}}, w)
	}
	mode := kvlock.Shared
	if p.Shape == translate.L2 {
		mode = kvlock.Exclusive
	}
	if err := r.opt.Gate.AcquireLock(ctx, st); err != nil {
		return "", err
	}
	key := strconv.AppendInt([]byte("advisory/"), args[0].Int, 10)
	l, err := r.opt.Locks.Acquire(ctx, key, mode, st.holder)
	if err != nil {
		if len(st.locks) == 0 || !st.inTx {
			r.opt.Gate.ReleaseLock(st)
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return "", wire.Errorf("57014", "canceling statement due to user request")
		}
		return "", wire.Errorf("XX000", "advisory lock: %v", err)
	}
	if st.inTx {
		st.locks = append(st.locks, l)
	} else {
		if err := l.Release(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, kvlock.ErrLeaseLost) {
			r.opt.Log.Warn("release advisory lock", "holder", st.holder, "err", err)
		}
		r.opt.Gate.ReleaseLock(st)
	}
	return r.writeResult(st, p, &translate.Result{Rows: [][]translate.Value{{translate.VoidValue()}}}, w)
}

// utility answers the statements that are neither ref-store nor
// transaction control when there is no upstream to forward them to.
func (r *Router) utility(ctx context.Context, st *session, p *translate.Plan, w *wire.RowWriter) (string, error) {
	switch p.Shape {
	case translate.EmptyQuery:
		return "", nil
	case translate.Deallocate, translate.DeallocateAll:
		return p.Command(), nil
	case translate.DiagCountRefTable:
		n, err := r.countRefTable(ctx, p.Table)
		if err != nil {
			return "", pgError(translateErr(err))
		}
		return r.writeResult(st, p, &translate.Result{Rows: [][]translate.Value{{translate.Int8Value(n)}}}, w)
	case translate.DiagVersion:
		return r.writeResult(st, p, &translate.Result{Rows: [][]translate.Value{{translate.TextValue("PostgreSQL 15 (kvproxy, no upstream)")}}}, w)
	}
	return "", wire.Errorf("42P01", "relation %q does not exist (kvproxy has no upstream PostgreSQL)", p.Table)
}

// countRefTable answers the diagnostics collector's SELECT COUNT(*) FROM
// graveler_* from KV. Staged entries are counted for the tokens that
// branches reference: KV cannot enumerate staging partitions, so rows that
// PostgreSQL keeps for deleted branches (orphans) are not counted.
func (r *Router) countRefTable(ctx context.Context, table string) (int64, error) {
	rs := r.opt.RefStore
	repos, err := rs.ListRepositories(ctx, "", false, 0)
	if err != nil {
		return 0, err
	}
	if table == "graveler_repositories" {
		return int64(len(repos)), nil
	}
	var n int64
	for _, repo := range repos {
		switch table {
		case "graveler_commits":
			cs, err := rs.ListCommits(ctx, repo.ID, "", false, 0)
			if err != nil {
				return 0, err
			}
			n += int64(len(cs))
		case "graveler_tags":
			ts, err := rs.ListTags(ctx, repo.ID, "", false, 0)
			if err != nil {
				return 0, err
			}
			n += int64(len(ts))
		case "graveler_branches", "graveler_staging_kv":
			bs, err := rs.ListBranches(ctx, repo.ID, "", false, 0)
			if err != nil {
				return 0, err
			}
			if table == "graveler_branches" {
				n += int64(len(bs))
				continue
			}
			for _, b := range bs {
				if b.StagingToken == nil {
					continue
				}
				staged, err := rs.ListStaged(ctx, *b.StagingToken, nil, 0)
				if err != nil {
					return 0, err
				}
				n += int64(len(staged))
			}
		default:
			return 0, fmt.Errorf("no count for table %s", table)
		}
	}
	return n, nil
}

// outcomeOf is the outcome label of a statement's error.
func outcomeOf(err error) string {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe) && pe.Code == "40001":
		return "conflict"
	}
	return "error"
}

// translateErr gives refstore commit outcomes their SQLSTATE.
func translateErr(err error) error {
	if err == nil {
		return nil
	}
	var te *translate.Error
	if errors.As(err, &te) {
		return err
	}
	if errors.Is(err, refstore.ErrConflict) {
		return &translate.Error{Code: "40001", Message: "could not serialize access due to concurrent update", Err: err}
	}
	return &translate.Error{Code: "XX000", Message: fmt.Sprintf("ref store: %v", err), Err: err}
}

// pgError converts an error to what the wire layer sends: a *pgconn.PgError
// with the right SQLSTATE.
func pgError(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	var te *translate.Error
	if errors.As(err, &te) {
		return &pgconn.PgError{Severity: "ERROR", Code: te.Code, Message: te.Error(), Detail: te.Detail}
	}
	return &pgconn.PgError{Severity: "ERROR", Code: "XX000", Message: err.Error()}
}
