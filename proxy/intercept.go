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
	portals map[string]*enginePortal   // portals bound to them
	// copyStmts and copyPortals are the relayed COPY statements and their
	// portals: a client executing one waits for CopyInResponse without a
	// Sync or Flush, so the batch must go upstream at its Execute.
	copyStmts   map[string]bool
	copyPortals map[string]bool
	// txStmts and txPortals are the transaction-control statements and
	// their portals, which end or change the transaction the proxy opens
	// around a batch.
	txStmts   map[string]*txStmt
	txPortals map[string]*txStmt
}

// txStmt is a prepared transaction-control statement.
type txStmt struct {
	kind stmt.TxKind
	sql  string
}

type batchMsg struct {
	typ        byte
	start, end int
	// exec is the portal an Execute runs, when the engine wants it;
	// maxRows is the Execute's row limit.
	exec    *enginePortal
	maxRows uint32
	// bound is the portal a Bind of a statement the engine wants binds.
	bound *enginePortal
	// describeStmt marks a Describe of a statement (answered with
	// ParameterDescription first).
	describeStmt bool
	// tx is the transaction-control statement an Execute runs.
	tx *txStmt
}

func (x *extState) reset() {
	x.batch, x.msgs, x.engine, x.forwarded = x.batch[:0], x.msgs[:0], false, false
	if cap(x.batch) > keepLarge {
		// A batch that grew for large messages does not keep its memory.
		x.batch = nil
	}
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
		if !x.noteParse(s.rules, body) {
			return bad()
		}
	case 'B':
		if !x.noteBind(body, &m) {
			return bad()
		}
	case 'E':
		portal, rest, ok := bytes.Cut(body, []byte{0})
		if !ok || len(rest) < 4 {
			return bad()
		}
		m.tx = x.txPortals[string(portal)]
		if p := x.portals[string(portal)]; p != nil {
			m.exec, m.maxRows = p, binary.BigEndian.Uint32(rest)
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
			delete(x.txStmts, name)
		} else {
			delete(x.portals, name)
			delete(x.copyPortals, name)
			delete(x.txPortals, name)
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

// noteParse notes what a Parse prepares: a statement the engine wants, one
// of transaction control, a COPY. It reports false for a malformed one.
func (x *extState) noteParse(rules stmt.Session, body []byte) bool {
	name, rest, ok := bytes.Cut(body, []byte{0})
	query, _, ok2 := bytes.Cut(rest, []byte{0})
	if !ok || !ok2 {
		return false
	}
	// The text is looked at in place; Intercepts keeps no reference.
	if rules.Intercepts(unsafe.String(unsafe.SliceData(query), len(query))) {
		var p pgproto3.Parse
		if p.Decode(body) != nil {
			return false
		}
		if x.stmts == nil {
			x.stmts = make(map[string]*stmt.Statement)
		}
		x.stmts[p.Name] = &stmt.Statement{SQL: p.Query, ParamOIDs: p.ParameterOIDs}
	} else if len(x.stmts) > 0 {
		delete(x.stmts, string(name))
	}
	if kind := sqlparse.Tx(unsafe.String(unsafe.SliceData(query), len(query))); kind != stmt.TxNone {
		if x.txStmts == nil {
			x.txStmts = make(map[string]*txStmt)
		}
		x.txStmts[string(name)] = &txStmt{kind: kind, sql: string(query)}
	} else if len(x.txStmts) > 0 {
		delete(x.txStmts, string(name))
	}
	if isCopy(unsafe.String(unsafe.SliceData(query), len(query))) {
		if x.copyStmts == nil {
			x.copyStmts = make(map[string]bool)
		}
		x.copyStmts[string(name)] = true
	} else if len(x.copyStmts) > 0 {
		delete(x.copyStmts, string(name))
	}
	return true
}

// noteBind notes what a Bind binds its portal to, in m. It reports false
// for a malformed one.
func (x *extState) noteBind(body []byte, m *batchMsg) bool {
	portal, rest, ok := bytes.Cut(body, []byte{0})
	name, _, ok2 := bytes.Cut(rest, []byte{0})
	if !ok || !ok2 {
		return false
	}
	if len(x.portals) > 0 {
		delete(x.portals, string(portal))
	}
	if len(x.copyPortals) > 0 {
		delete(x.copyPortals, string(portal))
	}
	if len(x.txPortals) > 0 {
		delete(x.txPortals, string(portal))
	}
	if ts := x.txStmts[string(name)]; ts != nil {
		if x.txPortals == nil {
			x.txPortals = make(map[string]*txStmt)
		}
		x.txPortals[string(portal)] = ts
	}
	if ps := x.stmts[string(name)]; ps != nil {
		var b pgproto3.Bind
		if b.Decode(body) != nil {
			return false
		}
		if x.portals == nil {
			x.portals = make(map[string]*enginePortal)
		}
		// Decode left the slices pointing into the reader's buffer.
		params := make([][]byte, len(b.Parameters))
		for i, v := range b.Parameters {
			if v != nil {
				params[i] = bytes.Clone(v)
			}
		}
		m.bound = &enginePortal{name: b.DestinationPortal, st: stmt.Statement{
			SQL: ps.SQL, ParamOIDs: ps.ParamOIDs, Params: params,
			ParamFormats: append([]int16(nil), b.ParameterFormatCodes...), ResultFormats: append([]int16(nil), b.ResultFormatCodes...),
		}}
		x.portals[b.DestinationPortal] = m.bound
	}
	if x.copyStmts[string(name)] {
		if x.copyPortals == nil {
			x.copyPortals = make(map[string]bool)
		}
		x.copyPortals[string(portal)] = true
	}
	return true
}

// forwardBatch sends the held messages upstream as they are.
func (s *session) forwardBatch() {
	if n := len(s.x.msgs); n > 0 {
		s.noteBound(s.x.msgs, s.x.msgs[n-1].typ != 'S')
	}
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

// runQuery runs a simple Query the engine wants part of, a statement at a
// time, in the transactions PostgreSQL would run them in (implicit.go).
func (s *session) runQuery(text string) error {
	if err := s.borrow(); err != nil {
		return err
	}
	defer s.giveBack()
	return s.runQueryIn(s.ctx, &implicitTx{s: s, c: &upstreamConn{s: s}}, text)
}

// runBatchThenQuery runs the held messages of a batch and a Query the
// client sent before its Sync, when either executes a statement the engine
// wants. The server would run the
// Query in the batch's transaction and end it there; after an error in the
// batch it would ignore the Query, as everything else up to the Sync.
func (s *session) runBatchThenQuery(text string) error {
	if err := s.borrowHeld(); err != nil {
		return err
	}
	defer s.giveBack()
	defer s.x.reset()
	ctx := s.ctx
	t := &implicitTx{s: s, c: &upstreamConn{s: s}}
	failed, skipping, err := s.runHeld(ctx, t, s.x.msgs)
	if err != nil {
		return err
	}
	if !failed {
		return s.runQueryIn(ctx, t, text)
	}
	if skipping {
		if err := s.syncUpstream(); err != nil {
			return err
		}
	}
	if _, err := s.finish(ctx, t, true); err != nil {
		return err
	}
	// The client's Sync gets the server's ReadyForQuery.
	s.x.discard = true
	return s.flushClient()
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

// noticeCode is the SQLSTATE of a NoticeResponse.
func noticeCode(body []byte) string {
	for len(body) > 1 {
		field := body[0]
		v, rest, ok := bytes.Cut(body[1:], []byte{0})
		if !ok {
			break
		}
		if field == 'C' {
			return string(v)
		}
		body = rest
	}
	return ""
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

// runBatch runs an extended-protocol batch that executes a statement the
// engine wants, in the transactions PostgreSQL would run it in
// (implicit.go).
func (s *session) runBatch() error {
	if err := s.borrowHeld(); err != nil {
		return err
	}
	defer s.giveBack()
	defer s.x.reset()
	ctx := s.ctx
	t := &implicitTx{s: s, c: &upstreamConn{s: s}}
	failed, skipping, err := s.runHeld(ctx, t, s.x.msgs[:len(s.x.msgs)-1]) // without the Sync
	if err != nil {
		return err
	}
	// Outside the proxy's transaction the batch's Sync is the server's to
	// answer; but when the engine's statements came last, their own Sync
	// has already been answered, and the server's state is known.
	if (skipping || !t.open) && s.flushed {
		if err := s.syncUpstream(); err != nil {
			return err
		}
	}
	if _, err := s.finish(ctx, t, failed); err != nil {
		return err
	}
	s.unsynced.Store(false)
	return s.readyForQuery()
}

// runHeld runs the held messages of a batch. Messages before and between
// the Executes the engine runs, or the proxy answers, go upstream as they
// are, in runs, with their responses relayed. Like the server, it skips the
// rest after an error: failed reports one, skipping that the server is
// skipping to the next Sync.
func (s *session) runHeld(ctx context.Context, t *implicitTx, msgs []batchMsg) (failed, skipping bool, err error) {
	for i := 0; i < len(msgs) && !failed; {
		m := msgs[i]
		switch {
		case m.tx != nil && t.meets(m.tx.kind):
			if failed, err = t.end(ctx, m.tx.kind, m.tx.sql); err != nil {
				return true, false, err
			}
			i++
			continue
		case m.exec != nil && (m.tx == nil || m.tx.kind != stmt.TxBegin):
			if failed, err = s.execPortal(ctx, t, m); err != nil {
				return true, false, err
			}
			i++
			continue
		}
		j, err := s.heldRun(t, msgs, i)
		if err != nil {
			return true, false, err
		}
		if j < len(msgs) && msgs[j].exec != nil && aheadable(msgs[i:j]) {
			s.ahead = msgs[i:j]
			s.noteBound(s.ahead, false)
			i = j
			continue
		}
		if failed, err = s.relayRun(ctx, t, msgs[i:j]); err != nil {
			return true, false, err
		}
		skipping = failed
		i = j
	}
	if err := s.flushAhead(); err != nil {
		return true, false, err
	}
	if s.aheadFailed {
		s.aheadFailed, failed = false, true
	}
	// A failure behind messages that went at a Flush may have left the
	// server skipping to the next Sync.
	return failed, skipping || failed && s.flushed, nil
}

// aheadable reports whether a run of messages may wait to go upstream in
// front of the engine's statement for the Execute that follows it: it
// executes nothing, so the server answers each message at once, and no
// answer but an error changes what the engine does.
func aheadable(run []batchMsg) bool {
	for _, m := range run {
		if m.typ == 'E' || m.typ == 'H' || m.tx != nil {
			return false
		}
	}
	return true
}

// flushAhead sends the held-back run on its own, as relayRun would, when
// something other than the engine's statement must go upstream or to the
// client first.
func (s *session) flushAhead() error {
	run := s.ahead
	if run == nil {
		return nil
	}
	s.ahead = nil
	if err := s.send(s.x.batch[run[0].start:run[len(run)-1].end], flushMsg); err != nil {
		return err
	}
	s.flushed = true
	failed, err := s.relayAhead(run)
	s.aheadFailed = failed
	return err
}

// relayAhead relays the server's answers to a held-back run; it reports
// whether one was an error.
func (s *session) relayAhead(run []batchMsg) (bool, error) {
	defer s.flushNotices()
	for _, m := range run {
		ok, err := s.relayResponses(m, "")
		if err != nil || !ok {
			return true, err
		}
	}
	return false, nil
}

// heldRun is the end of the run of messages from i that go upstream
// together: up to an Execute the engine runs or the proxy answers, and no
// further than one of transaction control, after which the transaction
// state must be known again. The proxy's transaction opens first when the
// run executes anything else.
func (s *session) heldRun(t *implicitTx, msgs []batchMsg, i int) (int, error) {
	j := i
	for j < len(msgs) && (msgs[j].exec == nil || j == i) && (msgs[j].tx == nil || !t.meets(msgs[j].tx.kind)) {
		// Opened as the run passes the statement, so that a COMMIT or
		// ROLLBACK after it in the batch meets the proxy's transaction
		// (and ends the run) instead of going upstream inside it.
		if m := msgs[j]; m.typ == 'E' && m.tx == nil {
			if err := t.enter(); err != nil {
				return j, err
			}
		}
		j++
		if m := msgs[j-1]; m.typ == 'E' && m.tx != nil {
			break
		}
	}
	return j, nil
}

// relayRun sends a run of batch messages upstream and relays their
// responses. It reports whether one failed.
func (s *session) relayRun(ctx context.Context, t *implicitTx, run []batchMsg) (bool, error) {
	if err := s.flushAhead(); err != nil || s.aheadFailed {
		return true, err
	}
	if err := t.c.flushBegin(ctx); err != nil {
		return true, err
	}
	if err := s.send(s.x.batch[run[0].start:run[len(run)-1].end], flushMsg); err != nil {
		return true, err
	}
	s.flushed = true
	s.noteBound(run, false)
	for _, m := range run {
		quiet := ""
		if m.tx != nil {
			quiet = t.quiet(m.tx.kind)
		}
		ok, err := s.relayResponses(m, quiet)
		if err != nil {
			return true, err
		}
		if !ok {
			return true, nil
		}
		if m.tx != nil {
			if m.tx.kind == stmt.TxBegin {
				t.begun()
			}
			// The server has ended its transaction command: a Sync
			// commits nothing more, and tells the state.
			if err := s.syncUpstream(); err != nil {
				return true, err
			}
		}
	}
	return false, nil
}

var flushMsg = []byte{'H', 0, 0, 0, 4}

// syncUpstream sends a Sync and waits for its ReadyForQuery.
func (s *session) syncUpstream() error {
	if err := s.flushAhead(); err != nil {
		return err
	}
	if err := s.send(syncMsg); err != nil {
		return err
	}
	s.flushed = false
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
func (s *session) relayResponses(m batchMsg, quiet string) (bool, error) {
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
		case 'N':
			if quiet != "" && noticeCode(body) == quiet {
				continue
			}
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
