package translate

import (
	"strings"
	"time"
	_ "time/tzdata" // zone names must resolve the same on every host
)

// Session holds the session settings that change how values are written
// and read as text: TimeZone (timestamptz output, and input without an
// explicit zone) and DateStyle (only ISO output is supported, PostgreSQL's
// default and what pgx expects).
type Session struct {
	loc      *time.Location
	timeZone string
}

// UTC is a session with TimeZone 'UTC' and DateStyle 'ISO, MDY'.
var UTC = &Session{loc: time.UTC, timeZone: "UTC"}

// NewSession validates the session's TimeZone and DateStyle parameters.
// TimeZone is an IANA zone name (as PostgreSQL, case-insensitively for
// "UTC"/"GMT"); DateStyle must be ISO (any order suffix).
func NewSession(timeZone, dateStyle string) (*Session, error) {
	if ds := strings.ToUpper(strings.TrimSpace(dateStyle)); ds != "" && ds != "ISO" && !strings.HasPrefix(ds, "ISO,") && !strings.HasPrefix(ds, "ISO ") {
		return nil, newErr("0A000", nil, "DateStyle %q is not supported (only ISO)", dateStyle)
	}
	switch strings.ToUpper(timeZone) {
	case "", "UTC", "ETC/UTC", "GMT", "Z", "ZULU", "UCT":
		return &Session{loc: time.UTC, timeZone: timeZone}, nil
	}
	loc, err := time.LoadLocation(timeZone)
	if err != nil {
		return nil, newErr("22023", err, "invalid value for parameter \"TimeZone\": \"%s\"", timeZone)
	}
	return &Session{loc: loc, timeZone: timeZone}, nil
}

// Location is the session's time zone.
func (s *Session) Location() *time.Location {
	if s == nil {
		return time.UTC
	}
	return s.loc
}
