package proxy

import (
	"bytes"
	"context"
	"errors"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// intercept handles the client messages a session with rules must look
// at. It reports whether the message was handled.
func (s *session) intercept(typ byte, n int) (bool, error) {
	switch typ {
	case 'Q':
		body, err := s.cr.body(n)
		if err != nil {
			return true, clientReadError(err)
		}
		text, _, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return true, pgerr.Fatal(pgerr.ProtocolViolation, "invalid Query message")
		}
		if s.x.discard {
			return true, nil // the server ignores everything up to the Sync after an error
		}
		// The text is looked at in place; Intercepts keeps no reference.
		if s.x.engine || len(s.x.msgs) > 0 && s.rules.Intercepts(unsafe.String(unsafe.SliceData(text), len(text))) {
			return true, s.runBatchThenQuery(string(text))
		}
		if len(s.x.msgs) > 0 {
			s.forwardBatch()
		}
		// The text is looked at in place; Intercepts keeps no reference.
		if !s.rules.Intercepts(unsafe.String(unsafe.SliceData(text), len(text))) {
			if !s.beginRequest() {
				return true, shutdownError()
			}
			s.unsynced.Store(false)
			writeMessage(s.uw, typ, body)
			return true, nil
		}
		return true, s.runQuery(string(text))
	case 'P', 'B', 'E', 'D', 'C', 'H', 'S':
		body, err := s.cr.body(n)
		if err != nil {
			return true, clientReadError(err)
		}
		if !s.unsynced.Load() && typ != 'S' && !s.beginBatch() {
			return true, shutdownError()
		}
		return true, s.addToBatch(typ, body)
	}
	return false, nil
}

// runQuery runs a simple Query the engine wants part of, a statement at a
// time, in the transactions PostgreSQL would run them in (implicit.go).
func (s *session) runQuery(text string) error {
	if err := s.borrow(); err != nil {
		return err
	}
	defer s.giveBack()
	return s.runQueryIn(s.ctx, &implicitTx{s: s, c: &upstreamConn{s: s}}, text)
}

// runQueryIn runs the statements of a Query with t.
func (s *session) runQueryIn(ctx context.Context, t *implicitTx, text string) error {
	parts, err := s.rules.Split(text)
	if err != nil {
		// The server will say what is wrong with it.
		parts = []stmt.Part{{SQL: text}}
	}
	failed := false
	for i, p := range parts {
		s.holdTag = i == len(parts)-1
		failed, err = s.runPart(ctx, t, p)
		s.holdTag = false
		if err != nil {
			return err
		}
		if failed {
			break
		}
	}
	if len(parts) == 0 {
		if err := s.acquire(); err != nil {
			return err
		}
		writeMessage(s.cw, 'I', nil)
	}
	failed, err = s.finish(ctx, t, failed)
	if err != nil {
		return err
	}
	if s.heldTag != nil && !failed {
		writeMessage(s.cw, 'C', s.heldTag)
	}
	s.heldTag = nil
	return s.readyForQuery()
}

// writeTag sends a CommandComplete, or holds it (holdTag).
func (s *session) writeTag(body []byte) {
	if s.holdTag {
		s.heldTag = append(s.heldTag[:0], body...)
		return
	}
	writeMessage(s.cw, 'C', body)
}

// runPart runs one statement of a Query and reports whether it failed.
func (s *session) runPart(ctx context.Context, t *implicitTx, p stmt.Part) (bool, error) {
	if t.meets(p.Tx) {
		return t.end(ctx, p.Tx, p.SQL)
	}
	if p.Tx == stmt.TxNone {
		if err := t.enter(); err != nil {
			return true, err
		}
	}
	if p.CopyIn {
		return s.runCopyIn(ctx, t, p)
	}
	if p.Engine && p.Tx != stmt.TxBegin {
		res, err := s.rules.Exec(ctx, t.c, stmt.Statement{SQL: p.SQL})
		if err := s.reply(res, err, true); err != nil {
			return true, err
		}
		return err != nil, nil
	}
	if err := t.c.flushBegin(ctx); err != nil {
		return true, err
	}
	quiet := t.quiet(p.Tx)
	if p.Tx == stmt.TxBegin {
		t.begun()
	}
	return s.relayStatement(p.SQL, quiet, true)
}

// runCopyIn runs a COPY ... FROM the engine takes over: the engine's COPY
// in its place, fed with the client's data, then what the engine does
// with the rows.
func (s *session) runCopyIn(ctx context.Context, t *implicitTx, p stmt.Part) (bool, error) {
	cp, err := s.rules.CopyIn(ctx, t.c, stmt.Statement{SQL: p.SQL})
	if err != nil {
		return true, s.reply(nil, err, false)
	}
	if err := t.c.flushBegin(ctx); err != nil {
		return true, err
	}
	failed, err := s.relayStatement(cp.SQL, "", cp.Finish == nil)
	if err != nil || failed || cp.Finish == nil {
		return failed, err
	}
	res, err := cp.Finish(ctx, t.c)
	if err := s.reply(res, err, true); err != nil {
		return true, err
	}
	return err != nil, nil
}

// reply writes an engine result (or error) to the client; describe adds
// the RowDescription a simple Query sends.
func (s *session) reply(res *stmt.Result, err error, describe bool) error {
	if err := s.acquire(); err != nil {
		return err
	}
	if err != nil {
		if pgerr.Code(err) == "" || isFatal(err) {
			return err
		}
		return encodeError(s.cw, err)
	}
	if describe && res.Fields != nil {
		rd := pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(res.Fields))}
		for i, f := range res.Fields {
			rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttrNum,
				DataTypeOID: f.TypeOID, DataTypeSize: f.TypeSize, TypeModifier: f.TypeModifier, Format: f.Format}
		}
		buf, err := rd.Encode(nil)
		if err != nil {
			return pgerr.New(pgerr.InternalError, "encode RowDescription: %w", err)
		}
		s.cw.Write(buf)
	}
	for _, row := range res.Rows {
		writeDataRow(s.cw, row)
	}
	s.writeTag(append([]byte(res.Tag), 0))
	return nil
}

func isFatal(err error) bool {
	var e *pgerr.Error
	return errors.As(err, &e) && e.Severity == pgerr.SeverityFatal
}

// relayStatement runs one statement of an intercepted Query as a Query of
// its own and relays its responses, but not its ReadyForQuery, nor a
// notice with the code quiet, nor, unless tag, its CommandComplete. A
// COPY FROM STDIN gets the client's data.
func (s *session) relayStatement(sql, quiet string, tag bool) (failed bool, err error) {
	if err := s.send(appendMessage(nil, 'Q', append([]byte(sql), 0))); err != nil {
		return false, err
	}
	for {
		typ, body, err := s.readUpstream()
		if err != nil {
			return false, err
		}
		switch typ {
		case 'Z':
			return failed, nil
		case 'E':
			failed = true
		case 'G':
			writeMessage(s.cw, typ, body)
			if err := s.relayCopyData(); err != nil {
				return false, err
			}
			continue
		case 'N':
			if quiet != "" && noticeCode(body) == quiet {
				continue
			}
		case 'C':
			if tag {
				s.writeTag(body)
			}
			continue
		}
		writeMessage(s.cw, typ, body)
	}
}

// relayCopyData relays what a client sends after a CopyInResponse
// upstream, up to its CopyDone or CopyFail: the server's answer follows.
// Flush and Sync mean nothing during a COPY and are dropped, as the server
// drops them; any other message ends the session as a protocol violation.
func (s *session) relayCopyData() error {
	if err := s.flushClient(); err != nil {
		return err
	}
	for {
		typ, n, err := s.cr.header()
		if err != nil {
			return clientReadError(err)
		}
		switch typ {
		case 'd', 'c', 'f':
			if err := s.cr.copyBody(s.uw, typ, n); err != nil {
				return clientReadError(err)
			}
			if typ != 'd' {
				return s.flushUpstream()
			}
		case 'H', 'S':
			if _, err := s.cr.body(n); err != nil {
				return clientReadError(err)
			}
		default:
			return pgerr.Fatal(pgerr.ProtocolViolation, "unexpected message type 0x%02X during COPY from stdin", typ)
		}
	}
}

// refuseCopyIn aborts a COPY FROM STDIN the server has started for a
// statement of a batch the proxy runs: the client's data would arrive
// after the Sync the batch ends with. The client gets 0A000 in place of
// the server's answer to the CopyFail.
func (s *session) refuseCopyIn() error {
	const why = "COPY FROM STDIN cannot run in an extended-protocol batch with a statement pgrules runs rules for; send it as a simple Query"
	buf, err := (&pgproto3.CopyFail{Message: why}).Encode(nil)
	if err != nil {
		return pgerr.New(pgerr.InternalError, "encode CopyFail: %w", err)
	}
	if err := s.send(buf); err != nil {
		return err
	}
	return encodeError(s.cw, pgerr.New(pgerr.FeatureNotSupported, why))
}

// commitError sends the client the server's answer to a COMMIT that
// failed (a deferred constraint, a serialization failure); a fatal error
// ends the session instead.
func (s *session) commitError(err error) error {
	if err != nil && !isFatal(err) && pgerr.Code(err) != "" {
		return encodeError(s.cw, err)
	}
	return err
}

// nonFatal drops an error the client has no need to hear: the server's
// answer to cleaning up after an error it has already reported.
func nonFatal(err error) error {
	if err != nil && (pgerr.Code(err) == "" || isFatal(err)) {
		return err
	}
	return nil
}

func (s *session) readyForQuery() error {
	if err := s.acquire(); err != nil {
		return err
	}
	writeMessage(s.cw, 'Z', []byte{byte(s.TxStatus())})
	return s.flushClient()
}
