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

	"github.com/kvproxy/kvproxy/translate"
	"github.com/kvproxy/kvproxy/wire"
)

// Shadow reads (dual-write). A sampled ref-store read is answered by
// PostgreSQL as usual; before the answer is released, the same statement
// runs on KV (bounded by ShadowReadTimeout) and the two results are compared
// on canonical values: NULLs, text, bytes, timestamps at microseconds,
// metadata as a map (JSON null and {} alike), arrays element by element,
// and B6's rows as a set (SQL does not order its ties). The client always
// gets PostgreSQL's answer. A read racing a concurrent write can differ
// legitimately; mismatches are a signal to investigate, and verify is the
// proof.

func (r *Router) shadowRead(p *translate.Plan) wire.InspectFunc {
	return func(ctx context.Context, sess *wire.Session, res *wire.Inspected) error {
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
		if m := r.opt.Metrics; m != nil {
			m.ShadowReads.WithLabelValues(p.Shape.String()).Inc()
			if diff != "" {
				m.ShadowMismatches.WithLabelValues(p.Shape.String()).Inc()
			}
		}
		if diff != "" && r.sampleLog(p.Shape.String()) {
			r.opt.Log.Warn("shadow read mismatch", "shape", p.Shape.String(), "diff", diff, "sql", short(p.SQL))
		}
		return nil
	}
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
