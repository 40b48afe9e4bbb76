package wire

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATE codes the wire layer itself produces.
const (
	CodeProtocolViolation       = "08P01"
	CodeConnectionFailure       = "08006"
	CodeConnectionDoesNotExist  = "08003"
	CodeCannotConnectNow        = "57P03"
	CodeUnableToConnect         = "08001"
	CodeTooManyConnections      = "53300"
	CodeInvalidAuthorization    = "28000"
	CodeInvalidPassword         = "28P01"
	CodeFeatureNotSupported     = "0A000"
	CodeAdminShutdown           = "57P01"
	CodeQueryCanceled           = "57014"
	CodeIdleInTransaction       = "25P03"
	CodeInFailedTransaction     = "25P02"
	CodeInternalError           = "XX000"
	CodeProgramLimitExceeded    = "54000"
	CodeDuplicatePreparedStmt   = "42P05"
	CodeUndefinedPreparedStmt   = "26000"
	CodeUndefinedCursor         = "34000"
	CodeInvalidParameterValue   = "22023"
	CodeInvalidBinaryRepresent  = "22P03"
	CodeSyntaxError             = "42601"
	CodeInvalidTransactionState = "25000"
)

// Errorf returns a *pgconn.PgError with severity ERROR; local handlers return
// it (or any *pgconn.PgError) to give the client a SQLSTATE. Other errors
// reach the client as XX000.
func Errorf(code, format string, args ...any) *pgconn.PgError {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: fmt.Sprintf(format, args...)}
}

// fatalf is an error that ends the session after it is sent.
func fatalf(code, format string, args ...any) *pgconn.PgError {
	return &pgconn.PgError{Severity: "FATAL", Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorResponse converts any error to the message sent to the client.
func errorResponse(err error) *pgproto3.ErrorResponse {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		pe = &pgconn.PgError{Severity: "ERROR", Code: CodeInternalError, Message: err.Error()}
	}
	sev := pe.Severity
	if sev == "" {
		sev = "ERROR"
	}
	return &pgproto3.ErrorResponse{
		Severity: sev, SeverityUnlocalized: sev, Code: pe.Code, Message: pe.Message, Detail: pe.Detail,
		Hint: pe.Hint, Position: pe.Position, InternalPosition: pe.InternalPosition, InternalQuery: pe.InternalQuery,
		Where: pe.Where, SchemaName: pe.SchemaName, TableName: pe.TableName, ColumnName: pe.ColumnName,
		DataTypeName: pe.DataTypeName, ConstraintName: pe.ConstraintName, File: pe.File, Line: pe.Line, Routine: pe.Routine,
	}
}

// pgErrorFrom decodes an upstream ErrorResponse body.
func pgErrorFrom(body []byte) *pgconn.PgError {
	var er pgproto3.ErrorResponse
	if err := er.Decode(body); err != nil {
		return &pgconn.PgError{Severity: "ERROR", Code: CodeProtocolViolation, Message: "malformed ErrorResponse from upstream"}
	}
	return &pgconn.PgError{
		Severity: er.Severity, Code: er.Code, Message: er.Message, Detail: er.Detail, Hint: er.Hint,
		Position: er.Position, InternalPosition: er.InternalPosition, InternalQuery: er.InternalQuery, Where: er.Where,
		SchemaName: er.SchemaName, TableName: er.TableName, ColumnName: er.ColumnName, DataTypeName: er.DataTypeName,
		ConstraintName: er.ConstraintName, File: er.File, Line: er.Line, Routine: er.Routine,
	}
}

// Sentinel errors wrapped by session-ending conditions (for logs and tests).
var (
	ErrServerClosed  = errors.New("wire: server closed")
	ErrMessageTooBig = errors.New("wire: message exceeds the maximum size")
	ErrBadMessage    = errors.New("wire: malformed message")
	ErrNoUpstream    = errors.New("wire: no upstream configured")
	// ErrExecInInspect is returned by Upstream.Exec called from an InspectFunc:
	// the upstream is still answering the inspected statement. Run such
	// statements from a LocalStatement or a BeforeFunc.
	ErrExecInInspect = errors.New("wire: Upstream.Exec cannot run inside an InspectFunc")
)
