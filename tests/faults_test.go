package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/stmt"
)

// Fault and protocol-edge tests: what a client sees when it, the network or
// the upstream misbehaves, and that one bad session never harms another.
//
// The helpers here are prefixed ft so that they stay independent of the
// other test files in this package. Raw sockets are used wherever the test
// needs bytes no driver would send, or needs to see exactly which messages
// arrive before the connection closes; pgconn elsewhere.
//
// The raw clients log in as the admin URL's user without a password, so
// they need trust authentication: the clusters these tests start have it.

// ftTimeout bounds every wait: no test may hang on a proxy bug.
const ftTimeout = 10 * time.Second

// ftConn is a protocol client driven message by message.
type ftConn struct {
	t      testing.TB
	conn   net.Conn
	fe     *pgproto3.Frontend
	pid    uint32 // from BackendKeyData
	secret []byte
}

func ftDial(t testing.TB, addr string) *ftConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	// An overall deadline turns any hang into a failed read or write.
	conn.SetDeadline(time.Now().Add(3 * ftTimeout))
	t.Cleanup(func() { conn.Close() })
	return &ftConn{t: t, conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

// ftUser is the role the raw clients log in as.
func ftUser() string {
	u, err := url.Parse(shared.admin)
	if err != nil || u.User == nil || u.User.Username() == "" {
		return "postgres"
	}
	return u.User.Username()
}

// ftDirectAddr is host:port of the shared server, for talking to it without
// the proxy.
func ftDirectAddr(t testing.TB) string {
	u, err := url.Parse(shared.admin)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func (c *ftConn) send(msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *ftConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *ftConn) recv() pgproto3.BackendMessage {
	c.t.Helper()
	msg, err := c.fe.Receive()
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return msg
}

// login sends a protocol 3.0 startup message and reads up to the first
// ReadyForQuery, keeping the cancel key.
func (c *ftConn) login(db string) {
	c.t.Helper()
	c.send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters:      map[string]string{"user": ftUser(), "database": db},
	})
	for {
		switch m := c.recv().(type) {
		case *pgproto3.BackendKeyData:
			c.pid, c.secret = m.ProcessID, bytes.Clone(m.SecretKey)
		case *pgproto3.ErrorResponse:
			c.t.Fatalf("login refused: %s %s %s", m.Severity, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return
		}
	}
}

// ftResult is what one simple query returned.
type ftResult struct {
	rows   []string // the first column of each row
	err    *pgproto3.ErrorResponse
	status byte // of the ReadyForQuery that ended it
}

func (c *ftConn) readResult() ftResult {
	c.t.Helper()
	var r ftResult
	for {
		switch m := c.recv().(type) {
		case *pgproto3.DataRow:
			r.rows = append(r.rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			e := *m // Receive reuses its messages
			r.err = &e
		case *pgproto3.ReadyForQuery:
			r.status = m.TxStatus
			return r
		}
	}
}

func (c *ftConn) simple(sql string) ftResult {
	c.t.Helper()
	c.send(&pgproto3.Query{String: sql})
	return c.readResult()
}

// exec runs sql, which must succeed, and returns the first column of its
// rows and the transaction status after it.
func (c *ftConn) exec(sql string) ([]string, byte) {
	c.t.Helper()
	r := c.simple(sql)
	if r.err != nil {
		c.t.Fatalf("%s: %s %s", sql, r.err.Code, r.err.Message)
	}
	return r.rows, r.status
}

// expectFatal reads until an ErrorResponse, which must be FATAL with code,
// and then requires the connection to be closed.
func (c *ftConn) expectFatal(code string) *pgproto3.ErrorResponse {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("want FATAL %s, got %v", code, err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			got := *e
			if got.Code != code || got.Severity != "FATAL" {
				c.t.Fatalf("got %s %s %q, want FATAL %s", got.Severity, got.Code, got.Message, code)
			}
			if got.Message == "" {
				c.t.Fatal("ErrorResponse without a message")
			}
			c.expectClosed()
			return &got
		}
	}
}

// expectClosed requires the peer to have closed the connection, with
// nothing more to read.
func (c *ftConn) expectClosed() {
	c.t.Helper()
	if n := c.fe.ReadBufferLen(); n > 0 {
		c.t.Fatalf("%d unread bytes before the close", n)
	}
	c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if n > 0 {
		c.t.Fatalf("data (%q) where the connection should have closed", b[0])
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("connection not closed: read returned %v", err)
	}
}

func ftFrame(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// ftStartup builds a startup packet by hand, parameters in the order given,
// so that lengths can be exact and layouts wrong.
func ftStartup(version uint32, params ...string) []byte {
	b := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(b[4:], version)
	for _, p := range params {
		b = append(append(b, p...), 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

func ftCancelPacket(pid uint32, secret []byte) []byte {
	b := make([]byte, 12, 12+len(secret))
	binary.BigEndian.PutUint32(b[4:], 80877102)
	binary.BigEndian.PutUint32(b[8:], pid)
	b = append(b, secret...)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// ftEventually polls cond until it holds or ftTimeout passes.
func ftEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ftTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ftSQLState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ftBackendGone waits until the upstream backend pid has left
// pg_stat_activity: the proxy closed its connection and PostgreSQL ended
// the backend, rolling back whatever it had open.
func ftBackendGone(t testing.TB, admin *pgconn.PgConn, pid uint32) {
	t.Helper()
	q := fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid)
	ftEventually(t, fmt.Sprintf("backend %d to end", pid), func() bool { return scalar(t, admin, q) == "0" })
}

// ftWaitActive waits until backend pid is running a statement, so that a
// cancel request cannot arrive before the statement it is meant for.
func ftWaitActive(t testing.TB, admin *pgconn.PgConn, pid uint32) {
	t.Helper()
	q := fmt.Sprintf("SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND state = 'active' AND query LIKE '%%pg_sleep%%'", pid)
	ftEventually(t, fmt.Sprintf("backend %d to run its statement", pid), func() bool { return scalar(t, admin, q) == "1" })
}

func ftNoSessionsLeft(t testing.TB, p *testProxy) {
	t.Helper()
	ftEventually(t, "the proxy to count no sessions", func() bool { return p.ActiveSessions() == 0 })
}

// ftBystander is a session that must keep working while others fail. The
// check it returns runs in the (sub)test it is given.
func ftBystander(t testing.TB, p *testProxy, db string) func(testing.TB) {
	c := ftDial(t, p.Addr)
	c.login(db)
	n := 0
	return func(t testing.TB) {
		t.Helper()
		c.t = t
		n++
		want := strconv.Itoa(n)
		if rows, _ := c.exec("SELECT " + want); len(rows) != 1 || rows[0] != want {
			t.Fatalf("bystander got %q", rows)
		}
	}
}

func TestFaultMessageTooLarge(t *testing.T) {
	const limit = 1 << 20
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v text)")
	p := startProxy(t, shared, withMaxMessage(limit))
	bystanderOK := ftBystander(t, p, db)

	t.Run("exactly at the limit", func(t *testing.T) {
		// A body of exactly limit bytes is allowed, and it is larger than
		// the proxy's buffer, so it takes the streaming path.
		const head, tail = "SELECT length('", "')"
		pad := strings.Repeat("x", limit-len(head)-len(tail)-1) // -1: the NUL
		c := ftDial(t, p.Addr)
		c.login(db)
		c.write(ftFrame('Q', []byte(head+pad+tail+"\x00")))
		r := c.readResult()
		if r.err != nil || len(r.rows) != 1 || r.rows[0] != strconv.Itoa(len(pad)) {
			t.Fatalf("got %+v", r)
		}
		bystanderOK(t)
	})

	t.Run("query over the limit", func(t *testing.T) {
		c := ftDial(t, p.Addr)
		c.login(db)
		msg := ftFrame('Q', append([]byte("SELECT '"+strings.Repeat("y", 2<<20)+"'"), 0))
		// Written from another goroutine: the proxy answers and closes
		// without reading the rest, so this write may fail, and the
		// answer must not depend on it finishing.
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			c.conn.Write(msg)
		}()
		e := c.expectFatal("54000")
		if !strings.Contains(e.Message, strconv.Itoa(limit)) {
			t.Errorf("message does not name the limit: %q", e.Message)
		}
		<-wrote
		ftBackendGone(t, admin, c.pid)
		bystanderOK(t)
	})

	t.Run("CopyData over the limit in a COPY", func(t *testing.T) {
		c := ftDial(t, p.Addr)
		c.login(db)
		c.send(&pgproto3.Query{String: "COPY t FROM STDIN"})
		if _, ok := c.recv().(*pgproto3.CopyInResponse); !ok {
			t.Fatal("no CopyInResponse")
		}
		c.write(ftFrame('d', []byte("first\n")))
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			c.conn.Write(ftFrame('d', bytes.Repeat([]byte("z"), limit+1)))
		}()
		c.expectFatal("54000")
		<-wrote
		ftBackendGone(t, admin, c.pid)
		if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
			t.Fatalf("%s rows of an aborted COPY committed", n)
		}
		bystanderOK(t)
	})
	ftNoSessionsLeftExcept(t, p, 1)
}

// ftNoSessionsLeftExcept waits until only the bystanders are counted.
func ftNoSessionsLeftExcept(t testing.TB, p *testProxy, bystanders int) {
	t.Helper()
	ftEventually(t, fmt.Sprintf("the proxy to count %d sessions", bystanders), func() bool { return p.ActiveSessions() == bystanders })
}

// TestFaultMalformedMessages: bad input after login ends only its own
// session, with an ErrorResponse the client can read, and the upstream
// backend goes away with nothing committed.
func TestFaultMalformedMessages(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v text)")
	p := startProxy(t, shared)
	bystanderOK := ftBystander(t, p, db)

	cases := []struct {
		name string
		send []byte
		// halfClose closes the client's sending side after send: a
		// truncated message followed by the client going away, while
		// it can still read the answer.
		halfClose bool
	}{
		{"length zero", []byte{'Q', 0, 0, 0, 0}, false},
		{"length three", []byte{'Q', 0, 0, 0, 3}, false},
		{"length three, then more bytes", []byte{'S', 0, 0, 0, 3, 'S', 0, 0, 0, 4}, false},
		{"unknown message type", ftFrame('z', nil), false},
		{"message type zero", ftFrame(0, []byte("abc")), false},
		{"password message after login", ftFrame('p', []byte("secret\x00")), false},
		{"truncated header, then close", []byte{'Q', 0, 0}, true},
		{"truncated body, then close", []byte{'Q', 0, 0, 0, 104, 'S', 'E', 'L'}, true},
		{"truncated large body, then close", append([]byte{'Q', 0, 3, 0, 0}, bytes.Repeat([]byte("x"), 100_000)...), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ftDial(t, p.Addr)
			c.login(db)
			// An open transaction with a row in it: nothing of it may
			// survive the session.
			if _, st := c.exec("BEGIN; INSERT INTO t VALUES ('" + tc.name + "')"); st != 'T' {
				t.Fatalf("status %c", st)
			}
			c.write(tc.send)
			if tc.halfClose {
				c.conn.(*net.TCPConn).CloseWrite()
			}
			c.expectFatal("08P01")
			ftBackendGone(t, admin, c.pid)
			if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
				t.Fatalf("%s rows committed by a broken session", n)
			}
			bystanderOK(t)
		})
	}

	t.Run("truncated CopyData in a COPY, then close", func(t *testing.T) {
		// The proxy has already streamed the start of this message to
		// the upstream when the client goes: the upstream must still
		// end up rolling the COPY back.
		c := ftDial(t, p.Addr)
		c.login(db)
		c.send(&pgproto3.Query{String: "COPY t FROM STDIN"})
		if _, ok := c.recv().(*pgproto3.CopyInResponse); !ok {
			t.Fatal("no CopyInResponse")
		}
		c.write(ftFrame('d', []byte("kept?\n")))
		c.write([]byte{'d', 0, 3, 0, 0})
		c.write(bytes.Repeat([]byte("w"), 50_000))
		c.conn.(*net.TCPConn).CloseWrite()
		c.expectFatal("08P01")
		ftBackendGone(t, admin, c.pid)
		if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
			t.Fatalf("%s rows of a broken COPY committed", n)
		}
		bystanderOK(t)
	})
	ftNoSessionsLeftExcept(t, p, 1)
}

// ftReply summarises how a server answered a startup packet: the types of
// the messages it sent, and the error if it sent one.
type ftReply struct {
	types    []string
	code     string
	severity string
	closed   bool
}

func (r ftReply) String() string {
	return fmt.Sprintf("%v %s %s closed=%v", r.types, r.severity, r.code, r.closed)
}

// ftStartupReply sends pkt as the first packet on a new connection to addr
// and reads the answer up to ReadyForQuery, an error or the close. If close
// is set, the client shuts its sending side after pkt.
func ftStartupReply(t testing.TB, addr string, pkt []byte, halfClose bool) ftReply {
	t.Helper()
	c := ftDial(t, addr)
	defer c.conn.Close()
	c.conn.SetDeadline(time.Now().Add(ftTimeout))
	c.write(pkt)
	if halfClose {
		c.conn.(*net.TCPConn).CloseWrite()
	}
	var r ftReply
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				r.closed = true
				return r
			}
			t.Fatalf("startup reply after %v: %v", r.types, err)
		}
		r.types = append(r.types, fmt.Sprintf("%T", msg)[len("*pgproto3."):])
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			r.code, r.severity = m.Code, m.Severity
		case *pgproto3.ReadyForQuery:
			return r
		}
	}
}

// TestFaultMalformedStartup: bad first packets. Where PostgreSQL itself
// answers, the proxy must answer the same; where PostgreSQL silently hangs
// up (it logs COMMERROR), the proxy tells the client with 08P01.
func TestFaultMalformedStartup(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	bystanderOK := ftBystander(t, p, db)
	direct := ftDirectAddr(t)
	user := ftUser()

	rejected := []struct {
		name      string
		pkt       []byte
		halfClose bool
	}{
		{"length zero", []byte{0, 0, 0, 0}, false},
		{"length seven", []byte{0, 0, 0, 7, 0, 3, 0}, false},
		{"length over PostgreSQL's maximum", binary.BigEndian.AppendUint32(nil, 10005), false},
		{"length of 2 GiB", []byte{0x7f, 0xff, 0xff, 0xff}, false},
		{"truncated length, then close", []byte{0, 0}, true},
		{"truncated packet, then close", append([]byte{0, 0, 0, 40}, ftStartup(196608, "user", user)[4:20]...), true},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got := ftStartupReply(t, p.Addr, tc.pkt, tc.halfClose)
			if got.code != "08P01" || got.severity != "FATAL" || !got.closed {
				t.Fatalf("got %v, want FATAL 08P01 and the connection closed", got)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
			bystanderOK(t)
		})
	}

	// Packets PostgreSQL answers itself: the client must get the answer
	// it would get without the proxy.
	pad := func(total int) string {
		base := len(ftStartup(196608, "user", user, "database", db, "application_name", ""))
		return strings.Repeat("p", total-base)
	}
	same := []struct {
		name string
		pkt  []byte
	}{
		{"valid", ftStartup(196608, "user", user, "database", db)},
		{"PostgreSQL's maximum length", ftStartup(196608, "user", user, "database", db, "application_name", pad(10004))},
		{"newer minor protocol version", ftStartup(3<<16|3, "user", user, "database", db)},
		{"protocol extension option", ftStartup(196608, "user", user, "database", db, "_pq_.pgrules_test", "on")},
		{"unsupported major protocol version", ftStartup(4<<16, "user", user, "database", db)},
		{"no user", ftStartup(196608, "database", db)},
		{"no parameters", ftStartup(196608)},
		{"missing terminator", ftStartup(196608, "user", user, "database", db)[:len(ftStartup(196608, "user", user, "database", db))-1]},
		{"odd number of strings", ftStartup(196608, "user", user, "database")},
	}
	for _, tc := range same {
		t.Run(tc.name, func(t *testing.T) {
			// A packet cut short by its own length field would leave
			// the server waiting: fix the length up.
			pkt := bytes.Clone(tc.pkt)
			binary.BigEndian.PutUint32(pkt, uint32(len(pkt)))
			want := ftStartupReply(t, direct, pkt, false)
			got := ftStartupReply(t, p.Addr, pkt, false)
			if got.code != want.code || got.severity != want.severity || (want.code == "") != (got.code == "") {
				t.Fatalf("through pgrules: %v\ndirectly:       %v", got, want)
			}
			if want.code == "" && strings.Join(got.types, " ") != strings.Join(want.types, " ") {
				t.Fatalf("through pgrules: %v\ndirectly:       %v", got, want)
			}
			bystanderOK(t)
		})
	}
}

func TestFaultMaxConnections(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", "postgres"))
	p := startProxy(t, shared, withMaxConnections(2))
	backends := func() string {
		return scalar(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE datname = '"+db+"' AND application_name <> 'pgrules catalog'")
	}

	first := ftDial(t, p.Addr)
	first.login(db)
	second := ftDial(t, p.Addr)
	second.login(db)

	// Several refusals in a row: each must be counted back out, and none
	// may have opened an upstream connection.
	for i := 0; i < 3; i++ {
		got := ftStartupReply(t, p.Addr, ftStartup(196608, "user", ftUser(), "database", db), false)
		if got.code != "53300" || got.severity != "FATAL" || !got.closed {
			t.Fatalf("client %d over the limit: %v, want FATAL 53300 and closed", i+3, got)
		}
	}
	if n := backends(); n != "2" {
		t.Fatalf("%s upstream backends for 2 admitted clients", n)
	}
	if n := p.ActiveSessions(); n != 2 {
		t.Fatalf("ActiveSessions = %d after refusals, want 2", n)
	}
	// The admitted sessions are unaffected.
	first.exec("SELECT 1")
	second.exec("SELECT 1")

	first.send(&pgproto3.Terminate{})
	first.expectClosed()
	ftEventually(t, "room for a new client after one left", func() bool {
		got := ftStartupReply(t, p.Addr, ftStartup(196608, "user", ftUser(), "database", db), false)
		if got.code == "" {
			return true
		}
		if got.code != "53300" {
			t.Fatalf("got %v", got)
		}
		return false
	})
	// ftStartupReply's client is gone again; hold the slot with one that
	// stays, and the next must be refused once more: the count is exact.
	ftEventually(t, "the probe to leave", func() bool { return p.ActiveSessions() == 1 })
	third := ftDial(t, p.Addr)
	third.login(db)
	if got := ftStartupReply(t, p.Addr, ftStartup(196608, "user", ftUser(), "database", db), false); got.code != "53300" {
		t.Fatalf("with two clients again: %v, want 53300", got)
	}
	third.exec("SELECT 1")
}

// TestFaultClientKilledMidTransaction: the proxy closes the upstream
// connection, PostgreSQL rolls back, and nothing is left behind.
func TestFaultClientKilledMidTransaction(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int)")
	p := startProxy(t, shared)

	for _, mode := range []string{"reset", "close without Terminate"} {
		t.Run(mode, func(t *testing.T) {
			c := ftDial(t, p.Addr)
			c.login(db)
			rows, st := c.exec("BEGIN; INSERT INTO t VALUES (1); SELECT pg_backend_pid()")
			if st != 'T' {
				t.Fatalf("status %c", st)
			}
			if rows[0] != strconv.FormatUint(uint64(c.pid), 10) {
				t.Fatalf("BackendKeyData has pid %d, the backend is %s", c.pid, rows[0])
			}
			if mode == "reset" {
				c.conn.(*net.TCPConn).SetLinger(0)
			}
			c.conn.Close()

			ftBackendGone(t, admin, c.pid)
			if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
				t.Fatalf("%s rows committed by a dead client", n)
			}
			ftNoSessionsLeft(t, p)
		})
	}
}

// TestFaultUpstreamRestarted: every client of a restarted server gets a
// clean error and is disconnected; new clients work once it is back.
func TestFaultUpstreamRestarted(t *testing.T) {
	srv := privateServer(t)
	p := startProxy(t, srv)

	idle := ftDial(t, p.Addr)
	idle.login("postgres")
	busy := ftDial(t, p.Addr)
	busy.login("postgres")
	driver := connect(t, p.url("", "", "postgres"))
	scalar(t, driver, "SELECT 1")
	busy.send(&pgproto3.Query{String: "SELECT pg_sleep(30)"})
	admin := connect(t, srv.url("", "", "postgres"))
	ftWaitActive(t, admin, busy.pid)
	admin.Close(context.Background())

	if err := srv.cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL's fast shutdown tells each backend's client why.
	idle.expectFatal("57P01")
	busy.expectFatal("57P01")

	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()
	_, err := driver.Exec(ctx, "SELECT 1").ReadAll()
	if code := ftSQLState(err); code != "57P01" && code != "08006" {
		t.Fatalf("next query after the restart: %v (SQLSTATE %q), want 57P01 or 08006", err, code)
	}
	if !driver.IsClosed() {
		t.Fatal("driver connection still open")
	}

	again := ftDial(t, p.Addr)
	again.login("postgres")
	if rows, _ := again.exec("SELECT 3"); rows[0] != "3" {
		t.Fatalf("after the restart: %q", rows)
	}
	ftNoSessionsLeftExcept(t, p, 1)
}

// ftForwarder relays TCP connections to target and can cut them all: a
// network failure between the proxy and PostgreSQL, with no ErrorResponse
// from anyone.
type ftForwarder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func ftForward(t testing.TB, target string) *ftForwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &ftForwarder{ln: ln, target: target}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, in, out)
			f.mu.Unlock()
			f.wg.Add(2)
			go func() { defer f.wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer f.wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.cut()
		f.wg.Wait()
	})
	return f
}

// cut closes every relayed connection on both sides.
func (f *ftForwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// TestFaultUpstreamConnectionLost: the connection to PostgreSQL breaks
// without a word from the server. The client gets 08006 at once, whether
// idle or waiting for a result, and the server rolls back.
func TestFaultUpstreamConnectionLost(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int)")
	fwd := ftForward(t, ftDirectAddr(t))
	u, _ := url.Parse(shared.admin)
	u.Host = fwd.ln.Addr().String()
	p := startProxy(t, &server{admin: u.String()})

	idle := ftDial(t, p.Addr)
	idle.login(db)
	inTx := ftDial(t, p.Addr)
	inTx.login(db)
	inTx.exec("BEGIN; INSERT INTO t VALUES (1)")
	waiting := ftDial(t, p.Addr)
	waiting.login(db)
	waiting.send(&pgproto3.Query{String: "SELECT pg_sleep(30)"})
	ftWaitActive(t, admin, waiting.pid)

	start := time.Now()
	fwd.cut()
	for _, c := range []*ftConn{idle, inTx, waiting} {
		c.expectFatal("08006")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("clients told after %v", d)
	}
	ftBackendGone(t, admin, inTx.pid)
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
		t.Fatalf("%s rows committed over a broken connection", n)
	}
	ftNoSessionsLeft(t, p)

	again := ftDial(t, p.Addr)
	again.login(db)
	again.exec("SELECT 1")
}

func TestFaultUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	u, _ := url.Parse(shared.admin)
	u.Host = closed
	p := startProxy(t, &server{admin: u.String()})

	start := time.Now()
	got := ftStartupReply(t, p.Addr, ftStartup(196608, "user", ftUser(), "database", "postgres"), false)
	if got.code != "08006" || got.severity != "FATAL" || !got.closed {
		t.Fatalf("got %v, want FATAL 08006 and closed", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	ftNoSessionsLeft(t, p)
}

// TestFaultSilentClient: a client that connects and never sends its
// startup packet is dropped after the startup timeout and takes no slot.
func TestFaultSilentClient(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared, withMaxConnections(1), func(c *proxy.Config) { c.StartupTimeout = 300 * time.Millisecond })
	silent := ftDial(t, p.Addr)

	c := ftDial(t, p.Addr)
	c.login(db)
	c.exec("SELECT 1")

	start := time.Now()
	silent.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	if _, err := io.ReadAll(silent.conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("silent client: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent client dropped after %v", d)
	}
}

func TestFaultNegotiationDeclined(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	const gssenc, ssl = 80877104, 80877103
	request := func(code uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, 8)
		return binary.BigEndian.AppendUint32(b, code)
	}
	for _, seq := range []struct {
		name  string
		codes []uint32
	}{
		{"GSSENCRequest", []uint32{gssenc}},
		{"SSLRequest without a certificate", []uint32{ssl}},
		{"GSSENCRequest then SSLRequest", []uint32{gssenc, ssl}},
	} {
		t.Run(seq.name, func(t *testing.T) {
			c := ftDial(t, p.Addr)
			for _, code := range seq.codes {
				c.write(request(code))
				var answer [1]byte
				c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
				if _, err := io.ReadFull(c.conn, answer[:]); err != nil {
					t.Fatalf("request %d: %v", code, err)
				}
				if answer[0] != 'N' {
					t.Fatalf("request %d answered %q, want 'N'", code, answer[0])
				}
			}
			// The same socket goes on in the clear.
			c.login(db)
			c.exec("SELECT 1")
		})
	}
}

// ftRun runs sql on a pgconn connection in the background and reports
// its error and how long it took.
func ftRun(c *pgconn.PgConn, sql string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*ftTimeout)
		defer cancel()
		_, err := c.Exec(ctx, sql).ReadAll()
		done <- err
	}()
	return done
}

func ftWait(t testing.TB, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(ftTimeout):
		t.Fatalf("%s did not finish", what)
		return nil
	}
}

func TestCancelRunningQuery(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	p := startProxy(t, shared)
	a := connect(t, p.url("", "", db))
	if got := scalar(t, a, "SELECT pg_backend_pid()"); got != strconv.FormatUint(uint64(a.PID()), 10) {
		t.Fatalf("the client was given pid %d, its backend is %s", a.PID(), got)
	}

	done := ftRun(a, "SELECT pg_sleep(30)")
	ftWaitActive(t, admin, a.PID())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()
	if err := a.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err := ftWait(t, done, "the cancelled query")
	if ftSQLState(err) != "57014" {
		t.Fatalf("cancelled query: %v, want SQLSTATE 57014", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if got := scalar(t, a, "SELECT 'still here'"); got != "still here" {
		t.Fatalf("after the cancel: %q", got)
	}
}

// TestCancelWrongKey: a cancel request whose key the proxy did not give
// out cancels nothing, and its connection is closed without an answer.
func TestCancelWrongKey(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	p := startProxy(t, shared)
	a := connect(t, p.url("", "", db))
	secret := a.SecretKey()
	flipped := make([]byte, len(secret))
	for i, b := range secret {
		flipped[i] = ^b
	}

	// Long enough for every wrong key below to arrive while it runs.
	done := ftRun(a, "SELECT pg_sleep(2)")
	ftWaitActive(t, admin, a.PID())
	for name, pkt := range map[string][]byte{
		"wrong secret":       ftCancelPacket(a.PID(), flipped),
		"wrong pid":          ftCancelPacket(a.PID()+1, secret),
		"no secret":          ftCancelPacket(a.PID(), nil),
		"secret and garbage": ftCancelPacket(a.PID(), append(bytes.Clone(secret), 1, 2, 3, 4)),
	} {
		c := ftDial(t, p.Addr)
		c.write(pkt)
		c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
		if b, err := io.ReadAll(c.conn); len(b) > 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: answered %q, %v", name, b, err)
		}
	}
	// The proxy's key is its own: the upstream does not know it either.
	c := ftDial(t, ftDirectAddr(t))
	c.write(ftCancelPacket(a.PID(), secret))
	c.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	io.ReadAll(c.conn)
	ftWaitActive(t, admin, a.PID()) // still running: the test proved something

	if err := ftWait(t, done, "the query"); err != nil {
		t.Fatalf("a cancel with a wrong key stopped the query: %v", err)
	}
	if got := scalar(t, a, "SELECT 'fine'"); got != "fine" {
		t.Fatalf("afterwards: %q", got)
	}
}

// TestCancelOtherSession: the key one client got cancels its own query and
// never another session's.
func TestCancelOtherSession(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	p := startProxy(t, shared)
	a := connect(t, p.url("", "", db))
	b := connect(t, p.url("", "", db))
	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()

	// A is idle: cancelling it must not touch B.
	bDone := ftRun(b, "SELECT pg_sleep(1)")
	ftWaitActive(t, admin, b.PID())
	if err := a.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	// B's pid with A's secret is no key at all.
	raw := ftDial(t, p.Addr)
	raw.write(ftCancelPacket(b.PID(), a.SecretKey()))
	raw.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	io.ReadAll(raw.conn)
	if err := ftWait(t, bDone, "B's query"); err != nil {
		t.Fatalf("cancelling A hit B: %v", err)
	}

	// Both busy: only A stops.
	aDone := ftRun(a, "SELECT pg_sleep(30)")
	bDone = ftRun(b, "SELECT pg_sleep(1)")
	ftWaitActive(t, admin, a.PID())
	ftWaitActive(t, admin, b.PID())
	if err := a.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ftWait(t, aDone, "A's query"); ftSQLState(err) != "57014" {
		t.Fatalf("A: %v, want 57014", err)
	}
	if err := ftWait(t, bDone, "B's query"); err != nil {
		t.Fatalf("B was cancelled with A: %v", err)
	}
}

// TestShutdownDrains: Shutdown ends an idle session at once with 57P01,
// refuses new clients, lets a transaction run to its COMMIT, then ends that
// session too, and returns nil.
func TestShutdownDrains(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int)")
	p := startProxy(t, shared)

	idle := ftDial(t, p.Addr)
	idle.login(db)
	busy := ftDial(t, p.Addr)
	busy.login(db)
	busy.exec("BEGIN; INSERT INTO t VALUES (1)")
	running := ftDial(t, p.Addr)
	running.login(db)
	running.send(&pgproto3.Query{String: "SELECT pg_sleep(1)"})
	ftWaitActive(t, admin, running.pid)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
		defer cancel()
		done <- p.Shutdown(ctx)
	}()

	idle.expectFatal("57P01")
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted during shutdown")
	}

	// A statement that was running finishes, with its result.
	if r := running.readResult(); r.err != nil || len(r.rows) != 1 {
		t.Fatalf("running statement: %+v", r)
	}
	running.expectFatal("57P01")

	if _, st := busy.exec("INSERT INTO t VALUES (2)"); st != 'T' {
		t.Fatalf("status %c", st)
	}
	if _, st := busy.exec("COMMIT"); st != 'I' {
		t.Fatalf("status %c after COMMIT", st)
	}
	busy.expectFatal("57P01")

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil", err)
		}
	case <-time.After(ftTimeout):
		t.Fatal("Shutdown did not return")
	}
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "2" {
		t.Fatalf("%s rows committed, want 2", n)
	}
	if n := p.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions counted after Shutdown", n)
	}
}

// TestShutdownTimeout: a transaction that does not end by the deadline is
// cut off; Shutdown says so, and nothing of it is committed.
func TestShutdownTimeout(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int)")
	p := startProxy(t, shared)
	stuck := ftDial(t, p.Addr)
	stuck.login(db)
	stuck.exec("BEGIN; INSERT INTO t VALUES (3)")

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown returned after %v", d)
	}
	stuck.expectFatal("57P01")
	ftBackendGone(t, admin, stuck.pid)
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
		t.Fatalf("%s rows of an unfinished transaction committed", n)
	}
	if n := p.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions counted after Shutdown", n)
	}
}

// TestShutdownUnsyncedBatch: an extended-protocol batch that has executed
// but not yet reached its Sync is a running transaction (PostgreSQL holds
// an implicit transaction open until the Sync), even though the last
// ReadyForQuery said idle. Shutdown must let it reach its Sync and commit.
func TestShutdownUnsyncedBatch(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int)")
	p := startProxy(t, shared)
	probe := ftDial(t, p.Addr)
	probe.login(db)

	c := ftDial(t, p.Addr)
	c.login(db)
	c.send(
		&pgproto3.Parse{Query: "INSERT INTO t VALUES (7)"},
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Flush{},
	)
	for _, want := range []string{"*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.CommandComplete"} {
		if got := fmt.Sprintf("%T", c.recv()); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
		defer cancel()
		done <- p.Shutdown(ctx)
	}()
	// Once the idle probe has been told, Shutdown has looked at the
	// sessions; the short pause covers the ones it looks at after it.
	probe.expectFatal("57P01")
	time.Sleep(200 * time.Millisecond)

	c.send(&pgproto3.Sync{})
	msg := c.recv()
	if z, ok := msg.(*pgproto3.ReadyForQuery); !ok || z.TxStatus != 'I' {
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("the batch was cut off before its Sync: %s %s %q", e.Severity, e.Code, e.Message)
		}
		t.Fatalf("got %T %+v, want ReadyForQuery", msg, msg)
	}
	c.expectFatal("57P01")
	if err := ftWait(t, done, "Shutdown"); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "1" {
		t.Fatalf("%s rows committed, want the batch's 1", n)
	}
}

// TestShutdownSilentConnection: a connection that has not sent its startup
// packet has no transaction to finish; it must not hold Shutdown until the
// deadline.
func TestShutdownSilentConnection(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	silent := ftDial(t, p.Addr)
	// Connections are accepted in order: once this one is logged in, the
	// silent one has been accepted too.
	idle := ftDial(t, p.Addr)
	idle.login(db)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	if d := time.Since(start); err != nil || d > 2*time.Second {
		t.Fatalf("Shutdown = %v after %v, want nil at once", err, d)
	}
	idle.expectFatal("57P01")
	silent.conn.SetReadDeadline(time.Now().Add(ftTimeout))
	if _, err := io.ReadAll(silent.conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("silent connection: %v", err)
	}
}

// waitingRules is an engine whose statements wait for their context: the
// engine's work, cut off when the server closes its connections.
type waitingRules struct {
	auditRules
	started chan struct{}
	ended   chan error
}

func (r *waitingRules) Open(context.Context, stmt.SessionInfo) stmt.Session { return r }

func (r *waitingRules) Exec(ctx context.Context, c stmt.Conn, st stmt.Statement) (*stmt.Result, error) {
	close(r.started)
	select {
	case <-ctx.Done():
		r.ended <- ctx.Err()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		r.ended <- nil
		return nil, nil
	}
}

// TestShutdownEngineContext: the engine runs a statement under a context
// that comes from the server: a Shutdown whose deadline passes cancels it,
// and the statement's work stops there instead of outliving the session.
func TestShutdownEngineContext(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (v int); CREATE TABLE audit (stmt text)")
	r := &waitingRules{started: make(chan struct{}), ended: make(chan error, 1)}
	p := startProxy(t, shared, withRules(r))
	c := ftDial(t, p.Addr)
	c.login(db)
	c.send(&pgproto3.Query{String: "INSERT INTO t VALUES (1) /*engine*/"})
	<-r.started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	select {
	case err := <-r.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the engine's statement ended with %v, want its context canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the engine's statement still runs after Shutdown")
	}
}
