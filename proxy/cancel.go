package proxy

import (
	"context"
	"encoding/binary"
	"time"
)

// cancel forwards a client's CancelRequest to the upstream backend of the
// session whose key it carries. A request with an unknown key is dropped,
// as PostgreSQL drops it: the sender learns nothing either way.
func (s *Server) cancel(key []byte) {
	s.mu.Lock()
	sess := s.keys[cancelKey(key)]
	s.mu.Unlock()
	if sess == nil {
		s.log.Debug().Msg("cancel request with an unknown key ignored")
		return
	}
	ctx, stop := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer stop()
	conn, err := sess.target.connect(ctx)
	if err != nil {
		sess.log.Warn().Err(err).Msg("could not forward cancel request")
		return
	}
	defer conn.Close()
	pkt := make([]byte, 8+len(sess.upKey))
	binary.BigEndian.PutUint32(pkt[0:4], uint32(len(pkt)))
	binary.BigEndian.PutUint32(pkt[4:8], cancelRequestCode)
	copy(pkt[8:], sess.upKey)
	conn.SetDeadline(time.Now().Add(s.cfg.DialTimeout))
	if _, err := conn.Write(pkt); err != nil {
		sess.log.Warn().Err(err).Msg("could not forward cancel request")
		return
	}
	// The server closes the connection once it has acted on the request;
	// waiting for that keeps a quick follow-up query from overtaking it.
	var b [1]byte
	conn.Read(b[:])
	sess.log.Debug().Msg("cancel request forwarded")
}
