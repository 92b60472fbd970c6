package outbox

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/internal/pgtest"
)

// TestManager is not parallel: Discover sees every database of the
// cluster, and the parallel tests' are not created yet.
func TestManager(t *testing.T) {
	urls := map[string]string{}
	conns := map[string]*pgx.Conn{}
	for _, name := range []string{"a", "b"} {
		urls[name], conns[name] = newDB(t)
	}
	urls["bare"] = pgtest.DB(t) // no pgrules schema
	conns["bare"] = connect(t, urls["bare"])
	base, err := url.Parse(urls["a"])
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ManagerConfig{
		Connect: func(ctx context.Context, database string) (*pgx.Conn, error) {
			u := *base
			u.Path = "/" + database
			return connector(u.String())(ctx)
		},
		Settings: fast,
	})
	defer m.Close()
	rc := newReceiver(t, nil)

	dbs := map[string]string{}
	for name, conn := range conns {
		dbs[name] = database(t, conn)
	}
	if err := m.Discover(context.Background(), dbs["a"]); err != nil {
		t.Fatal(err)
	}
	m.Ensure(dbs["a"])
	if err := m.Discover(context.Background(), "postgres"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		id := post(t, conns[name], "public.t:1", rc.URL, "{}")
		waitState(t, conns[name], id, "done")
		key := fmt.Sprintf("%s-%d", dbs[name], id)
		n := 0
		for _, h := range rc.got() {
			if h.header.Get("Idempotency-Key") == key {
				n++
			}
		}
		if n != 1 {
			t.Errorf("database %s: %d requests with Idempotency-Key %s, want 1", name, n, key)
		}
	}
	counts := func() map[string]int {
		rows, err := conns["a"].Query(context.Background(),
			"SELECT datname::text, count(*)::int FROM pg_stat_activity WHERE application_name = $1 GROUP BY datname", appName)
		if err != nil {
			t.Fatal(err)
		}
		c := map[string]int{}
		for rows.Next() {
			var db string
			var n int
			rows.Scan(&db, &n)
			c[db] = n
		}
		return c
	}
	// One dispatcher for each database with the outbox, whose look at
	// the others has ended.
	eventually(t, 5*time.Second, "one dispatcher per database", func() bool {
		c := counts()
		return len(c) == 2 && c[dbs["a"]] == 1 && c[dbs["b"]] == 1
	})
	m.Close()
	m.Ensure(dbs["a"]) // after Close: no-op
	eventually(t, 5*time.Second, "the dispatchers to disconnect", func() bool { return len(counts()) == 0 })
}
