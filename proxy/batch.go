package proxy

import (
	"bytes"
	"encoding/binary"
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

// isCopy reports whether sql is a COPY statement.
func isCopy(sql string) bool { return strings.EqualFold(sqlparse.LeadingKeyword(sql), "COPY") }
