package tests

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// rawClient is a hand-driven protocol client, for input no driver sends.
type rawClient struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

// startup logs in as the trusted superuser and reads up to ReadyForQuery.
func (c *rawClient) startup(t *testing.T, db string) {
	t.Helper()
	c.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "postgres", "database": db}})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("startup: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			return
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup refused: %s %s", m.Code, m.Message)
		}
	}
}

// expectFatal reads until an ErrorResponse, which must carry code, and then
// requires the connection to be closed.
func (c *rawClient) expectFatal(t *testing.T, code string) *pgproto3.ErrorResponse {
	t.Helper()
	var got *pgproto3.ErrorResponse
	for got == nil {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("want ErrorResponse %s, got %v", code, err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			got = e
		}
	}
	if got.Code != code || got.Severity != "FATAL" {
		t.Fatalf("got %s %s %q, want FATAL %s", got.Severity, got.Code, got.Message, code)
	}
	c.expectClosed(t)
	return got
}

func (c *rawClient) expectClosed(t *testing.T) {
	t.Helper()
	var b [1]byte
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Read(b[:]); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection not closed: read returned %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// mustQuery runs sql through a pgconn connection and returns the first
// column of the first row.
func mustQuery(t *testing.T, c *pgconn.PgConn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	last := res[len(res)-1]
	if len(last.Rows) == 0 {
		return ""
	}
	return string(last.Rows[0][0])
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestBadInput: each kind of bad input ends only its own session, with the
// SQLSTATE PostgreSQL would use, while a bystander session keeps working.
func TestBadInput(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared, withMaxMessage(1<<20))
	bystander := connect(t, p.url("", "", db))

	frame := func(typ byte, body []byte) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
		return append(b, body...)
	}
	cases := []struct {
		name  string
		login bool
		send  []byte
		code  string
	}{
		{"message over the limit", true, frame('Q', append([]byte(strings.Repeat("x", 2<<20)), 0)), "54000"},
		{"length below four", true, []byte{'Q', 0, 0, 0, 2}, "08P01"},
		{"unknown message type", true, frame('z', nil), "08P01"},
		{"password message after login", true, frame('p', []byte("secret\x00")), "08P01"},
		{"startup packet too long", false, []byte{0, 1, 0, 0, 0, 3, 0, 0}, "08P01"},
		{"unsupported protocol version", false, []byte{0, 0, 0, 8, 0, 2, 0, 0}, "08P01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, p.Addr)
			if tc.login {
				c.startup(t, db)
			}
			c.conn.Write(tc.send)
			e := c.expectFatal(t, tc.code)
			if e.Message == "" {
				t.Fatal("error without a message")
			}
			if got := mustQuery(t, bystander, "SELECT 1"); got != "1" {
				t.Fatalf("bystander got %q", got)
			}
		})
	}

	t.Run("truncated message", func(t *testing.T) {
		c := dialRaw(t, p.Addr)
		c.startup(t, db)
		// A header promising 100 bytes, 3 of them, then half-close.
		c.conn.Write([]byte{'Q', 0, 0, 0, 104, 'S', 'E', 'L'})
		c.conn.(*net.TCPConn).CloseWrite()
		c.expectFatal(t, "08P01")
		if got := mustQuery(t, bystander, "SELECT 2"); got != "2" {
			t.Fatalf("bystander got %q", got)
		}
	})
}

func TestMaxConnections(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared, withMaxConnections(2))
	first := connect(t, p.url("", "", db))
	connect(t, p.url("", "", db))

	_, err := pgconn.Connect(context.Background(), p.url("", "", db))
	if sqlState(err) != "53300" {
		t.Fatalf("third connection: %v, want SQLSTATE 53300", err)
	}
	first.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := pgconn.Connect(context.Background(), p.url("", "", db))
		if err == nil {
			c.Close(context.Background())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a client left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientKilledMidTransaction: the proxy must close the upstream
// connection so PostgreSQL rolls back; nothing is committed, nothing leaks.
func TestClientKilledMidTransaction(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	direct := connect(t, shared.url("", "", db))
	mustQuery(t, direct, "CREATE TABLE t (v int)")

	c := dialRaw(t, p.Addr)
	c.startup(t, db)
	c.fe.Send(&pgproto3.Query{String: "BEGIN; INSERT INTO t VALUES (1); SELECT pg_backend_pid()"})
	c.fe.Flush()
	var pid string
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := msg.(*pgproto3.DataRow); ok {
			pid = string(r.Values[0])
		}
		if z, ok := msg.(*pgproto3.ReadyForQuery); ok {
			if z.TxStatus != 'T' {
				t.Fatalf("tx status %c", z.TxStatus)
			}
			break
		}
	}
	c.conn.(*net.TCPConn).SetLinger(0)
	c.conn.Close()

	deadline := time.Now().Add(10 * time.Second)
	for mustQuery(t, direct, "SELECT count(*) FROM pg_stat_activity WHERE pid = "+pid) != "0" {
		if time.Now().After(deadline) {
			t.Fatal("upstream backend still there after the client died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := mustQuery(t, direct, "SELECT count(*) FROM t"); n != "0" {
		t.Fatalf("%s rows committed by a dead client", n)
	}
	for p.ActiveSessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still counted", p.ActiveSessions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUpstreamRestarted(t *testing.T) {
	srv := privateServer(t)
	p := startProxy(t, srv)
	c := connect(t, p.url("", "", "postgres"))
	mustQuery(t, c, "SELECT 1")

	if err := srv.cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Exec(ctx, "SELECT 1").ReadAll()
	if code := sqlState(err); code != "57P01" && code != "08006" {
		// The server's FATAL may already have been read by the driver,
		// which then reports the closed connection instead.
		if !c.IsClosed() {
			t.Fatalf("after restart: %v (SQLSTATE %q), connection still open", err, code)
		}
	}
	if !c.IsClosed() {
		t.Fatal("connection not closed after the upstream went away")
	}
	again := connect(t, p.url("", "", "postgres"))
	if got := mustQuery(t, again, "SELECT 3"); got != "3" {
		t.Fatalf("new client after restart got %q", got)
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	s := &server{admin: "postgres://postgres@" + closed + "/postgres?sslmode=disable"}
	p := startProxy(t, s)
	start := time.Now()
	_, err = pgconn.Connect(context.Background(), p.url("", "", "postgres"))
	if sqlState(err) != "08006" {
		t.Fatalf("got %v, want SQLSTATE 08006", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
}

func TestCancelRequest(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	a := connect(t, p.url("", "", db))
	b := connect(t, p.url("", "", db))

	// B's slow query must survive A being cancelled.
	bDone := make(chan error, 1)
	go func() {
		_, err := b.Exec(context.Background(), "SELECT pg_sleep(1)").ReadAll()
		bDone <- err
	}()

	aDone := make(chan error, 1)
	go func() {
		_, err := a.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		aDone <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := a.CancelRequest(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-aDone:
		if sqlState(err) != "57014" {
			t.Fatalf("cancelled query: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not stop the query")
	}
	if err := <-bDone; err != nil {
		t.Fatalf("the other session was hit: %v", err)
	}
	if got := mustQuery(t, a, "SELECT 'still here'"); got != "still here" {
		t.Fatalf("after cancel: %q", got)
	}

	t.Run("wrong secret cancels nothing", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, err := a.Exec(context.Background(), "SELECT pg_sleep(1)").ReadAll()
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		raw := dialRaw(t, p.Addr)
		secret := a.SecretKey()
		pkt := make([]byte, 12, 12+len(secret))
		binary.BigEndian.PutUint32(pkt[4:], 80877102)
		binary.BigEndian.PutUint32(pkt[8:], a.PID())
		for _, b := range secret {
			pkt = append(pkt, ^b)
		}
		binary.BigEndian.PutUint32(pkt[0:], uint32(len(pkt)))
		raw.conn.Write(pkt)
		raw.expectClosed(t)
		if err := <-done; err != nil {
			t.Fatalf("a cancel with the wrong secret cancelled the query: %v", err)
		}
	})
}

func TestNegotiationRequestsDeclined(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	for _, code := range []uint32{80877104, 80877103} { // GSSENCRequest, SSLRequest
		c := dialRaw(t, p.Addr)
		pkt := make([]byte, 8)
		binary.BigEndian.PutUint32(pkt[0:], 8)
		binary.BigEndian.PutUint32(pkt[4:], code)
		c.conn.Write(pkt)
		var answer [1]byte
		if _, err := io.ReadFull(c.conn, answer[:]); err != nil || answer[0] != 'N' {
			t.Fatalf("request %d: answer %q, %v", code, answer[0], err)
		}
		c.startup(t, db) // the same socket continues in the clear
	}
}

// TestGracefulShutdown: idle sessions end at once with 57P01, a session in
// a transaction may finish it, and new clients are refused.
func TestGracefulShutdown(t *testing.T) {
	db := shared.newDB(t)
	direct := connect(t, shared.url("", "", db))
	mustQuery(t, direct, "CREATE TABLE t (v int)")

	t.Run("drain", func(t *testing.T) {
		p := startProxy(t, shared)
		idle := connect(t, p.url("", "", db))
		busy := connect(t, p.url("", "", db))
		mustQuery(t, busy, "BEGIN; INSERT INTO t VALUES (1)")

		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- p.Shutdown(ctx)
		}()
		waitClosed(t, idle)
		if _, err := pgconn.Connect(context.Background(), p.url("", "", db)); err == nil {
			t.Fatal("a new client was accepted during shutdown")
		}
		mustQuery(t, busy, "INSERT INTO t VALUES (2)")
		mustQuery(t, busy, "COMMIT")
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		waitClosed(t, busy)
		if n := mustQuery(t, direct, "SELECT count(*) FROM t"); n != "2" {
			t.Fatalf("%s rows committed, want 2", n)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		p := startProxy(t, shared)
		stuck := connect(t, p.url("", "", db))
		mustQuery(t, stuck, "BEGIN; INSERT INTO t VALUES (3)")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want the deadline", err)
		}
		waitClosed(t, stuck)
		if n := mustQuery(t, direct, "SELECT count(*) FROM t WHERE v = 3"); n != "0" {
			t.Fatal("an unfinished transaction was committed")
		}
	})
}

// waitClosed requires the server side to have closed c, with 57P01 if the
// driver still had it to read.
func waitClosed(t *testing.T, c *pgconn.PgConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Exec(ctx, "SELECT 1").ReadAll()
	if err == nil {
		t.Fatal("session still open")
	}
	if code := sqlState(err); code != "" && code != "57P01" {
		t.Fatalf("closed with %v", err)
	}
}
