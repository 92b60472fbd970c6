package stmt

import (
	"context"

	"github.com/rs/zerolog"
)

// Rules is the proxy's view of the rules engine: which statements it wants
// and how to run them. The proxy knows nothing of what the rules are, the
// engine nothing of the wire.
type Rules interface {
	// Open is called once a session has started. It returns nil when the
	// session's statements are only to be relayed.
	Open(ctx context.Context, info SessionInfo) Session
}

// SessionInfo describes a session to the engine.
type SessionInfo struct {
	Database string
	User     string
	Log      zerolog.Logger
}

// Session is one session's rules. Its methods are called from the
// session's frontend goroutine only, one at a time.
type Session interface {
	// Intercepts reports whether a statement text (a simple Query's whole
	// text, or a Parse's) needs the engine. It is called for every Query
	// and Parse, so it must be cheap for statements it does not want. The
	// text may point into the proxy's read buffer: it must not be kept
	// beyond the call (copy it to keep it).
	Intercepts(sql string) bool
	// Split divides an intercepted simple Query into its statements.
	Split(sql string) ([]Part, error)
	// Exec runs one intercepted statement on c, inside the transaction the
	// proxy has open, and returns what the client gets for it. When it
	// fails, the transaction on c must be in the failed state (as after
	// any Postgres error) unless the error is the server's own.
	Exec(ctx context.Context, c Conn, st Statement) (*Result, error)
	// CopyIn begins a COPY ... FROM of a Part marked CopyIn, inside the
	// transaction the proxy has open. The proxy runs the returned Copy's
	// SQL as a Query in the statement's place, relaying the client's data
	// (CopyData up to CopyDone or CopyFail) when the server asks for it,
	// and, when it completed, calls Finish for what the client gets. When
	// CopyIn fails, the transaction on c is in the failed state.
	CopyIn(ctx context.Context, c Conn, st Statement) (*Copy, error)
	// Commit runs just before the proxy commits a transaction it opened
	// (PostgreSQL's implicit transaction of the statements of a Query or
	// batch outside BEGIN ... COMMIT); an error rolls it back instead. The
	// statements it returns run in the COMMIT's own round trip, before
	// it; when one fails, the transaction is rolled back too.
	Commit(ctx context.Context, c Conn) ([]Statement, error)
	// Ended is called after the proxy has committed (or rolled back) a
	// transaction it opened around an autocommit statement.
	Ended(ctx context.Context, committed bool)
	// Close releases the session's resources.
	Close()
}

// Part is one statement of a simple Query.
type Part struct {
	SQL string
	// Engine is true when the statement goes to Exec; otherwise it is
	// relayed as a Query of its own.
	Engine bool
	// TxControl marks BEGIN, COMMIT, ROLLBACK, SAVEPOINT and the like; Tx
	// says which.
	TxControl bool
	Tx        TxKind
	// CopyIn marks a COPY ... FROM the engine runs with Session.CopyIn.
	CopyIn bool
}

// Copy is how the engine runs a COPY ... FROM.
type Copy struct {
	// SQL is the COPY the proxy runs in the client's statement's place.
	SQL string
	// Finish runs once SQL has completed and returns the client's result
	// for the statement; nil when the server's own answer is the client's.
	Finish func(ctx context.Context, c Conn) (*Result, error)
}

// TxKind is what a transaction-control statement does.
type TxKind uint8

const (
	TxNone          TxKind = iota
	TxBegin                // BEGIN, START TRANSACTION
	TxCommit               // COMMIT, END
	TxCommitChain          // COMMIT AND CHAIN
	TxRollback             // ROLLBACK, ABORT
	TxRollbackChain        // ROLLBACK AND CHAIN
	TxPrepare              // PREPARE TRANSACTION
	TxSavepoint            // SAVEPOINT
	TxRelease              // RELEASE SAVEPOINT
	TxRollbackTo           // ROLLBACK TO SAVEPOINT
	TxOther                // COMMIT PREPARED, ROLLBACK PREPARED
)
