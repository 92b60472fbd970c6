package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
)

// errAuthRelayed means the upstream refused the client and the client has
// already been sent the upstream's ErrorResponse.
var errAuthRelayed = errors.New("authentication failed upstream")

// failStartup tells the client why its connection could not be set up,
// unless it is gone or has been told already.
func (s *session) failStartup(err error) {
	if errors.Is(err, errClientGone) || errors.Is(err, errAuthRelayed) {
		s.log.Debug().Err(err).Msg("connection ended during startup")
		return
	}
	s.log.Info().Err(err).Msg("connection refused")
	w := s.cw
	if w == nil {
		w = bufio.NewWriter(s.client)
	}
	s.client.SetWriteDeadline(time.Now().Add(time.Second))
	if encodeError(w, err) == nil {
		w.Flush()
	}
}

// startup handles the first packets of a connection (SSLRequest,
// GSSENCRequest, CancelRequest, StartupMessage), connects to the upstream
// and relays authentication until the upstream's first ReadyForQuery.
func (s *session) startup(counted *bool) error {
	var pkt []byte
	for pkt == nil {
		p, err := readStartupPacket(s.client)
		if err != nil {
			return err
		}
		switch code := binary.BigEndian.Uint32(p); code {
		case sslRequestCode:
			if s.srv.cfg.TLS == nil || s.clientTLS {
				if _, err := s.client.Write([]byte{'N'}); err != nil {
					return errClientGone
				}
				continue
			}
			if _, err := s.client.Write([]byte{'S'}); err != nil {
				return errClientGone
			}
			tc := tls.Server(s.client, s.srv.cfg.TLS)
			if err := tc.Handshake(); err != nil {
				s.log.Info().Err(err).Msg("TLS handshake with client failed")
				return errClientGone
			}
			s.client, s.clientTLS = tc, true
		case gssEncRequestCode:
			if _, err := s.client.Write([]byte{'N'}); err != nil {
				return errClientGone
			}
		case cancelRequestCode:
			s.srv.cancel(p[4:])
			return errClientGone
		default:
			// A newer minor version goes upstream as it is: the
			// server answers it with NegotiateProtocolVersion.
			if major := code >> 16; major != 3 {
				return pgerr.Fatal(pgerr.FeatureNotSupported, "unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, code&0xffff)
			}
			pkt = p
		}
	}

	params, err := startupParams(pkt)
	if err != nil {
		return err
	}
	s.user, s.database = params["user"], params["database"]
	if s.database == "" {
		s.database = s.user
	}
	s.log = s.log.With().Str("user", s.user).Str("database", s.database).Logger()

	*counted = true
	if s.srv.active.Add(1) > int64(s.srv.cfg.MaxConnections) {
		return pgerr.Fatal(pgerr.TooManyConnections, "sorry, too many clients already (pgrules --max-connections is %d)", s.srv.cfg.MaxConnections)
	}

	s.startupPkt = pkt
	s.cw = bufio.NewWriterSize(s.client, ioBufferSize)
	s.cr = newMsgReader(s.client, s.srv.cfg.MaxMessageBytes, s.flushUpstream)
	if err := s.connectUpstream(s.srv.targets); err != nil {
		return err
	}
	err = s.relayAuth()
	s.startupPkt = nil
	return err
}

// connectUpstream connects to the first of targets that answers and sends
// it the client's startup packet.
func (s *session) connectUpstream(targets []target) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.DialTimeout)
	defer cancel()
	up, t, err := dialUpstream(ctx, targets)
	if err != nil {
		// The cause names the server's addresses: the log has it.
		ref := pgerr.Reference()
		s.log.Error().Err(err).Str("ref", ref).Msg("could not connect to the upstream server")
		e := pgerr.Withheld(pgerr.ConnectionFailure, ref, "pgrules could not connect to the database server")
		e.Severity = pgerr.SeverityFatal
		return e
	}
	if deadline, ok := ctx.Deadline(); ok {
		up.SetDeadline(deadline.Add(s.srv.cfg.StartupTimeout))
	}
	s.upstream, s.target = up, t
	s.uw = bufio.NewWriterSize(up, ioBufferSize)
	s.ur = newMsgReader(up, 0, s.flushClient)

	var h [4]byte
	binary.BigEndian.PutUint32(h[:], uint32(len(s.startupPkt)+4))
	s.uw.Write(h[:])
	s.uw.Write(s.startupPkt)
	if err := s.uw.Flush(); err != nil {
		return upstreamLost(err)
	}
	return nil
}

// relayAuth relays the authentication exchange until the upstream is ready.
// Credentials pass through untouched: the proxy holds no passwords.
func (s *session) relayAuth() error {
	for {
		typ, body, err := s.upstreamMessage()
		if err != nil {
			return err
		}
		switch typ {
		case 'R':
			if len(body) < 4 {
				return malformed("authentication request")
			}
			switch method := binary.BigEndian.Uint32(body); method {
			case 0, 12: // AuthenticationOk, AuthenticationSASLFinal
				writeMessage(s.cw, typ, body)
			case 3, 5, 11: // cleartext, MD5, SASLContinue
				writeMessage(s.cw, typ, body)
				if err := s.relayPassword(); err != nil {
					return err
				}
			case 10: // SASL
				if s.bindingPassesThrough() {
					writeMessage(s.cw, typ, body)
					if err := s.relayPassword(); err != nil {
						return err
					}
					break
				}
				offer, err := withoutChannelBinding(body)
				if err != nil {
					return err
				}
				writeMessage(s.cw, typ, offer)
				if err := s.relaySASLInitial(len(offer) != len(body)); err != nil {
					return err
				}
			default:
				return pgerr.Fatal(pgerr.InvalidAuthorization, "the upstream asks for authentication method %d, which pgrules cannot relay (it relays trust, password, md5 and scram-sha-256)", method)
			}
		case 'K':
			writeMessage(s.cw, typ, s.issueKey(body))
		case 'E':
			writeMessage(s.cw, typ, body)
			s.cw.Flush()
			return errAuthRelayed
		case 'Z':
			if len(body) != 1 {
				return malformed("ReadyForQuery")
			}
			s.setTxStatus(body[0])
			writeMessage(s.cw, typ, body)
			if err := s.cw.Flush(); err != nil {
				return errClientGone
			}
			return nil
		case 'S':
			s.noteParameter(body)
			writeMessage(s.cw, typ, body)
		default: // NoticeResponse, NegotiateProtocolVersion
			writeMessage(s.cw, typ, body)
		}
	}
}

// relayPassword passes the client's answer to an authentication request to
// the upstream.
func (s *session) relayPassword() error {
	body, err := s.readPasswordMessage("a password response")
	if err != nil {
		return err
	}
	return s.sendAuth(body)
}

// readPasswordMessage flushes what the client has to see and reads its
// answer, a PasswordMessage (which carries SASL responses too).
func (s *session) readPasswordMessage(what string) ([]byte, error) {
	if err := s.cw.Flush(); err != nil {
		return nil, errClientGone
	}
	typ, n, err := s.cr.header()
	if err != nil {
		return nil, clientReadError(err)
	}
	if typ == 'X' {
		return nil, errClientGone
	}
	if typ != 'p' {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "expected %s, got message type %q", what, typ)
	}
	// Before authentication a client may make the proxy hold only as much
	// as PostgreSQL would; the body is never read.
	if n > maxAuthMessage {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "invalid message length: %s of %d bytes, more than the %d bytes accepted before authentication", what, n, maxAuthMessage)
	}
	body, err := s.cr.body(n)
	if err != nil {
		return nil, clientReadError(err)
	}
	return body, nil
}

func (s *session) sendAuth(body []byte) error {
	writeMessage(s.uw, 'p', body)
	if err := s.uw.Flush(); err != nil {
		return upstreamLost(err)
	}
	return nil
}

// bindingPassesThrough reports whether SCRAM channel binding can work end
// to end: both legs are TLS and the proxy presents the upstream's own
// certificate. tls-server-end-point binds to a hash of the server's
// certificate, which is then the same on both connections.
func (s *session) bindingPassesThrough() bool {
	up, ok := s.upstream.(*tls.Conn)
	if !ok || !s.clientTLS {
		return false
	}
	peer := up.ConnectionState().PeerCertificates
	own := s.srv.cfg.TLS.Certificates
	return len(peer) > 0 && len(own) > 0 && len(own[0].Certificate) > 0 &&
		bytes.Equal(peer[0].Raw, own[0].Certificate[0])
}

// relaySASLInitial relays the client's SASLInitialResponse. When the
// upstream offered channel binding that the proxy had to withhold, a TLS
// client says in its gs2 header that it could have bound ("y"), and the
// upstream rightly takes that for a downgrade attack. The flag is covered by
// the client's proof, so the proxy cannot change it; it refuses the login
// itself, saying what to do, instead of relaying the server's puzzling
// "channel binding negotiation error".
func (s *session) relaySASLInitial(withheld bool) error {
	body, err := s.readPasswordMessage("a SASL initial response")
	if err != nil {
		return err
	}
	if withheld && s.clientTLS {
		var init pgproto3.SASLInitialResponse
		if init.Decode(body) == nil && bytes.HasPrefix(init.Data, []byte("y,")) {
			if plain := s.plainTargets(); plain != nil {
				return s.restartInClear(plain, body)
			}
			e := pgerr.Fatal(pgerr.InvalidAuthorization, "SCRAM channel binding cannot pass through pgrules to this TLS upstream")
			e.Detail = "The client connected with TLS and can bind; the upstream binds to its own certificate, which pgrules does not present."
			e.Hint = "Give pgrules the upstream server's certificate and key (--tls-cert, --tls-key), connect with channel_binding=disable, or connect pgrules to the upstream without TLS (--upstream-sslmode=disable) on a trusted network."
			return e
		}
	}
	return s.sendAuth(body)
}

// plainTargets are the upstream targets without TLS when the session's
// upstream is TLS and its sslmode (prefer or allow) accepts a connection
// without it; nil otherwise.
func (s *session) plainTargets() []target {
	if s.target.tls == nil {
		return nil
	}
	var plain []target
	for _, t := range s.srv.targets {
		if t.tls == nil {
			plain = append(plain, t)
		}
	}
	return plain
}

// restartInClear gives a TLS client that could bind (gs2 flag "y") a login
// that works: over a TLS upstream the server takes the flag for a downgrade
// attack, while a server on a connection without TLS cannot bind and
// accepts it. The client has seen nothing of the server's SCRAM exchange
// yet, so the proxy connects again without TLS, as the upstream sslmode
// allows, sends the startup packet and the client's initial response, and
// the exchange goes on there: the client's password proof binds it to
// nothing the new connection changes.
func (s *session) restartInClear(plain []target, initial []byte) error {
	s.upstream.Close()
	if err := s.connectUpstream(plain); err != nil {
		return err
	}
	s.log.Info().Msg("a TLS client that can bind SCRAM logs in over an upstream connection without TLS (the upstream sslmode allows it; --upstream-sslmode=require refuses such logins)")
	for {
		typ, body, err := s.upstreamMessage()
		if err != nil {
			return err
		}
		switch typ {
		case 'v': // NegotiateProtocolVersion: the client has had it
			continue
		case 'E':
			writeMessage(s.cw, typ, body)
			s.cw.Flush()
			return errAuthRelayed
		case 'R':
			var offer pgproto3.AuthenticationSASL
			if len(body) < 4 || binary.BigEndian.Uint32(body) != 10 || offer.Decode(body) != nil || !slices.Contains(offer.AuthMechanisms, "SCRAM-SHA-256") {
				return pgerr.Fatal(pgerr.InvalidAuthorization, "the upstream asks for another authentication on a connection without TLS than on one with TLS")
			}
			return s.sendAuth(initial)
		default:
			return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent message type %q before authentication", typ)
		}
	}
}

// withoutChannelBinding removes SCRAM-SHA-256-PLUS from a SASL offer.
// Channel binding ties the exchange to the TLS connection it runs on, and
// the client's TLS connection ends at the proxy: a client that used it would
// bind to the proxy's certificate and the upstream would refuse it.
func withoutChannelBinding(body []byte) ([]byte, error) {
	var offer pgproto3.AuthenticationSASL
	if err := offer.Decode(body); err != nil {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed SASL offer: %w", err)
	}
	kept := offer.AuthMechanisms[:0]
	for _, m := range offer.AuthMechanisms {
		if m != "SCRAM-SHA-256-PLUS" {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		return nil, pgerr.Fatal(pgerr.InvalidAuthorization, "the upstream only offers SCRAM with channel binding, which cannot pass through a proxy")
	}
	offer.AuthMechanisms = kept
	msg, err := offer.Encode(nil)
	if err != nil {
		return nil, err
	}
	return msg[5:], nil
}

// issueKey records the upstream's BackendKeyData and returns the one the
// client gets: the upstream's process ID, so pg_backend_pid() agrees, and a
// secret of the proxy's own, so the upstream's secret never leaves the
// proxy and a cancel request is only honoured for this session.
func (s *session) issueKey(upstream []byte) []byte {
	s.upKey = append([]byte(nil), upstream...)
	secretLen := max(len(upstream)-4, 4)
	key := make([]byte, 4+secretLen)
	copy(key, upstream[:min(4, len(upstream))])
	rand.Read(key[4:])
	s.key = cancelKey(key)
	return key
}
