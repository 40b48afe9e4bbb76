package shadow

import (
	"context"
	"fmt"
	"time"

	"github.com/kvproxy/kvproxy/shadow/dirty"
	"github.com/kvproxy/kvproxy/translate"
	"github.com/kvproxy/kvproxy/wire"
)

// Dual writes (phase dual-write: PostgreSQL authoritative, KV mirrored).
//
// Ref-store writes and the transaction's COMMIT are answered by the proxy,
// which runs them on the client's own upstream connection (Session.Upstream),
// so it can add to the client's transaction before it commits:
//
//   - a write inside a transaction runs upstream as the client sent it, and
//     on success is queued on the session with the keys it touched;
//   - COMMIT logs every queued key in the outbox (dirty.InsertStatement) in
//     the same upstream transaction and commits it, both in one round trip
//     (wire.Upstream.ExecPipeline), and then replays the queue
//     on KV as one ref-store transaction. Only then does the client see its
//     COMMIT, so the client's own locking (advisory locks) orders the mirror;
//   - a write outside a transaction (lakeFS never sends one) is wrapped in
//     its own BEGIN, write, outbox, COMMIT, mirror.
//
// The outbox entry commits exactly when the write does. The mirror never
// fails the client: if KV is slow, down, or the replay conflicts, the
// entries simply stay behind. Every entry, mirrored or not, is later checked
// by the repairer (dirty.Repairer with migrate.Syncer), which re-copies the key
// from PostgreSQL: that catches writes that reached the two stores in
// different orders (two unlocked clients on two proxy instances) and writes
// whose proxy died between the upstream commit and the mirror (kill -9).
//
// Everything else (BEGIN, ROLLBACK, reads, advisory locks, other tables) is
// forwarded; BEGIN and ROLLBACK are watched to know the transaction state.
// The watchers only observe (wire.ForwardObserve): none of them changes a
// result, so an execution and its Sync go upstream together.

// pendingOp is a ref-store write waiting for its transaction's COMMIT.
type pendingOp struct {
	p    *translate.Plan
	args []translate.Value
	keys []dirty.Key
}

func (r *Router) routeDualWrite(p *translate.Plan) wire.Handler {
	switch p.Kind {
	case translate.Transaction:
		switch p.Shape {
		case translate.TxCommit:
			return wire.Local(&dwCommit{r: r, p: p})
		case translate.TxRollback:
			return wire.ForwardObserve(nil, r.dwRollback)
		default:
			if !p.Tx.ReadOnly {
				// A read-write transaction is a writer from its BEGIN (see
				// Router.transaction).
				return wire.ForwardObserve(r.dwBeginWrite, r.dwBegin)
			}
			return wire.ForwardObserve(nil, r.dwBegin)
		}
	case translate.Unsupported:
		// PostgreSQL would run it, but nobody could mirror it: the stores
		// would drift apart silently.
		if r.opt.Metrics != nil {
			r.opt.Metrics.UnsupportedStatements.Inc()
		}
		return wire.Local(errStatement{err: pgError(p.Err)})
	case translate.RefStore:
		switch {
		case p.Shape == translate.L1 || p.Shape == translate.L2:
			return wire.ForwardObserve(r.lockBefore(nil), r.lockAfter(nil))
		case p.Fields == nil:
			return wire.Local(&dwWrite{r: r, p: p})
		case r.opt.ShadowReadFraction > 0:
			return wire.ForwardObserve(nil, r.shadowRead(p))
		}
	}
	return wire.Forward()
}

func (r *Router) dwBeginWrite(ctx context.Context, sess *wire.Session) error {
	return r.opt.Gate.BeginTx(ctx, state(sess))
}

func (r *Router) dwBegin(_ context.Context, sess *wire.Session, res *wire.Inspected) error {
	st := state(sess)
	if res.Err != nil {
		if !st.inTx {
			r.opt.Gate.EndWrite(st)
		}
		return nil
	}
	st.inTx, st.pending = true, nil
	sess.SetTxStatus(0) // the upstream's transaction status again
	return nil
}

func (r *Router) dwRollback(ctx context.Context, sess *wire.Session, _ *wire.Inspected) error {
	r.endTx(ctx, state(sess))
	return nil
}

// dwWrite runs a ref-store write upstream on the client's connection.
type dwWrite struct {
	r *Router
	p *translate.Plan
}

func (w *dwWrite) Describe(ctx context.Context, sess *wire.Session, paramOIDs []uint32) (wire.Description, error) {
	return (&kvStatement{r: w.r, p: w.p}).Describe(ctx, sess, paramOIDs)
}

func (w *dwWrite) Execute(ctx context.Context, sess *wire.Session, params wire.Params, rw *wire.RowWriter) (string, error) {
	start := time.Now()
	tag, err := w.execute(ctx, sess, params, rw)
	// "both": PostgreSQL now, KV at COMMIT (the mirror is counted on its
	// own, as shape "mirror").
	w.r.observe(w.p, "both", start, err)
	return tag, err
}

func (w *dwWrite) execute(ctx context.Context, sess *wire.Session, params wire.Params, _ *wire.RowWriter) (string, error) {
	st, p := state(sess), w.p
	if err := w.r.opt.Gate.BeginWrite(ctx, st); err != nil {
		return "", err
	}
	if !st.inTx {
		defer w.r.opt.Gate.EndWrite(st)
	}
	vals, err := p.DecodeParams(st.tsess, "", params.Formats, params.Values)
	if err != nil {
		return "", pgError(err)
	}
	args, err := p.SlotValues(st.tsess, vals)
	if err != nil {
		return "", pgError(err)
	}
	// PostgreSQL gets the parameters in text form, exactly as it prints
	// them, so it reads back the values the client bound.
	text := make([]any, len(vals))
	for i, v := range vals {
		if v.Null {
			continue
		}
		b, err := translate.AppendValue(nil, st.tsess, p.ParamOIDs[i], 0, v)
		if err != nil {
			return "", pgError(err)
		}
		text[i] = string(b)
	}
	up := sess.Upstream()
	op := pendingOp{p: p, args: args, keys: dirty.KeysOf(p, args)}
	if st.inTx {
		res, err := up.Exec(ctx, p.SQL, text...)
		if err != nil {
			return "", err
		}
		st.pending = append(st.pending, op)
		return res.Tag, nil
	}
	// BEGIN, the write, its outbox entry and COMMIT in one round trip:
	// the first that fails skips the rest.
	stmts := []wire.Statement{{SQL: "BEGIN"}, {SQL: p.SQL, Args: text}}
	if log, ok := w.r.outboxStatement([]pendingOp{op}); ok {
		stmts = append(stmts, log)
	}
	stmts = append(stmts, wire.Statement{SQL: "COMMIT"})
	res, err := up.ExecPipeline(ctx, stmts...)
	if err != nil {
		if len(res) > 0 && len(res) < len(stmts)-1 {
			_, _ = up.Exec(ctx, "ROLLBACK")
		}
		return "", err
	}
	w.r.mirror(ctx, []pendingOp{op})
	return res[1].Tag, nil
}

// outboxStatement is the insert of the outbox entries of ops, to run in
// their upstream transaction; false when they touched no key.
func (r *Router) outboxStatement(ops []pendingOp) (wire.Statement, bool) {
	var keys []dirty.Key
	for _, op := range ops {
		keys = append(keys, op.keys...)
	}
	if len(keys) == 0 {
		return wire.Statement{}, false
	}
	sql, a := dirty.InsertStatement(keys, r.opt.InstanceID)
	return wire.Statement{SQL: sql, Args: a}, true
}

// dwCommit is COMMIT in dual-write: outbox, upstream COMMIT, mirror.
type dwCommit struct {
	r *Router
	p *translate.Plan
}

func (c *dwCommit) Describe(context.Context, *wire.Session, []uint32) (wire.Description, error) {
	return wire.Description{ParamOIDs: []uint32{}}, nil
}

func (c *dwCommit) Execute(ctx context.Context, sess *wire.Session, _ wire.Params, _ *wire.RowWriter) (string, error) {
	st, r := state(sess), c.r
	ops := st.pending
	inTx := st.inTx
	// Whatever happens below, the transaction ends here: its locks (held
	// upstream) and its place at the gate go with it.
	defer r.endTx(ctx, st)
	up := sess.Upstream()
	commit := []wire.Statement{{SQL: c.p.SQL}}
	if inTx && sess.TxStatus() != 'E' && len(ops) > 0 {
		if err := r.opt.Gate.CheckCommit(st); err != nil {
			_, _ = up.Exec(ctx, "ROLLBACK")
			sess.SetTxStatus('I')
			return "", err
		}
		// The outbox entries and the COMMIT go in one round trip; if the
		// insert fails, PostgreSQL skips the COMMIT.
		if log, ok := r.outboxStatement(ops); ok {
			commit = append([]wire.Statement{log}, commit...)
		}
	}
	res, err := up.ExecPipeline(ctx, commit...)
	if err != nil && len(res) < len(commit)-1 {
		// The outbox insert failed: the transaction is aborted upstream.
		_, _ = up.Exec(ctx, "ROLLBACK")
	}
	sess.SetTxStatus('I')
	if err != nil {
		return "", err
	}
	tag := res[len(res)-1].Tag
	if tag == "COMMIT" && len(ops) > 0 {
		r.mirror(ctx, ops)
	}
	return tag, nil
}

// mirror replays committed writes on KV, bounded by MirrorTimeout. Its
// failures only leave the keys to the repairer.
func (r *Router) mirror(ctx context.Context, ops []pendingOp) {
	if r.opt.BeforeMirror != nil {
		r.opt.BeforeMirror(ctx)
	}
	mctx, cancel := context.WithTimeout(ctx, r.opt.MirrorTimeout)
	defer cancel()
	start := time.Now()
	err := r.replay(mctx, ops)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		r.opt.Log.Debug("mirror to KV failed; the repairer will copy it", "err", err, "ops", len(ops))
	}
	if m := r.opt.Metrics; m != nil {
		m.Statements.WithLabelValues("mirror", "kv", outcome).Inc()
		m.StatementSeconds.WithLabelValues("mirror").Observe(time.Since(start).Seconds())
	}
}

func (r *Router) replay(ctx context.Context, ops []pendingOp) error {
	tx := r.opt.RefStore.Begin()
	for _, op := range ops {
		if _, err := translate.Exec(ctx, r.opt.RefStore, tx, op.p, op.args); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", op.p.Shape, err)
		}
	}
	return tx.Commit(ctx)
}
