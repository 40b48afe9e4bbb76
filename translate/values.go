package translate

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Value is one decoded parameter or one result value, by type:
//
//	text, varchar  Str
//	bytea          Bytes
//	jsonb          Bytes: the normalised jsonb text (what jsonb_out prints)
//	timestamptz    Time (µs precision), or Inf = +1/-1 for ±infinity
//	int4, int8     Int
//	bool           Int (0/1)
//	text[]         Strs (one dimension, lower bound 1, no NULL elements)
//	void           nothing (never NULL when not Null)
//
// Null is SQL NULL. Decoded values never alias the caller's buffers.
type Value struct {
	OID   uint32
	Null  bool
	Str   string
	Bytes []byte
	Time  time.Time
	Inf   int8
	Int   int64
	Strs  []string
}

// Constructors for result values.
func NullValue(oid uint32) Value         { return Value{OID: oid, Null: true} }
func TextValue(s string) Value           { return Value{OID: OIDText, Str: s} }
func VarcharValue(s string) Value        { return Value{OID: OIDVarchar, Str: s} }
func ByteaValue(b []byte) Value          { return Value{OID: OIDBytea, Bytes: b} }
func TimestamptzValue(t time.Time) Value { return Value{OID: OIDTimestamptz, Time: t} }
func Int4Value(v int32) Value            { return Value{OID: OIDInt4, Int: int64(v)} }
func Int8Value(v int64) Value            { return Value{OID: OIDInt8, Int: v} }
func BoolValue(v bool) Value {
	if v {
		return Value{OID: OIDBool, Int: 1}
	}
	return Value{OID: OIDBool}
}
func TextArrayValue(s []string) Value { return Value{OID: OIDTextArray, Strs: s} }
func VoidValue() Value                { return Value{OID: OIDVoid} }

// JSONBValue takes jsonb text; it must already be normalised (use
// NormalizeJSONB or JSONBFromStrings).
func JSONBValue(normalised []byte) Value { return Value{OID: OIDJSONB, Bytes: normalised} }

// DecodeParams decodes a Bind's parameter values by number: the result's
// element i is $(i+1), typed by ParamOIDs[i] and read in the format the
// Bind's format codes give it. stmtName only appears in the error for a
// wrong parameter count, which is PostgreSQL's message verbatim.
func (p *Plan) DecodeParams(sess *Session, stmtName string, formats []int16, values [][]byte) ([]Value, error) {
	if err := p.checkBind(stmtName, formats, values); err != nil {
		return nil, err
	}
	out := make([]Value, len(values))
	for i, oid := range p.ParamOIDs {
		f, err := formatAt(formats, len(values), i, "parameter")
		if err != nil {
			return nil, err
		}
		if out[i], err = DecodeValue(sess, oid, f, values[i], i+1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (p *Plan) checkBind(stmtName string, formats []int16, values [][]byte) error {
	if len(formats) > 1 && len(formats) != len(values) {
		return newErr("08P01", nil, "bind message has %d parameter formats but %d parameters", len(formats), len(values))
	}
	if len(values) != len(p.ParamOIDs) {
		return newErr("08P01", nil, "bind message supplies %d parameters, but prepared statement \"%s\" requires %d", len(values), stmtName, len(p.ParamOIDs))
	}
	return nil
}

// DecodeArgs decodes a Bind straight into the plan's arguments, in slot
// order (Shape.Slots()): a $n argument from the bound value, a literal from
// its text as PostgreSQL coerces an untyped literal. It is DecodeParams
// followed by SlotValues in one pass.
func (p *Plan) DecodeArgs(sess *Session, stmtName string, formats []int16, values [][]byte) ([]Value, error) {
	return p.DecodeArgsInto(nil, sess, stmtName, formats, values)
}

// DecodeArgsInto is DecodeArgs appending to dst[:0].
func (p *Plan) DecodeArgsInto(dst []Value, sess *Session, stmtName string, formats []int16, values [][]byte) ([]Value, error) {
	if err := p.checkBind(stmtName, formats, values); err != nil {
		return nil, err
	}
	dst = dst[:0]
	for _, a := range p.Args {
		var v Value
		var err error
		switch {
		case a.Param > 0:
			f, ferr := formatAt(formats, len(values), a.Param-1, "parameter")
			if ferr != nil {
				return nil, ferr
			}
			v, err = DecodeValue(sess, a.OID, f, values[a.Param-1], a.Param)
		case a.Null:
			v = NullValue(a.OID)
		default:
			v, err = DecodeValue(sess, a.OID, 0, []byte(a.Literal), 0)
		}
		if err != nil {
			return nil, err
		}
		dst = append(dst, v)
	}
	return dst, nil
}

// DecodeValue decodes one value of type oid in format (0 text, 1 binary);
// src nil is NULL. paramNo (1-based, 0 for a literal) only appears in
// errors about trailing binary data.
func DecodeValue(sess *Session, oid uint32, format int16, src []byte, paramNo int) (Value, error) {
	if src == nil {
		return NullValue(oid), nil
	}
	if format != 0 && format != 1 {
		return Value{}, newErr("22023", nil, "unsupported format code: %d", format)
	}
	if format == 0 {
		// PostgreSQL converts every text-format value to the server
		// encoding (verifying it) before the type's input function.
		if err := verifyUTF8(src); err != nil {
			return Value{}, err
		}
	}
	v := Value{OID: oid}
	var err error
	switch oid {
	case OIDText, OIDVarchar:
		if format == 1 {
			err = verifyUTF8(src)
		}
		v.Str = string(src)
	case OIDBytea:
		if format == 1 {
			v.Bytes = append(make([]byte, 0, len(src)), src...)
		} else {
			v.Bytes, err = byteaIn(src)
		}
	case OIDInt4, OIDInt8:
		v.Int, err = intDecode(oid, format, src, paramNo)
	case OIDBool:
		v.Int, err = boolDecode(format, src, paramNo)
	case OIDTimestamptz:
		if format == 1 {
			err = timestamptzRecv(&v, src, paramNo)
		} else {
			err = timestamptzIn(&v, sess, string(src))
		}
	case OIDTextArray:
		if format == 1 {
			v.Strs, err = textArrayRecv(src, paramNo)
		} else {
			v.Strs, err = textArrayIn(string(src))
		}
	case OIDJSONB:
		if format == 1 {
			if len(src) < 1 {
				return Value{}, errInsufficient()
			}
			if src[0] != 1 {
				return Value{}, newErr("XX000", nil, "unsupported jsonb version number %d", src[0])
			}
			src = src[1:]
			if err = verifyUTF8(src); err != nil {
				return Value{}, err
			}
		}
		v.Bytes, err = NormalizeJSONB(src)
	default:
		return Value{}, newErr("0A000", nil, "type %d is not a ref-store type", oid)
	}
	if err != nil {
		return Value{}, err
	}
	return v, nil
}

func errInsufficient() error {
	return &Error{Code: "08P01", Message: "insufficient data left in message"}
}

func errTrailing(paramNo int) error {
	return newErr("22P03", nil, "incorrect binary data format in bind parameter %d", paramNo)
}

// verifyUTF8 is pg_verify_mbstr for UTF8: invalid sequences and NUL bytes
// are 22021, reported with the bytes of the offending character.
func verifyUTF8(b []byte) error {
	for i := 0; i < len(b); {
		c := b[i]
		if c != 0 && c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if c != 0 && (r != utf8.RuneError || size > 1) {
			i += size
			continue
		}
		n := 1
		switch {
		case c >= 0xc0 && c < 0xe0:
			n = 2
		case c >= 0xe0 && c < 0xf0:
			n = 3
		case c >= 0xf0 && c < 0xf8:
			n = 4
		}
		n = min(n, len(b)-i)
		msg := "invalid byte sequence for encoding \"UTF8\":"
		for j := 0; j < n; j++ {
			msg += " 0x" + strconv.FormatUint(uint64(b[i+j])|0x100, 16)[1:]
		}
		return &Error{Code: "22021", Message: msg}
	}
	return nil
}

func byteaIn(src []byte) ([]byte, error) {
	if len(src) >= 2 && src[0] == '\\' && src[1] == 'x' {
		out := make([]byte, 0, (len(src)-2)/2)
		for i := 2; i < len(src); {
			c := src[i]
			if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
				i++
				continue
			}
			hi := hexVal(c)
			if hi < 0 {
				return nil, newErr("22023", nil, "invalid hexadecimal digit: \"%s\"", firstChar(src[i:]))
			}
			if i+1 >= len(src) {
				return nil, newErr("22023", nil, "invalid hexadecimal data: odd number of digits")
			}
			lo := hexVal(src[i+1])
			if lo < 0 {
				return nil, newErr("22023", nil, "invalid hexadecimal digit: \"%s\"", firstChar(src[i+1:]))
			}
			out = append(out, byte(hi<<4|lo))
			i += 2
		}
		return out, nil
	}
	out := make([]byte, 0, len(src))
	for i := 0; i < len(src); {
		c := src[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch {
		case i+1 < len(src) && src[i+1] == '\\':
			out = append(out, '\\')
			i += 2
		case i+3 < len(src)+0 && isOct(src[i+1], '3') && isOct(src[i+2], '7') && isOct(src[i+3], '7'):
			out = append(out, (src[i+1]-'0')<<6|(src[i+2]-'0')<<3|(src[i+3]-'0'))
			i += 4
		default:
			return nil, newErr("22P02", nil, "invalid input syntax for type bytea")
		}
	}
	return out, nil
}

func isOct(c, maxDigit byte) bool { return c >= '0' && c <= maxDigit }

func firstChar(b []byte) string {
	_, n := utf8.DecodeRune(b)
	return string(b[:max(n, 1)])
}

func intDecode(oid uint32, format int16, src []byte, paramNo int) (int64, error) {
	size := 4
	if oid == OIDInt8 {
		size = 8
	}
	if format == 1 {
		if len(src) < size {
			return 0, errInsufficient()
		}
		if len(src) > size {
			return 0, errTrailing(paramNo)
		}
		if size == 4 {
			return int64(int32(binary.BigEndian.Uint32(src))), nil
		}
		return int64(binary.BigEndian.Uint64(src)), nil
	}
	// pg_strtoint32/64 (PostgreSQL 15): optional whitespace, sign, decimal
	// digits, optional whitespace.
	s := string(src)
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	body := s[i:j]
	digits := body
	if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
		digits = digits[1:]
	}
	if digits == "" || !isIntegerText(digits) {
		return 0, newErr("22P02", nil, "invalid input syntax for type %s: \"%s\"", typeName(oid), s)
	}
	if body[0] == '+' {
		body = body[1:]
	}
	v, err := strconv.ParseInt(body, 10, size*8)
	if err != nil {
		return 0, newErr("22003", nil, "value \"%s\" is out of range for type %s", s, typeName(oid))
	}
	return v, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func boolDecode(format int16, src []byte, paramNo int) (int64, error) {
	if format == 1 {
		if len(src) < 1 {
			return 0, errInsufficient()
		}
		if len(src) > 1 {
			return 0, errTrailing(paramNo)
		}
		if src[0] != 0 {
			return 1, nil
		}
		return 0, nil
	}
	switch string(src) {
	case "t", "true", "y", "yes", "on", "1", "TRUE", "True":
		return 1, nil
	case "f", "false", "n", "no", "off", "0", "FALSE", "False":
		return 0, nil
	}
	return 0, newErr("22P02", nil, "invalid input syntax for type boolean: \"%s\"", src)
}

// PostgreSQL timestamps count µs from 2000-01-01 00:00:00 UTC.
const (
	pgEpochUnixMicros = 946684800000000
	minTimestamp      = -211813488000000000 // 4714-11-24 00:00:00 UTC BC
	endTimestamp      = 9223371331200000000 // 294277-01-01 00:00:00 UTC, exclusive
)

func timestamptzRecv(v *Value, src []byte, paramNo int) error {
	if len(src) < 8 {
		return errInsufficient()
	}
	if len(src) > 8 {
		return errTrailing(paramNo)
	}
	us := int64(binary.BigEndian.Uint64(src))
	switch {
	case us == math.MaxInt64:
		v.Inf = 1
		return nil
	case us == math.MinInt64:
		v.Inf = -1
		return nil
	case us < minTimestamp || us >= endTimestamp:
		return newErr("22008", nil, "timestamp out of range")
	}
	v.Time = pgMicrosToTime(us)
	return nil
}

// pgMicrosToTime is the inverse of timeToPGMicros. It splits before it
// shifts to the Unix epoch: us + pgEpochUnixMicros overflows near the end of
// PostgreSQL's range.
func pgMicrosToTime(us int64) time.Time {
	sec, rem := us/1e6, us%1e6
	if rem < 0 {
		sec, rem = sec-1, rem+1e6
	}
	return time.Unix(sec+pgEpochUnixMicros/1e6, rem*1000).UTC()
}

// timeToPGMicros is t in microseconds since 2000-01-01 UTC, truncated toward
// the past as pgx does. A time.Time reaches far beyond int64 microseconds
// (year 700000 parses), so the result saturates: such a time must compare
// out of PostgreSQL's range, not wrap back into it.
func timeToPGMicros(t time.Time) int64 {
	const limit = math.MaxInt64/1_000_000 - 1 // seconds whose microseconds fit
	sec := t.Unix() - 946684800
	switch {
	case sec > limit:
		return math.MaxInt64
	case sec < -limit:
		return math.MinInt64
	}
	return sec*1e6 + int64(t.Nanosecond()/1000)
}
