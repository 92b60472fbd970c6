package tests

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/outbox"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/proxy"
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

// snHalfClosed logs in to url as a SCRAM role, then, on the raw socket,
// sends a Query and an extended-protocol batch, shuts down its sending
// side, and returns what it reads until the server closes.
func snHalfClosed(t *testing.T, url string) []string {
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
	fe.Send(&pgproto3.Query{String: "SELECT 1; SELECT pg_sleep(0.2)::text, 2"})
	fe.Send(&pgproto3.Parse{Query: "SELECT $1::int + 1"})
	fe.Send(&pgproto3.Bind{Parameters: [][]byte{[]byte("41")}})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
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

// TestSecurityNetHalfClose: a client that sends its requests and shuts
// down its sending side (TCP half-close) gets every answer, through the
// proxy as from PostgreSQL, and then the connection closes.
func TestSecurityNetHalfClose(t *testing.T) {
	s := ownedServer(t)
	p := startProxy(t, s)
	direct := snHalfClosed(t, s.url(scramUser, scramPass, "postgres"))
	proxied := snHalfClosed(t, p.url(scramUser, scramPass, "postgres"))
	want := "RowDescription DataRow 1 CommandComplete RowDescription DataRow 2 CommandComplete ReadyForQuery " +
		"ParseComplete BindComplete DataRow 42 CommandComplete ReadyForQuery"
	if got := strings.Join(direct, " "); got != want {
		t.Fatalf("PostgreSQL answered %s", got)
	}
	if got := strings.Join(proxied, " "); got != want {
		t.Fatalf("through the proxy: %s\nwant (as PostgreSQL): %s", got, want)
	}
	ftEventually(t, "the session gone", func() bool { return p.ActiveSessions() == 0 })
}
