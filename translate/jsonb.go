package translate

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonb text normalisation, as PostgreSQL's jsonb_in + jsonb_out do it:
// object keys unique (last wins) and sorted by length then bytes, ": " and
// ", " separators, numbers rewritten by numeric_out, strings re-escaped by
// escape_json (only '"', '\\' and control characters are escaped).

type jsonKind uint8

const (
	jNull jsonKind = iota
	jTrue
	jFalse
	jNumber
	jString
	jArray
	jObject
)

type jsonNode struct {
	kind jsonKind
	str  string // string value, or the normalised number text
	kids []jsonNode
	keys []string // object keys, parallel to kids
}

// maxJSONDepth stands in for PostgreSQL's stack depth limit.
const maxJSONDepth = 6400

type jsonParser struct {
	src   []byte
	pos   int
	depth int
	input string // for error messages
}

func jsonSyntax(input, detail string) error {
	return &Error{Code: "22P02", Message: "invalid input syntax for type json", Detail: detail}
}

func (p *jsonParser) ws() {
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) value() (jsonNode, error) {
	p.ws()
	if p.pos >= len(p.src) {
		return jsonNode{}, jsonSyntax(p.input, "The input string ended unexpectedly.")
	}
	switch c := p.src[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, err := p.string()
		return jsonNode{kind: jString, str: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		for _, lit := range [...]struct {
			word string
			kind jsonKind
		}{{"true", jTrue}, {"false", jFalse}, {"null", jNull}} {
			if bytes.HasPrefix(p.src[p.pos:], []byte(lit.word)) && !p.identAt(p.pos+len(lit.word)) {
				p.pos += len(lit.word)
				return jsonNode{kind: lit.kind}, nil
			}
		}
		return jsonNode{}, jsonSyntax(p.input, "Token is invalid.")
	}
}

// identAt: PostgreSQL's lexer reads a token up to a delimiter, so "truex"
// is one invalid token rather than true followed by garbage.
func (p *jsonParser) identAt(i int) bool {
	if i >= len(p.src) {
		return false
	}
	c := p.src[i]
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c >= 0x80
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return &Error{Code: "54001", Message: "stack depth limit exceeded"}
	}
	return nil
}

func (p *jsonParser) object() (jsonNode, error) {
	if err := p.enter(); err != nil {
		return jsonNode{}, err
	}
	defer func() { p.depth-- }()
	p.pos++ // {
	n := jsonNode{kind: jObject}
	p.ws()
	if p.pos < len(p.src) && p.src[p.pos] == '}' {
		p.pos++
		return n, nil
	}
	for {
		p.ws()
		if p.pos >= len(p.src) || p.src[p.pos] != '"' {
			return n, jsonSyntax(p.input, "Expected string or \"}\".")
		}
		k, err := p.string()
		if err != nil {
			return n, err
		}
		p.ws()
		if p.pos >= len(p.src) || p.src[p.pos] != ':' {
			return n, jsonSyntax(p.input, "Expected \":\".")
		}
		p.pos++
		v, err := p.value()
		if err != nil {
			return n, err
		}
		n.keys = append(n.keys, k)
		n.kids = append(n.kids, v)
		p.ws()
		if p.pos >= len(p.src) {
			return n, jsonSyntax(p.input, "The input string ended unexpectedly.")
		}
		switch p.src[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			normaliseObject(&n)
			return n, nil
		default:
			return n, jsonSyntax(p.input, "Expected \",\" or \"}\".")
		}
	}
}

// normaliseObject sorts keys as jsonb does (length, then bytes) and keeps
// the last value of a duplicated key.
func normaliseObject(n *jsonNode) {
	idx := make([]int, len(n.keys))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ka, kb := n.keys[a], n.keys[b]
		if len(ka) != len(kb) {
			return len(ka) - len(kb)
		}
		return strings.Compare(ka, kb)
	})
	keys := make([]string, 0, len(idx))
	kids := make([]jsonNode, 0, len(idx))
	for j, i := range idx {
		if j+1 < len(idx) && n.keys[idx[j+1]] == n.keys[i] {
			continue // a later duplicate wins (stable sort keeps input order)
		}
		keys = append(keys, n.keys[i])
		kids = append(kids, n.kids[i])
	}
	n.keys, n.kids = keys, kids
}

func (p *jsonParser) array() (jsonNode, error) {
	if err := p.enter(); err != nil {
		return jsonNode{}, err
	}
	defer func() { p.depth-- }()
	p.pos++ // [
	n := jsonNode{kind: jArray}
	p.ws()
	if p.pos < len(p.src) && p.src[p.pos] == ']' {
		p.pos++
		return n, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return n, err
		}
		n.kids = append(n.kids, v)
		p.ws()
		if p.pos >= len(p.src) {
			return n, jsonSyntax(p.input, "The input string ended unexpectedly.")
		}
		switch p.src[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return n, nil
		default:
			return n, jsonSyntax(p.input, "Expected \",\" or \"]\".")
		}
	}
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.pos+4 > len(p.src) {
		return 0, false
	}
	var r rune
	for i := 0; i < 4; i++ {
		v := hexVal(p.src[p.pos+i])
		if v < 0 {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	p.pos += 4
	return r, true
}

func (p *jsonParser) string() (string, error) {
	p.pos++ // opening quote
	var b []byte
	start := p.pos
	for {
		if p.pos >= len(p.src) {
			return "", jsonSyntax(p.input, "The input string ended unexpectedly.")
		}
		c := p.src[p.pos]
		switch {
		case c == '"':
			if b == nil {
				s := string(p.src[start:p.pos])
				p.pos++
				return s, nil
			}
			b = append(b, p.src[start:p.pos]...)
			p.pos++
			return string(b), nil
		case c < 0x20:
			return "", jsonSyntax(p.input, "Character with value 0x"+strconv.FormatUint(uint64(c)|0x100, 16)[1:]+" must be escaped.")
		case c == '\\':
			b = append(b, p.src[start:p.pos]...)
			p.pos++
			if p.pos >= len(p.src) {
				return "", jsonSyntax(p.input, "The input string ended unexpectedly.")
			}
			e := p.src[p.pos]
			p.pos++
			switch e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", jsonSyntax(p.input, "\"\\u\" must be followed by four hexadecimal digits.")
				}
				switch {
				case r == 0:
					return "", &Error{Code: "22P05", Message: "unsupported Unicode escape sequence", Detail: "\\u0000 cannot be converted to text."}
				case utf16.IsSurrogate(r) && r < 0xdc00:
					if p.pos+2 > len(p.src) || p.src[p.pos] != '\\' || p.src[p.pos+1] != 'u' {
						return "", jsonSyntax(p.input, "Unicode high surrogate must not follow a high surrogate.")
					}
					p.pos += 2
					r2, ok := p.hex4()
					if !ok {
						return "", jsonSyntax(p.input, "\"\\u\" must be followed by four hexadecimal digits.")
					}
					if r2 < 0xdc00 || r2 > 0xdfff {
						return "", jsonSyntax(p.input, "Unicode low surrogate must follow a high surrogate.")
					}
					r = utf16.DecodeRune(r, r2)
				case utf16.IsSurrogate(r):
					return "", jsonSyntax(p.input, "Unicode low surrogate must follow a high surrogate.")
				}
				b = utf8.AppendRune(b, r)
			default:
				return "", jsonSyntax(p.input, "Escape sequence \"\\"+string(e)+"\" is invalid.")
			}
			start = p.pos
		default:
			p.pos++
		}
	}
}

func (p *jsonParser) number() (jsonNode, error) {
	start := p.pos
	if p.src[p.pos] == '-' {
		p.pos++
	}
	digits := func() int {
		s := p.pos
		for p.pos < len(p.src) && p.src[p.pos] >= '0' && p.src[p.pos] <= '9' {
			p.pos++
		}
		return p.pos - s
	}
	if p.pos < len(p.src) && p.src[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return jsonNode{}, jsonSyntax(p.input, "Token is invalid.")
	}
	if p.pos < len(p.src) && p.src[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return jsonNode{}, jsonSyntax(p.input, "Token is invalid.")
		}
	}
	if p.pos < len(p.src) && (p.src[p.pos] == 'e' || p.src[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.src) && (p.src[p.pos] == '+' || p.src[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return jsonNode{}, jsonSyntax(p.input, "Token is invalid.")
		}
	}
	if p.identAt(p.pos) || p.pos < len(p.src) && p.src[p.pos] == '.' {
		return jsonNode{}, jsonSyntax(p.input, "Token is invalid.")
	}
	s, err := numericText(string(p.src[start:p.pos]))
	return jsonNode{kind: jNumber, str: s}, err
}

// numericText rewrites a JSON number as numeric_in + numeric_out would:
// no exponent, display scale = fraction digits - exponent (at least 0), no
// negative zero.
func numericText(s string) (string, error) {
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	mant, exp := s, 0
	if i := bytes.IndexAny([]byte(s), "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 1000 || e < -1000 {
			return "", &Error{Code: "22P02", Message: "invalid input syntax for type numeric: \"" + s + "\""}
		}
		exp = e
	}
	intPart, frac := mant, ""
	if i := bytes.IndexByte([]byte(mant), '.'); i >= 0 {
		intPart, frac = mant[:i], mant[i+1:]
	}
	digits := intPart + frac
	point := len(intPart) + exp // position of the decimal point in digits
	dscale := max(0, len(frac)-exp)
	var ip, fp string
	switch {
	case point <= 0:
		ip = "0"
		fp = zeros(-point) + digits
	case point >= len(digits):
		ip = digits + zeros(point-len(digits))
	default:
		ip, fp = digits[:point], digits[point:]
	}
	for len(ip) > 1 && ip[0] == '0' {
		ip = ip[1:]
	}
	if len(fp) < dscale {
		fp += zeros(dscale - len(fp))
	}
	fp = fp[:dscale]
	zero := true
	for _, c := range ip + fp {
		if c != '0' {
			zero = false
			break
		}
	}
	out := ip
	if dscale > 0 {
		out += "." + fp
	}
	if neg && !zero {
		out = "-" + out
	}
	return out, nil
}

func zeros(n int) string { return string(bytes.Repeat([]byte{'0'}, n)) }

func (n *jsonNode) appendTo(b []byte) []byte {
	switch n.kind {
	case jNull:
		return append(b, "null"...)
	case jTrue:
		return append(b, "true"...)
	case jFalse:
		return append(b, "false"...)
	case jNumber:
		return append(b, n.str...)
	case jString:
		return appendJSONString(b, n.str)
	case jArray:
		b = append(b, '[')
		for i := range n.kids {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = n.kids[i].appendTo(b)
		}
		return append(b, ']')
	}
	b = append(b, '{')
	for i := range n.kids {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendJSONString(b, n.keys[i])
		b = append(b, ": "...)
		b = n.kids[i].appendTo(b)
	}
	return append(b, '}')
}

// appendJSONString is PostgreSQL's escape_json.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 {
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}

// NormalizeJSONB returns the text PostgreSQL's jsonb output function gives
// for the JSON text src (what SELECT src::jsonb::text prints), or the error
// jsonb input would raise. src must be valid UTF-8.
func NormalizeJSONB(src []byte) ([]byte, error) {
	p := jsonParser{src: src, input: string(src)}
	n, err := p.value()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.pos != len(src) {
		return nil, jsonSyntax(p.input, "Expected end of input, but found \""+string(src[p.pos:min(len(src), p.pos+1)])+"\".")
	}
	return n.appendTo(make([]byte, 0, len(src)+8)), nil
}

// JSONBFromStrings renders a string map (lakeFS commit metadata) as the
// jsonb text PostgreSQL would store for its JSON encoding. A nil map gives
// "null" (what lakeFS writes for a nil map), not SQL NULL.
func JSONBFromStrings(m map[string]string) []byte {
	if m == nil {
		return []byte("null")
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	b := make([]byte, 0, 2+16*len(m))
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendJSONString(b, k)
		b = append(b, ": "...)
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// JSONBStrings turns jsonb text holding lakeFS commit metadata back into a
// map: JSON null gives a nil map; anything but an object of strings is an
// error.
func JSONBStrings(src []byte) (map[string]string, error) {
	p := jsonParser{src: src, input: string(src)}
	n, err := p.value()
	if err != nil {
		return nil, err
	}
	switch n.kind {
	case jNull:
		return nil, nil
	case jObject:
		m := make(map[string]string, len(n.keys))
		for i, k := range n.keys {
			if n.kids[i].kind != jString {
				return nil, newErr("22023", nil, "metadata value of key %q is not a string", k)
			}
			m[k] = n.kids[i].str
		}
		return m, nil
	}
	return nil, newErr("22023", nil, "metadata is not a JSON object")
}
