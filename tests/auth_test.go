package tests

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/lib/pq"
	"github.com/pgrules/pgrules/internal/tempdb"
	"github.com/pgrules/pgrules/proxy"
)

// The proxy holds no passwords: whatever the server asks for is relayed
// between client and server. These tests log in through the proxy as the
// roles pg_hba.conf holds to md5, scram-sha-256 and password, with every
// client, over plain TCP and over TLS ending at the proxy.

var auUsers = []struct{ method, user, password string }{
	{"md5", md5User, md5Password},
	{"scram-sha-256", scramUser, scramPass},
	{"password", clearUser, clearPass},
}

// auResult is the outcome of one login attempt.
type auResult struct {
	user    string // current_user of the session; "" when the login failed
	ssl     bool   // the client's connection is TLS
	code    string // SQLSTATE of a failed login, for clients that keep it
	message string // a failed login as the client reports it
}

type auClient struct {
	name string
	// codes: the client keeps the SQLSTATE of a failed connection (libpq
	// keeps only the text).
	codes bool
	login func(t *testing.T, url, password string, env ...string) auResult
}

var auClients = []auClient{
	{"pgx", true, auPgx},
	{"lib/pq", true, auLibpq},
	{"psql", false, auPsql},
	{"psycopg2", false, func(t *testing.T, url, password string, env ...string) auResult {
		return auScript(t, "psycopg2", auWithPassword(url, password), env...)
	}},
	{"node-postgres", true, func(t *testing.T, url, password string, env ...string) auResult {
		return auScript(t, "node-postgres", auWithPassword(url, password), env...)
	}},
}

func auClientNamed(name string) auClient {
	for _, c := range auClients {
		if c.name == name {
			return c
		}
	}
	panic("no client " + name)
}

// TestAuthRelayed: each role gets its own method's request through the
// proxy; every client logs in with the right password and is refused, with
// the server's error, for a wrong one, over plain TCP and over TLS.
func TestAuthRelayed(t *testing.T) {
	srv := ownedServer(t)
	cert := cmSelfSigned(t)
	p := startProxy(t, srv, withTLS(cert.config))
	ctx := context.Background()
	bystander := connect(t, p.url(scramUser, scramPass, "postgres"))

	requests := map[string]func(pgproto3.BackendMessage) bool{
		"md5": func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.AuthenticationMD5Password); return ok },
		"scram-sha-256": func(m pgproto3.BackendMessage) bool {
			sasl, ok := m.(*pgproto3.AuthenticationSASL)
			return ok && slices.Equal(sasl.AuthMechanisms, []string{"SCRAM-SHA-256"})
		},
		"password": func(m pgproto3.BackendMessage) bool {
			_, ok := m.(*pgproto3.AuthenticationCleartextPassword)
			return ok
		},
	}
	for _, u := range auUsers {
		t.Run("request/"+u.method, func(t *testing.T) {
			if m := auFirstRequest(t, p.Addr, u.user); !requests[u.method](m) {
				t.Fatalf("first message to %s is %#v, want the server's %s request", u.user, m, u.method)
			}
		})
	}

	t.Run("login", func(t *testing.T) {
		for _, sslmode := range []string{"disable", "require"} {
			for _, u := range auUsers {
				for _, c := range auClients {
					t.Run(fmt.Sprintf("%s/%s/%s", sslmode, u.method, c.name), func(t *testing.T) {
						t.Parallel()
						url := cmSSLMode(p.url(u.user, "", "postgres"), sslmode)
						want := auResult{user: u.user, ssl: sslmode == "require"}
						if got := c.login(t, url, u.password); got != want {
							t.Errorf("right password: %+v, want %+v", got, want)
						}
						bad := c.login(t, url, "not "+u.password)
						auCheckRefused(t, c, u.user, bad)
					})
				}
			}
		}
	})

	// The failed logins ended only their own connections.
	if got := scalar(t, bystander, "SELECT current_user"); got != scramUser {
		t.Fatalf("bystander session: current_user = %q", got)
	}
	after, err := pgconn.Connect(ctx, p.url(md5User, md5Password, "postgres"))
	if err != nil {
		t.Fatalf("login after the failures: %v", err)
	}
	after.Close(ctx)
}

// auCheckRefused asserts that a login with a wrong password failed with the
// server's own error, relayed: SQLSTATE 28P01 and its message.
func auCheckRefused(t *testing.T, c auClient, user string, r auResult) {
	t.Helper()
	if r.user != "" {
		t.Errorf("wrong password: logged in as %q", r.user)
		return
	}
	if c.codes && r.code != "28P01" {
		t.Errorf("wrong password: SQLSTATE %q, want 28P01 (%s)", r.code, r.message)
	}
	if want := `password authentication failed for user "` + user + `"`; !strings.Contains(r.message, want) {
		t.Errorf("wrong password: %q lacks the server's %q", r.message, want)
	}
}

// TestAuthConcurrentLogins: sessions authenticating at the same time, with
// different methods and right and wrong passwords, each get their own
// server's verdict and their own backend.
func TestAuthConcurrentLogins(t *testing.T) {
	srv := ownedServer(t)
	p := startProxy(t, srv)
	var wg sync.WaitGroup
	errs := make(chan error, 48)
	for i := range 48 {
		u := auUsers[i%len(auUsers)]
		wrong := i%2 == 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			password := u.password
			if wrong {
				password = "not " + password
			}
			c, err := pgconn.Connect(ctx, p.url(u.user, password, "postgres"))
			if wrong {
				if code := cmSQLState(err); code != "28P01" {
					errs <- fmt.Errorf("%s with a wrong password: %v, want SQLSTATE 28P01", u.user, err)
				}
				if c != nil {
					c.Close(ctx)
				}
				return
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %v", u.user, err)
				return
			}
			defer c.Close(ctx)
			res, err := c.Exec(ctx, "SELECT current_user, pg_backend_pid()").ReadAll()
			if err != nil {
				errs <- fmt.Errorf("%s: %v", u.user, err)
				return
			}
			row := res[0].Rows[0]
			if got, pid := string(row[0]), fmt.Sprint(c.PID()); got != u.user || string(row[1]) != pid {
				errs <- fmt.Errorf("logged in as %s (backend %s), got user %s on backend %s", u.user, pid, got, row[1])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTLSCertificate: a client that verifies the proxy's certificate
// (sslmode=verify-full) finds the one the proxy was given.
func TestTLSCertificate(t *testing.T) {
	cert := cmSelfSigned(t)
	p := startProxy(t, ownedServer(t), withTLS(cert.config))
	verified := strings.Replace(p.url("", "", "postgres"), "sslmode=disable", "sslmode=verify-full&sslrootcert="+url.QueryEscape(cert.caFile), 1)

	t.Run("pgx", func(t *testing.T) {
		c := connect(t, verified)
		tc, ok := c.Conn().(*tls.Conn)
		if !ok {
			t.Fatalf("connection is %T, not TLS", c.Conn())
		}
		if peer := tc.ConnectionState().PeerCertificates; len(peer) == 0 || !bytes.Equal(peer[0].Raw, cert.der) {
			t.Fatal("the proxy presented another certificate than its own")
		}
		if got := scalar(t, c, "SELECT 6 * 7"); got != "42" {
			t.Fatalf("SELECT over TLS = %q", got)
		}
	})
	t.Run("psql", func(t *testing.T) {
		out, err := cmCommand(t, nil, "psql", "-X", "-A", "-t", "-w", "-d", verified, "-c", "SELECT 6 * 7", "-c", `\conninfo`).CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		if !strings.HasPrefix(string(out), "42\n") || !strings.Contains(string(out), "SSL connection") {
			t.Fatalf("psql over verified TLS printed:\n%s", out)
		}
	})
}

// TestTLSChannelBinding: the client's TLS ends at the proxy, so SCRAM with
// channel binding cannot work through it. libpq's default (prefer) must
// still log in; channel_binding=require must fail at once, saying why.
func TestTLSChannelBinding(t *testing.T) {
	srv := ownedServer(t)
	cert := cmSelfSigned(t)
	p := startProxy(t, srv, withTLS(cert.config))
	db := srv.newDB(t)
	base := cmSSLMode(p.url(scramUser, "", db), "require")

	t.Run("prefer", func(t *testing.T) {
		for _, name := range []string{"pgx", "psql", "psycopg2"} {
			c := auClientNamed(name)
			want := auResult{user: scramUser, ssl: true}
			if got := c.login(t, base+"&channel_binding=prefer", scramPass); got != want {
				t.Errorf("%s, channel_binding=prefer: %+v, want %+v", name, got, want)
			}
		}
		// node-postgres binds only when asked to, and only to a PLUS offer.
		node := auClientNamed("node-postgres")
		want := auResult{user: scramUser, ssl: true}
		if got := node.login(t, base, scramPass, "PGRULES_CHANNEL_BINDING=1"); got != want {
			t.Errorf("node-postgres, enableChannelBinding: %+v, want %+v", got, want)
		}
	})
	t.Run("require", func(t *testing.T) {
		refusals := map[string]string{
			"pgx":      "channel binding required but server does not support SCRAM-SHA-256-PLUS",
			"psql":     "channel binding is required, but server did not offer an authentication method that supports channel binding",
			"psycopg2": "channel binding is required, but server did not offer an authentication method that supports channel binding",
		}
		for name, want := range refusals {
			start := time.Now()
			got := auClientNamed(name).login(t, base+"&channel_binding=require", scramPass)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("%s: channel_binding=require took %v to fail", name, took)
			}
			if got.user != "" || !strings.Contains(got.message, want) {
				t.Errorf("%s, channel_binding=require: %+v, want a failure saying %q", name, got, want)
			}
		}
	})
	direct := connect(t, srv.url("", "", db))
	cmNoBackendsLeft(t, direct)
	c := connect(t, cmSSLMode(p.url(scramUser, scramPass, db), "require"))
	if got := scalar(t, c, "SELECT current_user"); got != scramUser {
		t.Fatalf("login after the refusals: current_user = %q", got)
	}
}

// TestTLSUpstreamChannelBinding: the proxy talks TLS to an upstream that
// offers SCRAM-SHA-256-PLUS. Channel binding cannot pass through a proxy
// with a certificate of its own: the offer is withheld, clients that would
// not bind get in, and a TLS client that could have bound gets pgrules' own
// error saying what to do (the server would only call it a negotiation
// error). A proxy that presents the upstream's own certificate lets binding
// pass end to end, even with channel_binding=require.
func TestTLSUpstreamChannelBinding(t *testing.T) {
	up, upCert := auTLSServer(t)
	upstreamTLS := func(c *proxy.Config) { c.UpstreamSSLMode = "require" }
	ctx := context.Background()

	// The premise: the server itself offers and honours channel binding.
	direct, err := pgconn.Connect(ctx, cmSSLMode(up.url(scramUser, scramPass, "postgres"), "require")+"&channel_binding=require")
	if err != nil {
		t.Fatalf("direct login with channel_binding=require: %v", err)
	}
	direct.Close(ctx)

	t.Run("own certificate", func(t *testing.T) {
		p := startProxy(t, up, withTLS(cmSelfSigned(t).config), upstreamTLS)
		m := auFirstRequest(t, p.Addr, scramUser)
		if sasl, ok := m.(*pgproto3.AuthenticationSASL); !ok || !slices.Equal(sasl.AuthMechanisms, []string{"SCRAM-SHA-256"}) {
			t.Fatalf("SASL offer through the proxy: %#v, want SCRAM-SHA-256 only", m)
		}
		t.Run("plain client", func(t *testing.T) {
			c := connect(t, p.url(scramUser, scramPass, "postgres"))
			if got := scalar(t, c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "t" {
				t.Fatalf("the proxy's upstream connection is not TLS (pg_stat_ssl.ssl = %q)", got)
			}
		})
		tlsURL := cmSSLMode(p.url(scramUser, "", "postgres"), "require")
		t.Run("tls client that could bind", func(t *testing.T) {
			for _, c := range auClients {
				if c.name == "lib/pq" {
					continue // lib/pq never binds: covered below
				}
				t.Run(c.name, func(t *testing.T) {
					got := c.login(t, tlsURL, scramPass, "PGRULES_CHANNEL_BINDING=1")
					if got.user != "" || (c.codes && got.code != "28000") || !strings.Contains(got.message, "cannot pass through pgrules") {
						t.Fatalf("got %+v, want pgrules' 28000 channel binding error", got)
					}
				})
			}
		})
		// Clients that do not try to bind (gs2 flag "n") get in. lib/pq
		// never binds; node-postgres binds only when enabled.
		t.Run("tls client without channel binding", func(t *testing.T) {
			want := auResult{user: scramUser, ssl: true}
			for _, c := range auClients {
				t.Run(c.name, func(t *testing.T) {
					u := tlsURL
					if c.name != "lib/pq" && c.name != "node-postgres" {
						u += "&channel_binding=disable"
					}
					if got := c.login(t, u, scramPass); got != want {
						t.Errorf("channel binding disabled: %+v, want %+v", got, want)
					}
				})
			}
		})
	})

	t.Run("upstream's certificate", func(t *testing.T) {
		p := startProxy(t, up, withTLS(upCert.config), upstreamTLS)
		c, err := pgconn.Connect(ctx, cmSSLMode(p.url(scramUser, scramPass, "postgres"), "require")+"&channel_binding=require")
		if err != nil {
			t.Fatalf("channel_binding=require through a proxy with the upstream's certificate: %v", err)
		}
		defer c.Close(ctx)
		if got := scalar(t, c, "SELECT current_user"); got != scramUser {
			t.Fatalf("current_user = %q", got)
		}
	})
}

// TestTLSNoCertificate: a proxy without a certificate declines SSLRequest
// with 'N', as a server without ssl does, and the client may go on in the
// clear on the same connection.
func TestTLSNoCertificate(t *testing.T) {
	p := startProxy(t, ownedServer(t))

	t.Run("SSLRequest", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		var answer [1]byte
		if _, err := io.ReadFull(conn, answer[:]); err != nil || answer[0] != 'N' {
			t.Fatalf("answer to SSLRequest: %q, %v; want 'N'", answer[:], err)
		}
		fe := pgproto3.NewFrontend(conn, conn)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": tempdb.SuperUser, "database": "postgres"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("startup after 'N': %v", err)
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("startup after 'N': %s %s", e.Code, e.Message)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	})
	t.Run("require", func(t *testing.T) {
		url := cmSSLMode(p.url("", "", "postgres"), "require")
		if r := auPgx(t, url, ""); r.user != "" || !strings.Contains(r.message, "server refused TLS connection") {
			t.Errorf("pgx, sslmode=require: %+v", r)
		}
		for _, name := range []string{"psql", "psycopg2"} {
			if r := auClientNamed(name).login(t, url, ""); r.user != "" || !strings.Contains(r.message, "server does not support SSL, but SSL was required") {
				t.Errorf("%s, sslmode=require: %+v", name, r)
			}
		}
	})
	t.Run("prefer", func(t *testing.T) {
		url := cmSSLMode(p.url("", "", "postgres"), "prefer")
		want := auResult{user: tempdb.SuperUser}
		for _, name := range []string{"pgx", "psql", "psycopg2"} {
			if got := auClientNamed(name).login(t, url, ""); got != want {
				t.Errorf("%s, sslmode=prefer: %+v, want %+v", name, got, want)
			}
		}
	})
}

// auFirstRequest sends a StartupMessage for user through the proxy and
// returns the first message that comes back.
func auFirstRequest(t *testing.T, addr, user string) pgproto3.BackendMessage {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": user, "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	if err != nil {
		t.Fatalf("startup as %s: %v", user, err)
	}
	return m
}

func auWithPassword(raw, password string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	if password != "" {
		u.User = url.UserPassword(u.User.Username(), password)
	}
	return u.String()
}

func auFailure(err error) auResult {
	r := auResult{message: err.Error()}
	var pgErr *pgconn.PgError
	var pqErr *pq.Error
	switch {
	case errors.As(err, &pgErr):
		r.code = pgErr.Code
	case errors.As(err, &pqErr):
		r.code = string(pqErr.Code)
	}
	return r
}

func auPgx(t *testing.T, url, password string, _ ...string) auResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, auWithPassword(url, password))
	if err != nil {
		return auFailure(err)
	}
	defer c.Close(context.Background())
	_, ssl := c.Conn().(*tls.Conn)
	return auResult{user: scalar(t, c, "SELECT current_user"), ssl: ssl}
}

func auLibpq(t *testing.T, url, password string, _ ...string) auResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	connector, err := pq.NewConnector(auWithPassword(url, password))
	if err != nil {
		t.Fatal(err)
	}
	sniff := &cmTLSSniffer{}
	connector.Dialer(sniff)
	db := sql.OpenDB(connector)
	defer db.Close()
	var user string
	if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&user); err != nil {
		return auFailure(err)
	}
	return auResult{user: user, ssl: sniff.sawTLS()}
}

// auPsql logs in the way a shell user does, with the password in
// PGPASSWORD, and asks psql itself (\conninfo) whether it uses TLS.
func auPsql(t *testing.T, url, password string, env ...string) auResult {
	cmd := cmCommand(t, append([]string{"PGPASSWORD=" + password}, env...),
		"psql", "-X", "-A", "-t", "-w", "-d", url, "-c", "SELECT current_user", "-c", `\conninfo`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("psql failed other than as a failed connection does (exit status 2): %v", err)
		}
		return auResult{message: stderr.String()}
	}
	user, rest, _ := strings.Cut(string(out), "\n")
	return auResult{user: user, ssl: strings.Contains(rest, "SSL connection")}
}

func auScript(t *testing.T, client, url string, env ...string) auResult {
	steps := cmScript(t, client, "auth", url, env...)
	if e, ok := steps["connect_error"]; ok {
		var r struct {
			Code    *string
			Message string
		}
		if err := json.Unmarshal([]byte(e), &r); err != nil {
			t.Fatal(err)
		}
		res := auResult{message: r.Message}
		if r.Code != nil {
			res.code = *r.Code
		}
		return res
	}
	var r auResult
	if err := json.Unmarshal([]byte(steps["user"]), &r.user); err != nil {
		t.Fatalf("%s printed no user: %v", client, err)
	}
	r.ssl = steps["ssl"] == "true"
	return r
}

// cmCert is a throwaway self-signed certificate for 127.0.0.1.
type cmCert struct {
	config *tls.Config
	der    []byte
	caFile string // the certificate as PEM, for sslrootcert
	pem    []byte
	keyPEM []byte
}

func cmSelfSigned(t *testing.T) *cmCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root, for sslrootcert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &cmCert{
		config: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		der:    der,
		pem:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		caFile: filepath.Join(t.TempDir(), "root.crt"),
	}
	if err := os.WriteFile(c.caFile, c.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// auTLSServer starts a private cluster with ssl on, where scramuser may log
// in only over TLS, with scram-sha-256, unless hba says otherwise.
func auTLSServer(t *testing.T, hba ...string) (*server, *cmCert) {
	t.Helper()
	if hba == nil {
		hba = []string{
			"hostssl all " + scramUser + " 127.0.0.1/32 scram-sha-256",
			"host all " + scramUser + " 127.0.0.1/32 reject",
		}
	}
	c, err := tempdb.Start(tempdb.Options{HBA: hba})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { c.Destroy() })
	s := &server{admin: c.URL(tempdb.SuperUser, "postgres"), cluster: c}

	// The server reads its key only if the key belongs to the user it runs
	// as and nobody else may read it.
	cert := cmSelfSigned(t)
	fi, err := os.Stat(c.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	owner := fi.Sys().(*syscall.Stat_t)
	for name, data := range map[string][]byte{"server.crt": cert.pem, "server.key": cert.keyPEM} {
		f := filepath.Join(c.DataDir(), name)
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(f, int(owner.Uid), int(owner.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range []string{
		fmt.Sprintf("SET password_encryption = 'scram-sha-256'; CREATE ROLE %s LOGIN PASSWORD '%s'", scramUser, scramPass),
		"ALTER SYSTEM SET ssl = on",
		"SELECT pg_reload_conf()",
	} {
		if err := s.exec(ctx, "postgres", q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The reload is asynchronous: wait until the server accepts TLS.
	for {
		conn, err := pgconn.Connect(ctx, cmSSLMode(s.admin, "require"))
		if err == nil {
			conn.Close(ctx)
			return s, cert
		}
		if ctx.Err() != nil {
			t.Fatalf("the server did not turn TLS on: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
