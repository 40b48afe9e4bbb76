package translate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

var sqlType = map[uint32]string{
	OIDText: "text", OIDVarchar: "varchar", OIDBytea: "bytea", OIDTimestamptz: "timestamptz",
	OIDTextArray: "text[]", OIDJSONB: "jsonb", OIDInt4: "int4", OIDInt8: "int8", OIDBool: "bool",
}

type pgResult struct {
	text, bin []byte
	textNull  bool
	code      string
}

// pgStore stores input (in format) into a one-column table of type oid on
// the real server and reads it back in text and binary.
func pgStore(t *testing.T, conn *pgconn.PgConn, oid uint32, format int16, input []byte) pgResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tbl := "vt_" + strings.NewReplacer("[]", "_arr").Replace(sqlType[oid])
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (v %s); TRUNCATE %s", tbl, sqlType[oid], tbl)).ReadAll(); err != nil {
		t.Fatal(err)
	}
	res := conn.ExecParams(ctx, "INSERT INTO "+tbl+" (v) VALUES ($1)", [][]byte{input}, nil, []int16{format}, nil).Read()
	if res.Err != nil {
		var pe *pgconn.PgError
		if errors.As(res.Err, &pe) {
			return pgResult{code: pe.Code}
		}
		t.Fatal(res.Err)
	}
	var out pgResult
	for _, f := range []int16{0, 1} {
		r := conn.ExecParams(ctx, "SELECT v FROM "+tbl, nil, nil, nil, []int16{f}).Read()
		if r.Err != nil || len(r.Rows) != 1 {
			t.Fatalf("select back: %v %d rows", r.Err, len(r.Rows))
		}
		v := r.Rows[0][0]
		if f == 0 {
			out.text, out.textNull = append([]byte{}, v...), v == nil
		} else {
			out.bin = append([]byte{}, v...)
		}
	}
	return out
}

func setTimeZone(t *testing.T, conn *pgconn.PgConn, tz string) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "SET TimeZone = '"+tz+"'; SET DateStyle = 'ISO, MDY'").ReadAll(); err != nil {
		t.Fatal(err)
	}
	sess, err := NewSession(tz, "ISO, MDY")
	if err != nil {
		t.Fatal(err)
	}
	return sess
}

type valueCase struct {
	oid   uint32
	input string // PostgreSQL text input
	want  *Value // expected decoded value, when it is worth spelling out
}

func ts(s string) *Value {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return &Value{OID: OIDTimestamptz, Time: t.UTC()}
}

var tsInputs = []valueCase{
	{OIDTimestamptz, "2024-02-29 12:34:56.123456+00", ts("2024-02-29T12:34:56.123456Z")},
	{OIDTimestamptz, "2024-02-29 12:34:56.1+00", ts("2024-02-29T12:34:56.1Z")},
	{OIDTimestamptz, "2024-02-29T12:34:56.000001Z", ts("2024-02-29T12:34:56.000001Z")},
	{OIDTimestamptz, "1969-12-31 23:59:59.999999+00", ts("1969-12-31T23:59:59.999999Z")},
	{OIDTimestamptz, "1900-06-01 00:00:00+01:30", ts("1900-05-31T22:30:00Z")},
	{OIDTimestamptz, "1800-01-01 12:00:00+00", ts("1800-01-01T12:00:00Z")},
	{OIDTimestamptz, "0001-01-01 00:00:00+00", ts("0001-01-01T00:00:00Z")},
	{OIDTimestamptz, "0044-03-15 12:00:00+00 BC", nil},
	{OIDTimestamptz, "9999-12-31 23:59:59.999999+00", ts("9999-12-31T23:59:59.999999Z")},
	{OIDTimestamptz, "294276-12-31 23:59:59.999999+00", nil},
	{OIDTimestamptz, "4714-11-24 00:00:00+00 BC", nil},
	{OIDTimestamptz, "00002024-02-29 12:00:00+00", ts("2024-02-29T12:00:00Z")},
	{OIDTimestamptz, "2100-07-01 00:00:00+00", ts("2100-07-01T00:00:00Z")},
	{OIDTimestamptz, "12345-06-07 08:09:10+00", nil},
	{OIDTimestamptz, "2024-03-31 02:30:00+02", ts("2024-03-31T00:30:00Z")},
	{OIDTimestamptz, "2024-10-27 00:30:00+00", ts("2024-10-27T00:30:00Z")},
	{OIDTimestamptz, "2024-10-27 01:30:00+00", ts("2024-10-27T01:30:00Z")},
	{OIDTimestamptz, "2024-06-01 10:00:00", nil}, // session zone applies
	{OIDTimestamptz, "2000-01-01 00:00:00+00", ts("2000-01-01T00:00:00Z")},
	{OIDTimestamptz, "2024-10-27 02:30:00", nil}, // ambiguous in Europe/Berlin
	{OIDTimestamptz, "2024-03-31 02:30:00", nil}, // skipped in Europe/Berlin
	{OIDTimestamptz, "2024-11-03 01:30:00", nil}, // ambiguous in America/*
	{OIDTimestamptz, "2024-03-10 02:30:00", nil}, // skipped in America/*
	{OIDTimestamptz, "2024-04-07 01:45:00", nil}, // Lord Howe's half-hour shift
	{OIDTimestamptz, "2024-10-06 02:15:00", nil}, // Lord Howe's half-hour shift
	{OIDTimestamptz, "2024-01-01 00:00:00.1234564+00", nil},
	{OIDTimestamptz, "2024-01-01 23:59:59.9999996+00", nil},
	{OIDTimestamptz, "2024-01-01 10:00:00.5-02:30", nil},
	{OIDTimestamptz, "2024-01-01 10:00:00 +0530", nil},
	{OIDTimestamptz, "1999-01-08 04:05:06 America/New_York", nil},
	{OIDTimestamptz, "2024-01-01", nil},
	{OIDTimestamptz, "infinity", &Value{OID: OIDTimestamptz, Inf: 1}},
	{OIDTimestamptz, "-infinity", &Value{OID: OIDTimestamptz, Inf: -1}},
}

func strsVal(s ...string) *Value { return &Value{OID: OIDTextArray, Strs: append([]string{}, s...)} }

var otherInputs = []valueCase{
	{OIDText, "", &Value{OID: OIDText, Str: ""}},
	{OIDText, `it's "quoted" \ back\slash`, nil},
	{OIDText, "unicode: ünïcødé 日本語 🎉", nil},
	{OIDText, "tab\tnewline\ncr\r", nil},
	{OIDVarchar, "main-branch:0a1b2c3d-uuid", nil},
	{OIDBytea, `\x`, &Value{OID: OIDBytea, Bytes: []byte{}}},
	{OIDBytea, `\x00ff10`, &Value{OID: OIDBytea, Bytes: []byte{0, 0xff, 0x10}}},
	{OIDBytea, `\xDEAD beef`, &Value{OID: OIDBytea, Bytes: []byte{0xde, 0xad, 0xbe, 0xef}}},
	{OIDBytea, `abc\\def\001\377`, &Value{OID: OIDBytea, Bytes: []byte("abc\\def\x01\xff")}},
	{OIDBytea, `\x` + strings.Repeat("0123456789abcdef", 8192), nil},
	{OIDInt4, "0", &Value{OID: OIDInt4, Int: 0}},
	{OIDInt4, " -2147483648 ", &Value{OID: OIDInt4, Int: -2147483648}},
	{OIDInt4, "+2147483647", &Value{OID: OIDInt4, Int: 2147483647}},
	{OIDInt8, "-9223372036854775808", &Value{OID: OIDInt8, Int: -9223372036854775808}},
	{OIDInt8, "1000", &Value{OID: OIDInt8, Int: 1000}},
	{OIDBool, "t", &Value{OID: OIDBool, Int: 1}},
	{OIDBool, "false", &Value{OID: OIDBool, Int: 0}},
	{OIDTextArray, "{}", strsVal()},
	{OIDTextArray, "{a,b}", strsVal("a", "b")},
	{OIDTextArray, `{"a b","c,d","e\"f","g\\h","NULL","null","",x}`, strsVal("a b", "c,d", `e"f`, `g\h`, "NULL", "null", "", "x")},
	{OIDTextArray, `{ a , b c ,d }`, strsVal("a", "b c", "d")},
	{OIDTextArray, `{"{}","}{",tab\	x}`, strsVal("{}", "}{", "tab\tx")},
	{OIDTextArray, `{ünï,日本,"🎉 x"}`, strsVal("ünï", "日本", "🎉 x")},
	{OIDTextArray, `[1:2]={x,y}`, strsVal("x", "y")},
	{OIDTextArray, `{a\,b,c\\d,"  lead","trail  "}`, strsVal("a,b", `c\d`, "  lead", "trail  ")},
	{OIDTextArray, "{0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}", nil},
	{OIDJSONB, `null`, &Value{OID: OIDJSONB, Bytes: []byte("null")}},
	{OIDJSONB, `{}`, nil},
	{OIDJSONB, `[]`, nil},
	{OIDJSONB, `{"b":"1","a":"2","aa":"3","":"e"}`, nil},
	{OIDJSONB, `{"k":"first","k":"last"}`, nil},
	{OIDJSONB, `{"nested":{"z":[1,2,{"y":null,"x":true}],"a":false},"ü":"日本","esc\"ape":"a\\b\/c\n\t\u0001\u00e9\ud83c\udf89"}`, nil},
	{OIDJSONB, ` { "sp" : [ 1 , 2 ] } `, nil},
	{OIDJSONB, `[1, 1.50, -0, -0.0, 1e2, 1E+2, 1.5e1, 1.55e1, 1e-2, 0.000, 100e-1, 12345678901234567890123, 1.0e-10, -1.23e+5]`, nil},
	{OIDJSONB, `"top-level string"`, nil},
	{OIDJSONB, `{"user":"alice","lakefs.commit.type":"merge","aaaaaaaaaaaaaaaaaaaa":"long","b":"short"}`, nil},
	{OIDJSONB, `{"ctl":"\u001f\u007f","<>&":"'"}`, nil},
}

// TestValuesMatchPostgres stores tricky values in real PostgreSQL, reads
// them back in text and binary, and requires this package's decoder to
// agree with the input and its encoder to produce byte-identical output.
func TestValuesMatchPostgres(t *testing.T) {
	conn := legacyDB(t)
	for _, tz := range []string{"UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata", "Australia/Lord_Howe", "America/Los_Angeles"} {
		sess := setTimeZone(t, conn, tz)
		cases := tsInputs
		if tz == "UTC" {
			cases = append(append([]valueCase{}, otherInputs...), tsInputs...)
		}
		for i, c := range cases {
			t.Run(fmt.Sprintf("%s/%s/%d", tz, sqlType[c.oid], i), func(t *testing.T) {
				pgr := pgStore(t, conn, c.oid, 0, []byte(c.input))
				if pgr.code != "" {
					t.Fatalf("postgres rejected %q: %s", c.input, pgr.code)
				}
				v, err := DecodeValue(sess, c.oid, 0, []byte(c.input), 1)
				if err != nil {
					t.Fatalf("decode %q: %v", c.input, err)
				}
				if c.want != nil && !valueEqual(v, *c.want) {
					t.Fatalf("decode %q = %+v, want %+v", c.input, v, *c.want)
				}
				text, err := AppendValue(nil, sess, c.oid, 0, v)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(text, pgr.text) {
					t.Errorf("text output of %q:\n ours %q\n pg   %q", c.input, text, pgr.text)
				}
				bin, err := AppendValue(nil, sess, c.oid, 1, v)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(bin, pgr.bin) {
					t.Errorf("binary output of %q:\n ours %x\n pg   %x", c.input, bin, pgr.bin)
				}
				// What PostgreSQL sends back decodes to the same value, in
				// both formats.
				for f, raw := range [][]byte{pgr.text, pgr.bin} {
					back, err := DecodeValue(sess, c.oid, int16(f), raw, 1)
					if err != nil {
						t.Fatalf("decode postgres format %d output %q: %v", f, raw, err)
					}
					if !valueEqual(back, v) {
						t.Errorf("format %d round trip: %+v, want %+v", f, back, v)
					}
				}
			})
		}
	}
}

func valueEqual(a, b Value) bool {
	if a.OID != b.OID || a.Null != b.Null || a.Str != b.Str || !bytes.Equal(a.Bytes, b.Bytes) || a.Inf != b.Inf || a.Int != b.Int ||
		!a.Time.Equal(b.Time) || len(a.Strs) != len(b.Strs) || (a.Strs == nil) != (b.Strs == nil) {
		return false
	}
	for i := range a.Strs {
		if a.Strs[i] != b.Strs[i] {
			return false
		}
	}
	return true
}

// TestDecodeErrorsMatchPostgres sends bad parameter values to the real
// server and requires the same SQLSTATE from DecodeValue.
func TestDecodeErrorsMatchPostgres(t *testing.T) {
	conn := legacyDB(t)
	sess := setTimeZone(t, conn, "UTC")
	cases := []struct {
		oid    uint32
		format int16
		input  []byte
	}{
		{OIDInt4, 0, []byte("abc")},
		{OIDInt4, 0, []byte("")},
		{OIDInt4, 0, []byte("1.5")},
		{OIDInt4, 0, []byte("2147483648")},
		{OIDInt8, 0, []byte("9223372036854775808")},
		{OIDInt8, 0, []byte("12 34")},
		{OIDInt4, 1, []byte{0, 0, 1}},
		{OIDInt4, 1, []byte{0, 0, 0, 1, 2}},
		{OIDInt8, 1, []byte{1, 2, 3, 4}},
		{OIDText, 0, []byte("bad \xc3\x28 utf8")},
		{OIDText, 1, []byte("bad \xff")},
		{OIDText, 0, []byte("nul\x00byte")},
		{OIDVarchar, 1, []byte("\xe2\x82")},
		{OIDBytea, 0, []byte(`\xabc`)},
		{OIDBytea, 0, []byte(`\xzz`)},
		{OIDBytea, 0, []byte(`a\b`)},
		{OIDTimestamptz, 1, []byte{0, 0, 0, 0}},
		{OIDTimestamptz, 1, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{OIDTimestamptz, 1, []byte{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0}},
		{OIDTimestamptz, 0, []byte("not a time")},
		{OIDTimestamptz, 0, []byte("2024-13-01 00:00:00+00")},
		{OIDTimestamptz, 0, []byte("2024-02-30 00:00:00+00")},
		{OIDTimestamptz, 0, []byte("700000-10-01")}, // past int64 microseconds (found by FuzzDecodeParam)
		{OIDTimestamptz, 0, []byte("294277-01-01 00:00:00+00")},
		{OIDTimestamptz, 0, []byte("4714-11-23 23:59:59+00 BC")},
		{OIDTimestamptz, 0, []byte("3000000-01-01 00:00:00+00 BC")},
		{OIDTimestamptz, 0, []byte("12345678901-01-01")},
		{OIDTimestamptz, 0, []byte("10000000000000000000-01-01")},
		{OIDTextArray, 0, []byte("{a,b")},
		{OIDTextArray, 0, []byte("a,b")},
		{OIDTextArray, 0, []byte("{a}x")},
		{OIDTextArray, 0, []byte(`{"a}`)},
		{OIDTextArray, 1, []byte{0, 0, 0, 1}},
		{OIDTextArray, 1, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1}},
		{OIDTextArray, 1, []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 'a', 'x'}},
		{OIDTextArray, 1, []byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 25}},
		{OIDTextArray, 1, []byte{0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 25}},
		{OIDJSONB, 0, []byte(`{"a":}`)},
		{OIDJSONB, 0, []byte(`{"a":1`)},
		{OIDJSONB, 0, []byte(`tru`)},
		{OIDJSONB, 0, []byte(`"\u0000"`)},
		{OIDJSONB, 0, []byte(`01`)},
		{OIDJSONB, 0, []byte(`[1] x`)},
		{OIDJSONB, 0, []byte("\"raw\ttab\"")},
		{OIDJSONB, 0, []byte(`"\ud800"`)},
		{OIDJSONB, 1, []byte("\x02{}")},
		{OIDJSONB, 1, []byte("")},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", sqlType[c.oid], i), func(t *testing.T) {
			pgr := pgStore(t, conn, c.oid, c.format, c.input)
			if pgr.code == "" {
				t.Fatalf("postgres accepted %q (test case is wrong)", c.input)
			}
			_, err := DecodeValue(sess, c.oid, c.format, c.input, 1)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("decode %q: %v, want SQLSTATE %s", c.input, err, pgr.code)
			}
			if e.Code != pgr.code {
				t.Fatalf("decode %q: SQLSTATE %s (%v), postgres says %s", c.input, e.Code, e, pgr.code)
			}
		})
	}
}
