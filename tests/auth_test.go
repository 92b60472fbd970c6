package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestAuthRelayed: the proxy holds no passwords; each method the server
// asks for is relayed between client and server.
func TestAuthRelayed(t *testing.T) {
	srv := ownedServer(t)
	p := startProxy(t, srv)
	users := []struct{ method, user, password string }{
		{"md5", md5User, md5Password},
		{"scram-sha-256", scramUser, scramPass},
		{"password", clearUser, clearPass},
	}
	for _, u := range users {
		t.Run(u.method, func(t *testing.T) {
			c := connect(t, p.url(u.user, u.password, "postgres"))
			if got := mustQuery(t, c, "SELECT current_user"); got != u.user {
				t.Fatalf("current_user = %q", got)
			}
			_, err := pgconn.Connect(context.Background(), p.url(u.user, "wrong", "postgres"))
			if sqlState(err) != "28P01" {
				t.Fatalf("wrong password: %v, want SQLSTATE 28P01", err)
			}
			out, err := psqlEnv(p.url(u.user, "", "postgres"), "PGPASSWORD="+u.password, "SELECT current_user")
			if err != nil || strings.TrimSpace(out) != u.user {
				t.Fatalf("psql: %v %s", err, out)
			}
		})
	}
	t.Run("scram with psycopg2 and node-postgres", func(t *testing.T) {
		db := srv.newDB(t)
		url := p.url(scramUser, scramPass, db)
		runScript(t, url, false, "/usr/bin/python3", "clients/python/client.py")
		db2 := srv.newDB(t)
		runScript(t, p.url(scramUser, scramPass, db2), false, "node", "clients/node/client.js")
	})
}

func psqlEnv(url string, env string, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-w", "-d", url, "-c", sql)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// selfSigned makes a throwaway server certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgrules test"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

func withSSL(url, mode string) string {
	return strings.Replace(url, "sslmode=disable", "sslmode="+mode, 1)
}

func TestClientTLS(t *testing.T) {
	srv := ownedServer(t)
	p := startProxy(t, srv, withTLS(selfSigned(t)))

	t.Run("pgx", func(t *testing.T) {
		c := connect(t, withSSL(p.url(scramUser, scramPass, "postgres"), "require"))
		if _, ok := c.Conn().(*tls.Conn); !ok {
			t.Fatalf("connection is %T, not TLS", c.Conn())
		}
		if got := mustQuery(t, c, "SELECT current_user"); got != scramUser {
			t.Fatalf("current_user = %q", got)
		}
	})
	t.Run("psql scram channel binding", func(t *testing.T) {
		url := withSSL(p.url(scramUser, "", "postgres"), "require")
		out, err := psqlEnv(url+"&channel_binding=prefer", "PGPASSWORD="+scramPass, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
		if err != nil {
			t.Fatalf("channel_binding=prefer: %v %s", err, out)
		}
		// The proxy's own upstream link is plain, so the server sees no TLS.
		if strings.TrimSpace(out) != "f" {
			t.Fatalf("upstream ssl = %q", out)
		}
		out, err = psqlEnv(url+"&channel_binding=require", "PGPASSWORD="+scramPass, "SELECT 1")
		if err == nil || !strings.Contains(out, "channel binding") {
			t.Fatalf("channel_binding=require should fail naming channel binding: %v %s", err, out)
		}
	})
	t.Run("psycopg2", func(t *testing.T) {
		db := srv.newDB(t)
		checkSteps(t, runScript(t, withSSL(p.url(scramUser, scramPass, db), "require"), true, "/usr/bin/python3", "clients/python/client.py"),
			map[string]string{"ssl": "true", "ids": "[1,2,4]"})
	})
	t.Run("node-postgres", func(t *testing.T) {
		db := srv.newDB(t)
		url := strings.Replace(p.url(scramUser, scramPass, db), "?sslmode=disable", "", 1)
		checkSteps(t, runScript(t, url, true, "node", "clients/node/client.js"),
			map[string]string{"ssl": "true", "ids": "[1,2,4]"})
	})
}

func TestNoCertificateMeansNoTLS(t *testing.T) {
	p := startProxy(t, shared)
	_, err := pgconn.Connect(context.Background(), withSSL(p.url("", "", "postgres"), "require"))
	if err == nil {
		t.Fatal("sslmode=require succeeded against a proxy without a certificate")
	}
	c := connect(t, withSSL(p.url("", "", "postgres"), "prefer"))
	if _, ok := c.Conn().(*tls.Conn); ok {
		t.Fatal("TLS without a certificate?")
	}
	if got := mustQuery(t, c, "SELECT 5"); got != "5" {
		t.Fatalf("got %q", got)
	}
}
