package translate

import (
	"fmt"
	"reflect"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

func FuzzPlan(f *testing.F) {
	for _, fx := range legacyFixtures {
		f.Add(fx.sql)
	}
	f.Add("SELECT 'a';SELECT 2")
	f.Add("DELETE FROM graveler_staging_kv WHERE staging_token = 'x' AND key >= '\\x00'::bytea")
	f.Fuzz(func(t *testing.T, sql string) {
		p, err := New(Options{}).Plan(sql)
		if err != nil {
			if p != nil {
				t.Fatal("plan and error")
			}
			return
		}
		if p.Kind == Unsupported && p.Err == nil || p.Kind != Unsupported && p.Err != nil {
			t.Fatalf("kind %v with err %v", p.Kind, p.Err)
		}
		if p.Kind == Passthrough || p.Kind == Unsupported {
			return
		}
		// Recognition depends only on the parse tree: planning again, and
		// planning PostgreSQL's deparsed text of the same tree, give the
		// same plan.
		again, err := New(Options{}).Plan(sql)
		if err != nil || !samePlan(p, again) {
			t.Fatalf("re-plan differs: %+v vs %+v (%v)", p, again, err)
		}
		tree, err := pg.Parse(sql)
		if err != nil {
			t.Fatalf("parsed once, not twice: %v", err)
		}
		text, err := pg.Deparse(tree)
		if err != nil {
			return // the deparser does not cover every tree
		}
		dp, err := New(Options{}).Plan(text)
		if err != nil {
			t.Fatalf("deparsed %q: %v", text, err)
		}
		if !samePlan(p, dp) {
			t.Fatalf("deparsed %q planned as %v/%v %s, original %v/%v %s", text, dp.Kind, dp.Shape, renderArgs(dp.Args), p.Kind, p.Shape, renderArgs(p.Args))
		}
	})
}

func samePlan(a, b *Plan) bool {
	return a.Kind == b.Kind && a.Shape == b.Shape && reflect.DeepEqual(a.Args, b.Args) && reflect.DeepEqual(a.ParamOIDs, b.ParamOIDs) &&
		reflect.DeepEqual(a.Fields, b.Fields) && a.Table == b.Table && a.Tx == b.Tx && a.Name == b.Name &&
		reflect.DeepEqual(a.Generations, b.Generations)
}

var fuzzOIDs = []uint32{OIDText, OIDVarchar, OIDBytea, OIDTimestamptz, OIDTextArray, OIDJSONB, OIDInt4, OIDInt8, OIDBool}

func FuzzDecodeParam(f *testing.F) {
	for i := range fuzzOIDs {
		for _, c := range append(append([]valueCase{}, tsInputs...), otherInputs...) {
			if c.oid == fuzzOIDs[i] {
				f.Add(uint8(i), uint8(0), []byte(c.input))
			}
		}
	}
	f.Add(uint8(4), uint8(1), appendTextArrayBinary(nil, []string{"a", ""}))
	f.Add(uint8(5), uint8(1), []byte("\x01{\"a\": [1, 2.50]}"))
	f.Add(uint8(3), uint8(1), be64(0))
	sessions := []*Session{UTC}
	if s, err := NewSession("Europe/Berlin", "ISO"); err == nil {
		sessions = append(sessions, s)
	}
	f.Fuzz(func(t *testing.T, oidIdx, format uint8, data []byte) {
		oid := fuzzOIDs[int(oidIdx)%len(fuzzOIDs)]
		sess := sessions[int(format/2)%len(sessions)]
		fm := int16(format % 2)
		v, err := DecodeValue(sess, oid, fm, data, 1)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error without SQLSTATE: %v", err)
			}
			return
		}
		if v.Null {
			return
		}
		// Whatever decodes encodes, in both formats, and reads back equal.
		for _, out := range []int16{0, 1} {
			enc, err := AppendValue([]byte{}, sess, oid, out, v)
			if err != nil {
				t.Fatalf("encode %+v format %d: %v", v, out, err)
			}
			back, err := DecodeValue(sess, oid, out, enc, 1)
			if err != nil {
				t.Fatalf("decode own format %d output %q: %v", out, enc, err)
			}
			if !valueEqual(back, v) {
				t.Fatalf("format %d round trip of %s: %+v, want %+v", out, fmt.Sprintf("%q", data), back, v)
			}
		}
	})
}
