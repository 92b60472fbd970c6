package tests

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The guard (rules-api.md §7): a write that does not come from the engine
// fails with 55000 on every path, through pgrules or not, and leaves
// nothing; the engine's own writes pass, also in partitioned tables; stale
// rules are refused and reloaded; rules defined in a transaction apply to
// the writes after them; an administrator may lift the guard, and verify
// lists what was written so.

// guardDB is the check-credit database with its rules, an order and a line,
// behind a proxy: c goes through the proxy, admin straight to PostgreSQL.
func guardDB(t *testing.T) (c, admin *pgconn.PgConn, p *testProxy, db string) {
	t.Helper()
	db, p, admin = creditDB(t)
	c = connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	scalar(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 2)")
	return c, admin, p, db
}

// creditState is what the refused writes must leave as it was.
const creditState = `SELECT (SELECT string_agg(id || ':' || quantity || ':' || amount, ' ' ORDER BY id) FROM lineitem) || ' | ' ||
	(SELECT string_agg(id || ':' || amount_total || ':' || paid, ' ' ORDER BY id) FROM orders) || ' | ' ||
	(SELECT string_agg(id || ':' || balance || ':' || unpaid_order_count, ' ' ORDER BY id) FROM customer)`

// refused asserts that sql fails with 55000 naming table (or with code),
// and that the data is as before.
func refused(t *testing.T, c, admin *pgconn.PgConn, sql, code, table string) {
	t.Helper()
	before := scalar(t, admin, creditState)
	e := pgError(t, c, sql)
	if e == nil || e.Code != code || table != "" && e.TableName != table {
		t.Fatalf("%s: %v, want %s on table %q", sql, e, code, table)
	}
	if after := scalar(t, admin, creditState); after != before {
		t.Fatalf("%s changed the data although refused:\n before %s\n after  %s", sql, before, after)
	}
}

func TestGuardPaths(t *testing.T) {
	c, admin, _, _ := guardDB(t)
	setup := []string{
		`CREATE FUNCTION add_line_sql() RETURNS void LANGUAGE sql AS 'INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)'`,
		`CREATE FUNCTION add_line_plpgsql() RETURNS void LANGUAGE plpgsql AS 'BEGIN UPDATE lineitem SET quantity = 100; END'`,
		`CREATE PROCEDURE add_line_proc() LANGUAGE sql AS 'DELETE FROM lineitem'`,
		`CREATE VIEW line_view AS SELECT * FROM lineitem`,
		`CREATE VIEW note_view AS SELECT 1 AS q`,
		`CREATE RULE note_line AS ON INSERT TO note_view DO INSTEAD INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, NEW.q)`,
		`CREATE TABLE note (q int)`,
		`CREATE FUNCTION note_line() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, NEW.q); RETURN NULL; END'`,
		`CREATE TRIGGER note_line AFTER INSERT ON note FOR EACH ROW EXECUTE FUNCTION note_line()`,
	}
	for _, sql := range setup {
		scalar(t, admin, sql)
	}
	paths := []struct{ name, sql string }{
		{"sql function", "SELECT add_line_sql()"},
		{"plpgsql function", "SELECT add_line_plpgsql()"},
		{"procedure", "CALL add_line_proc()"},
		{"DO block", "DO $$BEGIN INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100); END$$"},
		{"auto-updatable view", "INSERT INTO line_view (order_id, product_id, quantity) VALUES (1, 2, 100)"},
		{"view update", "UPDATE line_view SET quantity = 100"},
		{"rule on a view", "INSERT INTO note_view VALUES (100)"},
		{"trigger of a table without rules", "INSERT INTO note VALUES (100)"},
		{"PREPARE and EXECUTE", "PREPARE add_line AS INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100); EXECUTE add_line"},
		{"EXPLAIN ANALYZE EXECUTE", "PREPARE add_line2 AS DELETE FROM lineitem; EXPLAIN ANALYZE EXECUTE add_line2"},
		{"CREATE TABLE AS over a write", "CREATE TABLE copied AS WITH w AS (DELETE FROM lineitem RETURNING *) SELECT * FROM w"},
		{"merge", "MERGE INTO lineitem l USING (SELECT 1 AS id) s ON l.id = s.id WHEN MATCHED THEN UPDATE SET quantity = 100"},
		{"truncate", "TRUNCATE lineitem CASCADE"},
	}
	for _, via := range []struct {
		name string
		conn *pgconn.PgConn
	}{{"through pgrules", c}, {"direct", admin}} {
		for _, path := range paths {
			t.Run(via.name+"/"+path.name, func(t *testing.T) {
				e := pgError(t, via.conn, path.sql)
				if e == nil || e.Code != "55000" && e.Code != "0A000" {
					t.Fatalf("%s: %v, want 55000 (or pgrules' own 0A000)", path.sql, e)
				}
				if via.conn == admin && e.Code != "55000" {
					t.Fatalf("%s directly: %v, want the guard's 55000", path.sql, e)
				}
				scalar(t, via.conn, "DEALLOCATE ALL")
			})
		}
	}
	after := scalar(t, admin, creditState)
	if want := "1:2:51.00 | 1:51.00:false | 1:51.00:1 2:0.00:0"; after != want {
		t.Fatalf("after the refused writes: %s, want %s", after, want)
	}
	if got := scalar(t, admin, "SELECT to_regclass('copied') IS NULL"); got != "t" {
		t.Fatal("CREATE TABLE AS over a refused write created its table")
	}

	// COPY, both ways, and the plain statements on a direct connection.
	ctx := context.Background()
	for _, conn := range []*pgconn.PgConn{c, admin} {
		_, err := conn.CopyTo(ctx, io.Discard, "COPY (INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100) RETURNING id) TO STDOUT")
		if code := errCode(err); code != "55000" {
			t.Fatalf("COPY (INSERT ...) TO STDOUT: %v", err)
		}
	}
	_, err := admin.CopyFrom(ctx, strings.NewReader("9\t1\t2\t100\t1\t1\n"), "COPY lineitem FROM STDIN")
	if code := errCode(err); code != "55000" {
		t.Fatalf("COPY FROM directly: %v", err)
	}
	for _, sql := range []string{
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)",
		"UPDATE lineitem SET quantity = 100",
		"DELETE FROM lineitem",
		"UPDATE customer SET credit_limit = 0",
		"INSERT INTO customer (name, credit_limit) VALUES ('Eve', 10)",
		"TRUNCATE customer CASCADE",
		// A header without the key is no header.
		"/*pgrules 00000000000000000000000000000000 1:x */ INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)",
	} {
		refused(t, admin, admin, sql, "55000", "")
	}
	// Through pgrules a header is refused whatever it holds.
	refused(t, c, admin, "/*pgrules 00000000000000000000000000000000 1:x */ INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3)", "42501", "")
	// A table without rules stays writable everywhere.
	scalar(t, admin, "CREATE TABLE memo (x int); INSERT INTO memo VALUES (1)")
}

// TestGuardTriggers: a trigger of a table with rules, fired by the engine's
// own write, may not write another table with rules (but through a foreign
// key's action, which the engine has run the rules of first).
func TestGuardTriggers(t *testing.T) {
	c, admin, _, _ := guardDB(t)
	scalar(t, admin, `CREATE FUNCTION order_line() RETURNS trigger LANGUAGE plpgsql AS
		'BEGIN INSERT INTO lineitem (order_id, product_id, quantity) VALUES (NEW.id, 2, 100); RETURN NULL; END'`)
	scalar(t, admin, "CREATE TRIGGER order_line AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION order_line()")
	refused(t, c, admin, "INSERT INTO orders (id, customer_id) VALUES (2, 2)", "55000", "lineitem")
	// An UPDATE or a DELETE from under the engine's write passes only on a
	// table whose rows a foreign key's action changes (lineitem's key to
	// orders has none).
	scalar(t, admin, `CREATE FUNCTION order_lines() RETURNS trigger LANGUAGE plpgsql AS
		'BEGIN UPDATE lineitem SET quantity = 100 WHERE order_id = NEW.id; RETURN NULL; END'`)
	scalar(t, admin, "CREATE TRIGGER order_lines AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION order_lines()")
	refused(t, c, admin, "UPDATE orders SET paid = true WHERE id = 1", "55000", "lineitem")
}

// TestGuardPartitions: a partition or an inheritance child of a table with
// rules refuses writes by its own name, the table itself takes them
// through pgrules, and a partition created later is guarded at once.
func TestGuardPartitions(t *testing.T) {
	c, admin, _, _ := rulesDB(t, `
		CREATE TABLE reading (id int, site int, v int, PRIMARY KEY (id, site)) PARTITION BY LIST (site);
		CREATE TABLE reading_1 PARTITION OF reading FOR VALUES IN (1);
		CREATE TABLE base (id int PRIMARY KEY, v int);
		CREATE TABLE kid () INHERITS (base);`,
		[]string{
			`SELECT pgrules.constraint('reading', 'row.v < 100', 'too big')`,
			`SELECT pgrules.constraint('base', 'row.v < 100', 'too big')`,
		})
	scalar(t, c, "INSERT INTO reading VALUES (1, 1, 5)")
	if e := pgError(t, c, "INSERT INTO reading VALUES (2, 1, 500)"); e == nil || e.Code != "23514" {
		t.Fatalf("the constraint on the partitioned table: %v", e)
	}
	scalar(t, c, "UPDATE reading SET v = 6")
	scalar(t, admin, "CREATE TABLE reading_2 PARTITION OF reading FOR VALUES IN (2)")
	for _, conn := range []*pgconn.PgConn{c, admin} {
		for _, sql := range []string{
			"INSERT INTO reading_1 VALUES (3, 1, 500)",
			"UPDATE reading_1 SET v = 500",
			"INSERT INTO reading_2 VALUES (3, 2, 500)",
			"INSERT INTO kid VALUES (3, 500)",
			"DELETE FROM kid",
		} {
			if e := pgError(t, conn, sql); e == nil || e.Code != "55000" {
				t.Fatalf("%s: %v, want 55000", sql, e)
			}
		}
	}
	if got := scalar(t, admin, "SELECT string_agg(id || ':' || v, ' ') FROM reading"); got != "1:6" {
		t.Fatalf("readings: %s", got)
	}
}

// TestGuardOverride: pgrules.guard = off lifts the guard for members of
// pgrules_admin only; what they write so is listed by verify until
// rebuild.
func TestGuardOverride(t *testing.T) {
	c, admin, _, db := guardDB(t)
	scalar(t, admin, "CREATE ROLE guard_clerk LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO guard_clerk")
	t.Cleanup(func() {
		shared.exec(context.Background(), "postgres", "DROP OWNED BY guard_clerk CASCADE; DROP ROLE guard_clerk")
	})
	clerk := connect(t, shared.url("guard_clerk", "", db))
	refused(t, clerk, admin, "BEGIN; SET LOCAL pgrules.guard = off; UPDATE lineitem SET quantity = 100", "42501", "lineitem")
	scalar(t, clerk, "ROLLBACK")

	// A superuser is a member of every role; so is a member of
	// pgrules_admin.
	scalar(t, admin, "GRANT pgrules_admin TO guard_clerk")
	scalar(t, clerk, "BEGIN; SET LOCAL pgrules.guard = off; UPDATE lineitem SET quantity = 100; COMMIT")
	if got := scalar(t, c, "SELECT string_agg(rule || ' ' || table_name || ' ' || split_part(stored, ' at ', 1), '; ') FROM pgrules.verify() WHERE rule = 'pgrules.guard'"); got != "pgrules.guard public.lineitem UPDATE by guard_clerk" {
		t.Fatalf("verify after the override: %s", got)
	}
	if got := scalar(t, c, "SELECT string_agg(rule || ' ' || stored || '→' || computed, '; ' ORDER BY rule) FROM pgrules.verify() WHERE rule <> 'pgrules.guard'"); got != "lineitem.amount 51.00→2550.00" {
		t.Fatalf("verify's drift after the override: %s", got)
	}
	// The guard holds again in the next transaction.
	refused(t, clerk, admin, "UPDATE lineitem SET quantity = 1", "55000", "lineitem")
	scalar(t, c, "SELECT * FROM pgrules.rebuild()")
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("%s rows in verify after rebuild", got)
	}
}

// TestGuardStale: a proxy whose catalog connection is lost while a rule is
// stored behind its back has its writes refused (55000, the rules
// changed), not run with the old rules; once it can reload, the retry runs
// the new rule.
func TestGuardStale(t *testing.T) {
	c, admin, _, db := guardDB(t)
	allow := func(on bool) {
		if err := shared.exec(context.Background(), "postgres", fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", db, on)); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	t.Cleanup(func() { allow(true) })
	scalar(t, admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgrules catalog'")
	scalar(t, admin, `SELECT pgrules.constraint('lineitem', 'row.quantity < 3', 'at most 2, not {row.quantity}', name => 'small')`)
	e := pgError(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 5)")
	if e == nil || e.Code != "55000" || !strings.Contains(e.Message, "changed") {
		t.Fatalf("a write with stale rules: %v, want 55000", e)
	}
	allow(true)
	deadline := time.Now().Add(15 * time.Second)
	for {
		e = pgError(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 5)")
		if e != nil && e.Code == "23514" && e.ConstraintName == "small" {
			break
		}
		if e == nil {
			t.Fatal("a line of 5 was written after the rule 'small' was stored")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry still fails: %v", e)
		}
		time.Sleep(100 * time.Millisecond)
	}
	scalar(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 2)")
}

// TestRulesInTransaction: a rule applies to every write after it in its
// transaction, in the same Query or not.
func TestRulesInTransaction(t *testing.T) {
	c, admin, _, _ := guardDB(t)
	for _, sqls := range [][]string{
		{"BEGIN", "SELECT pgrules.constraint('lineitem', 'row.quantity < 10', 'too big', name => 'tc')", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 10)"},
		{"BEGIN; SELECT pgrules.constraint('lineitem', 'row.quantity < 10', 'too big', name => 'tc'); INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 10)"},
		{"SELECT pgrules.constraint('lineitem', 'row.quantity < 10', 'too big', name => 'tc'); INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 10)"},
	} {
		var e *pgconn.PgError
		for _, sql := range sqls {
			if e = pgError(t, c, sql); e != nil {
				break
			}
		}
		if e == nil || e.Code != "23514" || e.ConstraintName != "tc" {
			t.Fatalf("%q: %v, want the new constraint's 23514", sqls, e)
		}
		scalar(t, c, "ROLLBACK")
	}
	if got := scalar(t, admin, "SELECT count(*) FROM pgrules.rule WHERE name = 'tc'"); got != "0" {
		t.Fatal("the rolled back constraint is stored")
	}

	// A sum defined after its tables were created, in one transaction.
	scalar(t, c, `BEGIN;
		CREATE TABLE box (id int PRIMARY KEY, total numeric NOT NULL DEFAULT 0);
		CREATE TABLE item (id int PRIMARY KEY, box_id int REFERENCES box, amt numeric)`)
	scalar(t, c, "SELECT pgrules.sum('box.total', 'item.amt')")
	scalar(t, c, "INSERT INTO box (id) VALUES (1); INSERT INTO item VALUES (1, 1, 5), (2, 1, 2.5)")
	scalar(t, c, "UPDATE item SET amt = 4 WHERE id = 1")
	scalar(t, c, "COMMIT")
	if got := scalar(t, admin, "SELECT total FROM box"); got != "6.5" {
		t.Fatalf("box total %s, want 6.5", got)
	}

	// A filter redefined, then an update in the same transaction.
	scalar(t, c, "BEGIN")
	scalar(t, c, "SELECT pgrules.sum('customer.balance', 'orders.amount_total', 'row.paid')")
	scalar(t, c, "UPDATE orders SET paid = true WHERE id = 1")
	scalar(t, c, "COMMIT")
	if got := scalar(t, admin, "SELECT balance FROM customer WHERE id = 1"); got != "51.00" {
		t.Fatalf("balance %s, want the paid order's 51.00", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("%s rows in verify", got)
	}

	// A definition rolled back to a savepoint no longer applies.
	scalar(t, c, "BEGIN; SAVEPOINT s")
	scalar(t, c, "SELECT pgrules.constraint('lineitem', 'row.quantity < 10', 'small', name => 'tiny')")
	scalar(t, c, "ROLLBACK TO SAVEPOINT s")
	scalar(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 20)")
	scalar(t, c, "COMMIT")
}

// errCode is the SQLSTATE of a server error, "" for anything else.
func errCode(err error) string {
	if pe, ok := err.(*pgconn.PgError); ok {
		return pe.Code
	}
	return ""
}
