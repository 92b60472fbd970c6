package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// extState follows the client's extended-protocol batches in a session
// with rules. A batch is held back until its Sync (or Flush): only then is
// it known whether it executes a statement the engine wants, and such a
// batch must run as one unit, in one transaction, as the server would have
// run it. Owned by the frontend loop.
type extState struct {
	batch []byte     // the messages of the current batch, not yet forwarded
	msgs  []batchMsg // each message's place in batch
	// engine is set when the batch executes a statement the engine wants.
	engine bool
	// forwarded is set when part of the batch went upstream at a Flush.
	forwarded bool
	// discard drops messages until Sync after the proxy refused a batch.
	discard bool
	stmts   map[string]*stmt.Statement // prepared statements the engine wants
	portals map[string]*stmt.Statement // portals bound to them
	// copyStmts and copyPortals are the relayed COPY statements and their
	// portals: a client executing one waits for CopyInResponse without a
	// Sync or Flush, so the batch must go upstream at its Execute.
	copyStmts   map[string]bool
	copyPortals map[string]bool
}

type batchMsg struct {
	typ        byte
	start, end int
	// exec is the statement an Execute runs, when the engine wants it.
	exec *stmt.Statement
	// describeStmt marks a Describe of a statement (answered with
	// ParameterDescription first).
	describeStmt bool
}

func (x *extState) reset() {
	x.batch, x.msgs, x.engine, x.forwarded = x.batch[:0], x.msgs[:0], false, false
}

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

// addToBatch appends a message to the current batch and notes what the
// engine will need of it.
func (s *session) addToBatch(typ byte, body []byte) error {
	x := &s.x
	if x.discard {
		if typ != 'S' {
			return nil
		}
		x.discard = false
		if !s.beginRequest() {
			return shutdownError()
		}
		s.unsynced.Store(false)
		s.uw.Write(syncMsg)
		return nil
	}
	m := batchMsg{typ: typ, start: len(x.batch)}
	x.batch = appendMessage(x.batch, typ, body)
	m.end = len(x.batch)
	bad := func() error {
		return pgerr.Fatal(pgerr.ProtocolViolation, "invalid message format of message type %q", typ)
	}
	switch typ {
	case 'P':
		name, rest, ok := bytes.Cut(body, []byte{0})
		query, _, ok2 := bytes.Cut(rest, []byte{0})
		if !ok || !ok2 {
			return bad()
		}
		// The text is looked at in place; Intercepts keeps no reference.
		if s.rules.Intercepts(unsafe.String(unsafe.SliceData(query), len(query))) {
			var p pgproto3.Parse
			if p.Decode(body) != nil {
				return bad()
			}
			if x.stmts == nil {
				x.stmts = make(map[string]*stmt.Statement)
			}
			x.stmts[p.Name] = &stmt.Statement{SQL: p.Query, ParamOIDs: p.ParameterOIDs}
		} else if len(x.stmts) > 0 {
			delete(x.stmts, string(name))
		}
		if isCopy(unsafe.String(unsafe.SliceData(query), len(query))) {
			if x.copyStmts == nil {
				x.copyStmts = make(map[string]bool)
			}
			x.copyStmts[string(name)] = true
		} else if len(x.copyStmts) > 0 {
			delete(x.copyStmts, string(name))
		}
	case 'B':
		portal, rest, ok := bytes.Cut(body, []byte{0})
		name, _, ok2 := bytes.Cut(rest, []byte{0})
		if !ok || !ok2 {
			return bad()
		}
		if len(x.portals) > 0 {
			delete(x.portals, string(portal))
		}
		if len(x.copyPortals) > 0 {
			delete(x.copyPortals, string(portal))
		}
		if ps := x.stmts[string(name)]; ps != nil {
			var b pgproto3.Bind
			if b.Decode(body) != nil {
				return bad()
			}
			if x.portals == nil {
				x.portals = make(map[string]*stmt.Statement)
			}
			// Decode left the slices pointing into the reader's buffer.
			params := make([][]byte, len(b.Parameters))
			for i, v := range b.Parameters {
				if v != nil {
					params[i] = bytes.Clone(v)
				}
			}
			x.portals[b.DestinationPortal] = &stmt.Statement{
				SQL: ps.SQL, ParamOIDs: ps.ParamOIDs, Params: params,
				ParamFormats: append([]int16(nil), b.ParameterFormatCodes...), ResultFormats: append([]int16(nil), b.ResultFormatCodes...),
			}
		}
		if x.copyStmts[string(name)] {
			if x.copyPortals == nil {
				x.copyPortals = make(map[string]bool)
			}
			x.copyPortals[string(portal)] = true
		}
	case 'E':
		portal, _, ok := bytes.Cut(body, []byte{0})
		if !ok {
			return bad()
		}
		if st := x.portals[string(portal)]; st != nil {
			m.exec = st
			x.engine = true
		} else if x.copyPortals[string(portal)] && !x.engine {
			x.msgs = append(x.msgs, m)
			s.forwardBatch()
			x.forwarded = true
			return nil
		}
	case 'D':
		m.describeStmt = len(body) > 0 && body[0] == 'S'
	case 'C':
		if len(body) < 2 {
			return bad()
		}
		name, _ := cstring(body[1:])
		if body[0] == 'S' {
			delete(x.stmts, name)
			delete(x.copyStmts, name)
		} else {
			delete(x.portals, name)
			delete(x.copyPortals, name)
		}
	}
	x.msgs = append(x.msgs, m)
	switch typ {
	case 'S':
		if x.engine {
			return s.runBatch()
		}
		if !s.beginRequest() {
			return shutdownError()
		}
		s.unsynced.Store(false)
		s.forwardBatch()
	case 'H':
		if x.engine {
			return s.refuseFlush()
		}
		s.forwardBatch()
		x.forwarded = true
	}
	return nil
}

// forwardBatch sends the held messages upstream as they are.
func (s *session) forwardBatch() {
	s.uw.Write(s.x.batch)
	forwarded := s.x.forwarded
	s.x.reset()
	s.x.forwarded = forwarded
}

// refuseFlush answers a batch that executes a statement with rules and then
// waits at a Flush: the rules and the statement must commit or fail
// together, which the proxy can only arrange up to a Sync.
func (s *session) refuseFlush() error {
	if err := s.borrow(); err != nil {
		return err
	}
	defer s.giveBack()
	if err := s.acquire(); err != nil {
		return err
	}
	encodeError(s.cw, pgerr.New(pgerr.FeatureNotSupported, "pgrules needs a Sync after a write on a table with rules; the client sent Flush and waited"))
	// The batch is dropped, as the server drops a batch after an error;
	// the client's Sync will get the server's ReadyForQuery.
	s.x.reset()
	s.x.discard = true
	return s.flushClient()
}

// runQuery runs a simple Query the engine wants part of.
func (s *session) runQuery(text string) error {
	if err := s.borrow(); err != nil {
		return err
	}
	defer s.giveBack()
	ctx := context.Background()
	c := &upstreamConn{s: s}
	parts, err := s.rules.Split(text)
	if err != nil {
		// The server will say what is wrong with it.
		parts = []stmt.Part{{SQL: text}}
	}
	wrap := s.TxStatus() == stmt.TxIdle && len(parts) > 0
	for _, p := range parts {
		wrap = wrap && !p.TxControl
	}
	if wrap {
		c.deferBegin()
	}
	failed := false
	for _, p := range parts {
		if !p.Engine {
			if err := c.flushBegin(ctx); err != nil {
				return err
			}
			if failed, err = s.relayStatement(p.SQL); err != nil {
				return err
			}
		} else {
			res, err := s.rules.Exec(ctx, c, stmt.Statement{SQL: p.SQL})
			if err := s.reply(res, err, true); err != nil {
				return err
			}
			failed = err != nil
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
	if err := s.finish(ctx, c, wrap, failed); err != nil {
		return err
	}
	return s.readyForQuery()
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
	writeMessage(s.cw, 'C', append([]byte(res.Tag), 0))
	return nil
}

func isFatal(err error) bool {
	var e *pgerr.Error
	return errors.As(err, &e) && e.Severity == pgerr.SeverityFatal
}

// relayStatement runs one statement of an intercepted Query as a Query of
// its own and relays its responses, but not its ReadyForQuery.
func (s *session) relayStatement(sql string) (failed bool, err error) {
	if err := s.send(appendMessage(nil, 'Q', append([]byte(sql), 0))); err != nil {
		return false, err
	}
	refused := false
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
			if refused {
				continue // the server's answer to our CopyFail
			}
		case 'G':
			if err := s.refuseCopyIn(); err != nil {
				return false, err
			}
			refused = true
			continue
		}
		writeMessage(s.cw, typ, body)
	}
}

// refuseCopyIn aborts a COPY FROM STDIN the server has started for a
// statement relayed by the proxy: the client's data would have to flow
// through the proxy's own exchange, which it does not carry. The client
// gets 0A000 in place of the server's answer to the CopyFail.
func (s *session) refuseCopyIn() error {
	const why = "COPY FROM STDIN cannot run in one Query or batch with a statement pgrules runs rules for; send it on its own"
	buf, err := (&pgproto3.CopyFail{Message: why}).Encode(nil)
	if err != nil {
		return pgerr.New(pgerr.InternalError, "encode CopyFail: %w", err)
	}
	if err := s.send(buf); err != nil {
		return err
	}
	return encodeError(s.cw, pgerr.New(pgerr.FeatureNotSupported, why))
}

// finish ends a transaction the proxy opened around the client's
// statements: the engine's commit work, then COMMIT, or ROLLBACK after a
// failure. Without one, it only brings the server out of an error's
// skip-to-Sync state.
func (s *session) finish(ctx context.Context, c *upstreamConn, wrapped, failed bool) error {
	if !wrapped {
		return nil
	}
	if !failed {
		pre, err := s.rules.Commit(ctx, c)
		if err == nil && len(pre) > 0 {
			// The engine's last statements ride with the COMMIT.
			var results []*stmt.Result
			results, err = c.Batch(ctx, append(pre, stmt.Statement{SQL: "COMMIT"}))
			if err == nil || len(results) == len(pre) {
				s.rules.Ended(ctx, err == nil)
				return s.commitError(err)
			}
		}
		if err != nil {
			if err := s.reply(nil, err, false); err != nil {
				return err
			}
			failed = true
		}
	}
	if failed {
		_, err := c.Simple(ctx, "ROLLBACK")
		s.rules.Ended(ctx, false)
		return nonFatal(err)
	}
	_, err := c.Simple(ctx, "COMMIT")
	s.rules.Ended(ctx, err == nil)
	return s.commitError(err)
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

// runBatch runs an extended-protocol batch that executes a statement the
// engine wants. Messages before and between such Executes go upstream as
// they are, in runs, with their responses relayed; the engine runs the
// Executes. Like the server, it skips the rest of the batch after an error.
func (s *session) runBatch() error {
	if err := s.borrow(); err != nil {
		return err
	}
	defer s.giveBack()
	defer s.x.reset()
	ctx := context.Background()
	c := &upstreamConn{s: s}
	msgs := s.x.msgs[:len(s.x.msgs)-1] // without the Sync
	wrap := s.TxStatus() == stmt.TxIdle && !s.x.forwarded
	if wrap {
		c.deferBegin()
	}
	failed, skipping := false, false
	for i := 0; i < len(msgs) && !failed; {
		if st := msgs[i].exec; st != nil {
			res, err := s.rules.Exec(ctx, c, *st)
			if err := s.reply(res, err, false); err != nil {
				return err
			}
			failed = err != nil
			i++
			continue
		}
		j := i
		for j < len(msgs) && msgs[j].exec == nil {
			j++
		}
		if err := c.flushBegin(ctx); err != nil {
			return err
		}
		if err := s.send(s.x.batch[msgs[i].start:msgs[j-1].end], flushMsg); err != nil {
			return err
		}
		for _, m := range msgs[i:j] {
			ok, err := s.relayResponses(m)
			if err != nil {
				return err
			}
			if !ok {
				failed, skipping = true, true
				break
			}
		}
		i = j
	}
	if skipping || !wrap {
		if err := s.syncUpstream(); err != nil {
			return err
		}
	}
	if err := s.finish(ctx, c, wrap, failed); err != nil {
		return err
	}
	s.unsynced.Store(false)
	return s.readyForQuery()
}

var flushMsg = []byte{'H', 0, 0, 0, 4}

// syncUpstream sends a Sync and waits for its ReadyForQuery.
func (s *session) syncUpstream() error {
	if err := s.send(syncMsg); err != nil {
		return err
	}
	for {
		typ, body, err := s.readUpstream()
		if err != nil {
			return err
		}
		if typ == 'Z' {
			return nil
		}
		writeMessage(s.cw, typ, body)
	}
}

// relayResponses relays the server's answer to one forwarded message. It
// reports false when the answer was an error.
func (s *session) relayResponses(m batchMsg) (bool, error) {
	if m.typ == 'H' {
		return true, nil
	}
	refused := false
	for {
		typ, body, err := s.readUpstream()
		if err != nil {
			return false, err
		}
		switch typ {
		case 'G':
			if err := s.refuseCopyIn(); err != nil {
				return false, err
			}
			refused = true
			continue
		case 'E':
			if !refused {
				writeMessage(s.cw, typ, body)
			}
			return false, nil
		}
		writeMessage(s.cw, typ, body)
		switch typ {
		case '1', '2', '3', 'T', 'n', 'C', 'I', 's':
			return true, nil
		case 't':
			if !m.describeStmt {
				return true, nil
			}
		}
	}
}

// appendMessage appends a message with its header to buf.
func appendMessage(buf []byte, typ byte, body []byte) []byte {
	buf = append(buf, typ)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)+4))
	return append(buf, body...)
}

func writeDataRow(w interface{ Write([]byte) (int, error) }, row [][]byte) {
	n := 2
	for _, v := range row {
		n += 4 + len(v)
	}
	buf := make([]byte, 0, 5+n)
	buf = append(buf, 'D')
	buf = binary.BigEndian.AppendUint32(buf, uint32(n+4))
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(row)))
	for _, v := range row {
		if v == nil {
			buf = binary.BigEndian.AppendUint32(buf, 0xffffffff)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
		buf = append(buf, v...)
	}
	w.Write(buf)
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) (string, bool) {
	s, _, ok := bytes.Cut(b, []byte{0})
	return string(s), ok
}

// isCopy reports whether sql is a COPY statement.
func isCopy(sql string) bool { return strings.EqualFold(sqlparse.LeadingKeyword(sql), "COPY") }
