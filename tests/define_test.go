package tests

import (
	"context"
	"errors"
	"github.com/rs/zerolog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/rules"
	pgsql "github.com/pgrules/pgrules/sql"
)

// Rules defined in psql and pgx through the proxy (rules-api.md §2, §3,
// §6): stored, listed, compiled at once, refused with the right SQLSTATE
// and nothing stored when bad.

// withEngine gives the proxy the rules engine, as `pgrules serve` does.
func withEngine(s *server) proxyOption { return withEngineSetup(s, installSchema) }

func installSchema(ctx context.Context, conn *pgx.Conn) error {
	_, _, err := pgsql.Install(ctx, conn)
	return err
}

// withEngineSetup is withEngine with another setup of the catalog
// connection in place of installing the schema.
func withEngineSetup(s *server, setup func(context.Context, *pgx.Conn) error) proxyOption {
	return func(p *proxy.Config) { p.Rules = rules.NewEngine(engineConfig(s, setup, p.Logger)) }
}

// engineConfig is the engine's configuration for a proxy in front of s.
func engineConfig(s *server, setup func(context.Context, *pgx.Conn) error, log zerolog.Logger) rules.EngineConfig {
	return rules.EngineConfig{
		Connect: func(ctx context.Context, database string) (*pgx.Conn, error) {
			cfg, err := pgx.ParseConfig(s.url("", "", database))
			if err != nil {
				return nil, err
			}
			cfg.RuntimeParams["application_name"] = rules.CatalogApplicationName
			return pgx.ConnectConfig(ctx, cfg)
		},
		Setup:  setup,
		Logger: log,
	}
}

// creditDB is a database with the check-credit schema and data, and a
// proxy with the engine in front of it.
func creditDB(t *testing.T) (db string, p *testProxy, admin *pgconn.PgConn) {
	t.Helper()
	db = shared.newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := demo.Load(ctx, shared.url("", "", db)); err != nil {
		t.Fatal(err)
	}
	p = startProxy(t, shared)
	return db, p, connect(t, shared.url("", "", db))
}

// pgError runs sql with the simple protocol and returns the server's
// error (nil when it succeeded).
func pgError(t *testing.T, c *pgconn.PgConn, sql string) *pgconn.PgError {
	t.Helper()
	return evExec(t, protocols[0].exec, c, sql)
}

// defineCreditRules runs the scenario's rules.sql on c, a statement at a
// time, as psql would send it.
func defineCreditRules(t *testing.T, c *pgconn.PgConn) {
	t.Helper()
	for _, stmt := range strings.Split(strings.TrimSpace(demo.Rules), ";\n") {
		if e := pgError(t, c, stmt); e != nil {
			t.Fatalf("%s: %v", stmt, e)
		}
	}
}

func TestDefineCheckCredit(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	got := scalar(t, admin, "SELECT string_agg(name || ':' || kind, ' ' ORDER BY name) FROM pgrules.rules")
	want := "credit_limit:constraint customer.balance:sum customer.unpaid_order_count:count lineitem.amount:formula lineitem.unit_price:copy orders.amount_total:sum"
	if got != want {
		t.Fatalf("rules: %s\nwant:  %s", got, want)
	}
	// The scenario's rules again, from psql as a user would run them: a
	// rules script can be re-run.
	script := filepath.Join(t.TempDir(), "rules.sql")
	if err := os.WriteFile(script, []byte(demo.Rules), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", p.url("", "", db), "-f", script).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f rules.sql: %v\n%s", err, out)
	}
	if n := scalar(t, admin, "SELECT count(*) FROM pgrules.rule"); n != "6" {
		t.Fatalf("%s rules after re-running the script, want 6", n)
	}
	// A bad definition in psql: the user sees which rule, what and where.
	out, err = exec.Command("psql", "-X", "-q", "-d", p.url("", "", db), "-c",
		"SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_prize')").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `ERROR:  rule "lineitem.amount": table lineitem has no column or parent "unit_prize"`) ||
		!strings.Contains(string(out), "at 1:20") {
		t.Fatalf("psql with a bad definition: %v\n%s", err, out)
	}
	// explain through the proxy, in execution order.
	if got := scalar(t, c, "SELECT string_agg(rule, ',' ORDER BY position) FROM pgrules.explain('lineitem')"); got != "lineitem.unit_price,lineitem.amount" {
		t.Fatalf("explain lineitem: %q", got)
	}
	if e := pgError(t, admin, "SELECT * FROM pgrules.explain('lineitem')"); e == nil || e.Code != "55000" {
		t.Fatalf("explain directly: %v, want 55000", e)
	}
}

func TestDefineErrors(t *testing.T) {
	db, p, admin := creditDB(t)
	scalar(t, admin, `CREATE TABLE dept (id int PRIMARY KEY, payroll numeric DEFAULT 0);
		CREATE TABLE emp (id int PRIMARY KEY, salary numeric,
			works_for int CONSTRAINT works_for REFERENCES dept, on_loan_to int CONSTRAINT on_loan_to REFERENCES dept)`)
	c := connect(t, p.url("", "", db))
	scalar(t, c, "SELECT 1") // the session's rules are open, the schema installed
	for _, tc := range []struct {
		name, sql, code string
		says            []string // the message must contain each
	}{
		{"unknown table", `SELECT pgrules.formula('nosuch.x', '1')`, "42P01", []string{"nosuch"}},
		{"unknown target column", `SELECT pgrules.formula('lineitem.nosuch', '1')`, "42703", []string{"nosuch"}},
		{"unknown column in expression", `SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_prize')`, "", []string{"lineitem.amount", "unit_prize", "1:"}},
		{"syntax error", `SELECT pgrules.formula('lineitem.amount', 'row.quantity *')`, "", []string{"lineitem.amount", "1:"}},
		{"type error in a constraint", `SELECT pgrules.constraint('customer', 'row.name + 1 > 0', 'bad')`, "", []string{"customer_constraint_1"}},
		{"condition not boolean", `SELECT pgrules.constraint('customer', 'row.balance', 'bad', name => 'nb')`, "", []string{"nb"}},
		{"ambiguous relationship", `SELECT pgrules.sum('dept.payroll', 'emp.salary')`, "42P17", []string{"dept.payroll", "works_for", "on_loan_to"}},
		{"via naming no such key", `SELECT pgrules.sum('dept.payroll', 'emp.salary', via => 'nope')`, "", []string{"nope"}},
		{"sum of text", `SELECT pgrules.sum('orders.amount_total', 'lineitem.amount', name => 'x'), pgrules.sum('customer.balance', 'orders.notes')`, "", []string{"customer.balance"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := scalar(t, admin, "SELECT count(*) FROM pgrules.rule")
			e := pgError(t, c, tc.sql)
			if e == nil {
				t.Fatalf("%s succeeded", tc.sql)
			}
			if tc.code != "" && e.Code != tc.code || !strings.HasPrefix(e.Code, "42") {
				t.Fatalf("SQLSTATE %s (%s), want %s", e.Code, e.Message, or(tc.code, "42xxx"))
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Message+" "+e.Detail+" "+e.Hint, s) {
					t.Errorf("message %q (detail %q) does not mention %q", e.Message, e.Detail, s)
				}
			}
			if after := scalar(t, admin, "SELECT count(*) FROM pgrules.rule"); after != before {
				t.Fatalf("%s rules stored after the failed definition, %s before", after, before)
			}
			if got := scalar(t, c, "SELECT 'next'"); got != "next" || c.TxStatus() != 'I' {
				t.Fatalf("the session after the error: %q %c", got, c.TxStatus())
			}
		})
	}

	t.Run("cycle among formulas", func(t *testing.T) {
		scalar(t, c, `SELECT pgrules.formula('lineitem.amount', 'row.unit_price * 2')`)
		e := pgError(t, c, `SELECT pgrules.formula('lineitem.unit_price', 'row.amount / 2')`)
		if e == nil || !strings.HasPrefix(e.Code, "42") || !strings.Contains(e.Message+e.Detail, "lineitem.amount") {
			t.Fatalf("cycle: %v", e)
		}
		scalar(t, c, `SELECT pgrules.drop_rule('lineitem.amount')`)
	})
	t.Run("second derivation of a column", func(t *testing.T) {
		scalar(t, c, `SELECT pgrules.sum('orders.amount_total', 'lineitem.amount')`)
		e := pgError(t, c, `SELECT pgrules.formula('orders.amount_total', '0', name => 'other')`)
		if e == nil || e.Code != "42P17" || !strings.Contains(e.Message, "orders.amount_total") {
			t.Fatalf("second derivation: %v", e)
		}
	})
	t.Run("via chooses the relationship", func(t *testing.T) {
		if e := pgError(t, c, `SELECT pgrules.sum('dept.payroll', 'emp.salary', via => 'works_for')`); e != nil {
			t.Fatal(e)
		}
	})
	t.Run("extended protocol with parameters", func(t *testing.T) {
		ctx := context.Background()
		rr := c.ExecParams(ctx, "SELECT pgrules.formula($1, $2)", [][]byte{[]byte("lineitem.amount"), []byte("row.quantity * row.nope")}, nil, nil, nil).Read()
		if pe, ok := rr.Err.(*pgconn.PgError); !ok || !strings.HasPrefix(pe.Code, "42") || !strings.Contains(pe.Message, "nope") {
			t.Fatalf("bad definition with parameters: %v", rr.Err)
		}
		rr = c.ExecParams(ctx, "SELECT pgrules.formula($1, $2)", [][]byte{[]byte("lineitem.amount"), []byte("row.quantity * row.unit_price")}, nil, nil, nil).Read()
		if rr.Err != nil || len(rr.Rows) != 1 || string(rr.Rows[0][0]) != "lineitem.amount" {
			t.Fatalf("definition with parameters: %+v", rr)
		}
	})
	t.Run("inside a transaction", func(t *testing.T) {
		scalar(t, c, "BEGIN")
		e := pgError(t, c, `SELECT pgrules.formula('lineitem.amount', 'row.nope')`)
		if e == nil || c.TxStatus() != 'E' {
			t.Fatalf("error %v, status %c: want the transaction failed", e, c.TxStatus())
		}
		scalar(t, c, "ROLLBACK")
	})
}

func TestDefineLifecycle(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	rule := func() string {
		return scalar(t, admin, "SELECT coalesce(string_agg(name || ' ' || enabled || ' ' || message, ';'), 'none') FROM pgrules.rules WHERE kind = 'constraint'")
	}

	scalar(t, c, "BEGIN")
	scalar(t, c, `SELECT pgrules.constraint('customer', 'row.balance >= 0', 'negative')`)
	scalar(t, c, "ROLLBACK")
	if got := rule(); got != "none" {
		t.Fatalf("after ROLLBACK: %s", got)
	}
	if got := scalar(t, c, `SELECT pgrules.constraint('customer', 'row.balance >= 0', 'negative')`); got != "customer_constraint_1" {
		t.Fatalf("default name %q", got)
	}
	scalar(t, c, `SELECT pgrules.constraint('customer', 'row.balance >= 0', 'balance {row.balance} is negative', name => 'customer_constraint_1')`)
	if got := rule(); got != "customer_constraint_1 true balance {row.balance} is negative" {
		t.Fatalf("after redefinition: %s", got)
	}
	scalar(t, c, `SELECT pgrules.disable_rule('customer_constraint_1')`)
	if got := rule(); !strings.Contains(got, " false ") {
		t.Fatalf("after disable: %s", got)
	}
	scalar(t, c, `SELECT pgrules.enable_rule('customer_constraint_1')`)
	scalar(t, c, `SELECT pgrules.drop_rule('customer_constraint_1')`)
	if got := rule(); got != "none" {
		t.Fatalf("after drop: %s", got)
	}
	if e := pgError(t, c, `SELECT pgrules.drop_rule('customer_constraint_1')`); e == nil || e.Code != "42704" {
		t.Fatalf("dropping an unknown rule: %v", e)
	}

	// The other kinds of rule, through the proxy. min and max are NULL
	// without children: their targets must allow it (a NOT NULL target
	// fails the definition with the server's 23502).
	scalar(t, admin, "ALTER TABLE customer ADD smallest numeric, ADD largest numeric")
	for sql, name := range map[string]string{
		`SELECT pgrules.commit_constraint('orders', 'row.amount_total >= 0', 'an order cannot be negative')`: "orders_commit_constraint_1",
		`SELECT pgrules.event('orders', 'row', 'notify("orders", string(row.id))', verbs => '{insert}')`:     "orders_event_1",
		`SELECT pgrules.min('customer.smallest', 'orders.amount_total')`:                                     "customer.smallest",
		`SELECT pgrules.max('customer.largest', 'orders.amount_total', 'row.paid')`:                          "customer.largest",
	} {
		if got := scalar(t, c, sql); got != name {
			t.Fatalf("%s = %q, want %q", sql, got, name)
		}
	}
	if e := pgError(t, c, `SELECT pgrules.event('orders', 'row', 'set("notes", "x")')`); e == nil || e.Code != "42P17" || !strings.Contains(e.Message, "set") {
		t.Fatalf("set in a row event: %v", e)
	}
}

// TestDefineOnExistingRows: a derivation defined on tables that hold rows
// computes their values in the same transaction.
func TestDefineOnExistingRows(t *testing.T) {
	db, p, admin := creditDB(t)
	scalar(t, admin, `INSERT INTO orders (id, customer_id, paid) VALUES (1, 1, false), (2, 1, true), (3, 2, false);
		INSERT INTO lineitem (order_id, product_id, quantity, unit_price, amount) VALUES
			(1, 1, 3, 10.00, NULL), (1, 3, 7, 0.10, NULL), (2, 2, 1, NULL, NULL), (3, 2, 2, 25.50, NULL)`)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	for sql, want := range map[string]string{
		"SELECT string_agg(unit_price::text || '/' || amount::text, ' ' ORDER BY id) FROM lineitem": "10.00/30.00 0.10/0.70 25.50/25.50 25.50/51.00",
		"SELECT string_agg(amount_total::text, ' ' ORDER BY id) FROM orders":                        "30.70 25.50 51.00",
		"SELECT string_agg(balance || '/' || unpaid_order_count, ' ' ORDER BY id) FROM customer":    "30.70/1 51.00/1",
	} {
		if got := scalar(t, admin, sql); got != want {
			t.Errorf("%s\n got %s\nwant %s", sql, got, want)
		}
	}
}

// TestDefineSeenByOtherProxies: a rule defined through one proxy reaches
// another proxy's catalog within a second, and writes are never let past
// rules (a broken rule stored behind the proxy's back refuses them with
// 55000).
func TestDefineSeenByOtherProxies(t *testing.T) {
	db, p, admin := creditDB(t)
	other := startProxy(t, shared)
	a := connect(t, p.url("", "", db))
	b := connect(t, other.url("", "", db))
	scalar(t, a, "INSERT INTO orders (id, customer_id) VALUES (100, 1)")
	// The copy's effect, seen through the other proxy, in a transaction
	// rolled back. Until that proxy has reloaded, the guard refuses its
	// writes of lineitem (55000): they are never let past the new rule.
	copied := func() string {
		scalar(t, b, "BEGIN")
		defer scalar(t, b, "ROLLBACK")
		res, err := b.Exec(context.Background(), "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (100, 2, 1) RETURNING unit_price").ReadAll()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "55000" {
			return "refused"
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(res[0].Rows) == 0 || res[0].Rows[0][0] == nil {
			return "NULL"
		}
		return string(res[0].Rows[0][0])
	}
	if got := copied(); got != "NULL" {
		t.Fatalf("before any rule the line got unit_price %s", got)
	}
	scalar(t, a, `SELECT pgrules.copy('lineitem.unit_price', 'product.price')`)
	deadline := time.Now().Add(time.Second)
	for {
		got := copied()
		if got == "25.50" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other proxy still writes lines without the copy a second after the rule: unit_price %s", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e := pgError(t, b, "INSERT INTO orders (customer_id) VALUES (1)"); e != nil {
		t.Fatalf("a table without rules: %v", e)
	}

	scalar(t, admin, `INSERT INTO pgrules.rule (name, table_schema, table_name, kind, target_column, expression)
		VALUES ('broken', 'public', 'orders', 'formula', 'notes', 'row.no_such_column')`)
	deadline = time.Now().Add(time.Second)
	for {
		e := pgError(t, a, "UPDATE orders SET paid = paid")
		if e != nil && e.Code == "55000" && strings.Contains(e.Message, "broken") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write to a table with a broken rule: %v, want 55000 naming the rule", e)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNoSchema: a proxy whose role may not install the pgrules schema still
// serves a database without it: no schema, no rules, so writes pass, and
// calls into the schema get the server's own error.
func TestNoSchema(t *testing.T) {
	db := shared.newDB(t)
	ctx := context.Background()
	if err := demo.Load(ctx, shared.url("", "", db)); err != nil {
		t.Fatal(err)
	}
	noInstall := func(p *proxy.Config) {
		withEngine(shared)(p)
		p.Rules.(*rules.Engine).Close()
		p.Rules = rules.NewEngine(rules.EngineConfig{
			Connect: func(ctx context.Context, database string) (*pgx.Conn, error) {
				return pgx.Connect(ctx, shared.url("", "", database))
			},
			Setup: func(context.Context, *pgx.Conn) error {
				return errors.New("permission denied to create schema pgrules")
			},
		})
	}
	p := startProxy(t, shared, noInstall)
	c := connect(t, p.url("", "", db))
	if e := pgError(t, c, "INSERT INTO orders (customer_id) VALUES (1)"); e != nil {
		t.Fatalf("write without the pgrules schema: %v", e)
	}
	if e := pgError(t, c, "SELECT pgrules.formula('lineitem.amount', '1')"); e == nil || e.Code != "3F000" {
		t.Fatalf("a definition without the schema: %v, want the server's 3F000", e)
	}
}

// TestVerifyRebuildThroughProxy: pgrules.verify and pgrules.rebuild answered
// by the proxy in the client's transaction; directly they refuse with 55000.
func TestVerifyRebuildThroughProxy(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	// Rows written behind the proxy's back, with the guard lifted and the
	// derived values left out: verify lists each such write, and the
	// drift.
	scalar(t, admin, unguarded(`INSERT INTO orders (id, customer_id) VALUES (1, 1);
		INSERT INTO lineitem (order_id, product_id, quantity, unit_price) VALUES (1, 1, 3, 10.00)`))
	if got := scalar(t, c, "SELECT string_agg(rule || ' ' || key || ' ' || stored || '→' || computed, '; ' ORDER BY rule) FROM pgrules.verify() WHERE rule <> 'pgrules.guard'"); got !=
		"customer.unpaid_order_count 1 0→1; lineitem.amount 1 NULL→30.00" {
		t.Fatalf("verify: %s", got)
	}
	unguardedWrites := "SELECT string_agg(table_name || ' ' || split_part(stored, ' by ', 1), '; ' ORDER BY table_name) FROM pgrules.verify() WHERE rule = 'pgrules.guard'"
	if got := scalar(t, c, unguardedWrites); got != "public.lineitem INSERT; public.orders INSERT" {
		t.Fatalf("verify's writes with the guard lifted: %s", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify('product')"); got != "0" {
		t.Fatalf("verify of a table without derivations: %s rows", got)
	}
	// Verify compares each value with its definition over the stored
	// values it reads; rebuilding lineitem corrects the line and what is
	// downstream of it: the order's total and the customer's balance.
	if got := scalar(t, c, "SELECT string_agg(rule || ':' || rows_corrected, ' ') FROM pgrules.rebuild('lineitem')"); got != "lineitem.amount:1 orders.amount_total:1 customer.balance:1" {
		t.Fatalf("rebuild from lineitem: %s", got)
	}
	if got := scalar(t, admin, "SELECT balance || '/' || unpaid_order_count FROM customer WHERE id = 1"); got != "30.00/0" {
		t.Fatalf("after rebuild of lineitem: %s", got)
	}
	if got := scalar(t, c, unguardedWrites); got != "public.orders INSERT" {
		t.Fatalf("verify's writes with the guard lifted after rebuilding lineitem: %s", got)
	}
	if got := scalar(t, c, "SELECT sum(rows_corrected) FROM pgrules.rebuild()"); got != "1" {
		t.Fatalf("rebuild of everything corrected %s rows, want the count's 1", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("%s rows drift after rebuild", got)
	}
	if e := pgError(t, admin, "SELECT * FROM pgrules.verify()"); e == nil || e.Code != "55000" {
		t.Fatalf("verify directly: %v", e)
	}
	if e := pgError(t, c, "SELECT * FROM pgrules.rebuild('nosuch')"); e == nil || e.Code != "42P01" {
		t.Fatalf("rebuild of an unknown table: %v", e)
	}
}

// TestDefineTargetTypes: a sum, min, max or copy whose target cannot hold
// its value without loss is refused at definition with 42804, through the
// proxy and on a direct connection, and nothing is stored or computed; one
// stored behind the proxy's back refuses writes with 55000 (rules-api.md
// §8).
func TestDefineTargetTypes(t *testing.T) {
	c, admin, _, _ := rulesDB(t, `
		CREATE TABLE p (id int PRIMARY KEY, label text, n int NOT NULL DEFAULT 0, total numeric(12,2) NOT NULL DEFAULT 0,
		                hund numeric(12,-2));
		CREATE TABLE ch (id int PRIMARY KEY, p_id int REFERENCES p, amt numeric(12,2), qty int, tag text, fine numeric(12,4), loose numeric);
		INSERT INTO p (id, label) VALUES (1, 'first'), (2, 'second');
		INSERT INTO ch VALUES (1, 1, 2.50, 3, 'x'), (2, 1, 2.50, 4, 'y')`, nil)
	const state = "SELECT string_agg(concat_ws(':', id, label, n, total), ' ' ORDER BY id) FROM p"
	before := scalar(t, admin, state)
	for _, tc := range []struct {
		sql  string
		says []string
	}{
		{`SELECT pgrules.sum('p.label', 'ch.amt')`, []string{`"p.label"`, "(text)", "numeric(12,2)"}},
		{`SELECT pgrules.min('p.label', 'ch.amt')`, []string{`"p.label"`, "(text)", "numeric(12,2)"}},
		{`SELECT pgrules.max('p.label', 'ch.qty', name => 'lab')`, []string{`"lab"`, "(text)", "integer"}},
		{`SELECT pgrules.sum('p.n', 'ch.amt')`, []string{`"p.n"`, "integer", "numeric(12,2)"}},
		{`SELECT pgrules.copy('ch.qty', 'p.total')`, []string{`"ch.qty"`, "integer", "numeric(12,2)"}},
		{`SELECT pgrules.copy('ch.tag', 'p.total')`, []string{`"ch.tag"`, "(text)", "numeric(12,2)"}},
		{`SELECT pgrules.sum('p.total', 'ch.fine')`, []string{`"p.total"`, "numeric(12,4)", "numeric(12,2)"}},
		{`SELECT pgrules.sum('p.total', 'ch.loose')`, []string{`"p.total"`, "(numeric)", "numeric(12,2)"}},
		{`SELECT pgrules.sum('p.hund', 'ch.qty')`, []string{`"p.hund"`, "integer", "numeric(12,-2)"}},
	} {
		for _, conn := range []struct {
			name string
			c    *pgconn.PgConn
		}{{"proxy", c}, {"direct", admin}} {
			e := pgError(t, conn.c, tc.sql)
			if e == nil || e.Code != "42804" {
				t.Fatalf("%s (%s): %v, want 42804", tc.sql, conn.name, e)
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Message, s) {
					t.Errorf("%s (%s): %q does not say %s", tc.sql, conn.name, e.Message, s)
				}
			}
		}
	}
	if n := scalar(t, admin, "SELECT count(*) FROM pgrules.rule"); n != "0" {
		t.Fatalf("%s rules stored after refused definitions", n)
	}
	if got := scalar(t, admin, state); got != before {
		t.Fatalf("refused definitions changed the rows: %s, was %s", got, before)
	}
	for _, sql := range []string{
		`SELECT pgrules.sum('p.total', 'ch.qty')`,
		`SELECT pgrules.max('p.label', 'ch.tag')`,
		`SELECT pgrules.sum('p.n', 'ch.qty', name => 'n')`,
	} {
		if e := pgError(t, c, sql); e != nil {
			t.Fatalf("%s: %v", sql, e)
		}
	}
	if got := scalar(t, admin, state); got != "1:y:7:7.00 2:0:0.00" {
		t.Fatalf("after the accepted definitions: %s", got)
	}
	// The integer column's type changed behind the proxy's back: its sum
	// of integers now holds decimals, and writes that would run it fail.
	scalar(t, admin, "ALTER TABLE ch ALTER qty TYPE numeric(12,2)")
	deadline := time.Now().Add(2 * time.Second)
	for {
		e := pgError(t, c, "INSERT INTO ch (id, p_id, qty) VALUES (3, 1, 1.5)")
		if e != nil && e.Code == "55000" && strings.Contains(e.Message, `"n"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("write with a rule whose target no longer holds its value: %v, want 55000 naming rule \"n\"", e)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDefineUntranslatableOnEmptyTable: a derivation whose expression SQL
// cannot compute (string()) is accepted on a table without rows, since
// there are no existing rows to compute, and refused with 0A000 on one
// with rows; verify() and rebuild() leave it out.
func TestDefineUntranslatableOnEmptyTable(t *testing.T) {
	c, admin, _, _ := rulesDB(t, `
		CREATE TABLE p (id int PRIMARY KEY, total numeric(12,2) NOT NULL DEFAULT 0);
		CREATE TABLE ch (id int PRIMARY KEY, p_id int REFERENCES p, n int, label text, amt numeric(12,2));
		CREATE TABLE full_t (id int PRIMARY KEY, n int, label text);
		INSERT INTO p VALUES (1, 7), (2, 0);
		INSERT INTO full_t VALUES (1, 5, NULL)`, nil)
	for _, sql := range []string{
		`SELECT pgrules.formula('ch.label', '"n=" + string(row.n)')`,
		`SELECT pgrules.sum('p.total', 'ch.amt', 'string(row.n) != "0"')`,
	} {
		if e := pgError(t, c, sql); e != nil {
			t.Fatalf("%s on an empty table: %v", sql, e)
		}
	}
	if got := scalar(t, admin, "SELECT string_agg(id || ':' || total, ' ' ORDER BY id) FROM p"); got != "1:0.00 2:0.00" {
		t.Fatalf("the sum over no children: %s", got)
	}
	scalar(t, c, "INSERT INTO ch (id, p_id, n, amt) VALUES (1, 1, 3, 2.50), (2, 1, 0, 1.00)")
	if got := scalar(t, admin, "SELECT string_agg(label, ' ' ORDER BY id) || ' ' || (SELECT total FROM p WHERE id = 1) FROM ch"); got != "n=3 n=0 2.50" {
		t.Fatalf("after the insert: %s", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("verify: %s rows", got)
	}
	if got := scalar(t, c, "SELECT coalesce(string_agg(rule, ' '), '') FROM pgrules.rebuild()"); got != "" {
		t.Fatalf("rebuild computed %s", got)
	}
	e := pgError(t, c, `SELECT pgrules.formula('full_t.label', '"n=" + string(row.n)')`)
	if e == nil || e.Code != "0A000" {
		t.Fatalf("on a table with rows: %v, want 0A000", e)
	}
}
