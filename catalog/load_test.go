package catalog

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/pgerr"
	pgsql "github.com/pgrules/pgrules/sql"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func setup(t *testing.T, extra string) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema+";"+extra); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return url, conn
}

func TestLoadWithoutSchema(t *testing.T) {
	_, conn := setup(t, "")
	if _, err := Load(context.Background(), PgxQuerier(conn)); pgerr.Code(err) != pgerr.ObjectNotInPrereqState {
		t.Fatalf("load without the pgrules schema: %v, want 55000", err)
	}
}

func TestLoad(t *testing.T) {
	_, conn := setup(t, `
		CREATE SCHEMA sales;
		CREATE DOMAIN money2 AS numeric(12,2);
		CREATE TYPE mood AS ENUM ('ok', 'sad');
		CREATE TABLE sales.lead (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, worth money2, mood mood,
			doc jsonb, at timestamptz, twice int GENERATED ALWAYS AS (id * 2) STORED,
			customer_id int REFERENCES customer ON DELETE CASCADE, orders_id int REFERENCES orders ON DELETE SET NULL);
		CREATE TABLE part (k int, v int, PRIMARY KEY (v, k)) PARTITION BY RANGE (k)`)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "SET search_path = sales, public"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pgsql.Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	snap, err := Load(ctx, PgxQuerier(conn))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snap.SearchPath, []string{"sales", "public"}) {
		t.Errorf("search path %v", snap.SearchPath)
	}
	lead := snap.Lookup("lead")
	if lead == nil || lead.QualifiedName() != "sales.lead" || snap.Lookup("sales.lead") != lead || snap.Lookup("customer") == nil {
		t.Fatalf("lookup: %v", lead)
	}
	kinds := map[string]Kind{}
	for _, c := range lead.Columns {
		kinds[c.Name] = c.Kind
	}
	want := map[string]Kind{"id": KindInt, "worth": KindDecimal, "mood": KindText, "doc": KindJSON, "at": KindTime, "twice": KindInt, "customer_id": KindInt, "orders_id": KindInt}
	for name, k := range want {
		if kinds[name] != k {
			t.Errorf("column %s is %v, want %v", name, kinds[name], k)
		}
	}
	if c := lead.Column("id"); !c.HasDefault || !c.NotNull {
		t.Errorf("identity column: %+v", c)
	}
	if c := lead.Column("twice"); !c.Generated || c.Generation != "(id * 2)" || !slices.Equal(c.GenerationReads, []string{"id"}) {
		t.Errorf("generated column: %+v", c)
	}
	// Qualified, to mean the same in a session with another search_path.
	if c := lead.Column("worth"); c.Type != "public.money2" || !c.HasScale || c.Scale != 2 {
		t.Errorf("domain over numeric(12,2): type %q, scale %d (%v)", c.Type, c.Scale, c.HasScale)
	}
	if c := snap.Tables["public.lineitem"].Column("amount"); !c.HasScale || c.Scale != 2 {
		t.Errorf("numeric(14,2): scale %d (%v)", c.Scale, c.HasScale)
	}
	if c := lead.Column("id"); c.HasScale {
		t.Errorf("bigint with a scale %d", c.Scale)
	}
	if p := snap.Tables["public.part"]; p == nil || !slices.Equal(p.PrimaryKey, []string{"v", "k"}) {
		t.Errorf("partitioned table: %+v", p)
	}
	var accessors []string
	for _, fk := range lead.Parents {
		accessors = append(accessors, fk.Accessor+string(fk.OnDelete))
	}
	slices.Sort(accessors)
	if !slices.Equal(accessors, []string{"customerc", "ordersn"}) {
		t.Errorf("parents of lead: %v", accessors)
	}
	li := snap.Tables["public.lineitem"]
	if len(li.Parents) != 2 || len(snap.Tables["public.orders"].Children) != 2 { // lineitem and sales.lead
		t.Errorf("lineitem parents %d, orders children %d", len(li.Parents), len(snap.Tables["public.orders"].Children))
	}
}

func TestLoadRules(t *testing.T) {
	_, conn := setup(t, "")
	ctx := context.Background()
	if _, _, err := pgsql.Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Exec(ctx, "SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_price')")
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	tx.Exec(ctx, "SELECT pgrules.count('orders.amount_total', 'lineitem', 'row.quantity > 1')")
	snap, err := Load(ctx, PgxQuerier(conn))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Rules) != 2 {
		t.Fatalf("%d rules", len(snap.Rules))
	}
	a, c := snap.Rules[0], snap.Rules[1]
	if a.Name != "lineitem.amount" || a.ChangedInTx || a.Table != "public.lineitem" || a.Expression != "row.quantity * row.unit_price" {
		t.Errorf("first rule %+v", a)
	}
	if c.Kind != Count || !c.ChangedInTx || c.SourceTable != "public.lineitem" || c.SourceColumn != "" || c.Filter != "row.quantity > 1" || !c.Enabled {
		t.Errorf("second rule %+v", c)
	}
}

// TestWatcher: a rule committed elsewhere reaches the watcher within a
// second; a lost connection is re-made and what changed meanwhile is seen.
func TestWatcher(t *testing.T) {
	url, conn := setup(t, "")
	ctx := context.Background()
	w := NewWatcher(WatcherConfig{
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
