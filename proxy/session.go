package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
	"github.com/rs/zerolog"
)

// cancelKey is the body of a BackendKeyData message: the process ID and
// secret a client must send back to cancel its query.
type cancelKey string

// errAuthRelayed means the upstream refused the client and the client has
// already been sent the upstream's ErrorResponse.
var errAuthRelayed = errors.New("authentication failed upstream")

func shutdownError() error {
	return pgerr.Fatal(pgerr.AdminShutdown, "terminating connection due to administrator command")
}

type session struct {
	srv   *Server
	id    uint64
	start time.Time
	// ctx ends with the session (end) or when the server closes its
	// connections: the engine's statements and the session's dials run
	// under it.
	ctx    context.Context
	cancel context.CancelFunc

	// Set by the session goroutine during startup, read-only afterwards.
	log       zerolog.Logger
	client    net.Conn // the TLS connection once TLS is on
	clientTLS bool
	user      string // from the startup packet
	database  string // from the startup packet, defaulting to user
	upstream  net.Conn
	target    target
	key       cancelKey // what the client was given
	upKey     []byte    // the upstream backend's own key data
	// startupPkt is the client's StartupMessage, kept during the login
	// in case the upstream must be connected to again.
	startupPkt []byte

	cr *msgReader    // owned by the frontend loop
	uw *bufio.Writer // owned by the frontend loop
	ur *msgReader    // owned by the backend loop
	cw *bufio.Writer // owned by the backend loop

	txStatus atomic.Uint32 // a TxStatus; written by whoever reads the upstream
	// txEnds counts the ReadyForQuery messages that found the session idle:
	// it changes whenever a transaction has ended, which is how the engine
	// tells one transaction from the next without seeing COMMIT or ROLLBACK.
	txEnds  atomic.Uint64
	pending atomic.Int64 // requests forwarded and not yet answered by ReadyForQuery
	// unsynced is set by the frontend loop while the client has sent
	// extended-protocol messages not yet followed by Sync: the upstream is
	// then inside an implicit transaction that ReadyForQuery does not show.
	unsynced atomic.Bool

	// fatalRelayed is set by the backend loop when the upstream told the
	// client itself that the connection is ending.
	fatalRelayed atomic.Bool

	// params are the run-time parameters the upstream reported in
	// ParameterStatus, for the engine (stmt.Conn.Parameter). Written by
	// whoever reads the upstream, read by the frontend loop.
	paramsMu sync.Mutex
	params   map[string]string // guarded by paramsMu

	// gate makes forwarding a new request and ending an idle session
	// during shutdown mutually exclusive, so a request is never forwarded
	// to an upstream that is about to be closed under it.
	gate   sync.Mutex
	killed bool // guarded by gate

	endOnce sync.Once
	endErr  error         // why the session ended; written once, under endOnce
	ended   chan struct{} // closed by end

	// rules is nil when statements are only relayed. Its methods are
	// called by the frontend loop only.
	rules stmt.Session
	// sent counts the requests the frontend loop forwarded that the
	// upstream answers with ReadyForQuery; owned by the frontend loop.
	sent int64
	// seen counts the ReadyForQuery messages the backend loop read; owned
	// by the backend loop.
	seen int64
	// lendAt is the request number whose ReadyForQuery hands the upstream
	// reader and the client writer to the frontend loop (0: none).
	lendAt atomic.Int64
	// lentOut is set by the backend loop when the session ends while the
	// frontend loop holds the client writer; owned by the backend loop.
	lentOut bool
	// due is how a borrow still waits for its handover; owned by the
	// frontend loop.
	due handover
	// lendWanted is raised by the frontend loop for a handover at the
	// upstream's next message, and lowered by the backend loop as it
	// hands over.
	lendWanted atomic.Bool
	lent       chan struct{} // backend loop to frontend loop: they are yours
	returned   chan struct{} // frontend loop to backend loop: they are back
	// x is the frontend loop's state of extended-protocol batches.
	x extState
	// flushed is set, during a borrow, while what went upstream last ended
	// with a Flush rather than a Sync or a Query: only then does the
	// server owe a Sync before the batch's ReadyForQuery. Owned by the
	// frontend loop.
	flushed bool
	// ahead is a run of the batch's messages held back to go upstream in
	// front of the engine's first statement (see relayAhead); aheadFailed
	// is set once the server answered one of them with an error, after
	// which the engine's statements are not sent. Owned by the frontend
	// loop.
	ahead       []batchMsg
	aheadFailed bool
	// notices are the engine's NoticeResponses (its trace) held while
	// ahead waits: the answers to the client's messages come first.
	// Owned by the frontend loop.
	notices []byte
	// fieldNames interns the column names of the results the frontend
	// loop reads during borrows. Owned by the frontend loop.
	fieldNames map[string]string
	// exchanges counts the writes upstream during borrows that await an
	// answer, began its value when the borrow began (stmt.Conn.Exchanges).
	// Owned by the frontend loop.
	exchanges, began uint64
	// holdTag, while a Query's last statement runs, keeps its
	// CommandComplete in heldTag instead of sending it: PostgreSQL ends the
	// Query's transaction before it reports the last statement complete, so
	// that an error at commit comes instead. Owned by the frontend loop.
	holdTag bool
	heldTag []byte
}

func newSession(srv *Server, conn net.Conn) *session {
	id := srv.nextID.Add(1)
	ctx, cancel := context.WithCancel(srv.ctx)
	s := &session{
		ctx:      ctx,
		cancel:   cancel,
		srv:      srv,
		id:       id,
		start:    time.Now(),
		client:   conn,
		ended:    make(chan struct{}),
		lent:     make(chan struct{}),
		returned: make(chan struct{}),
		log:      srv.log.With().Uint64("session", id).Str("client", conn.RemoteAddr().String()).Logger(),
	}
	s.txStatus.Store(uint32(stmt.TxIdle))
	return s
}

// noteParameter records a ParameterStatus body: the name and the value,
// each ended by a zero byte. A malformed one is relayed and not recorded.
func (s *session) noteParameter(body []byte) {
	name, value, ok := bytes.Cut(body, []byte{0})
	if !ok || len(value) == 0 || value[len(value)-1] != 0 {
		return
	}
	s.paramsMu.Lock()
	defer s.paramsMu.Unlock()
	if s.params == nil {
		s.params = make(map[string]string)
	}
	s.params[string(name)] = string(value[:len(value)-1])
}

// parameter returns what noteParameter recorded for name.
func (s *session) parameter(name string) string {
	s.paramsMu.Lock()
	defer s.paramsMu.Unlock()
	return s.params[name]
}

// TxStatus returns the session's transaction state as of the last
// ReadyForQuery the upstream sent.
func (s *session) TxStatus() stmt.TxStatus { return stmt.TxStatus(s.txStatus.Load()) }

// setTxStatus records a ReadyForQuery's status byte.
func (s *session) setTxStatus(b byte) {
	s.txStatus.Store(uint32(b))
	if stmt.TxStatus(b) == stmt.TxIdle {
		s.txEnds.Add(1)
	}
}

func (s *session) run() {
	defer s.client.Close()
	defer s.cancel()
	counted := false
	defer func() {
		if counted {
			s.srv.active.Add(-1)
		}
	}()

	s.client.SetDeadline(time.Now().Add(s.srv.cfg.StartupTimeout))
	err := s.startup(&counted)
	s.srv.starting.Add(-1)
	if err == nil && !s.srv.register(s) {
		err = shutdownError()
	}
	if err != nil {
		if s.upstream != nil {
			s.upstream.Close()
		}
		s.failStartup(err)
		return
	}
	defer s.srv.unregister(s)
	s.client.SetDeadline(noDeadline)
	s.upstream.SetDeadline(noDeadline)
	s.log.Debug().Msg("session started")
	if s.srv.cfg.Rules != nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.StartupTimeout)
		s.rules = s.srv.cfg.Rules.Open(ctx, stmt.SessionInfo{Database: s.database, User: s.user, Log: s.log})
		cancel()
		if s.rules != nil {
			defer s.rules.Close()
		}
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		s.backendLoop()
	}()
	s.frontendLoop()
	<-done
	s.upstream.Close()

	ev := s.log.Debug()
	if code := pgerr.Code(s.endErr); code != "" {
		ev = s.log.Info().Str("sqlstate", code)
	}
	ev.Err(s.endErr).Dur("duration", time.Since(s.start)).Msg("session ended")
}

var noDeadline time.Time

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
				return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed authentication request")
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
				return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed ReadyForQuery")
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

func (s *session) flushUpstream() error {
	if err := s.uw.Flush(); err != nil {
		return upstreamLost(err)
	}
	return nil
}

func (s *session) flushClient() error {
	if err := s.cw.Flush(); err != nil {
		return errClientGone
	}
	return nil
}

func upstreamLost(err error) error {
	if pgerr.Code(err) != "" {
		return err
	}
	return pgerr.Fatal(pgerr.ConnectionFailure, "lost the connection to the upstream server: %w", err)
}

// clientReadError classifies an error from reading the client: protocol
// errors are the client's to hear; anything else means it is gone.
func clientReadError(err error) error {
	if pgerr.Code(err) != "" {
		return err
	}
	return errClientGone
}

// end records why the session ends. The first reason wins: later errors are
// consequences of it.
func (s *session) end(err error) {
	s.endOnce.Do(func() {
		s.endErr = err
		close(s.ended)
		s.cancel()
	})
}

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

func (s *session) idle() bool {
	return s.pending.Load() == 0 && s.TxStatus() == stmt.TxIdle && !s.unsynced.Load()
}

// closeIfIdle ends the session if it has nothing in flight and no open
// transaction. Shutdown calls it for every session, and the backend loop
// again whenever a session becomes idle while the server drains.
func (s *session) closeIfIdle() {
	s.gate.Lock()
	defer s.gate.Unlock()
	if s.killed || !s.idle() {
		return
	}
	s.killed = true
	s.end(shutdownError())
	s.upstream.Close()
}

// kill ends the session now, whatever it is doing.
func (s *session) kill() {
	s.gate.Lock()
	s.killed = true
	s.gate.Unlock()
	s.end(shutdownError())
	s.client.SetWriteDeadline(time.Now().Add(time.Second))
	s.upstream.Close()
}

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
				return pgerr.Fatal(pgerr.ProtocolViolation, "upstream sent a malformed ReadyForQuery")
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
