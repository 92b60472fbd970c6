package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
	"github.com/rs/zerolog"
)

// Config is what a Server needs. Zero values take the defaults noted.
type Config struct {
	// Upstream is the URL of the PostgreSQL server. Its host, port and TLS
	// settings say where sessions connect; the database and user a client
	// asks for are the client's own.
	Upstream string
	// UpstreamSSLMode overrides the sslmode of Upstream when set.
	UpstreamSSLMode string
	// TLS, when set, is offered to clients that send SSLRequest.
	TLS *tls.Config
	// MaxMessageBytes limits the body of one client message (default 64 MiB).
	MaxMessageBytes int
	// MaxConnections limits concurrent client sessions (default 1000).
	MaxConnections int
	// MaxStartupConnections limits the connections that have not finished
	// authenticating, from accept on (default 256): a client that
	// connects and sends nothing, or never completes its login, holds one
	// until StartupTimeout. Beyond it a connection is refused with 53300.
	MaxStartupConnections int
	// StartupTimeout bounds the startup and authentication exchange, as
	// PostgreSQL's authentication_timeout does (default 60s).
	StartupTimeout time.Duration
	// DialTimeout bounds connecting to the upstream (default 10s).
	DialTimeout time.Duration
	// Rules, when set, sees every session's statements and runs those it
	// wants; without it the proxy only relays.
	Rules  stmt.Rules
	Logger zerolog.Logger
}

const (
	defaultMaxMessageBytes = 64 << 20
	defaultMaxConnections  = 1000

	defaultMaxStartupConnections = 256
	// refuseTimeout bounds how long a refused connection is kept to tell
	// the client why.
	refuseTimeout = time.Second
)

// Server accepts client connections and runs one session for each.
type Server struct {
	cfg     Config
	targets []target
	log     zerolog.Logger

	nextID   atomic.Uint64
	active   atomic.Int64 // sessions past their startup packet
	starting atomic.Int64 // connections not yet authenticated
	// refused counts the connections refused for the startup limit since
	// refusedLog (UnixNano), when that was last logged: a flood of them
	// makes one log line a second, not one each.
	refused    atomic.Int64
	refusedLog atomic.Int64
	draining   atomic.Bool // Shutdown was called: no new work for idle sessions

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]*session  // every client connection, from accept to close
	sessions  map[*session]struct{}  // sessions in their message loops
	keys      map[cancelKey]*session // the cancel keys clients were given
	wg        sync.WaitGroup         // one per connection goroutine
	done      chan struct{}          // closed when Shutdown starts
	doneOnce  sync.Once
	// ctx is the context of everything the server's sessions do; stop
	// ends it when the server closes the connections left (Close, or
	// Shutdown's deadline).
	ctx  context.Context
	stop context.CancelFunc
}

// New checks cfg and returns a Server ready to Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Upstream == "" {
		return nil, errors.New("proxy: no upstream URL")
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = defaultMaxMessageBytes
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = defaultMaxConnections
	}
	if cfg.MaxStartupConnections <= 0 {
		cfg.MaxStartupConnections = defaultMaxStartupConnections
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = 60 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	targets, _, err := upstreamTargets(cfg.Upstream, cfg.UpstreamSSLMode)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Server{
		ctx:       ctx,
		stop:      stop,
		cfg:       cfg,
		targets:   targets,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]*session),
		sessions:  make(map[*session]struct{}),
		keys:      make(map[cancelKey]*session),
		done:      make(chan struct{}),
	}, nil
}

// errTooManyFiles is what accept returns when the process is out of file
// descriptors: a reason to wait, not to stop serving.
var errTooManyFiles = syscall.EMFILE

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	default:
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		if !s.track(conn) {
			conn.Close()
			return ErrServerClosed
		}
		go s.handle(conn)
	}
}

// track registers a new client connection; false means the server is
// shutting down and the connection must be dropped.
func (s *Server) track(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return false
	default:
	}
	s.conns[conn] = nil
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(conn net.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) handle(conn net.Conn) {
	defer s.untrack(conn)
	if s.starting.Add(1) > int64(s.cfg.MaxStartupConnections) {
		s.starting.Add(-1)
		s.refuse(conn)
		return
	}
	sess := newSession(s, conn)
	s.mu.Lock()
	s.conns[conn] = sess
	s.mu.Unlock()
	sess.run()
}

// refuse tells a client over the limit of unauthenticated connections that
// there are too many, as PostgreSQL does, and closes its connection. What
// the client sent is read and dropped first, for a while, so that closing
// does not reset the connection before the client has read the answer.
func (s *Server) refuse(conn net.Conn) {
	defer conn.Close()
	s.refused.Add(1)
	if last, now := s.refusedLog.Load(), time.Now(); now.Sub(time.Unix(0, last)) >= time.Second && s.refusedLog.CompareAndSwap(last, now.UnixNano()) {
		s.log.Warn().Str("client", conn.RemoteAddr().String()).Int("limit", s.cfg.MaxStartupConnections).Int64("refused", s.refused.Swap(0)).
			Msg("connections refused: too many clients are authenticating (--max-startup-connections)")
	}
	conn.SetDeadline(time.Now().Add(refuseTimeout))
	w := bufio.NewWriterSize(conn, 256)
	if encodeError(w, pgerr.Fatal(pgerr.TooManyConnections, "sorry, too many clients already")) != nil || w.Flush() != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(conn, maxStartupPacket+4))
}

// Shutdown stops accepting, ends idle sessions at once, lets sessions in a
// transaction or a running statement finish, and when ctx ends, closes
// whatever is left. It returns ctx's error if it had to force anything.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.closeIfIdle()
	}
	// A connection still in its startup has no transaction to finish.
	s.closeStarting()
	s.mu.Unlock()

	finished := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-finished
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.closeListeners()
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) closeListeners() {
	s.doneOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

func (s *Server) closeConns() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for sess := range s.sessions {
		sess.kill()
	}
	s.closeStarting()
}

// closeStarting closes the connections that have not reached their message
// loop. s.mu must be held.
func (s *Server) closeStarting() {
	for c, sess := range s.conns {
		if _, inLoop := s.sessions[sess]; !inLoop {
			c.Close()
		}
	}
}

// register makes a session that finished its startup visible to Shutdown
// and to cancel requests. It reports false when the server is draining, in
// which case the session must end.
func (s *Server) register(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.keys[sess.key] = sess
	return true
}

func (s *Server) unregister(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
	if s.keys[sess.key] == sess {
		delete(s.keys, sess.key)
	}
}

// ActiveSessions is the number of client sessions past their startup.
func (s *Server) ActiveSessions() int { return int(s.active.Load()) }

// StartingConnections is the number of connections that have not finished
// authenticating.
func (s *Server) StartingConnections() int { return int(s.starting.Load()) }
