package proxy

import (
	"context"

	"github.com/pgrules/pgrules/stmt"
)

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
	if err := s.sendRun(run); err != nil {
		return err
	}
	failed, err := s.relayAhead(run)
	s.aheadFailed = failed
	return err
}

// relayAhead relays the server's answers to a held-back run; it reports
// whether one was an error.
func (s *session) relayAhead(run []batchMsg) (bool, error) {
	defer s.flushNotices()
	return s.relayAnswers(nil, run)
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
	if err := s.sendRun(run); err != nil {
		return true, err
	}
	s.noteBound(run, false)
	return s.relayAnswers(t, run)
}

// sendRun sends a run of batch messages upstream with a Flush behind it,
// so that the server answers each message at once.
func (s *session) sendRun(run []batchMsg) error {
	if err := s.send(s.x.batch[run[0].start:run[len(run)-1].end], flushMsg); err != nil {
		return err
	}
	s.flushed = true
	return nil
}

// relayAnswers relays the server's answers to a run of forwarded messages
// and reports whether one was an error. After a message of transaction
// control it syncs, for t to know the transaction state again; a run sent
// ahead holds none (aheadable) and has no t.
func (s *session) relayAnswers(t *implicitTx, run []batchMsg) (bool, error) {
	for _, m := range run {
		quiet := ""
		if m.tx != nil {
			quiet = t.quiet(m.tx.kind)
		}
		ok, err := s.relayResponses(m, quiet)
		if err != nil || !ok {
			return true, err
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
