package proxy

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// PostgreSQL runs the statements of a Query, and those of a batch up to its
// Sync, that are not inside BEGIN ... COMMIT as one implicit transaction:
// it begins at the first such statement and ends at a COMMIT or ROLLBACK
// among them, or at their end; the statement after that COMMIT begins the
// next one; an error rolls back the one it is in. When the engine runs part
// of a Query or batch, the proxy opens each implicit transaction itself
// with BEGIN, so that a write and its rules (and the commit work) commit or
// fail together, and answers the transaction control that meets it as the
// server answers it in an implicit transaction.

// implicitTx is the proxy's BEGIN standing for PostgreSQL's implicit
// transaction, through one Query or batch.
type implicitTx struct {
	s *session
	c *upstreamConn
	// open is set while the proxy's transaction is open (or its BEGIN is
	// due with the next statement).
	open bool
}

// enter opens the proxy's transaction before a statement that is not
// transaction control, when none is open.
func (t *implicitTx) enter() error {
	if t.s.due == dueSync {
		// Answers to earlier requests are on their way: the state is
		// known once they have been relayed.
		if err := t.s.acquire(); err != nil {
			return err
		}
	}
	if !t.open && t.s.TxStatus() == stmt.TxIdle {
		t.c.deferBegin()
		t.open = true
	}
	return nil
}

// meets reports whether a transaction-control statement of kind ends or
// changes the proxy's transaction, which then answers it (end); BEGIN is
// relayed, and only loses its warning.
func (t *implicitTx) meets(kind stmt.TxKind) bool {
	return t.open && kind != stmt.TxNone && kind != stmt.TxBegin && kind != stmt.TxOther
}

// begun notes that the client's BEGIN made the proxy's transaction its own,
// with the statements run so far, as a BEGIN makes PostgreSQL's implicit
// transaction explicit.
func (t *implicitTx) begun() { t.open = false }

// quiet is the warning code the server gives a BEGIN inside the proxy's
// transaction, which PostgreSQL's implicit transaction does not give.
func (t *implicitTx) quiet(kind stmt.TxKind) string {
	if t.open && kind == stmt.TxBegin {
		return pgerr.ActiveSQLTransaction
	}
	return ""
}

// end answers a COMMIT, ROLLBACK, PREPARE TRANSACTION or savepoint
// statement that meets the proxy's transaction, as PostgreSQL answers it in
// an implicit transaction: a commit or rollback with a warning, the rest
// with an error. sql is the client's statement.
func (t *implicitTx) end(ctx context.Context, kind stmt.TxKind, sql string) (failed bool, err error) {
	s := t.s
	t.open = false
	var what string
	switch kind {
	case stmt.TxCommitChain:
		what = "COMMIT AND CHAIN"
	case stmt.TxRollbackChain:
		what = "ROLLBACK AND CHAIN"
	case stmt.TxSavepoint:
		what = "SAVEPOINT"
	case stmt.TxRelease:
		what = "RELEASE SAVEPOINT"
	case stmt.TxRollbackTo:
		what = "ROLLBACK TO SAVEPOINT"
	}
	if what != "" {
		e := pgerr.New(pgerr.NoActiveSQLTransaction, "%s can only be used in transaction blocks", what)
		if err := s.reply(nil, e, false); err != nil {
			return true, err
		}
		return true, s.rollbackWrapped(ctx, t.c)
	}
	if err := s.warnNoTransaction(); err != nil {
		return true, err
	}
	if kind == stmt.TxRollback {
		if err := s.rollbackWrapped(ctx, t.c); err != nil {
			return true, err
		}
		return false, s.reply(&stmt.Result{Tag: "ROLLBACK"}, nil, false)
	}
	res, failed, err := s.commitWrapped(ctx, t.c, sql)
	if failed || err != nil {
		return true, err
	}
	return false, s.reply(&stmt.Result{Tag: res.Tag}, nil, false)
}

// warnNoTransaction sends the warning PostgreSQL gives a COMMIT or ROLLBACK
// of an implicit transaction.
func (s *session) warnNoTransaction() error {
	if err := s.acquire(); err != nil {
		return err
	}
	buf, err := (&pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING", Code: pgerr.NoActiveSQLTransaction,
		Message: "there is no transaction in progress"}).Encode(nil)
	if err != nil {
		return pgerr.New(pgerr.InternalError, "encode NoticeResponse: %w", err)
	}
	s.cw.Write(buf)
	return nil
}

// finish ends the proxy's transaction at the end of a Query or batch: the
// engine's commit work, then COMMIT, or ROLLBACK after a failure. It
// reports whether the Query or batch failed, at its end or before.
func (s *session) finish(ctx context.Context, t *implicitTx, failed bool) (bool, error) {
	if !t.open {
		return failed, nil
	}
	t.open = false
	if failed {
		return true, s.rollbackWrapped(ctx, t.c)
	}
	_, failed, err := s.commitWrapped(ctx, t.c, "COMMIT")
	return failed, err
}

// commitWrapped runs the engine's commit work, then end (COMMIT or the
// client's PREPARE TRANSACTION) with the statements the work left for it.
// When either fails, the client is sent the error and the transaction is
// over (rolled back).
func (s *session) commitWrapped(ctx context.Context, c *upstreamConn, end string) (*stmt.Result, bool, error) {
	pre, err := s.rules.Commit(ctx, c)
	if err == nil {
		var results []*stmt.Result
		if len(pre) == 0 {
			results, err = c.Simple(ctx, end)
		} else {
			// The engine's last statements ride with the COMMIT.
			results, err = c.Batch(ctx, append(pre, stmt.Statement{SQL: end}))
		}
		if err == nil || len(results) == len(pre) {
			s.rules.Ended(ctx, err == nil)
			if err != nil {
				return nil, true, s.commitError(err)
			}
			return results[len(results)-1], false, nil
		}
	}
	if err := s.reply(nil, err, false); err != nil {
		return nil, true, err
	}
	return nil, true, s.rollbackWrapped(ctx, c)
}

// rollbackWrapped rolls the proxy's transaction back.
func (s *session) rollbackWrapped(ctx context.Context, c *upstreamConn) error {
	_, err := c.Simple(ctx, "ROLLBACK")
	s.rules.Ended(ctx, false)
	return nonFatal(err)
}
