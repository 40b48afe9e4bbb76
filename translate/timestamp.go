package translate

import (
	"strconv"
	"strings"
	"time"
)

// maxYear bounds the year a timestamp's text may have; any year past
// PostgreSQL's last (294276) is out of range anyway, and this one keeps
// time.Date away from years it would wrap.
const maxYear = 1_000_000_000

// timestamptzIn reads the ISO 8601 forms of timestamptz input:
// "YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][ ][zone][ BC|AD]", where zone is
// Z, UTC, GMT, ±HH, ±HHMM, ±HH:MM, ±HH:MM:SS or an IANA name; without a
// zone the session's TimeZone applies, as in PostgreSQL. Also infinity,
// -infinity and epoch. Other forms PostgreSQL accepts ("Jan 8 1999", ...)
// are rejected with 22007. YYYY is four or more digits, as in PostgreSQL.
func timestamptzIn(v *Value, sess *Session, s string) error {
	bad := func() error {
		return newErr("22007", nil, "invalid input syntax for type timestamp with time zone: \"%s\"", s)
	}
	in := strings.TrimSpace(s)
	switch strings.ToLower(in) {
	case "infinity", "+infinity":
		v.Inf = 1
		return nil
	case "-infinity":
		v.Inf = -1
		return nil
	case "epoch":
		v.Time = time.Unix(0, 0).UTC()
		return nil
	}
	bc := false
	if up := strings.ToUpper(in); strings.HasSuffix(up, " BC") {
		bc, in = true, strings.TrimSpace(in[:len(in)-3])
	} else if strings.HasSuffix(up, " AD") {
		in = strings.TrimSpace(in[:len(in)-3])
	}
	// Date.
	num := func(str string, i, minDigits, maxDigits int) (int, int, bool) {
		j := i
		for j < len(str) && j-i < maxDigits && str[j] >= '0' && str[j] <= '9' {
			j++
		}
		if j-i < minDigits {
			return 0, i, false
		}
		n, err := strconv.Atoi(str[i:j])
		return n, j, err == nil
	}
	// PostgreSQL takes a year of any length (00002024 is 2024) and checks its
	// range after the syntax: a year too large is 22008, not 22007.
	i := 0
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	if i < 4 || i >= len(in) || in[i] != '-' {
		return bad()
	}
	year, err := strconv.Atoi(in[:i]) // digits only: fails only by overflow
	if err != nil || year > maxYear {
		return newErr("22008", nil, "date/time field value out of range: \"%s\"", s)
	}
	month, i, ok := num(in, i+1, 2, 2)
	if !ok || i >= len(in) || in[i] != '-' {
		return bad()
	}
	day, i, ok := num(in, i+1, 2, 2)
	if !ok {
		return bad()
	}
	var hour, minute, sec, nsec int
	if i < len(in) && (in[i] == ' ' || in[i] == 'T') && i+1 < len(in) && in[i+1] >= '0' && in[i+1] <= '9' {
		if hour, i, ok = num(in, i+1, 1, 2); !ok || i >= len(in) || in[i] != ':' {
			return bad()
		}
		if minute, i, ok = num(in, i+1, 2, 2); !ok {
			return bad()
		}
		if i < len(in) && in[i] == ':' {
			if sec, i, ok = num(in, i+1, 2, 2); !ok {
				return bad()
			}
			if i < len(in) && in[i] == '.' {
				j := i + 1
				for j < len(in) && in[j] >= '0' && in[j] <= '9' {
					j++
				}
				frac := in[i+1 : j]
				if frac == "" {
					return bad()
				}
				// Round to µs (PostgreSQL keeps µs precision).
				for len(frac) < 7 {
					frac += "0"
				}
				us, _ := strconv.Atoi(frac[:6])
				if frac[6] >= '5' {
					us++
				}
				nsec = us * 1000
				i = j
			}
		}
	}
	rest := strings.TrimSpace(in[i:])
	loc := sess.Location()
	switch {
	case rest == "":
	case strings.EqualFold(rest, "Z") || strings.EqualFold(rest, "UTC") || strings.EqualFold(rest, "GMT"):
		loc = time.UTC
	case rest[0] == '+' || rest[0] == '-':
		off, ok := parseOffset(rest[1:])
		if !ok {
			return bad()
		}
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	case strings.Contains(rest, "/"):
		l, err := time.LoadLocation(rest)
		if err != nil {
			return newErr("22023", err, "time zone \"%s\" not recognized", rest)
		}
		loc = l
	default:
		return bad()
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year, bc) || hour > 24 || minute > 59 || sec > 60 ||
		(hour == 24 && (minute > 0 || sec > 0 || nsec > 0)) || year == 0 {
		return newErr("22008", nil, "date/time field value out of range: \"%s\"", s)
	}
	if bc {
		year = 1 - year
	}
	t := localTime(year, time.Month(month), day, hour, minute, sec, nsec, loc)
	us := timeToPGMicros(t)
	if us < minTimestamp || us >= endTimestamp {
		return newErr("22008", nil, "timestamp out of range: \"%s\"", s)
	}
	v.Time = t.UTC()
	return nil
}

func daysIn(month, year int, bc bool) int {
	if bc {
		year = 1 - year
	}
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// parseOffset reads HH, HHMM, HH:MM or HH:MM:SS as seconds east.
func parseOffset(s string) (int, bool) {
	var parts []string
	if strings.Contains(s, ":") {
		parts = strings.Split(s, ":")
	} else if len(s) == 4 {
		parts = []string{s[:2], s[2:]}
	} else {
		parts = []string{s}
	}
	if len(parts) > 3 {
		return 0, false
	}
	mult := []int{3600, 60, 1}
	total := 0
	for i, p := range parts {
		if p == "" || len(p) > 2 || !isIntegerText(p) || p[0] == '-' {
			return 0, false
		}
		n, _ := strconv.Atoi(p)
		if i > 0 && n > 59 || i == 0 && n > 15 {
			return 0, false
		}
		total += n * mult[i]
	}
	return total, true
}

// appendTimestamptzText is timestamptz_out with DateStyle ISO in the
// session's TimeZone.
func appendTimestamptzText(b []byte, sess *Session, v Value) ([]byte, error) {
	switch v.Inf {
	case 1:
		return append(b, "infinity"...), nil
	case -1:
		return append(b, "-infinity"...), nil
	}
	us := timeToPGMicros(v.Time)
	if us < minTimestamp || us >= endTimestamp {
		return nil, newErr("22008", nil, "timestamp out of range")
	}
	t := pgMicrosToTime(us).In(sess.Location())
	year, month, day := t.Date()
	bc := year <= 0
	if bc {
		year = 1 - year
	}
	b = appendPadded(b, year, 4)
	b = append(b, '-')
	b = appendPadded(b, int(month), 2)
	b = append(b, '-')
	b = appendPadded(b, day, 2)
	b = append(b, ' ')
	b = appendPadded(b, t.Hour(), 2)
	b = append(b, ':')
	b = appendPadded(b, t.Minute(), 2)
	b = append(b, ':')
	b = appendPadded(b, t.Second(), 2)
	if frac := t.Nanosecond() / 1000; frac != 0 {
		var d [6]byte
		for i := 5; i >= 0; i-- {
			d[i] = byte('0' + frac%10)
			frac /= 10
		}
		n := 6
		for n > 0 && d[n-1] == '0' {
			n--
		}
		b = append(b, '.')
		b = append(b, d[:n]...)
	}
	_, off := t.Zone()
	if off < 0 {
		b = append(b, '-')
		off = -off
	} else {
		b = append(b, '+')
	}
	b = appendPadded(b, off/3600, 2)
	if m, s := off/60%60, off%60; m != 0 || s != 0 {
		b = append(b, ':')
		b = appendPadded(b, m, 2)
		if s != 0 {
			b = append(b, ':')
			b = appendPadded(b, s, 2)
		}
	}
	if bc {
		b = append(b, " BC"...)
	}
	return b, nil
}

func appendPadded(b []byte, n, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], int64(n), 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// localTime resolves a wall-clock time in loc as PostgreSQL's
// DetermineTimeZoneOffset does: a time skipped by a spring-forward
// transition takes the offset from before it, an ambiguous time in a
// fall-back transition the offset from after it. (time.Date leaves that
// choice unspecified.)
func localTime(year int, month time.Month, day, hour, minute, sec, nsec int, loc *time.Location) time.Time {
	if loc == time.UTC {
		return time.Date(year, month, day, hour, minute, sec, nsec, loc)
	}
	wall := time.Date(year, month, day, hour, minute, sec, 0, time.UTC).Unix()
	offAt := func(u int64) int64 {
		_, o := time.Unix(u, 0).In(loc).Zone()
		return int64(o)
	}
	before, after := offAt(wall-86400), offAt(wall+86400)
	valid := func(o int64) bool { return offAt(wall-o) == o }
	var off int64
	switch vb, va := valid(before), valid(after); {
	case va:
		off = after // also the ambiguous case: prefer "after"
	case vb:
		off = before
	default:
		now := offAt(wall - before)
		if valid(now) {
			off = now
		} else {
			off = before // skipped: prefer "before"
		}
	}
	return time.Unix(wall-off, int64(nsec)).In(loc)
}
