package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// enginePortal is a portal bound to a statement the engine wants. The
// engine runs the statement at the portal's first Execute, whatever its row
// limit, as the server runs a write to completion there; the proxy then
// answers that Execute and the later ones from the result, as the server
// answers them from the portal: rows by the limit with PortalSuspended, a
// command tag counting the rows of that Execute, and "cannot be run" for a
// portal without rows to give.
type enginePortal struct {
	name string
	st   stmt.Statement
	// sent is set once the Bind went upstream; ends is the session's
	// txEnds then. The server drops the portal when that transaction
	// ends; flushed marks a Bind that went at a Flush, before the Sync in
	// front of the engine's first statement ended that transaction.
	sent, flushed bool
	ends          uint64
	ran           bool
	// res is what the statement returned, its rows not yet sent; nil
	// for a statement without RETURNING.
	res *stmt.Result
}

// noteBound records when the Binds among msgs go upstream; early is set
// when they go ahead of the rest of their batch.
func (s *session) noteBound(msgs []batchMsg, early bool) {
	for _, m := range msgs {
		if m.bound != nil {
			m.bound.sent, m.bound.ends, m.bound.flushed = true, s.txEnds.Load(), early
		}
	}
}

// execPortal answers an Execute of a portal the engine wants, and reports
// whether it failed.
func (s *session) execPortal(ctx context.Context, t *implicitTx, m batchMsg) (bool, error) {
	p := m.exec
	// Every earlier ReadyForQuery must have been read before the
	// transaction the portal lives in can be told to have ended. With
	// nothing on its way, there is none to read, and the messages held
	// back for the engine's statement go with it.
	if s.due == dueSync {
		if err := s.acquire(); err != nil {
			return true, err
		}
	}
	if !p.sent || p.ends != s.txEnds.Load() && !(p.flushed && s.x.forwarded) {
		return true, s.portalError(ctx, t, pgerr.InvalidCursorName, "portal \"%s\" does not exist", p.name)
	}
	if !p.ran {
		if err := t.enter(); err != nil {
			return true, err
		}
		res, err := s.rules.Exec(ctx, t.c, p.st)
		p.ran = true
		if ferr := s.flushAhead(); ferr != nil {
			return true, ferr
		}
		if s.aheadFailed {
			// The client has the server's error for its own message,
			// and the statement did not run; nor did a BEGIN behind it.
			if t.c.begin || t.c.skippedBegin {
				t.c.begin, t.c.skippedBegin, t.open = false, false, false
			}
			return true, nil
		}
		if err != nil || res.Fields == nil {
			return err != nil, s.reply(res, err, false)
		}
		p.res = res
	} else if p.res == nil {
		return true, s.portalError(ctx, t, pgerr.ObjectNotInPrereqState, "portal \"%s\" cannot be run", p.name)
	}
	if err := s.acquire(); err != nil {
		return true, err
	}
	rows := p.res.Rows
	n := len(rows)
	if m.maxRows > 0 && int(m.maxRows) <= n {
		n = int(m.maxRows)
	}
	for _, row := range rows[:n] {
		writeDataRow(s.cw, row)
	}
	p.res.Rows = rows[n:]
	if m.maxRows > 0 && n == int(m.maxRows) {
		writeMessage(s.cw, 's', nil)
		return false, nil
	}
	writeMessage(s.cw, 'C', append([]byte(retag(p.res.Tag, n)), 0))
	return false, nil
}

// retag is a command tag with its row count set to n.
func retag(tag string, n int) string {
	i := strings.LastIndexByte(tag, ' ')
	if _, err := strconv.Atoi(tag[i+1:]); i < 0 || err != nil {
		return tag
	}
	return tag[:i+1] + strconv.Itoa(n)
}

// portalError answers an Execute the server would have refused, and fails
// the transaction as the server's error would have.
func (s *session) portalError(ctx context.Context, t *implicitTx, code, format string, args ...any) error {
	if err := t.c.flushBegin(ctx); err != nil {
		return err
	}
	if s.TxStatus() != stmt.TxIdle || t.open {
		// The statement only fails the transaction; the client hears
		// the proxy's error, not this one.
		if _, err := t.c.Simple(ctx, fmt.Sprintf("DO $$BEGIN RAISE SQLSTATE '%s'; END$$", code)); nonFatal(err) != nil {
			return err
		}
	}
	return s.reply(nil, pgerr.New(code, format, args...), false)
}
