package pgerr

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// SQLSTATE codes used by pgrules. The names follow PostgreSQL's errcodes.txt.
const (
	ProtocolViolation       = "08P01"
	ConnectionFailure       = "08006"
	ConnectionException     = "08000"
	ProgramLimitExceeded    = "54000"
	StatementTooComplex     = "54001"
	TooManyConnections      = "53300"
	AdminShutdown           = "57P01"
	CannotConnectNow        = "57P03"
	FeatureNotSupported     = "0A000"
	SyntaxError             = "42601"
	InvalidAuthorization    = "28000"
	UndefinedObject         = "42704"
	UndefinedTable          = "42P01"
	UndefinedColumn         = "42703"
	UndefinedParameter      = "42P02"
	InvalidColumnReference  = "42P10"
	WrongObjectType         = "42809"
	UndefinedFunction       = "42883"
	DatatypeMismatch        = "42804"
	InvalidObjectDefinition = "42P17"
	InsufficientPrivilege   = "42501"
	GeneratedAlways         = "428C9"
	ObjectNotInPrereqState  = "55000"
	CheckViolation          = "23514"
	DataException           = "22000"
	DivisionByZero          = "22012"
	RaiseException          = "P0001"
	SerializationFailure    = "40001"
	InternalError           = "XX000"
	SuccessfulCompletion    = "00000"
	CardinalityViolation    = "21000"
	InvalidParameterValue   = "22023"
	ActiveSQLTransaction    = "25001"
	NoActiveSQLTransaction  = "25P01"
	InvalidCursorName       = "34000"
)

// Severities of an ErrorResponse. FATAL means the connection ends with it.
const (
	SeverityError = "ERROR"
	SeverityFatal = "FATAL"
)

// Error is an error with a SQLSTATE. The zero Severity means ERROR.
type Error struct {
	Code       string
	Severity   string
	Message    string
	Detail     string
	Hint       string
	Schema     string
	Table      string
	Column     string
	Constraint string
	// The remaining fields are those of a server's ErrorResponse, kept so
	// that an error relayed through the engine reaches the client whole.
	Position         int32
	InternalPosition int32
	InternalQuery    string
	Where            string
	DataType         string
	File             string
	Line             int32
	Routine          string
	Err              error // the cause, if any
}

// New returns an error with the given SQLSTATE and a formatted message.
// A %w verb in format wraps its argument as the cause.
func New(code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
}

// Fatal is New with severity FATAL: the connection is closed after it.
func Fatal(code, format string, args ...any) *Error {
	e := New(code, format, args...)
	e.Severity = SeverityFatal
	return e
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// Code returns the SQLSTATE of the first *Error in err's chain, or "" when
// there is none.
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Reference returns a short random id for an error whose cause is logged
// rather than sent: the client is given the id, and the log line with the
// cause carries it, so an administrator can find one from the other.
func Reference() string {
	var b [5]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Withheld returns an error with code and message whose cause is only
// logged: its hint tells the client what to do and gives the reference of
// the log line.
func Withheld(code, ref, message string) *Error {
	return &Error{Code: code, Message: message,
		Hint: fmt.Sprintf("Try again later; if this persists, give the administrator the reference %s, under which pgrules logged the cause.", ref)}
}
