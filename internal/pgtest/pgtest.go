// Package pgtest gives package tests a fresh PostgreSQL database: on a
// throwaway cluster started once per test binary, or on the server of
// PGRULES_TEST_DATABASE_URL when it is set.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/tempdb"
)

var (
	once    sync.Once
	cluster *tempdb.Cluster
	admin   string
	initErr error
	serial  atomic.Int64
)

// Main runs the tests and removes the cluster afterwards: call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		cluster.Destroy()
	}
	os.Exit(code)
}

func setup() {
	if u := os.Getenv("PGRULES_TEST_DATABASE_URL"); u != "" {
		admin = u
		return
	}
	cluster, initErr = tempdb.Start(tempdb.Options{})
	if initErr == nil {
		admin = cluster.URL(tempdb.SuperUser, "postgres")
	}
}

// DB creates a database for the test, dropped when it ends, and returns
// its URL.
func DB(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if initErr != nil {
		t.Fatalf("start PostgreSQL: %v", initErr)
	}
	name := fmt.Sprintf("pgtest_%d_%d", os.Getpid(), serial.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Exec(ctx, admin, fmt.Sprintf("CREATE DATABASE %q", name)); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		Exec(ctx, admin, fmt.Sprintf("DROP DATABASE IF EXISTS %q WITH (FORCE)", name))
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Exec runs sql, which may hold several statements, on a new connection.
func Exec(ctx context.Context, url, sql string) error {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}
