package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// The frontend loop runs statements of its own (the engine's, and the
// client's intercepted ones) by borrowing the upstream reader and the
// client writer from the backend loop.
//
// When everything the client sent before has been answered (the usual
// case: a client waits for its answer), the backend loop is only waiting
// for the upstream's next message. The frontend loop raises lendWanted and
// sends its first statement; the backend loop hands over as soon as
// anything arrives, before it reads it, and waits. The answer is then
// already buffered for the frontend loop, which pays one wake-up for it.
//
// Otherwise answers are still on their way to the client. The frontend
// loop sends a Sync and asks for its ReadyForQuery: when the backend loop
// reaches it, every response to what the client sent before has been
// relayed, and it hands over. The Sync costs no round trip of its own: it
// goes upstream in front of the frontend loop's first statement, in the
// same write, and the handover is awaited before that statement's answer
// is read. Only what writes to the client before sending anything
// (acquire) waits for the Sync alone.
//
// Either way responses stay in order without a queue of routes, and the
// relay path pays nothing for it. A batch the frontend loop held back
// whole has nothing on its way (borrowHeld): its handover is at the first
// send, which carries the batch's messages in front of an Execute the
// engine runs (session.ahead) with the engine's first statement.

// handover is what a borrow still waits for.
type handover uint8

const (
	dueNone  handover = iota // nothing: the frontend loop holds them
	dueFirst                 // the upstream's next message, at the first send
	dueSync                  // the ReadyForQuery of a Sync sent in front
)

// borrow starts taking the upstream reader and the client writer: they are
// handed over when the next thing is sent upstream (send), or at acquire.
// It returns an error when the session is shutting down.
func (s *session) borrow() error {
	s.began = s.exchanges
	if s.pending.Load() == 0 && !s.unsynced.Load() {
		if !s.beginBatch() { // busy until given back, whatever ReadyForQuery says
			return shutdownError()
		}
		s.due = dueFirst
		return nil
	}
	if err := s.askSync(); err != nil {
		return err
	}
	s.unsynced.Store(true) // busy until given back, whatever ReadyForQuery says
	return nil
}

// borrowHeld is borrow for running the batch the frontend loop holds back:
// unless part of it went upstream at a Flush, nothing of it is on its way,
// and with every earlier request answered the handover needs no Sync.
func (s *session) borrowHeld() error {
	s.flushed, s.ahead, s.aheadFailed = s.x.forwarded, nil, false
	if s.pending.Load() != 0 || s.x.forwarded {
		return s.borrow()
	}
	s.began = s.exchanges
	if !s.beginBatch() {
		return shutdownError()
	}
	s.due = dueFirst
	return nil
}

// askSync makes the handover the ReadyForQuery of a Sync sent in front of
// the next thing sent upstream: a request of its own.
func (s *session) askSync() error {
	if !s.beginRequest() {
		return shutdownError()
	}
	s.lendAt.Store(s.sent)
	s.due = dueSync
	return nil
}

// send writes data upstream during a borrow and, when the handover is
// still due, waits for it.
func (s *session) send(data ...[]byte) error {
	due := s.due
	switch due {
	case dueSync:
		s.uw.Write(syncMsg)
	case dueFirst:
		s.lendWanted.Store(true)
	}
	s.due = dueNone
	s.exchanges++
	for _, d := range data {
		s.uw.Write(d)
	}
	if err := s.uw.Flush(); err != nil {
		return upstreamLost(err)
	}
	if due == dueNone {
		return nil
	}
	select {
	case <-s.lent:
		return nil
	case <-s.ended:
		return errClientGone
	}
}

// acquire completes a borrow before the frontend loop writes to the
// client without having sent anything upstream: it asks for the handover
// with a Sync alone.
func (s *session) acquire() error {
	if s.ahead != nil {
		// Its answers go to the client first; sending it hands over.
		return s.flushAhead()
	}
	switch s.due {
	case dueNone:
		s.flushNotices()
		return nil
	case dueFirst:
		// Nothing is on its way to wake the backend loop: a Sync is.
		if err := s.askSync(); err != nil {
			return err
		}
	}
	if err := s.send(); err != nil {
		return err
	}
	s.flushNotices()
	return nil
}

// giveBack returns the upstream reader and the client writer to the
// backend loop.
func (s *session) giveBack() {
	if s.acquire() != nil {
		return // the session has ended
	}
	s.unsynced.Store(false)
	select {
	case s.returned <- struct{}{}:
	case <-s.ended:
	}
}

// lend hands the upstream reader and the client writer to the frontend
// loop and waits until they are given back. It runs in the backend loop.
func (s *session) lend() error {
	select {
	case s.lent <- struct{}{}:
	case <-s.ended:
		return errClientGone
	}
	select {
	case <-s.returned:
		return nil
	case <-s.ended:
		s.lentOut = true
		return errClientGone
	}
}

var syncMsg = []byte{'S', 0, 0, 0, 4}

// upstreamConn is stmt.Conn on a borrowed upstream. Async messages that
// arrive meanwhile (notices, notifications, parameter changes) go to the
// client, as they would have.
type upstreamConn struct {
	s   *session
	buf []byte
	// begin is set while the BEGIN of a transaction the proxy opens around
	// an autocommit statement has not gone upstream: it goes in front of
	// the next statement, in the same round trip, and its answer is read
	// first (drain). skippedBegin is set when the server skipped it behind
	// a failed message sent ahead.
	begin, drain, skippedBegin bool
	// paramTypes is the last ParameterDescription collect read.
	paramTypes []uint32
}

// deferBegin opens the proxy's transaction with the next statement sent.
func (c *upstreamConn) deferBegin() { c.begin = true }

// flushBegin sends a deferred BEGIN on its own, for what goes upstream
// other than through c.
func (c *upstreamConn) flushBegin(ctx context.Context) error {
	if !c.begin {
		return nil
	}
	c.begin = false
	_, err := c.Simple(ctx, "BEGIN")
	return err
}

// drained reads the answer to a BEGIN sent in front of a statement; the
// statement's own answer follows.
func (c *upstreamConn) drained() error {
	if !c.drain {
		return nil
	}
	c.drain = false
	_, err := c.collect()
	return err
}

var _ stmt.Conn = (*upstreamConn)(nil)

func (c *upstreamConn) send(msgs ...pgproto3.FrontendMessage) error {
	s := c.s
	if _, synced := msgs[len(msgs)-1].(*pgproto3.Sync); !synced {
		// A Query behind a failed message would get no answer at all.
		if err := s.flushAhead(); err != nil {
			return err
		}
	}
	if s.aheadFailed {
		return errAheadFailed
	}
	buf := c.buf[:0]
	ahead := s.ahead
	if ahead != nil {
		s.ahead = nil
		buf = append(buf, s.x.batch[ahead[0].start:ahead[len(ahead)-1].end]...)
	}
	if c.begin {
		c.begin, c.drain = false, true
		msgs = append([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, msgs...)
	}
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return pgerr.New(pgerr.InternalError, "encode %T: %w", m, err)
		}
	}
	c.buf = buf
	if err := s.send(buf); err != nil {
		return err
	}
	if ahead == nil {
		s.flushNotices()
		return nil
	}
	failed, err := s.relayAhead(ahead)
	if err != nil || !failed {
		return err
	}
	// The server skipped the rest up to the Sync, the BEGIN with it.
	s.aheadFailed, c.drain, c.skippedBegin = true, false, c.drain
	for {
		typ, body, err := s.readUpstream()
		if err != nil {
			return err
		}
		switch typ {
		case 'Z':
			return errAheadFailed
		case 'N', 'A':
			writeMessage(s.cw, typ, body)
		}
	}
}

// errAheadFailed is what the engine's statement gets when a message the
// client sent in front of it failed: the server skipped the statement, and
// the client has the server's error.
var errAheadFailed = errors.New("a message sent ahead of the statement failed")

// Exec implements stmt.Conn.
func (c *upstreamConn) Exec(ctx context.Context, st stmt.Statement) (*stmt.Result, error) {
	results, err := c.Batch(ctx, []stmt.Statement{st})
	if len(results) > 0 {
		return results[0], err
	}
	return nil, err
}

// Batch implements stmt.Conn.
func (c *upstreamConn) Batch(ctx context.Context, sts []stmt.Statement) ([]*stmt.Result, error) {
	msgs := make([]pgproto3.FrontendMessage, 0, 4*len(sts)+1)
	for i := range sts {
		st := &sts[i]
		if st.SQL != "" {
			msgs = append(msgs, &pgproto3.Parse{Name: st.Name, Query: st.SQL, ParameterOIDs: st.ParamOIDs})
		}
		msgs = append(msgs,
			&pgproto3.Bind{PreparedStatement: st.Name, ParameterFormatCodes: st.ParamFormats, Parameters: st.Params, ResultFormatCodes: st.ResultFormats},
			&pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{})
	}
	return c.roundTrip(append(msgs, &pgproto3.Sync{})...)
}

// roundTrip sends messages ending with a Sync (or a Query) and reads the
// answer, behind that of a BEGIN sent in front of them.
func (c *upstreamConn) roundTrip(msgs ...pgproto3.FrontendMessage) ([]*stmt.Result, error) {
	if err := c.send(msgs...); err != nil {
		return nil, err
	}
	c.s.flushed = false
	berr := c.drained()
	results, err := c.collect()
	if berr != nil {
		return nil, berr
	}
	return results, err
}

// ParamTypes implements stmt.Conn.
func (c *upstreamConn) ParamTypes(ctx context.Context, sql string, oids []uint32) ([]uint32, error) {
	c.paramTypes = nil
	_, err := c.roundTrip(&pgproto3.Parse{Query: sql, ParameterOIDs: oids}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{})
	return c.paramTypes, err
}

// Query implements stmt.Conn.
func (c *upstreamConn) Query(ctx context.Context, sql string, args ...string) ([][][]byte, error) {
	res, err := c.Exec(ctx, stmt.Statement{SQL: sql, Params: stmt.TextParams(args)})
	if err != nil {
		return nil, err
	}
	return res.Rows, nil
}

// Simple implements stmt.Conn.
func (c *upstreamConn) Simple(ctx context.Context, sql string) ([]*stmt.Result, error) {
	return c.roundTrip(&pgproto3.Query{String: sql})
}

// TxStatus implements stmt.Conn.
func (c *upstreamConn) TxStatus() stmt.TxStatus {
	if c.begin {
		return stmt.TxActive
	}
	return c.s.TxStatus()
}

// TxEnds implements stmt.Conn.
func (c *upstreamConn) TxEnds() uint64 { return c.s.txEnds.Load() }

// Exchanges implements stmt.Conn.
func (c *upstreamConn) Exchanges() (now, began uint64) { return c.s.exchanges, c.s.began }

// Parameter implements stmt.Conn.
func (c *upstreamConn) Parameter(name string) string { return c.s.parameter(name) }

// Notice implements stmt.Conn.
func (c *upstreamConn) Notice(message string) {
	buf, err := (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: pgerr.SuccessfulCompletion, Message: message}).Encode(nil)
	if err != nil {
		return
	}
	if c.s.ahead != nil || c.s.due != dueNone {
		// Held until the client writer is handed over with the answer to
		// the next exchange (and after the answers to the messages sent
		// ahead): a notice must not cost an exchange of its own.
		c.s.notices = append(c.s.notices, buf...)
		return
	}
	c.s.cw.Write(buf)
}

// flushNotices writes the held notices to the client; the frontend loop
// holds the client writer.
func (s *session) flushNotices() {
	if len(s.notices) > 0 {
		s.cw.Write(s.notices)
		s.notices = s.notices[:0]
	}
}

// collect reads responses up to ReadyForQuery into results, one per
// completed statement, and the first error the server sent.
func (c *upstreamConn) collect() ([]*stmt.Result, error) {
	var (
		results  []*stmt.Result
		cur      = &stmt.Result{}
		firstErr error
	)
	for {
		typ, body, err := c.s.readUpstream()
		if err != nil {
			return nil, err
		}
		switch typ {
		case 't':
			var pd pgproto3.ParameterDescription
			if err := pd.Decode(body); err != nil {
				return nil, pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed ParameterDescription: %w", err)
			}
			c.paramTypes = append([]uint32(nil), pd.ParameterOIDs...)
		case 'T':
			if cur.Fields, err = c.s.decodeRowDescription(body); err != nil {
				return nil, err
			}
		case 'D':
			row, err := decodeDataRow(body)
			if err != nil {
				return nil, err
			}
			cur.Rows = append(cur.Rows, row)
		case 'C', 'I':
			if typ == 'C' && len(body) > 0 {
				cur.Tag = string(body[:len(body)-1])
			}
			results = append(results, cur)
			cur = &stmt.Result{}
		case 'E':
			if firstErr == nil {
				firstErr = upstreamError(body)
			}
		case 'Z':
			return results, firstErr
		case 'N', 'A', 'S':
			writeMessage(c.s.cw, typ, body)
		}
	}
}

// readUpstream reads one message from the borrowed upstream reader. The
// body is valid until the next read. ReadyForQuery updates the session's
// transaction state.
func (s *session) readUpstream() (byte, []byte, error) {
	typ, body, err := s.upstreamMessage()
	if err != nil {
		return 0, nil, err
	}
	switch typ {
	case 'Z':
		if len(body) != 1 {
			return 0, nil, malformed("ReadyForQuery")
		}
		s.setTxStatus(body[0])
	case 'E':
		if isFatalError(body) {
			writeMessage(s.cw, typ, body)
			s.fatalRelayed.Store(true)
			return 0, nil, upstreamError(body)
		}
	case 'S':
		s.noteParameter(body)
	}
	return typ, body, nil
}

// decodeDataRow copies a DataRow's values out of the reader's buffer, in
// one copy of the body that the values share.
func decodeDataRow(body []byte) ([][]byte, error) {
	if len(body) < 2 {
		return nil, malformed("DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	body = append([]byte(nil), body[2:]...)
	row := make([][]byte, n)
	for i := range row {
		if len(body) < 4 {
			return nil, malformed("DataRow")
		}
		l := int(int32(binary.BigEndian.Uint32(body)))
		body = body[4:]
		if l < 0 {
			continue
		}
		if len(body) < l {
			return nil, malformed("DataRow")
		}
		row[i] = body[:l:l]
		body = body[l:]
	}
	return row, nil
}

// decodeRowDescription reads a RowDescription's fields. The names are
// interned: the engine's statements describe the same columns again and
// again.
func (s *session) decodeRowDescription(body []byte) ([]stmt.Field, error) {
	if len(body) < 2 {
		return nil, malformed("RowDescription")
	}
	fields := make([]stmt.Field, binary.BigEndian.Uint16(body))
	body = body[2:]
	for i := range fields {
		end := bytes.IndexByte(body, 0)
		if end < 0 || len(body) < end+19 {
			return nil, malformed("RowDescription")
		}
		f := body[end+1:]
		fields[i] = stmt.Field{Name: s.fieldName(body[:end]), TableOID: binary.BigEndian.Uint32(f),
			TableAttrNum: binary.BigEndian.Uint16(f[4:]), TypeOID: binary.BigEndian.Uint32(f[6:]),
			TypeSize: int16(binary.BigEndian.Uint16(f[10:])), TypeModifier: int32(binary.BigEndian.Uint32(f[12:])),
			Format: int16(binary.BigEndian.Uint16(f[16:]))}
		body = f[18:]
	}
	return fields, nil
}

// maxFieldNames bounds the interned field names of a session.
const maxFieldNames = 1024

func (s *session) fieldName(b []byte) string {
	if name, ok := s.fieldNames[string(b)]; ok {
		return name
	}
	if s.fieldNames == nil || len(s.fieldNames) >= maxFieldNames {
		s.fieldNames = make(map[string]string)
	}
	name := string(b)
	s.fieldNames[name] = name
	return name
}

// malformed is the error for a message from the upstream that does not
// decode: the session cannot go on.
func malformed(message string) error {
	return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed %s", message)
}

// upstreamError turns an ErrorResponse body into a *pgerr.Error carrying
// every field the server sent.
func upstreamError(body []byte) error {
	var m pgproto3.ErrorResponse
	if err := m.Decode(body); err != nil {
		return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed ErrorResponse: %w", err)
	}
	return &pgerr.Error{
		Code: m.Code, Severity: m.SeverityUnlocalized, Message: m.Message, Detail: m.Detail, Hint: m.Hint,
		Schema: m.SchemaName, Table: m.TableName, Column: m.ColumnName, Constraint: m.ConstraintName,
		Position: m.Position, InternalPosition: m.InternalPosition, InternalQuery: m.InternalQuery,
		Where: m.Where, DataType: m.DataTypeName, File: m.File, Line: m.Line, Routine: m.Routine,
	}
}

// upstreamMessage reads the upstream's next message; the body is valid
// until the next read.
func (s *session) upstreamMessage() (byte, []byte, error) {
	typ, n, err := s.ur.header()
	if err != nil {
		return 0, nil, upstreamLost(err)
	}
	body, err := s.ur.body(n)
	if err != nil {
		return 0, nil, upstreamLost(err)
	}
	return typ, body, nil
}
