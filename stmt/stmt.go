package stmt

import "context"

// Statement is one SQL statement a client sent, with what it was bound to.
// For the simple protocol only SQL is set.
type Statement struct {
	SQL string
	// Name, on the engine's own statements, names a prepared statement:
	// with SQL it is prepared under that name (and kept for the session),
	// without SQL the statement prepared under that name runs.
	Name string
	// Params are the bound values as the client sent them (nil is NULL),
	// in ParamFormats (0 text, 1 binary; one entry applies to all), with
	// the types the statement was parsed with (0 when left to the server).
	Params       [][]byte
	ParamFormats []int16
	ParamOIDs    []uint32
	// ResultFormats are the formats the client asked its rows in.
	ResultFormats []int16
}

// Field describes one result column, as RowDescription does.
type Field struct {
	Name         string
	TableOID     uint32
	TableAttrNum uint16
	TypeOID      uint32
	TypeSize     int16
	TypeModifier int32
	Format       int16
}

// Result is the outcome of one statement.
type Result struct {
	// Fields is nil for a statement that returns no rows.
	Fields []Field
	// Rows are the values in the requested formats; nil is NULL.
	Rows [][][]byte
	// Tag is the command tag, e.g. "INSERT 0 3".
	Tag string
}

// TxStatus is the server's transaction state, from ReadyForQuery: 'I' idle,
// 'T' in a transaction, 'E' in a failed transaction.
type TxStatus byte

const (
	TxIdle   TxStatus = 'I'
	TxActive TxStatus = 'T'
	TxFailed TxStatus = 'E'
)

// Conn runs statements on a client's own upstream connection. A server
// error is returned as a *pgerr.Error carrying every field the server sent;
// the connection stays usable after it (the transaction may then be
// failed). A Conn belongs to one goroutine at a time.
type Conn interface {
	// Exec runs one statement with the extended protocol. Text-format
	// parameters and results unless st says otherwise.
	Exec(ctx context.Context, st Statement) (*Result, error)
	// Batch runs statements as one pipeline (one round trip): each
	// statement's messages, then a single Sync. It returns the results of
	// the statements that completed, in order, and the first error; the
	// server skips the statements after an error.
	Batch(ctx context.Context, sts []Statement) ([]*Result, error)
	// ParamTypes returns the types the server gives the parameters of sql
	// when it is prepared with the given types (0: left to the server).
	ParamTypes(ctx context.Context, sql string, oids []uint32) ([]uint32, error)
	// Query runs sql with text parameters and returns the rows as text.
	Query(ctx context.Context, sql string, args ...string) ([][][]byte, error)
	// Simple runs a Query message, which may hold several statements, and
	// returns one Result per statement that completed before any error.
	Simple(ctx context.Context, sql string) ([]*Result, error)
	// TxStatus is the transaction state after the last statement.
	TxStatus() TxStatus
	// TxEnds changes whenever a transaction of the session has ended
	// (committed, rolled back, or an autocommit statement), so the engine
	// can tell a new transaction from the one it saw last.
	TxEnds() uint64
	// Exchanges counts the round trips made on the connection so far
	// (now): each write to the server that awaits its answer, whoever's
	// messages it carries (the engine's statements, and the client's
	// relayed or sent with them); began is the count when the client's
	// message being answered (a Query, a batch) arrived. The trace reports
	// their differences, which cannot leave an exchange out.
	Exchanges() (now, began uint64)
	// Notice sends a NoticeResponse to the client (e.g. the logic trace).
	Notice(message string)
	// Parameter is the value of a run-time parameter as the server last
	// reported it in ParameterStatus, or "" if it has not.
	Parameter(name string) string
}

// TextParams are args as text-format parameter values, for Conn.Query.
func TextParams(args []string) [][]byte {
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	return params
}
