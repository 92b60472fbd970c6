package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/tempdb"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/rules"
	"github.com/rs/zerolog"
)

// Passwords of the roles every owned cluster has, one per authentication
// method its pg_hba.conf requires of them.
const (
	md5User     = "md5user"
	md5Password = "md5 secret"
	scramUser   = "scramuser"
	scramPass   = "scram secret"
	clearUser   = "clearuser"
	clearPass   = "clear secret"
)

var authHBA = []string{
	"host all " + md5User + " 127.0.0.1/32 md5",
	"host all " + scramUser + " 127.0.0.1/32 scram-sha-256",
	"host all " + clearUser + " 127.0.0.1/32 password",
}

// server is a PostgreSQL the tests talk to directly.
type server struct {
	admin   string          // URL of a superuser on database "postgres"
	cluster *tempdb.Cluster // nil when the server is external
}

var (
	shared   *server
	dbSerial atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if u := os.Getenv("PGRULES_TEST_DATABASE_URL"); u != "" {
		shared = &server{admin: u}
	} else {
		s, err := startServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tests: starting PostgreSQL:", err)
			return 1
		}
		defer s.cluster.Destroy()
		shared = s
	}
	return m.Run()
}

// startServer starts a private cluster with the authentication test roles.
func startServer() (*server, error) {
	c, err := tempdb.Start(tempdb.Options{HBA: authHBA})
	if err != nil {
		return nil, err
	}
	s := &server{admin: c.URL(tempdb.SuperUser, "postgres"), cluster: c}
	err = s.exec(context.Background(), "postgres", fmt.Sprintf(`
		SET password_encryption = 'md5';
		CREATE ROLE %s LOGIN PASSWORD '%s';
		SET password_encryption = 'scram-sha-256';
		CREATE ROLE %s LOGIN PASSWORD '%s';
		CREATE ROLE %s LOGIN PASSWORD '%s';`,
		md5User, md5Password, scramUser, scramPass, clearUser, clearPass))
	if err != nil {
		c.Destroy()
		return nil, err
	}
	return s, nil
}

// privateServer starts a cluster of the test's own, removed when it ends.
func privateServer(t testing.TB) *server {
	t.Helper()
	s, err := startServer()
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { s.cluster.Destroy() })
	return s
}

// ownedServer is the shared server when the tests started it, else a
// private one: for tests that depend on the server's pg_hba.conf.
func ownedServer(t testing.TB) *server {
	if shared.cluster != nil {
		return shared
	}
	return privateServer(t)
}

// url is the admin URL with another user, password and database.
func (s *server) url(user, password, database string) string {
	u, err := url.Parse(s.admin)
	if err != nil {
		panic(err)
	}
	if user != "" {
		if password != "" {
			u.User = url.UserPassword(user, password)
		} else {
			u.User = url.User(user)
		}
	}
	u.Path = "/" + database
	return u.String()
}

func (s *server) exec(ctx context.Context, database, sql string) error {
	conn, err := pgconn.Connect(ctx, s.url("", "", database))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

// newDB creates a fresh database on s, dropped when the test ends.
func (s *server) newDB(t testing.TB) string {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", dbSerial.Add(1), name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.exec(ctx, "postgres", fmt.Sprintf("CREATE DATABASE %q", name)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	grants := "GRANT ALL ON SCHEMA public TO PUBLIC"
	if err := s.exec(ctx, name, grants); err != nil {
		t.Fatalf("grant: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.exec(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %q WITH (FORCE)", name))
	})
	return name
}

// testProxy is a pgrules proxy running in the test process.
type testProxy struct {
	*proxy.Server
	Addr string // host:port
	srv  *server
}

type proxyOption func(*proxy.Config)

func withTLS(c *tls.Config) proxyOption    { return func(p *proxy.Config) { p.TLS = c } }
func withMaxMessage(n int) proxyOption     { return func(p *proxy.Config) { p.MaxMessageBytes = n } }
func withMaxConnections(n int) proxyOption { return func(p *proxy.Config) { p.MaxConnections = n } }

// startProxy runs a proxy in front of s on 127.0.0.1:0 until the test ends.
func startProxy(t testing.TB, s *server, opts ...proxyOption) *testProxy {
	t.Helper()
	cfg := proxy.Config{
		Upstream: s.admin,
		Logger:   zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	for _, o := range opts {
		o(&cfg)
	}
	// As in production, the rules engine sees every session (and installs
	// the pgrules schema in each database it serves), unless a test brings
	// its own.
	if cfg.Rules == nil {
		withEngine(s)(&cfg)
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		wg.Wait()
		if e, ok := cfg.Rules.(*rules.Engine); ok {
			e.Close()
		}
	})
	return &testProxy{Server: srv, Addr: ln.Addr().String(), srv: s}
}

// url is a connection URL through the proxy.
func (p *testProxy) url(user, password, database string) string {
	u, err := url.Parse(p.srv.url(user, password, database))
	if err != nil {
		panic(err)
	}
	u.Host = p.Addr
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// connect opens a pgconn connection and closes it when the test ends.
func connect(t testing.TB, url string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// scalar runs sql on c and returns the first column of the first row of the
// last result ("" when there is none).
func scalar(t testing.TB, c *pgconn.PgConn, sql string) string {
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

// unguarded is sql run with the guard lifted (rules-api.md §7), as an
// administrator writing a table with rules behind pgrules' back: sql runs
// in the transaction of its Query (or the one it opens).
func unguarded(sql string) string {
	if strings.HasPrefix(sql, "BEGIN; ") {
		return "BEGIN; SET LOCAL pgrules.guard = off; " + strings.TrimPrefix(sql, "BEGIN; ")
	}
	return "SET LOCAL pgrules.guard = off; " + sql
}
