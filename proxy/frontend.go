package proxy

import (
	"errors"
	"io"

	"github.com/pgrules/pgrules/pgerr"
)

// frontendLoop relays client messages to the upstream until the session
// ends. When the client has finished sending, the end of its input is
// passed on to the server after what it sent, and the backend loop relays
// the answers until the server closes, as PostgreSQL answers a client that
// shut down its sending side; otherwise the upstream is closed at once.
// Either way the server rolls back any open transaction.
func (s *session) frontendLoop() {
	s.end(s.relayClient())
	switch {
	case errors.Is(s.endErr, errClientDone):
		if s.endUpstreamInput() {
			return
		}
	case errors.Is(s.endErr, errClientGone):
		// After a client's protocol error the server hears nothing
		// more: a Terminate in the middle of a COPY would only draw an
		// error of its own, relayed ahead of the one that tells the
		// client what it did.
		s.uw.Write([]byte{'X', 0, 0, 0, 4})
		s.uw.Flush()
	}
	s.upstream.Close()
}

// endUpstreamInput shuts down the sending side of the upstream connection
// after what the client sent, so that the server sees the end of input the
// client gave, at the same point. It reports false when it could not.
func (s *session) endUpstreamInput() bool {
	if s.uw.Flush() != nil {
		return false
	}
	hc, ok := s.upstream.(interface{ CloseWrite() error })
	return ok && hc.CloseWrite() == nil
}

func (s *session) relayClient() error {
	for {
		typ, n, err := s.cr.header()
		if errors.Is(err, io.EOF) {
			return errClientDone
		}
		if err != nil {
			return clientReadError(err)
		}
		if !frontendTypes[typ] {
			return pgerr.Fatal(pgerr.ProtocolViolation, "invalid frontend message type %d", typ)
		}
		if s.rules != nil {
			handled, err := s.intercept(typ, n)
			if err != nil {
				return err
			}
			if handled {
				continue
			}
		}
		switch typ {
		case 'X':
			if err := s.cr.copyBody(s.uw, typ, n); err != nil {
				return clientReadError(err)
			}
			return errClientDone
		case 'Q', 'S', 'F':
			if !s.beginRequest() {
				return shutdownError()
			}
			s.unsynced.Store(false)
		case 'P', 'B', 'E', 'D', 'C', 'H':
			if !s.unsynced.Load() && !s.beginBatch() {
				return shutdownError()
			}
		}
		if err := s.cr.copyBody(s.uw, typ, n); err != nil {
			return clientReadError(err)
		}
	}
}

// beginRequest counts a request that will be answered by ReadyForQuery. It
// reports false when the session must end instead: the server is shutting
// down and the session is idle.
func (s *session) beginRequest() bool {
	s.gate.Lock()
	defer s.gate.Unlock()
	if s.killed || s.srv.draining.Load() && s.idle() {
		s.killed = true
		return false
	}
	s.pending.Add(1)
	s.sent++
	return true
}

// beginBatch marks the start of an extended-protocol batch, with the same
// shutdown rule as beginRequest.
func (s *session) beginBatch() bool {
	s.gate.Lock()
	defer s.gate.Unlock()
	if s.killed || s.srv.draining.Load() && s.idle() {
		s.killed = true
		return false
	}
	s.unsynced.Store(true)
	return true
}
