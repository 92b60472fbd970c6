package catalog_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/catalog/watch"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/pgerr"
	pgsql "github.com/pgrules/pgrules/sql"
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
	if _, err := catalog.Load(context.Background(), watch.PgxQuerier(conn)); pgerr.Code(err) != pgerr.ObjectNotInPrereqState {
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
	snap, err := catalog.Load(ctx, watch.PgxQuerier(conn))
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
	kinds := map[string]catalog.Kind{}
	for _, c := range lead.Columns {
		kinds[c.Name] = c.Kind
	}
	want := map[string]catalog.Kind{"id": catalog.KindInt, "worth": catalog.KindDecimal, "mood": catalog.KindText, "doc": catalog.KindJSON, "at": catalog.KindTime, "twice": catalog.KindInt, "customer_id": catalog.KindInt, "orders_id": catalog.KindInt}
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
	snap, err := catalog.Load(ctx, watch.PgxQuerier(conn))
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
	if c.Kind != catalog.Count || !c.ChangedInTx || c.SourceTable != "public.lineitem" || c.SourceColumn != "" || c.Filter != "row.quantity > 1" || !c.Enabled {
		t.Errorf("second rule %+v", c)
	}
}
