package proxy

import (
	"errors"
	"time"

	"github.com/pgrules/pgrules/pgerr"
)

// backendLoop relays upstream messages to the client until the upstream
// connection ends, tells the client why if it has not been told, and closes
// the client connection.
func (s *session) backendLoop() {
	s.end(s.relayUpstream())
	if s.lentOut {
		// The session ended while the frontend loop held the client
		// writer: it is still the frontend loop's.
		s.client.Close()
		return
	}
	if pgerr.Code(s.endErr) != "" && !s.fatalRelayed.Load() {
		s.client.SetWriteDeadline(time.Now().Add(time.Second))
		if encodeError(s.cw, s.endErr) == nil {
			s.cw.Flush()
		}
	} else {
		s.cw.Flush()
	}
	s.client.Close()
}

func (s *session) relayUpstream() error {
	for {
		if err := s.ur.await(); err != nil {
			return relayError(err)
		}
		if s.lendWanted.Load() {
			// What arrives is the answer to the frontend loop's
			// statement, or comes before it: the frontend loop reads it.
			s.lendWanted.Store(false)
			if err := s.lend(); err != nil {
				return err
			}
			continue
		}
		typ, n, err := s.ur.header()
		if err != nil {
			return relayError(err)
		}
		switch typ {
		case 'Z':
			body, err := s.ur.body(n)
			if err != nil {
				return upstreamLost(err)
			}
			if len(body) != 1 {
				return malformed("ReadyForQuery")
			}
			s.pending.Add(-1)
			if s.seen++; s.seen == s.lendAt.Load() {
				// The Sync of a borrow ends no transaction: its status
				// is the one the session had.
				s.txStatus.Store(uint32(body[0]))
				// The frontend loop asked for this ReadyForQuery: it
				// now runs statements of its own until it gives back.
				if err := s.lend(); err != nil {
					return err
				}
				continue
			}
			s.setTxStatus(body[0])
			writeMessage(s.cw, typ, body)
			if s.srv.draining.Load() {
				s.closeIfIdle()
			}
		case 'E':
			body, err := s.ur.body(n)
			if err != nil {
				return upstreamLost(err)
			}
			if isFatalError(body) {
				s.fatalRelayed.Store(true)
			}
			writeMessage(s.cw, typ, body)
		case 'S':
			// Rare (a SET of a reported parameter), and the engine
			// must know the values it parses SQL under.
			body, err := s.ur.body(n)
			if err != nil {
				return upstreamLost(err)
			}
			s.noteParameter(body)
			writeMessage(s.cw, typ, body)
		default:
			if err := s.ur.copyBody(s.cw, typ, n); err != nil {
				return relayError(err)
			}
		}
	}
}

// relayError classifies an error of relaying the upstream to the client:
// the client gone (a write to it failed), or the upstream lost.
func relayError(err error) error {
	if errors.Is(err, errClientGone) {
		return err
	}
	return upstreamLost(err)
}
