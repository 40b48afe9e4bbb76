package translate

import (
	"errors"
	"fmt"
	"testing"
)

func TestDecodeParams(t *testing.T) {
	tr := New(Options{})
	c5 := planOf(t, tr, legacyFixtures[25].sql) // C5a: $1, $2, LIMIT 1000
	if c5.Shape != C5a {
		t.Fatalf("fixture order changed: %v", c5.Shape)
	}
	args, err := c5.DecodeArgs(UTC, "s", []int16{0}, [][]byte{[]byte("repo"), []byte("")})
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 3 || args[0].Str != "repo" || args[1].Str != "" || args[1].Null || args[2].Int != 1000 || args[2].OID != OIDInt8 {
		t.Fatalf("args %+v", args)
	}
	params, err := c5.DecodeParams(UTC, "s", []int16{0}, [][]byte{[]byte("repo"), []byte("")})
	if err != nil || len(params) != 2 || params[0].Str != "repo" || params[1].Str != "" {
		t.Fatalf("params %+v %v", params, err)
	}
	// Parameters out of slot order: DecodeParams is by number, DecodeArgs
	// (and SlotValues) by slot.
	mixed := planOf(t, tr, `SELECT id, commit_id FROM graveler_tags WHERE id >= $2 AND repository_id = $1 ORDER BY id ASC LIMIT 5`)
	vals := [][]byte{[]byte("repo"), []byte("from")}
	params, err = mixed.DecodeParams(UTC, "", nil, vals)
	if err != nil || params[0].Str != "repo" || params[1].Str != "from" {
		t.Fatalf("params %+v %v", params, err)
	}
	args, err = mixed.DecodeArgs(UTC, "", nil, vals)
	if err != nil || args[0].Str != "repo" || args[1].Str != "from" || args[2].Int != 5 {
		t.Fatalf("args %+v %v", args, err)
	}
	slots, err := mixed.SlotValues(UTC, params)
	if err != nil || !valueEqual(slots[0], args[0]) || !valueEqual(slots[1], args[1]) || !valueEqual(slots[2], args[2]) {
		t.Fatalf("SlotValues %+v, DecodeArgs %+v (%v)", slots, args, err)
	}
	cases := []struct {
		name    string
		formats []int16
		values  [][]byte
		want    error
		msg     string
	}{
		{"too few", nil, [][]byte{[]byte("repo")}, ErrProtocolViolation, `bind message supplies 1 parameters, but prepared statement "s" requires 2`},
		{"too many", nil, [][]byte{nil, nil, nil}, ErrProtocolViolation, `bind message supplies 3 parameters, but prepared statement "s" requires 2`},
		{"format count", []int16{0, 0, 0}, [][]byte{nil, nil}, ErrProtocolViolation, "bind message has 3 parameter formats but 2 parameters"},
		{"format code", []int16{2}, [][]byte{nil, []byte("x")}, ErrInvalidParameterValue, "unsupported format code: 2"},
		{"bad utf8", nil, [][]byte{[]byte("\xff"), nil}, ErrCharacterNotInRepertoire, `invalid byte sequence for encoding "UTF8": 0xff`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, decode := range []func(*Session, string, []int16, [][]byte) ([]Value, error){c5.DecodeParams, c5.DecodeArgs} {
				_, err := decode(UTC, "s", c.formats, c.values)
				if !errors.Is(err, c.want) || err.Error() != c.msg {
					t.Fatalf("err %v, want %v %q", err, c.want, c.msg)
				}
			}
		})
	}
	// NULL parameters stay NULL.
	args, err = c5.DecodeArgs(UTC, "s", nil, [][]byte{nil, nil})
	if err != nil || !args[0].Null || !args[1].Null {
		t.Fatalf("NULL params: %+v %v", args, err)
	}
}

func TestTextArrayNullElementsRejected(t *testing.T) {
	for _, in := range []string{"{NULL}", "{a,null}", "{ NuLl }"} {
		if _, err := DecodeValue(UTC, OIDTextArray, 0, []byte(in), 1); !errors.Is(err, ErrFeatureNotSupported) {
			t.Errorf("%q: %v, want 0A000", in, err)
		}
	}
	bin := appendTextArrayBinary(nil, []string{"a"})
	bin = bin[:len(bin)-5]
	bin = append(bin, 0xff, 0xff, 0xff, 0xff) // length -1: NULL element
	if _, err := DecodeValue(UTC, OIDTextArray, 1, bin, 1); !errors.Is(err, ErrFeatureNotSupported) {
		t.Errorf("binary NULL element: %v", err)
	}
	v, err := DecodeValue(UTC, OIDTextArray, 0, []byte(`{"NULL"}`), 1)
	if err != nil || len(v.Strs) != 1 || v.Strs[0] != "NULL" {
		t.Errorf(`quoted "NULL" is a string: %+v %v`, v, err)
	}
}

func TestCommandTags(t *testing.T) {
	cases := map[string]string{
		CommandTag(R2.Command(), 1):            "INSERT 0 1",
		CommandTag(T2.Command(), 0):            "INSERT 0 0",
		CommandTag(B4.Command(), 3):            "DELETE 3",
		CommandTag(C7.Command(), 10000):        "UPDATE 10000",
		CommandTag(B5a.Command(), 1000):        "SELECT 1000",
		CommandTag(TxBegin.Command(), 0):       "BEGIN",
		CommandTag(TxStart.Command(), 0):       "START TRANSACTION",
		CommandTag(TxCommit.Command(), 0):      "COMMIT",
		CommandTag(TxRollback.Command(), 0):    "ROLLBACK",
		CommandTag(Deallocate.Command(), 0):    "DEALLOCATE",
		CommandTag(DeallocateAll.Command(), 0): "DEALLOCATE ALL",
		CommandTag(L1.Command(), 1):            "SELECT 1",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("tag %q, want %q", got, want)
		}
	}
}

func TestFieldDescriptionFormats(t *testing.T) {
	tr := New(Options{})
	p := planOf(t, tr, legacyFixtures[21].sql) // C1, 8 columns
	if _, err := p.FieldDescriptions([]int16{0, 1}); !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("2 formats for 8 columns: %v", err)
	}
	fd, err := p.FieldDescriptions([]int16{1})
	if err != nil || len(fd) != 8 || fd[7].Format != 1 || string(fd[2].Name) != "creation_date" || fd[2].DataTypeOID != OIDTimestamptz {
		t.Fatalf("%+v %v", fd, err)
	}
	if err := p.CheckParamTypes([]uint32{0, OIDText}); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckParamTypes([]uint32{OIDVarchar}); !errors.Is(err, ErrFeatureNotSupported) {
		t.Fatalf("varchar declared for a text parameter: %v", err)
	}
}

func TestJSONBHelpers(t *testing.T) {
	m := map[string]string{"b": "2", "a": "1", "aa": "ü\"\n", "": "e"}
	got := string(JSONBFromStrings(m))
	norm, err := NormalizeJSONB([]byte(`{"aa":"ü\"\n","b":"2","":"e","a":"1"}`))
	if err != nil || got != string(norm) || got != `{"": "e", "a": "1", "b": "2", "aa": "ü\"\n"}` {
		t.Fatalf("JSONBFromStrings %s, normalised %s (%v)", got, norm, err)
	}
	back, err := JSONBStrings([]byte(got))
	if err != nil || fmt.Sprint(back) != fmt.Sprint(m) {
		t.Fatalf("JSONBStrings %v %v", back, err)
	}
	if back, err := JSONBStrings([]byte("null")); err != nil || back != nil {
		t.Fatalf("null: %v %v", back, err)
	}
	if string(JSONBFromStrings(nil)) != "null" {
		t.Fatal("nil map must be JSON null")
	}
	if _, err := JSONBStrings([]byte(`{"a": 1}`)); err == nil {
		t.Fatal("non-string metadata accepted")
	}
}

func TestEncodeRowNullsAndEmpty(t *testing.T) {
	tr := New(Options{})
	p := planOf(t, tr, legacyFixtures[30].sql) // S1: identity, data
	if p.Shape != S1 {
		t.Fatalf("fixture order changed: %v", p.Shape)
	}
	row, _, err := p.EncodeRow(UTC, []int16{1}, []Value{NullValue(OIDBytea), ByteaValue(nil)}, nil, nil)
	if err != nil || row[0] != nil || row[1] == nil || len(row[1]) != 0 {
		t.Fatalf("row %#v %v", row, err)
	}
	if _, _, err := p.EncodeRow(UTC, nil, []Value{TextValue("x"), ByteaValue(nil)}, nil, nil); err == nil {
		t.Fatal("text value for a bytea column accepted")
	}
}

func TestNewSession(t *testing.T) {
	if _, err := NewSession("Europe/Berlin", "ISO, DMY"); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSession("Mars/Olympus", "ISO"); !errors.Is(err, ErrInvalidParameterValue) {
		t.Fatalf("unknown zone: %v", err)
	}
	if _, err := NewSession("UTC", "German"); !errors.Is(err, ErrFeatureNotSupported) {
		t.Fatalf("DateStyle German: %v", err)
	}
}
