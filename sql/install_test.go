package sql

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/pgerr"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// creditDB returns a fresh database with the check-credit schema and
// extra, and a connection to it.
func creditDB(t *testing.T, extra string) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.DB(t)
	if err := demo.Exec(context.Background(), url, demo.Schema, extra); err != nil {
		t.Fatal(err)
	}
	return url, connect(t, url)
}

// installedDB is creditDB with the pgrules schema installed.
func installedDB(t *testing.T, extra string) (string, *pgx.Conn) {
	t.Helper()
	url, conn := creditDB(t, extra)
	if _, _, err := Install(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return url, conn
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// scalar runs a query that returns one value, as text ("NULL" for NULL).
func scalar(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) string {
	t.Helper()
	var s *string
	if err := q.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "NULL"
	}
	return *s
}

// superuser is "1" when conn's role is a superuser, else "0".
func superuser(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	return scalar(t, conn, "SELECT rolsuper::int::text FROM pg_roles WHERE rolname = current_user")
}

func pgError(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// notifications returns the payloads that arrive on listener within a
// short wait.
func notifications(t *testing.T, listener *pgx.Conn) []string {
	t.Helper()
	var got []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		n, err := listener.WaitForNotification(ctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				t.Fatal(err)
			}
			return got
		}
		got = append(got, n.Payload)
	}
}

func TestInstall(t *testing.T) {
	url, conn := creditDB(t, "")
	ctx := context.Background()

	from, to, err := Install(ctx, conn)
	if err != nil || from != 0 || to != Version {
		t.Fatalf("first install: %d → %d, %v; want 0 → %d", from, to, err, Version)
	}
	if got := scalar(t, conn, "SELECT string_agg(version::text, ',' ORDER BY version) FROM pgrules.schema_version"); got != "1,2,3,4,5" {
		t.Fatalf("schema_version %s", got)
	}
	if got := scalar(t, conn, "SELECT pgrules._functions_stamp()"); got != functionsStamp {
		t.Fatalf("stamp %q, want %q", got, functionsStamp)
	}
	if got, want := scalar(t, conn, "SELECT count(*)::text FROM pg_event_trigger WHERE evtname = 'pgrules_ddl'"), superuser(t, conn); got != want {
		t.Fatalf("%s DDL event triggers after an install by a superuser: %s", got, want)
	}

	// Installing again changes nothing, so it sends no notification (the
	// DDL event trigger would) and takes no lock that an open transaction
	// holding the rules and relationships could block.
	listener := connect(t, url)
	if _, err := listener.Exec(ctx, "LISTEN pgrules"); err != nil {
		t.Fatal(err)
	}
	reader := connect(t, url)
	if _, err := reader.Exec(ctx, "BEGIN; SELECT * FROM pgrules.rules; SELECT * FROM pgrules.relationships"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	from, to, err = Install(wctx, conn)
	cancel()
	if err != nil || from != Version || to != Version {
		t.Fatalf("second install: %d → %d, %v; want %d → %d", from, to, err, Version, Version)
	}
	if _, err := reader.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if n := notifications(t, listener); len(n) != 0 {
		t.Fatalf("the second install notified %v", n)
	}

	// A database whose functions.sql differs gets this one again, whole.
	if _, err := conn.Exec(ctx, `DROP FUNCTION pgrules.explain(text);
		CREATE OR REPLACE FUNCTION pgrules._functions_stamp() RETURNS text LANGUAGE sql AS $$ SELECT 'older' $$`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, conn, "SELECT to_regprocedure('pgrules.explain(text)')::text"); got != "pgrules.explain(text)" {
		t.Fatalf("explain after reinstalling changed functions: %s", got)
	}
	if got := scalar(t, conn, "SELECT pgrules._functions_stamp()"); got != functionsStamp {
		t.Fatalf("stamp %q after reinstalling", got)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, _, err := Install(ctx, conn); err == nil {
		t.Fatal("Install inside the caller's transaction succeeded")
	}
}

func TestInstallConcurrent(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	conns := []*pgx.Conn{connect(t, url), connect(t, url), connect(t, url)}
	type result struct{ from, to int }
	done := make(chan result, len(conns))
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			from, to, err := Install(ctx, c)
			if err != nil {
				errs <- err
				return
			}
			done <- result{from, to}
		}()
	}
	fresh := 0
	for range conns {
		select {
		case err := <-errs:
			t.Fatalf("concurrent install: %v", err)
		case r := <-done:
			if r.from == 0 {
				fresh++
			} else if r.from != Version || r.to != Version {
				t.Fatalf("concurrent install: %d → %d", r.from, r.to)
			}
		}
	}
	if fresh != 1 {
		t.Fatalf("%d of %d concurrent installs found no schema, want 1", fresh, len(conns))
	}
}

func TestUpgradeFromVersion1(t *testing.T) {
	_, conn := creditDB(t, "")
	ctx := context.Background()
	if from, to, err := installUpTo(ctx, conn, 1); err != nil || from != 0 || to != 1 {
		t.Fatalf("install version 1: %d → %d, %v", from, to, err)
	}
	if got := scalar(t, conn, "SELECT count(*)::text FROM pg_attribute WHERE attrelid = 'pgrules.rule'::regclass AND attname LIKE 'defined%'"); got != "0" {
		t.Fatalf("version 1 has %s audit columns", got)
	}
	// Rules stored by a version 1 binary.
	if _, err := conn.Exec(ctx, `INSERT INTO pgrules.rule (name, table_schema, table_name, kind, target_column, expression) VALUES
		('lineitem.amount', 'public', 'lineitem', 'formula', 'amount', 'row.quantity * row.unit_price');
		INSERT INTO pgrules.rule (name, table_schema, table_name, kind, expression, verbs, enabled) VALUES
		('orders_event_1', 'public', 'orders', 'event', 'notify("o", row.id)', '{insert}', false)`); err != nil {
		t.Fatal(err)
	}
	const rows = "SELECT string_agg((to_jsonb(r) - 'defined_at' - 'defined_by')::text, E'\\n' ORDER BY seq) FROM pgrules.rule r"
	before := scalar(t, conn, rows)

	from, to, err := Install(ctx, conn)
	if err != nil || from != 1 || to != Version {
		t.Fatalf("upgrade: %d → %d, %v; want 1 → %d", from, to, err, Version)
	}
	if after := scalar(t, conn, rows); after != before {
		t.Fatalf("rules changed by the upgrade:\n%s\nwere\n%s", after, before)
	}
	// Older rules do not know when or by whom they were defined; new ones do.
	if got := scalar(t, conn, "SELECT string_agg(name || ' ' || coalesce(defined_by, '?') || ' ' || (defined_at IS NULL), ', ' ORDER BY seq) FROM pgrules.rule"); got != "lineitem.amount ? true, orders_event_1 ? true" {
		t.Fatalf("audit columns of upgraded rules: %s", got)
	}
	scalar(t, conn, "SELECT pgrules.formula('lineitem.amount', 'row.quantity')")
	scalar(t, conn, "SELECT pgrules.sum('orders.amount_total', 'lineitem.amount')")
	if got := scalar(t, conn, "SELECT string_agg(name || ' ' || (defined_by = current_user) || ' ' || (now() - defined_at < '1 minute'), ', ' ORDER BY seq) FROM pgrules.rule WHERE defined_at IS NOT NULL"); got != "lineitem.amount true true, orders.amount_total true true" {
		t.Fatalf("audit columns of rules defined after the upgrade: %s", got)
	}
}

// TestUpgradeOutboxToEngineOnly: the upgrade to version 5 takes back the
// grants earlier versions asked writers for, keeps delivering the posts
// and notifications of events that still exist, pinned to them, and leaves
// dead, saying why, the sql entries a client could have written and the
// entries of events that are gone.
func TestUpgradeOutboxToEngineOnly(t *testing.T) {
	_, conn := creditDB(t, "")
	ctx := context.Background()
	if _, _, err := installUpTo(ctx, conn, 4); err != nil {
		t.Fatal(err)
	}
	db := scalar(t, conn, "SELECT current_database()")
	writer := db + "_writer"
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]q;
		GRANT INSERT, SELECT ON pgrules.outbox TO %[1]q, PUBLIC; GRANT USAGE ON pgrules.outbox_id_seq TO %[1]q;
		INSERT INTO pgrules.rule (name, table_schema, table_name, kind, expression, timing, verbs) VALUES
		('paid', 'public', 'orders', 'event', 'post("http://h/", row.id)', 'after_commit', '{update}');
		INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, args) VALUES
		('paid', 'after_commit', 'public.orders:1', 'post', 'http://h/', '1', NULL),
		('paid', 'after_commit', 'public.orders:1', 'sql', 'ALTER ROLE %[1]s SUPERUSER', NULL, '{}'),
		('gone', 'after_commit', 'public.orders:2', 'notify', 'c', 'p', NULL)`, writer)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %[1]q; DROP ROLE %[1]q", writer)) })
	if _, _, err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	got := scalar(t, conn, `SELECT string_agg(kind || ' ' || state || ' ' || ((rule_digest = pgrules._rule_digest(rule, timing)) IS TRUE) || ' ' || coalesce(last_error, ''), '; ' ORDER BY id)
		FROM pgrules.outbox`)
	want := "post pending true ; " +
		"sql dead false not run: recorded before pgrules schema version 5, when roles other than the engine could write the outbox; check it, then SELECT pgrules.retry(id); " +
		"notify dead false not run: its rule no longer exists as an event of this timing"
	if got != want {
		t.Fatalf("entries after the upgrade:\n%s\nwant\n%s", got, want)
	}
	if got := scalar(t, conn, `SELECT count(*) FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
		WHERE c.oid IN ('pgrules.outbox'::regclass, 'pgrules.outbox_id_seq'::regclass) AND a.grantee <> c.relowner`); got != "0" {
		t.Fatalf("%s grants on the outbox left", got)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	_, conn := installedDB(t, "")
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `INSERT INTO pgrules.schema_version (version) VALUES (99);
		CREATE OR REPLACE FUNCTION pgrules._functions_stamp() RETURNS text LANGUAGE sql AS $$ SELECT 'from the future' $$`); err != nil {
		t.Fatal(err)
	}
	from, _, err := Install(ctx, conn)
	if pgerr.Code(err) != pgerr.ObjectNotInPrereqState || from != 99 {
		t.Fatalf("install over version 99: from %d, %v; want 55000", from, err)
	}
	if got := scalar(t, conn, "SELECT pgrules._functions_stamp()"); got != "from the future" {
		t.Fatalf("the refused install replaced the functions: %s", got)
	}
}

// ruleRow shows a rule as pgrules.rules lists it.
const ruleRow = `SELECT concat_ws(' | ', table_name, kind, coalesce(target, '-'), coalesce(expression, '-'),
	coalesce(source, '-'), coalesce(filter, '-'), coalesce(via, '-'), coalesce(message, '-'), coalesce(timing, '-'),
	coalesce(verbs::text, '-'), enabled::text) FROM pgrules.rules WHERE name = $1`

func TestDefine(t *testing.T) {
	_, conn := installedDB(t, `CREATE SCHEMA sales;
		CREATE TABLE sales.orders (id int PRIMARY KEY, customer_id int REFERENCES public.customer, total numeric)`)
	ctx := context.Background()
	for _, tc := range []struct{ sql, name, row string }{
		{`SELECT pgrules.sum('orders.amount_total', 'lineitem.amount')`, "orders.amount_total",
			"public.orders | sum | orders.amount_total | - | public.lineitem.amount | - | - | - | - | - | true"},
		{`SELECT pgrules.count('customer.unpaid_order_count', 'orders', filter => 'not row.paid')`, "customer.unpaid_order_count",
			"public.customer | count | customer.unpaid_order_count | - | public.orders | not row.paid | - | - | - | - | true"},
		// Names fold to lower case as in SQL; a filter may be positional.
		{`SELECT pgrules.max('public.Customer.Balance', 'public.orders.amount_total', 'row.paid', via => 'orders_customer_id_fkey')`, "customer.balance",
			"public.customer | max | customer.balance | - | public.orders.amount_total | row.paid | orders_customer_id_fkey | - | - | - | true"},
		{`SELECT pgrules.min('sales.orders.total', 'lineitem.amount', name => 'smallest line')`, "smallest line",
			"sales.orders | min | orders.total | - | public.lineitem.amount | - | - | - | - | - | true"},
		{`SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_price')`, "lineitem.amount",
			"public.lineitem | formula | lineitem.amount | row.quantity * row.unit_price | - | - | - | - | - | - | true"},
		{`SELECT pgrules.copy('lineitem.unit_price', 'product.price', via => 'lineitem_product_id_fkey', name => 'price')`, "price",
			"public.lineitem | copy | lineitem.unit_price | - | public.product.price | - | lineitem_product_id_fkey | - | - | - | true"},
		{`SELECT pgrules.constraint('customer', 'row.balance <= row.credit_limit', 'too much')`, "customer_constraint_1",
			"public.customer | constraint | - | row.balance <= row.credit_limit | - | - | - | too much | - | - | true"},
		{`SELECT pgrules.constraint('public.customer', 'row.balance >= 0', 'negative')`, "customer_constraint_2",
			"public.customer | constraint | - | row.balance >= 0 | - | - | - | negative | - | - | true"},
		{`SELECT pgrules.commit_constraint('orders', 'true', 'an order has lines', name => 'has lines')`, "has lines",
			"public.orders | commit_constraint | - | true | - | - | - | an order has lines | - | - | true"},
		{`SELECT pgrules.commit_constraint('orders', 'true', 'x')`, "orders_commit_constraint_1",
			"public.orders | commit_constraint | - | true | - | - | - | x | - | - | true"},
		{`SELECT pgrules.event('orders', 'row', 'notify("x", row.id)')`, "orders_event_1",
			`public.orders | event | - | notify("x", row.id) | - | - | - | - | row | {insert,update,delete} | true`},
		// Default names are unique across schemas: the lowest n free for "orders".
		{`SELECT pgrules.event('sales.orders', 'after_commit', 'post("http://x", row)', verbs => '{insert}')`, "orders_event_2",
			`sales.orders | event | - | post("http://x", row) | - | - | - | - | after_commit | {insert} | true`},
		{`SELECT pgrules.drop_rule('customer_constraint_1')`, "customer_constraint_1", ""},
		{`SELECT pgrules.constraint('customer', 'true', 'the lowest free n')`, "customer_constraint_1",
			"public.customer | constraint | - | true | - | - | - | the lowest free n | - | - | true"},
	} {
		if got := scalar(t, conn, tc.sql); got != tc.name {
			t.Fatalf("%s returned %q, want %q", tc.sql, got, tc.name)
		}
		var row string
		if err := conn.QueryRow(ctx, ruleRow, tc.name).Scan(&row); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if row != tc.row {
			t.Errorf("%s stored\n%s\nwant\n%s", tc.sql, row, tc.row)
		}
	}

	// Unqualified names follow the session's search_path.
	if _, err := conn.Exec(ctx, "SET search_path = sales, public"); err != nil {
		t.Fatal(err)
	}
	name := scalar(t, conn, "SELECT pgrules.constraint('orders', 'true', 'm')")
	if got := scalar(t, conn, "SELECT table_name FROM pgrules.rules WHERE name = $1", name); got != "sales.orders" {
		t.Fatalf("'orders' with sales first in the search_path: %s", got)
	}
	if _, err := conn.Exec(ctx, "RESET search_path"); err != nil {
		t.Fatal(err)
	}

	// Redefining a rule by its name replaces it in place, written by the
	// current transaction; the other rules are not.
	seq := scalar(t, conn, "SELECT seq::text FROM pgrules.rule WHERE name = 'lineitem.amount'")
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	scalar(t, tx, "SELECT pgrules.formula('lineitem.amount', 'row.quantity * 2')")
	if got := scalar(t, tx, "SELECT string_agg(name, ',') FROM pgrules.rule WHERE txid = pg_current_xact_id()"); got != "lineitem.amount" {
		t.Fatalf("rules written by the redefining transaction: %s", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, conn, "SELECT seq || ' ' || expression FROM pgrules.rule WHERE name = 'lineitem.amount'"); got != seq+" row.quantity * 2" {
		t.Fatalf("after redefinition: %s, want seq %s", got, seq)
	}
	// A rule may change kind under its name.
	scalar(t, conn, "SELECT pgrules.copy('lineitem.amount', 'product.price', name => 'lineitem.amount')")
	if got := scalar(t, conn, "SELECT kind || ' ' || seq FROM pgrules.rule WHERE name = 'lineitem.amount'"); got != "copy "+seq {
		t.Fatalf("after redefinition as a copy: %s", got)
	}
}

func TestDefineLifecycle(t *testing.T) {
	_, conn := installedDB(t, "")
	ctx := context.Background()
	state := func() string {
		return scalar(t, conn, "SELECT coalesce(string_agg(name || ' ' || enabled, ', ' ORDER BY seq), 'none') FROM pgrules.rule")
	}

	tx, _ := conn.Begin(ctx)
	scalar(t, tx, "SELECT pgrules.constraint('customer', 'true', 'm')")
	tx.Rollback(ctx)
	if got := state(); got != "none" {
		t.Fatalf("after a rolled-back definition: %s", got)
	}

	scalar(t, conn, "SELECT pgrules.constraint('customer', 'true', 'm', name => 'c')")
	for _, tc := range []struct{ sql, want string }{
		{"SELECT pgrules.disable_rule('c')", "c false"},
		{"SELECT pgrules.disable_rule('c')", "c false"},
		{"SELECT pgrules.enable_rule('c')", "c true"},
		{"SELECT pgrules.drop_rule('c')", "none"},
	} {
		tx, _ := conn.Begin(ctx)
		if got := scalar(t, tx, tc.sql); got != "c" {
			t.Fatalf("%s returned %s", tc.sql, got)
		}
		if tc.want != "none" && scalar(t, tx, "SELECT (txid = pg_current_xact_id())::text FROM pgrules.rule WHERE name = 'c'") != "true" {
			t.Fatalf("%s did not mark the rule as written by the transaction", tc.sql)
		}
		tx.Commit(ctx)
		if got := state(); got != tc.want {
			t.Fatalf("after %s: %s, want %s", tc.sql, got, tc.want)
		}
	}
}

// TestDefinitionsSerialize: a second transaction defining a rule waits for
// the first to end, and then sees its rules, so that both cannot take the
// same default name.
func TestDefinitionsSerialize(t *testing.T) {
	url, a := installedDB(t, "")
	b := connect(t, url)
	ctx := context.Background()
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if got := scalar(t, tx, "SELECT pgrules.constraint('customer', 'true', 'a')"); got != "customer_constraint_1" {
		t.Fatalf("first: %s", got)
	}
	second := make(chan string, 1)
	go func() {
		var name string
		if err := b.QueryRow(ctx, "SELECT pgrules.constraint('customer', 'true', 'b')").Scan(&name); err != nil {
			name = err.Error()
		}
		second <- name
	}()
	select {
	case got := <-second:
		t.Fatalf("the second definition did not wait: %s", got)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-second; got != "customer_constraint_2" {
		t.Fatalf("second: %s", got)
	}
}

func TestDefineErrors(t *testing.T) {
	_, conn := installedDB(t, `CREATE SCHEMA sales;
		CREATE TABLE sales.lineitem (id int PRIMARY KEY, amount numeric);
		CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount_total > 1000`)
	ctx := context.Background()
	for _, q := range []string{
		"SELECT pgrules.sum('orders.amount_total', 'lineitem.amount')",
		"SELECT pgrules.formula('lineitem.amount', '1')",
	} {
		scalar(t, conn, q)
	}
	for _, tc := range []struct {
		name, sql, code string
		says            []string // in the message or hint
	}{
		{"unknown table", `SELECT pgrules.formula('nosuch.x', '1')`, "42P01", []string{`rule "nosuch.x"`, `"nosuch"`, "search_path"}},
		{"unknown schema", `SELECT pgrules.formula('nosuch.lineitem.x', '1')`, "42P01", []string{`rule "lineitem.x"`, "nosuch.lineitem"}},
		{"count of a column", `SELECT pgrules.count('customer.unpaid_order_count', 'orders.amount_total')`, "42P01",
			[]string{`rule "customer.unpaid_order_count"`, `no schema "orders"`}},
		{"unknown table of a constraint", `SELECT pgrules.constraint('nosuch', 'true', 'm')`, "42P01", []string{`rule "nosuch_constraint_1"`}},
		{"unknown target column", `SELECT pgrules.formula('lineitem.nosuch', '1')`, "42703", []string{`rule "lineitem.nosuch"`, `"nosuch"`}},
		{"unknown child column", `SELECT pgrules.max('customer.balance', 'orders.nosuch')`, "42703", []string{`rule "customer.balance"`, `"nosuch"`, "orders"}},
		{"unknown parent column", `SELECT pgrules.copy('lineitem.unit_price', 'product.nosuch', name => 'p')`, "42703", []string{`rule "p"`, `"nosuch"`}},
		{"target without a column", `SELECT pgrules.formula('lineitem', '1')`, "42P17", []string{`rule "lineitem"`, "'table.column'"}},
		{"target of four parts", `SELECT pgrules.formula('a.b.c.d', '1')`, "42P17", []string{`rule "a.b.c.d"`, "'table.column'"}},
		{"unterminated quote", `SELECT pgrules.formula('lineitem."amount', '1')`, "42P17", []string{"'table.column'"}},
		{"NULL target", `SELECT pgrules.formula(NULL, '1', name => 'n')`, "42P17", []string{`rule "n"`, "NULL"}},
		{"of without a column", `SELECT pgrules.sum('orders.amount_total', 'lineitem', name => 's')`, "42P17", []string{`rule "s"`, "of"}},
		{"count of three parts", `SELECT pgrules.count('customer.unpaid_order_count', 'public.orders.id')`, "42P17", []string{"'schema.table'"}},
		{"a view", `SELECT pgrules.constraint('big_orders', 'true', 'm')`, "42809", []string{`rule "big_orders_constraint_1"`, "a view"}},
		{"an index", `SELECT pgrules.formula('customer_pkey.id', '1')`, "42809", []string{"an index"}},
		{"a system table", `SELECT pgrules.event('pg_class', 'row', 'x')`, "42809", []string{`rule "pg_class_event_1"`, "pg_catalog.pg_class"}},
		{"pgrules' own table", `SELECT pgrules.constraint('pgrules.rule', 'true', 'm')`, "42809", []string{"pgrules.rule"}},
		{"empty expression", `SELECT pgrules.formula('orders.notes', ' ')`, "42P17", []string{`rule "orders.notes"`, "expression", "row."}},
		{"empty condition", `SELECT pgrules.constraint('customer', '', 'm')`, "42P17", []string{`rule "customer_constraint_1"`, "condition"}},
		{"NULL message", `SELECT pgrules.commit_constraint('orders', 'true', NULL)`, "42P17", []string{`rule "orders_commit_constraint_1"`, "message"}},
		{"empty action", `SELECT pgrules.event('orders', 'row', '')`, "42P17", []string{`rule "orders_event_1"`, "action"}},
		{"unknown timing", `SELECT pgrules.event('orders', 'later', 'x', name => 'e')`, "42P17", []string{`rule "e"`, "'later'", "after_commit"}},
		{"NULL timing", `SELECT pgrules.event('orders', NULL, 'x')`, "42P17", []string{"NULL", "pre_insert"}},
		{"unknown verb", `SELECT pgrules.event('orders', 'row', 'x', verbs => '{insert,upsert}')`, "42P17", []string{"upsert", "{insert,update,delete}"}},
		{"no verbs", `SELECT pgrules.event('orders', 'row', 'x', verbs => '{}')`, "42P17", []string{"{insert,update,delete}"}},
		{"empty name", `SELECT pgrules.formula('orders.notes', '1', name => '')`, "42P17", []string{"name"}},
		{"second derivation", `SELECT pgrules.formula('orders.amount_total', '0', name => 'other')`, "42P17",
			[]string{`rule "other"`, "orders.amount_total", `rule "orders.amount_total"`, "drop_rule"}},
		{"default name taken in another schema", `SELECT pgrules.formula('sales.lineitem.amount', '1')`, "42710",
			[]string{`rule "lineitem.amount"`, "public.lineitem.amount", "name =>"}},
		{"drop an unknown rule", `SELECT pgrules.drop_rule('nope')`, "42704", []string{`rule "nope"`}},
		{"enable an unknown rule", `SELECT pgrules.enable_rule('nope')`, "42704", []string{`rule "nope"`}},
		{"disable an unknown rule", `SELECT pgrules.disable_rule('nope')`, "42704", []string{`rule "nope"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := scalar(t, conn, "SELECT count(*)::text FROM pgrules.rule")
			_, err := conn.Exec(ctx, tc.sql)
			pe := pgError(err)
			if pe == nil || pe.Code != tc.code {
				t.Fatalf("%s: %v, want SQLSTATE %s", tc.sql, err, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(pe.Message+" | "+pe.Hint, s) {
					t.Errorf("%q (hint %q) does not say %q", pe.Message, pe.Hint, s)
				}
			}
			if pe.Code == "42P17" && pe.Hint == "" {
				t.Errorf("%q has no hint", pe.Message)
			}
			if after := scalar(t, conn, "SELECT count(*)::text FROM pgrules.rule"); after != before {
				t.Fatalf("%s rules after the error, %s before", after, before)
			}
		})
	}
}

func TestRelationships(t *testing.T) {
	_, conn := installedDB(t, `
		CREATE TABLE dept (id int PRIMARY KEY, code text NOT NULL, UNIQUE (code, id));
		CREATE TABLE emp (
			id int PRIMARY KEY,
			dept_id int REFERENCES dept ON DELETE CASCADE ON UPDATE SET NULL,
			boss int CONSTRAINT reports_to REFERENCES emp,
			mentor_id int CONSTRAINT mentored_by REFERENCES emp,
			mentor text,
			site_id int CONSTRAINT site_a REFERENCES dept,
			CONSTRAINT site_b FOREIGN KEY (site_id) REFERENCES emp,
			a_id int, b text,
			CONSTRAINT pair FOREIGN KEY (b, a_id) REFERENCES dept (code, id));
		CREATE TABLE pp (id int PRIMARY KEY) PARTITION BY RANGE (id);
		CREATE TABLE pp1 PARTITION OF pp FOR VALUES FROM (0) TO (100);
		CREATE TABLE pp2 PARTITION OF pp FOR VALUES FROM (100) TO (200);
		CREATE TABLE cp (id int PRIMARY KEY, pp_id int REFERENCES pp) PARTITION BY RANGE (id);
		CREATE TABLE cp1 PARTITION OF cp FOR VALUES FROM (0) TO (100)`)
	got := scalar(t, conn, `SELECT string_agg(format('%s.%s %s: %s %s -> %s.%s %s %s%s', child_schema, child_table, name, accessor,
		child_columns, parent_schema, parent_table, parent_columns, on_delete, on_update), E'\n')
		FROM pgrules.relationships`)
	want := strings.Join([]string{
		// The copies of a key referencing a partitioned table, one per
		// partition, are left out; a partition of a child table keeps the
		// key it inherits.
		"public.cp cp_pp_id_fkey: pp {pp_id} -> public.pp {id} aa",
		"public.cp1 cp_pp_id_fkey: pp {pp_id} -> public.pp {id} aa",
		// cascade, set null
		"public.emp emp_dept_id_fkey: dept {dept_id} -> public.dept {id} cn",
		// emp has a column "mentor"
		"public.emp mentored_by: mentored_by {mentor_id} -> public.emp {id} aa",
		// several columns, in key order
		"public.emp pair: pair {b,a_id} -> public.dept {code,id} aa",
		// no _id suffix
		"public.emp reports_to: reports_to {boss} -> public.emp {id} aa",
		// two keys strip to "site"
		"public.emp site_a: site_a {site_id} -> public.dept {id} aa",
		"public.emp site_b: site_b {site_id} -> public.emp {id} aa",
		"public.lineitem lineitem_order_id_fkey: order {order_id} -> public.orders {id} aa",
		"public.lineitem lineitem_product_id_fkey: product {product_id} -> public.product {id} aa",
		"public.orders orders_customer_id_fkey: customer {customer_id} -> public.customer {id} aa",
	}, "\n")
	if got != want {
		t.Fatalf("relationships:\n%s\nwant\n%s", got, want)
	}
}

func TestRaise(t *testing.T) {
	url, conn := installedDB(t, "")
	ctx := context.Background()
	_, err := conn.Exec(ctx, "SELECT pgrules.raise('23514', 'too much', 'the detail', 'the hint', 'public', 'customer', 'credit_limit', 'balance')")
	pe := pgError(err)
	if pe == nil || pe.Code != "23514" || pe.Message != "too much" || pe.Detail != "the detail" || pe.Hint != "the hint" ||
		pe.SchemaName != "public" || pe.TableName != "customer" || pe.ConstraintName != "credit_limit" || pe.ColumnName != "balance" {
		t.Fatalf("raise with every field: %#v", err)
	}
	if pe := pgError(conn.QueryRow(ctx, "SELECT pgrules.raise(NULL, 'no code')").Scan(new(string))); pe == nil || pe.Code != "P0001" || pe.Message != "no code" {
		t.Fatalf("raise without a code: %#v", pe)
	}

	// NULL fields are left out of the ErrorResponse, not sent empty: only
	// the wire shows the difference.
	for _, tc := range []struct{ sql, sent, absent string }{
		{"SELECT pgrules.raise('P0001', 'only a message')", "CM", "DHstnc"},
		{"SELECT pgrules.raise('22012', 'm', hint => 'h', table_name => 't')", "CMHt", "Dsnc"},
		{"SELECT pgrules.raise('22012', 'm', detail => 'd', schema_name => 's', constraint_name => 'n', column_name => 'c')", "CMDsnc", "Ht"},
	} {
		fields := errorFields(t, url, tc.sql)
		for _, f := range []byte(tc.sent) {
			if _, ok := fields[f]; !ok {
				t.Errorf("%s: field %c missing from %q", tc.sql, f, fields)
			}
		}
		for _, f := range []byte(tc.absent) {
			if v, ok := fields[f]; ok {
				t.Errorf("%s: field %c sent (%q)", tc.sql, f, v)
			}
		}
	}
}

// errorFields runs sql in the simple protocol and returns the fields of the
// ErrorResponse by their type byte.
func errorFields(t *testing.T, url, sql string) map[byte]string {
	t.Helper()
	ctx := context.Background()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.SyncConn(ctx); err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	query, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc.Conn.Write(query); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(hc.Conn)
	fields := make(map[byte]string)
	for {
		var head [5]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			t.Fatal(err)
		}
		body := make([]byte, binary.BigEndian.Uint32(head[1:])-4)
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatal(err)
		}
		switch head[0] {
		case 'E':
			for len(body) > 1 {
				end := bytes.IndexByte(body, 0)
				fields[body[0]] = string(body[1:end])
				body = body[end+1:]
			}
		case 'Z':
			return fields
		}
	}
}

func TestExplain(t *testing.T) {
	_, conn := installedDB(t, "")
	ctx := context.Background()
	const direct = "SELECT * FROM pgrules.explain('lineitem')"
	pe := pgError(func() error { _, err := conn.Exec(ctx, direct); return err }())
	if pe == nil || pe.Code != "55000" || pe.Message != "pgrules.explain is answered by the pgrules proxy" || !strings.Contains(pe.Hint, "pgrules explain") {
		t.Fatalf("explain without the proxy: %#v", pe)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// As the proxy hands it over: a Go nil slice arrives as null.
	if _, err := tx.Exec(ctx, `SELECT set_config('pgrules.explain', $1, true)`, `{"public.lineitem": [
		{"position": 2, "rule": "lineitem.amount", "kind": "formula", "target": "lineitem.amount",
		 "reads": ["lineitem.quantity", "lineitem.unit_price"], "depends_on": ["lineitem.unit_price"], "used_by": null},
		{"position": 1, "rule": "lineitem.unit_price", "kind": "copy", "target": "lineitem.unit_price",
		 "reads": ["product.price"], "depends_on": null, "used_by": ["lineitem.amount"]}]}`); err != nil {
		t.Fatal(err)
	}
	const rows = `SELECT coalesce(string_agg(concat_ws(' ', position, rule, kind, target, reads, depends_on, used_by), E'\n'), 'none')
		FROM pgrules.explain($1)`
	want := "1 lineitem.unit_price copy lineitem.unit_price {product.price} {} {lineitem.amount}\n" +
		"2 lineitem.amount formula lineitem.amount {lineitem.quantity,lineitem.unit_price} {lineitem.unit_price} {}"
	for _, tbl := range []string{"lineitem", "public.lineitem", "LineItem"} {
		if got := scalar(t, tx, rows, tbl); got != want {
			t.Fatalf("explain(%s):\n%s\nwant\n%s", tbl, got, want)
		}
	}
	if got := scalar(t, tx, rows, "customer"); got != "none" {
		t.Fatalf("explain of a table without rules: %s", got)
	}
	if pe := pgError(tx.QueryRow(ctx, rows, "nosuch").Scan(new(string))); pe == nil || pe.Code != "42P01" {
		t.Fatalf("explain of an unknown table: %v", pe)
	}
	tx.Rollback(ctx)

	// The setting was the transaction's: it reads '' now.
	if _, err := conn.Exec(ctx, direct); pgError(err) == nil || pgError(err).Code != "55000" {
		t.Fatalf("explain after the proxy's transaction: %v", err)
	}
}

func TestNotify(t *testing.T) {
	url, conn := installedDB(t, "")
	ctx := context.Background()
	db := scalar(t, conn, "SELECT current_database()")
	listener := connect(t, url)
	if _, err := listener.Exec(ctx, "LISTEN pgrules"); err != nil {
		t.Fatal(err)
	}

	tx, _ := conn.Begin(ctx)
	scalar(t, tx, "SELECT pgrules.formula('lineitem.amount', 'row.quantity')")
	tx.Rollback(ctx)
	if n := notifications(t, listener); len(n) != 0 {
		t.Fatalf("a rolled-back definition notified %v", n)
	}

	statements := []string{
		"SELECT pgrules.formula('lineitem.amount', 'row.quantity')",
		"SELECT pgrules.disable_rule('lineitem.amount')",
		"SELECT pgrules.drop_rule('lineitem.amount')",
	}
	if superuser(t, conn) == "1" {
		statements = append(statements, "CREATE TABLE t (id int)") // through the DDL event trigger
	}
	for _, q := range statements {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
		if n := notifications(t, listener); len(n) != 1 || n[0] != db {
			t.Fatalf("%s notified %v, want once with %q", q, n, db)
		}
	}
}

// TestUnnest: pgrules._unnest is unnest, with an estimate of one row: the
// server's own function when a superuser installs, a SQL one otherwise.
func TestUnnest(t *testing.T) {
	ctx := context.Background()
	url, conn := installedDB(t, "")
	if superuser(t, conn) == "0" {
		checkUnnest(t, conn, "sql")
		return
	}
	checkUnnest(t, conn, "internal")

	// The same database installed afresh by a role that owns it.
	db := scalar(t, conn, "SELECT current_database()")
	role := "unnest_owner_" + strings.ReplaceAll(db, "-", "_")
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP SCHEMA pgrules CASCADE; CREATE ROLE %[1]s LOGIN; GRANT CREATE ON DATABASE %[2]s TO %[1]s",
		role, pgx.Identifier{db}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(ctx, fmt.Sprintf("DROP SCHEMA IF EXISTS pgrules CASCADE; DROP OWNED BY %[1]s; DROP ROLE %[1]s", role))
	})
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = role
	owner, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, _, err := Install(ctx, owner); err != nil {
		t.Fatal(err)
	}
	checkUnnest(t, owner, "sql")
}

func checkUnnest(t *testing.T, conn *pgx.Conn, lang string) {
	t.Helper()
	if got := scalar(t, conn, "SELECT l.lanname || ' ' || p.prorows FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.oid = 'pgrules._unnest(anyarray)'::regprocedure"); got != lang+" 1" {
		t.Fatalf("pgrules._unnest is %s, want %s 1", got, lang)
	}
	for q, want := range map[string]string{
		"SELECT string_agg(x, ',' ORDER BY o) FROM pgrules._unnest('{b,NULL,a}'::text[]) WITH ORDINALITY AS u(x, o)":                 "b,a",
		"SELECT count(*)::text FROM pgrules._unnest('{b,NULL,a}'::text[])":                                                           "3",
		"SELECT count(*)::text FROM pgrules._unnest(NULL::int[])":                                                                    "0",
		"SELECT string_agg(x || y, ',') FROM ROWS FROM (pgrules._unnest('{1,2}'::int[]), pgrules._unnest('{a}'::text[])) AS u(x, y)": "1a",
	} {
		if got := scalar(t, conn, q); got != want {
			t.Errorf("%s (%s): %s, want %s", q, lang, got, want)
		}
	}
}
