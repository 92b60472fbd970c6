package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
	"github.com/rs/zerolog"
)

// cancelKey is the body of a BackendKeyData message: the process ID and
// secret a client must send back to cancel its query.
type cancelKey string

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
