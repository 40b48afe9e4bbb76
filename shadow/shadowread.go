package shadow

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/kvproxy/kvproxy/translate"
	"github.com/kvproxy/kvproxy/wire"
)

// Shadow reads. In dual-write a sampled ref-store read is answered by
// PostgreSQL as usual; before the answer is released, the same statement
// runs on KV (bounded by ShadowReadTimeout) and the two results are compared
// on canonical values: NULLs, text, bytes, timestamps at microseconds,
// metadata as a map (JSON null and {} alike), arrays element by element,
// and B6's rows as a set (SQL does not order its ties). In kv-primary the
// roles swap: the client gets KV's answer at once and the comparison with
// PostgreSQL runs in the background. The client always gets the
// authoritative answer.
//
// A read racing a concurrent write (another client's, between its commit
// on one store and its mirror on the other) differs legitimately. So a
// difference is confirmed in the background before it counts: both stores
// are read again, fresh, a few times, and only a difference that persists
// is a mismatch. Anything systematic persists; races do not.

// confirmDelays space the re-reads of a difference before it counts: the
// secondary store's mirror (or, in kv-primary, PostgreSQL's) may be a few
// hundred milliseconds behind under load, and after an outage of the
// secondary as far behind as the repairer's minimum age (5 s in
// kv-primary). Confirmation runs in the
// background, so the wait costs the client nothing.
var confirmDelays = []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond,
	600 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond, 5 * time.Second}

func (r *Router) shadowRead(p *translate.Plan) wire.InspectFunc {
	return func(ctx context.Context, sess *wire.Session, res *wire.Inspected) error {
		if m := r.opt.Metrics; m != nil {
			outcome := "ok"
			switch {
			case res.Err != nil && res.Err.Code == "40001":
				outcome = "conflict"
			case res.Err != nil:
				outcome = "error"
			}
			m.Statements.WithLabelValues(p.Shape.String(), "upstream", outcome).Inc()
		}
		if res.Err != nil || r.opt.ShadowReadFraction <= 0 || rand.Float64() >= r.opt.ShadowReadFraction {
			return nil
		}
		if len(res.Fields) != len(p.Fields) {
			return nil // the client did not describe the statement: formats unknown
		}
		st := state(sess)
		sctx, cancel := context.WithTimeout(ctx, r.opt.ShadowReadTimeout)
		defer cancel()
		diff, err := r.compareRead(sctx, st, p, res)
		if err != nil {
			r.opt.Log.Debug("shadow read abandoned", "shape", p.Shape.String(), "err", err)
			return nil
		}
		if diff == "" || r.opt.ShadowPool == nil {
			r.countShadow(p, diff)
			return nil
		}
		r.confirmLater(st, p, res.Params, diff)
		return nil
	}
}

// shadowReadPrimary samples a read answered from KV in kv-primary and
// compares it with PostgreSQL in the background.
func (r *Router) shadowReadPrimary(st *session, p *translate.Plan, params wire.Params) {
	if r.opt.ShadowPool == nil || r.opt.ShadowReadFraction <= 0 || rand.Float64() >= r.opt.ShadowReadFraction {
		return
	}
	r.confirmLater(st, p, params, "")
}

// confirmLater re-reads both stores in the background until they agree or
// confirmDelays ran out, and counts the read (and the mismatch, if it
// persisted). first is the difference already seen ("" if none yet). At
// most a few confirmations run at once; the rest are dropped uncounted.
func (r *Router) confirmLater(st *session, p *translate.Plan, params wire.Params, first string) {
	select {
	case r.confirmSem <- struct{}{}:
	default:
		return
	}
	params = copyParams(params) // the originals live in the session's read buffer
	tsess := st.tsess
	go func() {
		defer func() { <-r.confirmSem }()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		diff, err := r.confirm(ctx, &session{tsess: tsess}, p, params, first != "")
		if err != nil {
			r.opt.Log.Debug("shadow read abandoned", "shape", p.Shape.String(), "err", err)
			return
		}
		if diff == "" && first != "" {
			r.opt.Log.Debug("shadow read difference was a race; gone on re-read", "shape", p.Shape.String(), "diff", first)
		}
		r.countShadow(p, diff)
	}()
}

func (r *Router) confirm(ctx context.Context, st *session, p *translate.Plan, params wire.Params, retry bool) (string, error) {
	var diff string
	for attempt, d := range confirmDelays {
		if attempt > 0 || retry {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(d):
			}
		}
		res, err := r.sqlRead(ctx, p, params)
		if err != nil {
			return "", err
		}
		if diff, err = r.compareRead(ctx, st, p, res); err != nil || diff == "" {
			return diff, err
		}
	}
	return diff, nil
}

func (r *Router) countShadow(p *translate.Plan, diff string) {
	if m := r.opt.Metrics; m != nil {
		m.ShadowReads.WithLabelValues(p.Shape.String()).Inc()
		if diff != "" {
			m.ShadowMismatches.WithLabelValues(p.Shape.String()).Inc()
		}
	}
	if diff != "" && r.sampleLog(p.Shape.String()) {
		r.opt.Log.Warn("shadow read mismatch", "shape", p.Shape.String(), "diff", diff, "sql", short(p.SQL))
	}
}

// sqlRead runs p on PostgreSQL through the proxy's own pool, with the
// client's parameters as the client sent them, results in text.
func (r *Router) sqlRead(ctx context.Context, p *translate.Plan, params wire.Params) (*wire.Inspected, error) {
	conn, err := r.opt.ShadowPool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	rr := conn.Conn().PgConn().ExecParams(ctx, p.SQL, params.Values, params.OIDs, params.Formats, nil)
	res := &wire.Inspected{SQL: p.SQL, Params: params}
	for rr.NextRow() {
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		res.Rows = append(res.Rows, row)
	}
	for _, f := range rr.FieldDescriptions() {
		res.Fields = append(res.Fields, pgproto3.FieldDescription{Name: []byte(f.Name), TableOID: f.TableOID,
			TableAttributeNumber: f.TableAttributeNumber, DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize,
			TypeModifier: f.TypeModifier, Format: f.Format})
	}
	if _, err := rr.Close(); err != nil {
		return nil, err
	}
	if len(res.Fields) != len(p.Fields) {
		return nil, fmt.Errorf("PostgreSQL returned %d columns, the statement has %d", len(res.Fields), len(p.Fields))
	}
	return res, nil
}

func copyParams(p wire.Params) wire.Params {
	out := wire.Params{Formats: slices.Clone(p.Formats), OIDs: slices.Clone(p.OIDs), Values: make([][]byte, len(p.Values))}
	for i, v := range p.Values {
		if v != nil {
			out.Values[i] = append([]byte{}, v...)
		}
	}
	return out
}

// sampleLog allows one mismatch log line per shape per minute.
func (r *Router) sampleLog(shape string) bool {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	now := time.Now()
	if last, ok := r.logged[shape]; ok && now.Sub(last) < time.Minute {
		return false
	}
	r.logged[shape] = now
	return true
}

// compareRead runs p on KV and returns "" when the results agree, else a
// short description of the first difference.
func (r *Router) compareRead(ctx context.Context, st *session, p *translate.Plan, res *wire.Inspected) (string, error) {
	vals, err := p.DecodeParams(st.tsess, "", res.Params.Formats, res.Params.Values)
	if err != nil {
		return "", err
	}
	args, err := p.SlotValues(st.tsess, vals)
	if err != nil {
		return "", err
	}
	tx := r.opt.RefStore.Begin()
	defer tx.Rollback()
	kvRes, err := translate.Exec(ctx, r.opt.RefStore, tx, p, args)
	if err != nil {
		return "", err
	}
	var sqlRows, kvRows []string
	for _, raw := range res.Rows {
		row := make([]string, len(raw))
		for i, b := range raw {
			if b == nil {
				row[i] = canonical(translate.NullValue(p.Fields[i].TypeOID))
				continue
			}
			v, err := translate.DecodeValue(st.tsess, res.Fields[i].DataTypeOID, res.Fields[i].Format, b, 0)
			if err != nil {
				return "", fmt.Errorf("decode %s: %w", p.Fields[i].Name, err)
			}
			row[i] = canonical(v)
		}
		sqlRows = append(sqlRows, strings.Join(row, " | "))
	}
	for _, vals := range kvRes.Rows {
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = canonical(v)
		}
		kvRows = append(kvRows, strings.Join(row, " | "))
	}
	if p.Shape == translate.B6a || p.Shape == translate.B6b {
		slices.Sort(sqlRows)
		slices.Sort(kvRows)
	}
	if p.Shape == translate.C2 && len(sqlRows) == 2 && len(kvRows) == 2 {
		// LIMIT 2 without ORDER BY: two rows mean "ambiguous prefix" to
		// the client, whichever two they are.
		return "", nil
	}
	for i := 0; i < max(len(sqlRows), len(kvRows)); i++ {
		switch {
		case i >= len(sqlRows):
			return fmt.Sprintf("row %d only in KV: %s", i, kvRows[i]), nil
		case i >= len(kvRows):
			return fmt.Sprintf("row %d only in PostgreSQL: %s", i, sqlRows[i]), nil
		case sqlRows[i] != kvRows[i]:
			return fmt.Sprintf("row %d: PostgreSQL %s, KV %s", i, sqlRows[i], kvRows[i]), nil
		}
	}
	return "", nil
}

// canonical renders a value so that equal ref-store values render alike.
func canonical(v translate.Value) string {
	if v.Null && v.OID != translate.OIDJSONB {
		return "NULL"
	}
	switch v.OID {
	case translate.OIDBytea:
		return `\x` + hex.EncodeToString(v.Bytes)
	case translate.OIDTimestamptz:
		return v.Time.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
	case translate.OIDInt4, translate.OIDInt8:
		return strconv.FormatInt(v.Int, 10)
	case translate.OIDTextArray:
		return strconv.Quote(strings.Join(v.Strs, "\x00"))
	case translate.OIDJSONB:
		if v.Null {
			return "{}"
		}
		m, err := translate.JSONBStrings(v.Bytes)
		if err != nil {
			return "jsonb:" + string(v.Bytes)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var b strings.Builder
		b.WriteByte('{')
		for _, k := range keys {
			fmt.Fprintf(&b, "%q:%q,", k, m[k])
		}
		b.WriteByte('}')
		return b.String()
	}
	return strconv.Quote(v.Str)
}
