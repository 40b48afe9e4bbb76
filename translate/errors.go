package translate

import "fmt"

// Error is an error PostgreSQL would report with SQLSTATE Code. The wire
// layer turns it into an ErrorResponse as is.
type Error struct {
	Code    string // SQLSTATE
	Message string
	Detail  string
	Err     error // wrapped cause, if any
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "SQLSTATE " + e.Code
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// SQLState returns the SQLSTATE code.
func (e *Error) SQLState() string { return e.Code }

// Is makes errors.Is(err, ErrOutOfRange) (a sentinel without a message)
// match any Error with the same SQLSTATE.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Message != "" {
		return false
	}
	return t.Code == e.Code
}

// Sentinels for errors.Is, one per SQLSTATE this package reports.
var (
	ErrProtocolViolation           = &Error{Code: "08P01"} // protocol_violation
	ErrFeatureNotSupported         = &Error{Code: "0A000"} // feature_not_supported
	ErrInvalidTextRepresentation   = &Error{Code: "22P02"} // invalid_text_representation
	ErrInvalidBinaryRepresentation = &Error{Code: "22P03"} // invalid_binary_representation
	ErrNumericValueOutOfRange      = &Error{Code: "22003"} // numeric_value_out_of_range
	ErrCharacterNotInRepertoire    = &Error{Code: "22021"} // character_not_in_repertoire
	ErrInvalidParameterValue       = &Error{Code: "22023"} // invalid_parameter_value
	ErrInvalidDatetimeFormat       = &Error{Code: "22007"} // invalid_datetime_format
	ErrDatetimeFieldOverflow       = &Error{Code: "22008"} // datetime_field_overflow
	ErrUntranslatableCharacter     = &Error{Code: "22P05"} // untranslatable_character
	ErrSyntaxError                 = &Error{Code: "42601"} // syntax_error
	ErrIndeterminateDatatype       = &Error{Code: "42P18"} // indeterminate_datatype
	ErrDatatypeMismatch            = &Error{Code: "42804"} // datatype_mismatch
	ErrInternal                    = &Error{Code: "XX000"} // internal_error
)

func newErr(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}
