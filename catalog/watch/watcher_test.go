package watch

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	pgsql "github.com/pgrules/pgrules/sql"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestWatcher: a rule committed elsewhere reaches the watcher within a
// second; a lost connection is re-made and what changed meanwhile is seen.
func TestWatcher(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	w := New(Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, url) },
		Setup:   func(ctx context.Context, c *pgx.Conn) error { _, _, err := pgsql.Install(ctx, c); return err },
		Logger:  zerolog.Nop(),
	})
	w.Start(ctx)
	defer w.Close()
	first, err := w.Snapshot(ctx)
	if err != nil || len(first.Rules) != 0 {
		t.Fatalf("first snapshot: %v %v", first, err)
	}
	waitRules := func(n int) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for {
			s, _ := w.Snapshot(ctx)
			if len(s.Rules) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d rules after a second, want %d", len(s.Rules), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	conn.Exec(ctx, "SELECT pgrules.formula('lineitem.amount', 'row.quantity')")
	waitRules(1)
	conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN pgrules' OR (datname = current_database() AND pid <> pg_backend_pid())")
	conn.Exec(ctx, "SELECT pgrules.formula('orders.amount_total', '0')")
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := w.Snapshot(ctx)
		if len(s.Rules) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not come back after its connection was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn.Exec(ctx, "CREATE TABLE extra (id int)")
	w.Reload()
	deadline = time.Now().Add(time.Second)
	for {
		s, _ := w.Snapshot(ctx)
		if s.Tables["public.extra"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new table not seen after Reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
