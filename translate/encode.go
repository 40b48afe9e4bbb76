package translate

import (
	"encoding/binary"
	"strconv"
)

// AppendValue appends v's encoding as PostgreSQL's output (format 0) or
// send (format 1) function for type oid writes it. v must not be Null (a
// DataRow sends NULL as length -1).
func AppendValue(b []byte, sess *Session, oid uint32, format int16, v Value) ([]byte, error) {
	if v.Null {
		return nil, newErr("XX000", nil, "AppendValue called with NULL")
	}
	if v.OID != 0 && v.OID != oid && !(isTextish(v.OID) && isTextish(oid)) {
		return nil, newErr("XX000", nil, "value of type %s for a %s column", typeName(v.OID), typeName(oid))
	}
	if format != 0 && format != 1 {
		return nil, newErr("22023", nil, "unsupported format code: %d", format)
	}
	switch oid {
	case OIDText, OIDVarchar:
		return append(b, v.Str...), nil
	case OIDBytea:
		if format == 1 {
			return append(b, v.Bytes...), nil
		}
		b = append(b, `\x`...)
		for _, c := range v.Bytes {
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
		}
		return b, nil
	case OIDInt4:
		if v.Int < -1<<31 || v.Int >= 1<<31 {
			return nil, newErr("22003", nil, "integer out of range")
		}
		if format == 1 {
			return binary.BigEndian.AppendUint32(b, uint32(int32(v.Int))), nil
		}
		return strconv.AppendInt(b, v.Int, 10), nil
	case OIDInt8:
		if format == 1 {
			return binary.BigEndian.AppendUint64(b, uint64(v.Int)), nil
		}
		return strconv.AppendInt(b, v.Int, 10), nil
	case OIDBool:
		if format == 1 {
			if v.Int != 0 {
				return append(b, 1), nil
			}
			return append(b, 0), nil
		}
		if v.Int != 0 {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case OIDVoid:
		return b, nil
	case OIDTimestamptz:
		if format == 0 {
			return appendTimestamptzText(b, sess, v)
		}
		switch v.Inf {
		case 1:
			return binary.BigEndian.AppendUint64(b, 1<<63-1), nil
		case -1:
			return binary.BigEndian.AppendUint64(b, 1<<63), nil
		}
		us := timeToPGMicros(v.Time)
		if us < minTimestamp || us >= endTimestamp {
			return nil, newErr("22008", nil, "timestamp out of range")
		}
		return binary.BigEndian.AppendUint64(b, uint64(us)), nil
	case OIDTextArray:
		if format == 1 {
			return appendTextArrayBinary(b, v.Strs), nil
		}
		return appendTextArrayText(b, v.Strs), nil
	case OIDJSONB:
		if format == 1 {
			b = append(b, 1)
		}
		return append(b, v.Bytes...), nil
	}
	return nil, newErr("0A000", nil, "type %d is not a ref-store type", oid)
}

var empty = []byte{}

func isTextish(oid uint32) bool { return oid == OIDText || oid == OIDVarchar }

// EncodeRow encodes one result row for DataRow in the Bind's result
// formats: it appends one slice per column to dst (nil for NULL), all
// backed by buf (appended to and returned for reuse).
func (p *Plan) EncodeRow(sess *Session, resultFormats []int16, row []Value, dst [][]byte, buf []byte) ([][]byte, []byte, error) {
	if len(row) != len(p.Fields) {
		return dst, buf, newErr("XX000", nil, "row has %d values for %d columns of %s", len(row), len(p.Fields), p.Shape)
	}
	for i := range row {
		if row[i].Null {
			dst = append(dst, nil)
			continue
		}
		f, err := formatAt(resultFormats, len(row), i, "result")
		if err != nil {
			return dst, buf, err
		}
		start := len(buf)
		buf, err = AppendValue(buf, sess, p.Fields[i].TypeOID, f, row[i])
		if err != nil {
			return dst, buf, err
		}
		v := buf[start:len(buf):len(buf)]
		if v == nil {
			v = empty // an empty value is not NULL
		}
		dst = append(dst, v)
	}
	return dst, buf, nil
}

// CommandTag is the CommandComplete tag for command (Shape.Command()) after
// rows rows: "INSERT 0 n", "UPDATE n", "DELETE n", "SELECT n"; other
// commands ("BEGIN", "COMMIT", "ROLLBACK", "DEALLOCATE", ...) as they are.
func CommandTag(command string, rows int64) string {
	return string(AppendCommandTag(nil, command, rows))
}

// AppendCommandTag is CommandTag appending to b.
func AppendCommandTag(b []byte, command string, rows int64) []byte {
	b = append(b, command...)
	switch command {
	case "INSERT":
		b = append(b, " 0 "...)
	case "SELECT", "UPDATE", "DELETE":
		b = append(b, ' ')
	default:
		return b
	}
	return strconv.AppendInt(b, rows, 10)
}
