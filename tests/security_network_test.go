package tests

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/outbox"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/rules"
	"github.com/pgrules/pgrules/stmt"
	"github.com/pgrules/pgrules/stmtconn"
	"github.com/rs/zerolog"
)

// The proxy's network-facing defences, attacked as a client with only a
// login role would: where post() may reach, what an unauthenticated client
// can make the proxy hold, what the logs and errors give away, TLS with
// SCRAM, and half-closed sockets.

// allowDestinations parses --outbox-allow patterns.
func allowDestinations(patterns ...string) *outbox.Destinations {
	d, err := outbox.ParseDestinations(patterns)
	if err != nil {
		panic(err)
	}
	return d
}

// TestSecurityNetOutboxDestinations: post() to a loopback port is refused
// by default, with the reason in last_error, and nothing reaches the port;
// --outbox-allow lets exactly the destination it names through.
func TestSecurityNetOutboxDestinations(t *testing.T) {
	h, other := newHook(t), newHook(t)
	events := []any{
		`SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/orders", {id: row.id})', name => 'announce')`,
		`SELECT pgrules.event('orders', 'after_commit', 'post("` + other.URL + `/probe", {id: row.id})', name => 'probe')`,
	}
	t.Run("default", func(t *testing.T) {
		settings := fastOutbox
		settings.Destinations = nil
		c, admin, _ := outboxDB(t, h, append(events, withManager(settings, nil))...)
		scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 1)")
		waitFor(t, "both entries dead", func() bool {
			return scalar(t, admin, "SELECT count(*) FROM pgrules.outbox WHERE state = 'dead'") == "2"
		})
		for _, e := range strings.Split(scalar(t, admin, "SELECT string_agg(last_error, '|') FROM pgrules.outbox"), "|") {
			if !strings.Contains(e, "refused: a loopback address") || !strings.Contains(e, "--outbox-allow") {
				t.Errorf("last_error %q does not say the destination was refused and why", e)
			}
		}
		if got := len(h.delivered()) + len(other.delivered()); got != 0 {
			t.Fatalf("%d posts reached loopback", got)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		settings := fastOutbox
		settings.Destinations = allowDestinations(strings.TrimPrefix(h.URL, "http://"))
		c, admin, _ := outboxDB(t, h, append(events, withManager(settings, nil))...)
		scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 1)")
		waitFor(t, "the entries settled", func() bool {
			return scalar(t, admin, "SELECT string_agg(rule || ' ' || state, ', ' ORDER BY rule) FROM pgrules.outbox") == "announce done, probe dead"
		})
		if got := h.delivered(); len(got) != 1 || got[0] != `{"id":1}` {
			t.Fatalf("the allowed receiver got %q", got)
		}
		if got := other.delivered(); len(got) != 0 {
			t.Fatalf("another loopback port got %q", got)
		}
		if e := scalar(t, admin, "SELECT last_error FROM pgrules.outbox WHERE rule = 'probe'"); !strings.Contains(e, "refused") {
			t.Fatalf("last_error %q", e)
		}
	})
}

// snAuthRequest logs in as user on addr with a raw client and reads up to
// the server's first authentication request that wants an answer.
func snAuthRequest(t *testing.T, addr, user string) *ftConn {
	t.Helper()
	c := ftDial(t, addr)
	c.send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters:      map[string]string{"user": user, "database": "postgres"},
	})
	switch m := c.recv().(type) {
	case *pgproto3.AuthenticationSASL:
	default:
		t.Fatalf("got %T, want a SASL request", m)
	}
	return c
}

// TestSecurityNetPreAuthMemory: clients that never authenticate cannot
// make the proxy hold much. Each announces a 57 MiB password message
// (PostgreSQL accepts at most 65,535 bytes before authentication) and is
// refused before the proxy reads or allocates it: the proxy's allocations
// during the attack stay far below one such message per client.
func TestSecurityNetPreAuthMemory(t *testing.T) {
	s := ownedServer(t)
	p := startProxy(t, s)
	const clients, claimed = 40, 57 << 20
	conns := make([]*ftConn, clients)
	for i := range conns {
		conns[i] = snAuthRequest(t, p.Addr, scramUser)
	}
	chunk := make([]byte, 64<<10)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The header, and the start of the body.
			c.conn.Write(append(binary.BigEndian.AppendUint32([]byte{'p'}, claimed+4), chunk...))
			c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
			msg, err := c.fe.Receive()
			if err != nil {
				errs <- err.Error()
				return
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); !ok || e.Code != pgerr.ProtocolViolation || e.Severity != "FATAL" {
				errs <- fmt.Sprintf("%#v", msg)
			}
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	close(errs)
	for e := range errs {
		t.Errorf("an oversized password message was answered with %s, want FATAL 08P01", e)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	if grew > 64<<20 {
		t.Fatalf("the proxy allocated %d MiB for %d unauthenticated clients", grew>>20, clients)
	}
	t.Logf("allocated during the attack: %.1f MiB", float64(grew)/(1<<20))
	ftEventually(t, "no connection left starting", func() bool { return p.StartingConnections() == 0 })
	// A real login still works.
	c := connect(t, p.url(scramUser, scramPass, "postgres"))
	if got := scalar(t, c, "SELECT current_user"); got != scramUser {
		t.Fatalf("logged in as %s", got)
	}
}

// TestSecurityNetStartupLimit: connections that never finish logging in
// count against --max-startup-connections; one more is refused with 53300,
// as PostgreSQL refuses a client over its limit, while sessions already
// logged in go on, and a login succeeds again once the silent ones leave.
func TestSecurityNetStartupLimit(t *testing.T) {
	s := ownedServer(t)
	const limit = 10
	p := startProxy(t, s, func(c *proxy.Config) { c.MaxStartupConnections = limit })
	working := connect(t, p.url(scramUser, scramPass, "postgres"))
	var silent []*ftConn
	for range limit {
		silent = append(silent, ftDial(t, p.Addr))
	}
	// Half of them get as far as the password request.
	for i := range limit / 2 {
		silent[i].send(&pgproto3.StartupMessage{
			ProtocolVersion: pgproto3.ProtocolVersion30,
			Parameters:      map[string]string{"user": scramUser, "database": "postgres"},
		})
	}
	ftEventually(t, "the silent connections counted", func() bool { return p.StartingConnections() == limit })

	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()
	extra, err := pgconn.Connect(ctx, p.url(scramUser, scramPass, "postgres"))
	if err == nil {
		extra.Close(ctx)
		t.Fatal("a connection over the limit of unauthenticated connections was accepted")
	}
	if code := ftSQLState(err); code != pgerr.TooManyConnections {
		t.Fatalf("over the limit: %v, want 53300", err)
	}
	if got := scalar(t, working, "SELECT 41 + 1"); got != "42" {
		t.Fatalf("the logged-in session got %s", got)
	}
	for _, c := range silent {
		c.conn.Close()
	}
	ftEventually(t, "the silent connections gone", func() bool { return p.StartingConnections() == 0 })
	again := connect(t, p.url(scramUser, scramPass, "postgres"))
	if got := scalar(t, again, "SELECT current_user"); got != scramUser {
		t.Fatalf("logged in as %s", got)
	}
}

// snHalfClosed logs in to url, then, on the raw socket, sends msgs, shuts
// down its sending side, and returns what it reads until the server
// closes.
func snHalfClosed(t *testing.T, url string, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := c.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	fe := hc.Frontend
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := hc.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	hc.Conn.SetReadDeadline(time.Now().Add(ftTimeout))
	var got []string
	for {
		msg, err := fe.Receive()
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("after %v: %v", got, err)
			}
			return got
		}
		name := fmt.Sprintf("%T", msg)[len("*pgproto3."):]
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			name += " " + string(m.Values[len(m.Values)-1])
		case *pgproto3.ErrorResponse:
			name += " " + m.Code
		case *pgproto3.ParameterStatus, *pgproto3.NoticeResponse:
			continue
		}
		got = append(got, name)
	}
}

// snQueries are a Query and an extended-protocol batch.
func snQueries(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{
		&pgproto3.Query{String: sql},
		&pgproto3.Parse{Query: "SELECT $1::int + 1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("41")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	}
}

// TestSecurityNetHalfClose: a client that sends its requests and shuts
// down its sending side (TCP half-close) gets every answer, through the
// proxy as from PostgreSQL, and then the connection closes: after queries,
// after a Terminate, and in the middle of a COPY, where the server reports
// the end of input. A write the rules engine runs is answered too, with
// its rules applied.
func TestSecurityNetHalfClose(t *testing.T) {
	s := ownedServer(t)
	db := s.newDB(t)
	admin := connect(t, s.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (x int); GRANT ALL ON t TO "+scramUser)
	p := startProxy(t, s)
	cases := []struct {
		name string
		msgs []pgproto3.FrontendMessage
		want string
	}{
		{"queries", snQueries("SELECT 1; SELECT pg_sleep(0.2)::text, 2"),
			"RowDescription DataRow 1 CommandComplete RowDescription DataRow 2 CommandComplete ReadyForQuery " +
				"ParseComplete BindComplete DataRow 42 CommandComplete ReadyForQuery"},
		{"terminate", append(snQueries("SELECT pg_sleep(0.2)::text, 3"), &pgproto3.Terminate{}),
			"RowDescription DataRow 3 CommandComplete ReadyForQuery ParseComplete BindComplete DataRow 42 CommandComplete ReadyForQuery"},
		{"copy", []pgproto3.FrontendMessage{&pgproto3.Query{String: "COPY t FROM STDIN"}, &pgproto3.CopyData{Data: []byte("1\n")}},
			"CopyInResponse ErrorResponse 08006 ErrorResponse 08P01"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			direct := strings.Join(snHalfClosed(t, s.url(scramUser, scramPass, db), c.msgs...), " ")
			proxied := strings.Join(snHalfClosed(t, p.url(scramUser, scramPass, db), c.msgs...), " ")
			if direct != c.want {
				t.Fatalf("PostgreSQL answered %s", direct)
			}
			if proxied != direct {
				t.Fatalf("through the proxy: %s\nwant (as PostgreSQL): %s", proxied, direct)
			}
			ftEventually(t, "the session gone", func() bool { return p.ActiveSessions() == 0 })
		})
	}
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
		t.Fatalf("%s rows copied from an unfinished COPY", n)
	}

	_, shopAdmin, shop, shopDB := shopDB(t)
	got := snHalfClosed(t, shop.url("", "", shopDB), snQueries("INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 5); SELECT balance FROM customer WHERE id = 1")...)
	want := "CommandComplete RowDescription DataRow 5.00 CommandComplete ReadyForQuery " +
		"ParseComplete BindComplete DataRow 42 CommandComplete ReadyForQuery"
	if strings.Join(got, " ") != want {
		t.Fatalf("a write with rules, half-closed: %s\nwant: %s", strings.Join(got, " "), want)
	}
	if b := scalar(t, shopAdmin, "SELECT balance FROM customer WHERE id = 1"); b != "5.00" {
		t.Fatalf("balance %s after the half-closed write", b)
	}
}

// snLog collects a logger's output.
type snLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *snLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *snLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *snLog) logger() zerolog.Logger { return zerolog.New(l).Level(zerolog.InfoLevel) }

// snRef is the reference a withheld error's hint gives.
var snRef = regexp.MustCompile(`reference ([0-9a-f]{10})\b`)

// snWithheld checks that e tells the client what to do and a reference
// that log has on a line with the cause, and none of secrets.
func snWithheld(t *testing.T, e *pgconn.PgError, log *snLog, code string, secrets ...string) {
	t.Helper()
	if e.Code != code {
		t.Fatalf("got %s %s, want %s", e.Code, e.Message, code)
	}
	told := strings.Join([]string{e.Message, e.Detail, e.Hint}, " ")
	for _, s := range secrets {
		if strings.Contains(told, s) {
			t.Errorf("the client was told %q: %s", s, told)
		}
	}
	m := snRef.FindStringSubmatch(e.Hint)
	if m == nil || !strings.Contains(e.Hint, "administrator") {
		t.Fatalf("the hint %q gives no reference", e.Hint)
	}
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, `"ref":"`+m[1]+`"`) {
			for _, s := range secrets {
				if !strings.Contains(line, s) {
					t.Errorf("the log line of %s lacks the cause (%q): %s", m[1], s, line)
				}
			}
			return
		}
	}
	t.Fatalf("no log line has reference %s:\n%s", m[1], log)
}

// TestSecurityNetWithheldErrors: when the rules cannot be loaded because
// the proxy's own connection fails, a writer gets 55000 with what to do
// and a reference, not the connection error with the proxy's role; the log
// has the cause under that reference. The same for an upstream the proxy
// cannot reach (08006), whose address stays in the log.
func TestSecurityNetWithheldErrors(t *testing.T) {
	s := ownedServer(t)
	db := s.newDB(t)
	admin := connect(t, s.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (x int); GRANT ALL ON t TO "+scramUser)

	t.Run("rules not loaded", func(t *testing.T) {
		var log snLog
		p := startProxy(t, s, func(c *proxy.Config) {
			c.Logger = log.logger()
			cfg := engineConfig(s, installSchema, c.Logger)
			cfg.Connect = func(ctx context.Context, database string) (*pgx.Conn, error) {
				return pgx.Connect(ctx, s.url(md5User, "not the password", database))
			}
			c.Rules = rules.NewEngine(cfg)
		})
		c := connect(t, p.url(scramUser, scramPass, db))
		_, err := c.Exec(context.Background(), "INSERT INTO t VALUES (1)").ReadAll()
		var e *pgconn.PgError
		if !errors.As(err, &e) {
			t.Fatalf("the write: %v", err)
		}
		snWithheld(t, e, &log, pgerr.ObjectNotInPrereqState, md5User, "password authentication failed")
		if got := scalar(t, c, "SELECT count(*) FROM t"); got != "0" {
			t.Fatalf("%s rows written", got)
		}
	})
	t.Run("upstream unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		var log snLog
		u, _ := url.Parse(s.admin)
		u.Host = closed
		p := startProxy(t, &server{admin: u.String()}, func(c *proxy.Config) { c.Logger = log.logger() })
		ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
		defer cancel()
		_, err = pgconn.Connect(ctx, p.url(scramUser, scramPass, db))
		var e *pgconn.PgError
		if !errors.As(err, &e) {
			t.Fatalf("connect: %v", err)
		}
		snWithheld(t, e, &log, pgerr.ConnectionFailure, closed)
	})
}

// snPanicConn is a connection on which the engine fails as with a bug of
// its own: the first statement it runs panics.
type snPanicConn struct {
	stmt.Conn
	panicked bool
}

func (c *snPanicConn) fail() {
	if !c.panicked {
		c.panicked = true
		panic("engine bug")
	}
}

func (c *snPanicConn) Exec(ctx context.Context, st stmt.Statement) (*stmt.Result, error) {
	c.fail()
	return c.Conn.Exec(ctx, st)
}

func (c *snPanicConn) Query(ctx context.Context, sql string, args ...string) ([][][]byte, error) {
	c.fail()
	return c.Conn.Query(ctx, sql, args...)
}

func (c *snPanicConn) Batch(ctx context.Context, sts []stmt.Statement) ([]*stmt.Result, error) {
	c.fail()
	return c.Conn.Batch(ctx, sts)
}

// TestSecurityNetStatementLog: an engine failure is logged with the
// statement's command and a reference the client is given, and the
// statement's text (here a card number) only with --log-statements.
func TestSecurityNetStatementLog(t *testing.T) {
	_, admin, _, db := shopDB(t)
	const secret = "4111-1111-1111-1111"
	sql := "UPDATE orders SET note = '" + secret + "' WHERE id = 1"
	for _, logStatements := range []bool{false, true} {
		var log snLog
		cfg := engineConfig(shared, installSchema, log.logger())
		cfg.LogStatements = logStatements
		e := rules.NewEngine(cfg)
		conn, err := pgconn.Connect(context.Background(), shared.url("", "", db))
		if err != nil {
			t.Fatal(err)
		}
		err = e.RunTx(context.Background(), db, &snPanicConn{Conn: stmtconn.New(conn, nil)}, ftUser(), sql, nil)
		conn.Close(context.Background())
		e.Close()
		var pe *pgerr.Error
		if !errors.As(err, &pe) || pe.Code != pgerr.InternalError {
			t.Fatalf("the failed statement: %v, want XX000", err)
		}
		ref := snRef.FindStringSubmatch(pe.Hint)
		out := log.String()
		if ref == nil || !strings.Contains(out, `"ref":"`+ref[1]+`"`) || !strings.Contains(out, `"command":"UPDATE"`) {
			t.Fatalf("hint %q; log:\n%s", pe.Hint, out)
		}
		if strings.Contains(out, secret) != logStatements {
			t.Errorf("--log-statements %v, and the log has the statement's text: %v\n%s", logStatements, !logStatements, out)
		}
	}
	if got := scalar(t, admin, "SELECT count(*) FROM orders WHERE note IS NOT NULL"); got != "0" {
		t.Fatalf("%s rows changed", got)
	}
}

// TestSecurityNetTLSScram: the proxy terminates the client's TLS with a
// certificate of its own and speaks TLS to an upstream that offers channel
// binding. libpq (psql) and pgx, with their default channel_binding=prefer,
// log in over TLS with sslmode=require, and sslmode=prefer stays on TLS
// rather than falling back to plaintext after a refusal. With an upstream
// link that must be TLS, the login that cannot work is refused with what
// to do, and sslmode=prefer clients then retry in the clear: libpq's and
// pgx's own fallback, the reason one role lost TLS.
func TestSecurityNetTLSScram(t *testing.T) {
	up, _ := auTLSServer(t, "host all "+scramUser+" 127.0.0.1/32 scram-sha-256")
	cert := cmSelfSigned(t)
	clients := []string{"psql", "pgx"}

	t.Run("upstream prefer", func(t *testing.T) {
		p := startProxy(t, up, withTLS(cert.config), func(c *proxy.Config) { c.UpstreamSSLMode = "prefer" })
		for _, mode := range []string{"require", "prefer"} {
			for _, name := range clients {
				got := auClientNamed(name).login(t, cmSSLMode(p.url(scramUser, "", "postgres"), mode), scramPass)
				if want := (auResult{user: scramUser, ssl: true}); got != want {
					t.Errorf("%s, sslmode=%s: %+v, want %+v", name, mode, got, want)
				}
			}
		}
		// That login's upstream connection is the one without TLS; a
		// client that does not bind keeps a TLS upstream.
		upstreamSSL := func(url string) string {
			c := connect(t, url)
			if _, ok := c.Conn().(*tls.Conn); !ok {
				t.Fatalf("%s: the client's connection is not TLS", url)
			}
			return scalar(t, c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		}
		tlsURL := cmSSLMode(p.url(scramUser, scramPass, "postgres"), "require")
		if got := upstreamSSL(tlsURL); got != "f" {
			t.Errorf("a client that can bind: upstream TLS %s, want f", got)
		}
		if got := upstreamSSL(tlsURL + "&channel_binding=disable"); got != "t" {
			t.Errorf("a client that does not bind: upstream TLS %s, want t", got)
		}
	})
	t.Run("upstream require", func(t *testing.T) {
		p := startProxy(t, up, withTLS(cert.config), func(c *proxy.Config) { c.UpstreamSSLMode = "require" })
		for _, name := range clients {
			got := auClientNamed(name).login(t, cmSSLMode(p.url(scramUser, "", "postgres"), "require"), scramPass)
			if got.user != "" || !strings.Contains(got.message, "cannot pass through pgrules") {
				t.Errorf("%s, sslmode=require: %+v, want pgrules' refusal with its hint", name, got)
			}
			got = auClientNamed(name).login(t, cmSSLMode(p.url(scramUser, "", "postgres"), "prefer"), scramPass)
			if want := (auResult{user: scramUser, ssl: false}); got != want {
				t.Errorf("%s, sslmode=prefer: %+v, want %+v (the client's fallback)", name, got, want)
			}
			got = auClientNamed(name).login(t, cmSSLMode(p.url(scramUser, "", "postgres"), "require")+"&channel_binding=disable", scramPass)
			if want := (auResult{user: scramUser, ssl: true}); got != want {
				t.Errorf("%s, channel_binding=disable: %+v, want %+v", name, got, want)
			}
		}
	})
}
