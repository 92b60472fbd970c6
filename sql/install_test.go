package sql

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/pgerr"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

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

func scalar(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s *string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "NULL"
	}
	return *s
}

func TestInstallIdempotent(t *testing.T) {
	conn := connect(t, pgtest.DB(t))
	ctx := context.Background()
	for i, want := range [][2]int{{0, Version}, {Version, Version}} {
		from, to, err := Install(ctx, conn)
		if err != nil || from != want[0] || to != want[1] {
			t.Fatalf("install %d: %d → %d, %v; want %v", i+1, from, to, err, want)
		}
	}
	if got := scalar(t, conn, "SELECT string_agg(version::text, ',' ORDER BY version) FROM pgrules.schema_version"); got != "1,2" {
		t.Fatalf("versions %s", got)
	}
}

func TestUpgradeKeepsRules(t *testing.T) {
	url := pgtest.DB(t)
	conn := connect(t, url)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema); err != nil {
		t.Fatal(err)
	}
	if _, _, err := installUpTo(ctx, conn, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO pgrules.rule (name, table_schema, table_name, kind, target_column, expression)
		VALUES ('lineitem.amount', 'public', 'lineitem', 'formula', 'amount', 'row.quantity * row.unit_price')`); err != nil {
		t.Fatal(err)
	}
	from, to, err := Install(ctx, conn)
	if err != nil || from != 1 || to != Version {
		t.Fatalf("upgrade: %d → %d, %v", from, to, err)
	}
	if got := scalar(t, conn, "SELECT expression || ' by ' || defined_by FROM pgrules.rules WHERE name = 'lineitem.amount'"); got != "row.quantity * row.unit_price by postgres" {
		t.Fatalf("after the upgrade: %s", got)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	conn := connect(t, pgtest.DB(t))
	ctx := context.Background()
	if _, _, err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	conn.Exec(ctx, "INSERT INTO pgrules.schema_version (version) VALUES ($1)", Version+1)
	_, _, err := Install(ctx, conn)
	if pgerr.Code(err) != pgerr.ObjectNotInPrereqState {
		t.Fatalf("install over a newer schema: %v, want 55000", err)
	}
}

func TestDefinitionFunctions(t *testing.T) {
	url := pgtest.DB(t)
	conn := connect(t, url)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema+`;
		CREATE TABLE dept (id int PRIMARY KEY);
		CREATE TABLE emp (id int PRIMARY KEY, dept_id int REFERENCES dept, on_loan_to int CONSTRAINT on_loan REFERENCES dept,
			boss int REFERENCES emp, a int, b int, FOREIGN KEY (a, b) REFERENCES emp2 (x, y));`); err == nil {
		t.Fatal("expected the missing emp2 to fail")
	}
	if err := pgtest.Exec(ctx, url, demo.Schema+`;
		CREATE TABLE dept (id int PRIMARY KEY, dept int);
		CREATE TABLE emp2 (x int, y int, PRIMARY KEY (x, y));
		CREATE TABLE emp (id int PRIMARY KEY, dept_id int REFERENCES dept, on_loan_to int CONSTRAINT on_loan REFERENCES dept,
			boss int CONSTRAINT boss_fk REFERENCES emp, a int, b int, CONSTRAINT two FOREIGN KEY (a, b) REFERENCES emp2 (x, y));`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ sql, want string }{
		{"SELECT pgrules.sum('orders.amount_total', 'lineitem.amount')", "orders.amount_total"},
		{"SELECT pgrules.count('customer.unpaid_order_count', 'orders', 'not row.paid')", "customer.unpaid_order_count"},
		{"SELECT pgrules.min('public.customer.credit_limit', 'orders.amount_total', name => 'smallest')", "smallest"},
		{"SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_price')", "lineitem.amount"},
		{"SELECT pgrules.copy('lineitem.unit_price', 'product.price', via => 'lineitem_product_id_fkey')", "lineitem.unit_price"},
		{"SELECT pgrules.constraint('customer', 'row.balance <= row.credit_limit', 'too much')", "customer_constraint_1"},
		{"SELECT pgrules.constraint('customer', 'row.balance >= 0', 'negative')", "customer_constraint_2"},
		{"SELECT pgrules.commit_constraint('orders', 'true', 'm')", "orders_commit_constraint_1"},
		{"SELECT pgrules.event('orders', 'row', 'notify(\"x\", row.id)', verbs => '{insert}')", "orders_event_1"},
		{"SELECT pgrules.drop_rule('customer_constraint_1')", "customer_constraint_1"},
		{"SELECT pgrules.constraint('customer', 'true', 'lowest free n')", "customer_constraint_1"},
		{"SELECT pgrules.max('customer.balance', 'orders.amount_total', filter => 'row.paid')", "customer.balance"},
	} {
		if got := scalar(t, conn, tc.sql); got != tc.want {
			t.Fatalf("%s = %s, want %s", tc.sql, got, tc.want)
		}
	}
	seq := scalar(t, conn, "SELECT seq::text FROM pgrules.rule WHERE name = 'lineitem.amount'")
	scalar(t, conn, "SELECT pgrules.formula('lineitem.amount', 'row.quantity * 2')")
	if got := scalar(t, conn, "SELECT seq::text || ' ' || expression FROM pgrules.rule WHERE name = 'lineitem.amount'"); got != seq+" row.quantity * 2" {
		t.Fatalf("redefined: %s (seq was %s)", got, seq)
	}

	for _, tc := range []struct{ sql, code string }{
		{"SELECT pgrules.formula('nosuch.x', '1')", "42P01"},
		{"SELECT pgrules.formula('lineitem.nosuch', '1')", "42703"},
		{"SELECT pgrules.formula('lineitem', '1')", "42P17"},
		{"SELECT pgrules.formula('lineitem.note', '')", "42703"},
		{"SELECT pgrules.formula('orders.notes', ' ')", "42P17"},
		{"SELECT pgrules.sum('orders.amount_total', 'lineitem.quantity', name => 'again')", "42P17"},
		{"SELECT pgrules.event('orders', 'later', 'x')", "42P17"},
		{"SELECT pgrules.event('orders', 'row', 'x', verbs => '{upsert}')", "42P17"},
		{"SELECT pgrules.drop_rule('nope')", "42704"},
		{"SELECT pgrules.enable_rule('nope')", "42704"},
	} {
		_, err := conn.Exec(ctx, tc.sql)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s: %v, want %s", tc.sql, err, tc.code)
		}
	}

	scalar(t, conn, "SELECT pgrules.disable_rule('smallest')")
	if got := scalar(t, conn, "SELECT enabled::text FROM pgrules.rules WHERE name = 'smallest'"); got != "false" {
		t.Fatalf("disabled: %s", got)
	}
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, "SELECT pgrules.drop_rule('smallest')")
	tx.Rollback(ctx)
	if got := scalar(t, conn, "SELECT count(*)::text FROM pgrules.rule WHERE name = 'smallest'"); got != "1" {
		t.Fatalf("rolled-back drop: %s rules", got)
	}

	if got := scalar(t, conn, `SELECT string_agg(name || ':' || accessor, ' ' ORDER BY name) FROM pgrules.relationships WHERE child_table = 'emp'`); got != "boss_fk:boss_fk emp_dept_id_fkey:dept_id on_loan:on_loan two:two" {
		// dept_id's stripped name "dept" is no column of emp, so it would be
		// "dept"; see the next check for the clash case.
		if got != "boss_fk:boss_fk emp_dept_id_fkey:dept on_loan:on_loan two:two" {
			t.Fatalf("accessors: %s", got)
		}
	}
	if got := scalar(t, conn, `SELECT accessor FROM pgrules.relationships WHERE name = 'lineitem_order_id_fkey'`); got != "order" {
		t.Fatalf("order_id accessor: %s", got)
	}
	if got := scalar(t, conn, `SELECT array_to_string(child_columns, ',') || '>' || array_to_string(parent_columns, ',') FROM pgrules.relationships WHERE name = 'two'`); got != "a,b>x,y" {
		t.Fatalf("composite key: %s", got)
	}
}

func TestRaiseAndNotify(t *testing.T) {
	url := pgtest.DB(t)
	conn := connect(t, url)
	ctx := context.Background()
	if _, _, err := Install(ctx, conn); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "SELECT pgrules.raise('23514', 'too much', 'd', 'h', 'public', 'customer', 'credit_limit', 'balance')")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" || pe.Message != "too much" || pe.Detail != "d" || pe.Hint != "h" ||
		pe.SchemaName != "public" || pe.TableName != "customer" || pe.ConstraintName != "credit_limit" || pe.ColumnName != "balance" {
		t.Fatalf("raise: %+v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pgrules.raise('P0001', 'only a message')"); !errors.As(err, &pe) || pe.Code != "P0001" {
		t.Fatalf("raise with defaults: %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT * FROM pgrules.explain('pg_class')"); !errors.As(err, &pe) || pe.Code != "55000" {
		t.Fatalf("explain without the proxy: %v", err)
	}

	listener := connect(t, url)
	if _, err := listener.Exec(ctx, "LISTEN pgrules"); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.Exec(ctx, url, "CREATE TABLE t (id int PRIMARY KEY, v int)"); err != nil {
		t.Fatal(err)
	}
	drain := func() int {
		n := 0
		for {
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err := listener.WaitForNotification(wctx)
			cancel()
			if err != nil {
				return n
			}
			n++
		}
	}
	if n := drain(); n == 0 {
		t.Fatal("no notification for DDL")
	}
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, "SELECT pgrules.formula('t.v', 'row.id')")
	tx.Rollback(ctx)
	if n := drain(); n != 0 {
		t.Fatalf("%d notifications for a rolled-back definition", n)
	}
	conn.Exec(ctx, "SELECT pgrules.formula('t.v', 'row.id')")
	if n := drain(); n == 0 {
		t.Fatal("no notification for a committed definition")
	}
}
