package translate

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// text[] as the ref store keeps it: one dimension, lower bound 1, no NULL
// elements (lakeFS never writes them and a protobuf repeated string cannot
// hold them), so those are rejected with 0A000 although PostgreSQL would
// store them. The empty array is kept (distinct from SQL NULL).

func errArrayNull() error {
	return newErr("0A000", nil, "text[] with NULL elements is not supported by the ref store")
}

func malformedArray(s, detail string) error {
	return &Error{Code: "22P02", Message: "malformed array literal: \"" + s + "\"", Detail: detail}
}

func isArraySpace(c byte) bool { return isSpace(c) }

// textArrayIn is array_in for text[] restricted as above.
func textArrayIn(s string) ([]string, error) {
	i := 0
	for i < len(s) && isArraySpace(s[i]) {
		i++
	}
	lbound, ubound, hasDims := 1, 0, false
	if i < len(s) && s[i] == '[' {
		// "[lb:ub]=" decoration; only [1:n] fits the ref store.
		end := strings.IndexByte(s[i:], ']')
		if end < 0 {
			return nil, malformedArray(s, "Missing \"]\" after array dimensions.")
		}
		dims := s[i+1 : i+end]
		lo, hi, found := strings.Cut(dims, ":")
		if !found {
			lo, hi = "1", dims
		}
		l, err1 := strconv.Atoi(strings.TrimSpace(lo))
		u, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil {
			return nil, malformedArray(s, "Array dimension value must be an integer.")
		}
		lbound, ubound, hasDims = l, u, true
		i += end + 1
		if i < len(s) && s[i] == '[' {
			return nil, newErr("0A000", nil, "multidimensional text[] is not supported by the ref store")
		}
		if i >= len(s) || s[i] != '=' {
			return nil, malformedArray(s, "Missing \"=\" after array dimensions.")
		}
		i++
		for i < len(s) && isArraySpace(s[i]) {
			i++
		}
	}
	if i >= len(s) || s[i] != '{' {
		return nil, malformedArray(s, "Array value must start with \"{\" or dimension information.")
	}
	i++
	out := []string{}
	for {
		for i < len(s) && isArraySpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return nil, malformedArray(s, "Unexpected end of input.")
		}
		if s[i] == '}' && len(out) == 0 {
			i++
			break
		}
		if s[i] == '{' {
			return nil, newErr("0A000", nil, "multidimensional text[] is not supported by the ref store")
		}
		var elem strings.Builder
		quoted, null := false, false
		if s[i] == '"' {
			quoted = true
			i++
			for {
				if i >= len(s) {
					return nil, malformedArray(s, "Unexpected end of input.")
				}
				c := s[i]
				if c == '\\' {
					if i+1 >= len(s) {
						return nil, malformedArray(s, "Unexpected end of input.")
					}
					elem.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '"' {
					break
				}
				elem.WriteByte(c)
			}
			for i < len(s) && isArraySpace(s[i]) {
				i++
			}
		} else {
			// Unquoted: backslash escapes, trailing unescaped whitespace
			// dropped.
			keep := 0 // length of elem up to the last significant byte
			for i < len(s) && s[i] != ',' && s[i] != '}' {
				c := s[i]
				switch {
				case c == '"' || c == '{':
					return nil, malformedArray(s, "Unexpected \""+string(c)+"\" character.")
				case c == '\\':
					if i+1 >= len(s) {
						return nil, malformedArray(s, "Unexpected end of input.")
					}
					elem.WriteByte(s[i+1])
					keep = elem.Len()
					i += 2
					continue
				}
				elem.WriteByte(c)
				if !isArraySpace(c) {
					keep = elem.Len()
				}
				i++
			}
			str := elem.String()[:keep]
			if keep == 0 {
				return nil, malformedArray(s, "Unexpected \""+string(s[min(i, len(s)-1)])+"\" character.")
			}
			if strings.EqualFold(str, "NULL") && !strings.Contains(s, "\\") {
				null = true
			}
			elem.Reset()
			elem.WriteString(str)
		}
		if i >= len(s) {
			return nil, malformedArray(s, "Unexpected end of input.")
		}
		if null && !quoted {
			return nil, errArrayNull()
		}
		out = append(out, elem.String())
		c := s[i]
		i++
		if c == '}' {
			break
		}
		if c != ',' {
			return nil, malformedArray(s, "Unexpected array element.")
		}
	}
	for ; i < len(s); i++ {
		if !isArraySpace(s[i]) {
			return nil, malformedArray(s, "Junk after closing right brace.")
		}
	}
	if hasDims {
		if ubound-lbound+1 != len(out) {
			return nil, malformedArray(s, "Specified array dimensions do not match array contents.")
		}
		if lbound != 1 && len(out) > 0 {
			return nil, newErr("0A000", nil, "text[] with lower bound %d is not supported by the ref store", lbound)
		}
	}
	return out, nil
}

// textArrayRecv is array_recv for text[] restricted as above.
func textArrayRecv(src []byte, paramNo int) ([]string, error) {
	rd := func(n int) ([]byte, error) {
		if len(src) < n {
			return nil, errInsufficient()
		}
		b := src[:n]
		src = src[n:]
		return b, nil
	}
	i32 := func() (int32, error) {
		b, err := rd(4)
		if err != nil {
			return 0, err
		}
		return int32(binary.BigEndian.Uint32(b)), nil
	}
	ndim, err := i32()
	if err != nil {
		return nil, err
	}
	flags, err := i32()
	if err != nil {
		return nil, err
	}
	elemType, err := i32()
	if err != nil {
		return nil, err
	}
	switch {
	case ndim < 0:
		return nil, newErr("22P03", nil, "invalid number of dimensions: %d", ndim)
	case ndim > 6:
		return nil, newErr("54000", nil, "number of array dimensions (%d) exceeds the maximum allowed (6)", ndim)
	case flags != 0 && flags != 1:
		return nil, newErr("22P03", nil, "invalid array flags")
	case uint32(elemType) != OIDText:
		return nil, newErr("42804", nil, "binary data has array element type %d (%s) instead of expected %d (text)", uint32(elemType), typeName(uint32(elemType)), OIDText)
	case ndim > 1:
		return nil, newErr("0A000", nil, "multidimensional text[] is not supported by the ref store")
	}
	out := []string{}
	if ndim == 1 {
		n, err := i32()
		if err != nil {
			return nil, err
		}
		lb, err := i32()
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, newErr("54000", nil, "array size exceeds the maximum allowed")
		}
		if lb != 1 && n > 0 {
			return nil, newErr("0A000", nil, "text[] with lower bound %d is not supported by the ref store", lb)
		}
		if int(n) > len(src)/4 {
			return nil, errInsufficient()
		}
		out = make([]string, 0, n)
		for k := int32(0); k < n; k++ {
			l, err := i32()
			if err != nil {
				return nil, err
			}
			if l == -1 {
				return nil, errArrayNull()
			}
			if l < 0 {
				return nil, newErr("22P03", nil, "insufficient data left in message")
			}
			b, err := rd(int(l))
			if err != nil {
				return nil, err
			}
			if err := verifyUTF8(b); err != nil {
				return nil, err
			}
			out = append(out, string(b))
		}
	}
	if len(src) != 0 {
		return nil, errTrailing(paramNo)
	}
	return out, nil
}

// appendTextArrayText is array_out for text[].
func appendTextArrayText(b []byte, elems []string) []byte {
	b = append(b, '{')
	for i, e := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		need := e == "" || strings.EqualFold(e, "NULL")
		for j := 0; j < len(e) && !need; j++ {
			switch c := e[j]; c {
			case '"', '\\', '{', '}', ',':
				need = true
			default:
				need = isArraySpace(c)
			}
		}
		if !need {
			b = append(b, e...)
			continue
		}
		b = append(b, '"')
		for j := 0; j < len(e); j++ {
			if c := e[j]; c == '"' || c == '\\' {
				b = append(b, '\\')
			}
			b = append(b, e[j])
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendTextArrayBinary is array_send for text[].
func appendTextArrayBinary(b []byte, elems []string) []byte {
	if len(elems) == 0 {
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0)
		return binary.BigEndian.AppendUint32(b, OIDText)
	}
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, OIDText)
	b = binary.BigEndian.AppendUint32(b, uint32(len(elems)))
	b = binary.BigEndian.AppendUint32(b, 1)
	for _, e := range elems {
		b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}
