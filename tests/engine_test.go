package tests

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrules/pgrules/internal/demo"
)

// The rules engine on a schema of its own, beyond the check-credit
// scenario: every row of the adjustment table, min and max, two foreign
// keys to one parent, a grandparent summing a derived column, formulas
// reading a parent, cascaded deletes, commit constraints and savepoints,
// the forms of write, bad input and the trace.

const orgSchema = `
CREATE TABLE region (id int PRIMARY KEY, total numeric(12,2) NOT NULL DEFAULT 0);
CREATE TABLE dept (
  id int PRIMARY KEY,
  region_id int REFERENCES region(id),
  budget numeric(12,2) NOT NULL DEFAULT 1000,
  bonus_rate numeric(4,2) NOT NULL DEFAULT 0.10,
  total numeric(12,2) NOT NULL DEFAULT 0,
  headcount int NOT NULL DEFAULT 0,
  low numeric(12,2),
  high numeric(12,2),
  loaned numeric(12,2) NOT NULL DEFAULT 0
);
CREATE TABLE emp (
  id int PRIMARY KEY,
  dept_id int REFERENCES dept(id) ON DELETE CASCADE,
  loan_id int REFERENCES dept(id) ON DELETE SET NULL,
  salary numeric(12,2),
  active boolean NOT NULL DEFAULT true,
  rate numeric(4,2),
  bonus numeric(12,2)
);
INSERT INTO region VALUES (1), (2);
INSERT INTO dept (id, region_id) VALUES (10, 1), (20, 1), (30, 2);`

var orgRules = []string{
	`SELECT pgrules.sum('dept.total', 'emp.salary', 'row.active', via => 'emp_dept_id_fkey')`,
	`SELECT pgrules.count('dept.headcount', 'emp', 'row.active', via => 'emp_dept_id_fkey')`,
	`SELECT pgrules.min('dept.low', 'emp.salary', 'row.active', via => 'emp_dept_id_fkey')`,
	`SELECT pgrules.max('dept.high', 'emp.salary', 'row.active', via => 'emp_dept_id_fkey')`,
	`SELECT pgrules.sum('dept.loaned', 'emp.salary', via => 'emp_loan_id_fkey')`,
	`SELECT pgrules.copy('emp.rate', 'dept.bonus_rate', via => 'emp_dept_id_fkey')`,
	`SELECT pgrules.formula('emp.bonus', 'row.salary * row.dept.bonus_rate')`,
	`SELECT pgrules.sum('region.total', 'dept.total')`,
	`SELECT pgrules.constraint('dept', 'row.total <= row.budget', 'dept {row.id} spends {row.total} of {row.budget}', name => 'within_budget')`,
}

// orgDB is a database with orgSchema and orgRules behind a proxy: c goes
// through the proxy, admin directly.
func orgDB(t *testing.T) (c, admin *pgconn.PgConn) {
	t.Helper()
	c, admin, _, _ = orgProxy(t)
	return c, admin
}

// orgProxy is orgDB with its proxy and database, for other roles'
// connections.
func orgProxy(t *testing.T) (c, admin *pgconn.PgConn, p *testProxy, db string) {
	t.Helper()
	return rulesDB(t, orgSchema, orgRules)
}

// rulesDB is a fresh database with schema, behind a proxy, and rules
// defined through it: c goes through the proxy, admin directly.
func rulesDB(t *testing.T, schema string, rules []string) (c, admin *pgconn.PgConn, p *testProxy, db string) {
	t.Helper()
	db = shared.newDB(t)
	admin = connect(t, shared.url("", "", db))
	scalar(t, admin, schema)
	p = startProxy(t, shared)
	c = connect(t, p.url("", "", db))
	for _, r := range rules {
		if e := pgError(t, c, r); e != nil {
			t.Fatalf("%s: %v", r, e)
		}
	}
	return c, admin, p, db
}

const qDepts = `SELECT string_agg(concat_ws(':', id, total, headcount, coalesce(low::text, '-'), coalesce(high::text, '-'), loaned), ' ' ORDER BY id) FROM dept`

// TestAdjustments walks LogicBank's adjustment table, a step at a time:
// after each step every department must show the state given, and
// pgrules.verify() must find nothing to correct.
func TestAdjustments(t *testing.T) {
	c, admin := orgDB(t)
	steps := []struct {
		name, sql string
		depts     string // id:total:headcount:low:high:loaned
	}{
		{"insert counts", "INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 100)",
			"10:100.00:1:100.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"insert not passing the filter", "INSERT INTO emp (id, dept_id, salary, active) VALUES (2, 10, 50, false)",
			"10:100.00:1:100.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"filter becomes true", "UPDATE emp SET active = true WHERE id = 2",
			"10:150.00:2:50.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"value changes", "UPDATE emp SET salary = 70 WHERE id = 2",
			"10:170.00:2:70.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"filter no longer true subtracts the old value", "UPDATE emp SET active = false, salary = 90 WHERE id = 2",
			"10:100.00:1:100.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"value and filter change together", "UPDATE emp SET active = true, salary = 40 WHERE id = 2",
			"10:140.00:2:40.00:100.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"foreign key reassigned", "UPDATE emp SET dept_id = 20 WHERE id = 1",
			"10:40.00:1:40.00:40.00:0.00 20:100.00:1:100.00:100.00:0.00 30:0.00:0:-:-:0.00"},
		{"reassigned and changed at once", "UPDATE emp SET dept_id = 30, salary = 120 WHERE id = 1",
			"10:40.00:1:40.00:40.00:0.00 20:0.00:0:-:-:0.00 30:120.00:1:120.00:120.00:0.00"},
		{"NULL foreign key is skipped", "UPDATE emp SET dept_id = NULL WHERE id = 1",
			"10:40.00:1:40.00:40.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"from NULL to a parent", "UPDATE emp SET dept_id = 10 WHERE id = 1",
			"10:160.00:2:40.00:120.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"a NULL value counts as 0 in a sum and still counts", "INSERT INTO emp (id, dept_id) VALUES (3, 10)",
			"10:160.00:3:40.00:120.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"a smaller value becomes the min", "UPDATE emp SET salary = 10 WHERE id = 3",
			"10:170.00:3:10.00:120.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"the min leaves: looked for again", "DELETE FROM emp WHERE id = 3",
			"10:160.00:2:40.00:120.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"the max goes down: looked for again", "UPDATE emp SET salary = 30 WHERE id = 1",
			"10:70.00:2:30.00:40.00:0.00 20:0.00:0:-:-:0.00 30:0.00:0:-:-:0.00"},
		{"a second foreign key to the same parent", "UPDATE emp SET loan_id = 20 WHERE id IN (1, 2)",
			"10:70.00:2:30.00:40.00:0.00 20:0.00:0:-:-:70.00 30:0.00:0:-:-:0.00"},
		{"one statement, many parents", "INSERT INTO emp (id, dept_id, salary, loan_id) VALUES (4, 20, 5, 10), (5, 30, 6, 10), (6, 30, 7, NULL)",
			"10:70.00:2:30.00:40.00:11.00 20:5.00:1:5.00:5.00:70.00 30:13.00:2:6.00:7.00:0.00"},
		{"one update across parents", "UPDATE emp SET salary = salary + 1",
			"10:72.00:2:31.00:41.00:13.00 20:6.00:1:6.00:6.00:72.00 30:15.00:2:7.00:8.00:0.00"},
		{"the last child leaves", "DELETE FROM emp WHERE dept_id = 20",
			"10:72.00:2:31.00:41.00:7.00 20:0.00:0:-:-:72.00 30:15.00:2:7.00:8.00:0.00"},
	}
	for _, st := range steps {
		if e := pgError(t, c, st.sql); e != nil {
			t.Fatalf("%s: %s: %v", st.name, st.sql, e)
		}
		if got := scalar(t, admin, qDepts); got != st.depts {
			t.Fatalf("%s: %s\n got %s\nwant %s", st.name, st.sql, got, st.depts)
		}
		// The grandparent sums a derived column of its children.
		if got, want := scalar(t, admin, "SELECT string_agg(total::text, ' ' ORDER BY id) FROM region"),
			scalar(t, admin, "SELECT string_agg((SELECT coalesce(sum(total), 0) FROM dept d WHERE d.region_id = r.id)::text, ' ' ORDER BY id) FROM region r"); got != want {
			t.Fatalf("%s: region totals %s, want %s", st.name, got, want)
		}
		if n := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); n != "0" {
			t.Fatalf("%s: pgrules.verify() finds %s drifting rows", st.name, n)
		}
	}
}

// TestParentFormula: a formula reading a parent column is recomputed on
// every child when that column changes; a copy is not.
func TestParentFormula(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 100), (2, 10, 200), (3, 20, 300)")
	if got := scalar(t, admin, "SELECT string_agg(concat_ws(':', id, rate, bonus), ' ' ORDER BY id) FROM emp"); got != "1:0.10:10.00 2:0.10:20.00 3:0.10:30.00" {
		t.Fatalf("after insert: %s", got)
	}
	scalar(t, c, "UPDATE dept SET bonus_rate = 0.25 WHERE id = 10")
	if got := scalar(t, admin, "SELECT string_agg(concat_ws(':', id, rate, bonus), ' ' ORDER BY id) FROM emp"); got != "1:0.10:25.00 2:0.10:50.00 3:0.10:30.00" {
		t.Fatalf("after the parent changed: %s", got)
	}
	// Moving to another department copies its rate and recomputes.
	scalar(t, c, "UPDATE emp SET dept_id = 10 WHERE id = 3")
	if got := scalar(t, admin, "SELECT concat_ws(':', rate, bonus) FROM emp WHERE id = 3"); got != "0.25:75.00" {
		t.Fatalf("after the move: %s", got)
	}
}

// TestParentFormulaConcurrent: a row written while another transaction
// changes the parent column its formula reads gets the value that
// transaction commits — the parent is share-locked before it is read, so
// the write waits, instead of reading the old value while the other
// transaction's recompute of the children misses the new row.
func TestParentFormulaConcurrent(t *testing.T) {
	c, admin, p, db := orgProxy(t)
	other := connect(t, p.url("", "", db))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, write := range []string{
		"INSERT INTO emp (id, dept_id, salary) VALUES (5, 10, 100)",
		"UPDATE emp SET salary = 200 WHERE id = 5",
	} {
		rate := []string{"0.50", "0.75"}[i]
		scalar(t, other, "BEGIN")
		scalar(t, other, "UPDATE dept SET bonus_rate = "+rate+" WHERE id = 10")
		done := make(chan error, 1)
		go func() {
			_, err := c.ExecParams(ctx, write, nil, nil, nil, nil).Close()
			done <- err
		}()
		time.Sleep(300 * time.Millisecond) // the write waits on the department's row
		scalar(t, other, "COMMIT")
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", write, err)
		}
		want := []string{"50.00", "150.00"}[i]
		if got := scalar(t, admin, "SELECT bonus FROM emp WHERE id = 5"); got != want {
			t.Fatalf("%s while the rate became %s: bonus %s, want %s", write, rate, got, want)
		}
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("%s rows drift", got)
	}
}

// TestParentFormulaConcurrentOneTrip: the same for a write that runs in
// one statement (prepared, its formula reading the parent in SQL).
func TestParentFormulaConcurrentOneTrip(t *testing.T) {
	c, admin, p, db := rulesDB(t, `CREATE TABLE pa (id int PRIMARY KEY, rate numeric(6,2) NOT NULL DEFAULT 1);
		CREATE TABLE li (id int PRIMARY KEY, pa_id int REFERENCES pa, qty int, amt numeric(12,2));
		INSERT INTO pa VALUES (1)`, []string{`SELECT pgrules.formula('li.amt', 'row.qty * row.pa.rate')`})
	other := connect(t, p.url("", "", db))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	scalar(t, other, "BEGIN")
	scalar(t, other, "UPDATE pa SET rate = 3 WHERE id = 1")
	done := make(chan error, 1)
	go func() {
		_, err := c.ExecParams(ctx, "INSERT INTO li (id, pa_id, qty) VALUES ($1, $2, $3)", [][]byte{[]byte("1"), []byte("1"), []byte("2")}, nil, nil, nil).Close()
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	scalar(t, other, "COMMIT")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, admin, "SELECT amt FROM li"); got != "6.00" {
		t.Fatalf("amount %s, want the committed rate's 6.00", got)
	}
}

// TestNoPrimaryKey: rows of a table without a primary key are found by
// their ctid, through insert, update, delete and a parent's cascade.
func TestNoPrimaryKey(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, admin, "CREATE TABLE memo (dept_id int REFERENCES dept(id), amount numeric(12,2), scaled numeric(12,2))")
	scalar(t, c, `SELECT pgrules.formula('memo.scaled', 'row.amount * row.dept.bonus_rate')`)
	scalar(t, c, "INSERT INTO memo (dept_id, amount) VALUES (10, 100), (10, 200), (20, 300)")
	scalar(t, c, "UPDATE memo SET amount = amount + 1 WHERE amount < 250")
	scalar(t, c, "UPDATE dept SET bonus_rate = 0.5 WHERE id = 10")
	scalar(t, c, "DELETE FROM memo WHERE dept_id = 20")
	if got := scalar(t, admin, "SELECT string_agg(amount || ':' || scaled, ' ' ORDER BY amount) FROM memo"); got != "101.00:50.50 201.00:100.50" {
		t.Fatalf("memo: %s", got)
	}
}

// TestCascadedDelete: rows PostgreSQL would delete (ON DELETE CASCADE) or
// set to NULL (SET NULL) with their parent go through their rules.
func TestCascadedDelete(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, c, "INSERT INTO emp (id, dept_id, loan_id, salary) VALUES (1, 10, 20, 100), (2, 10, 30, 200), (3, 20, 10, 300)")
	scalar(t, c, "DELETE FROM dept WHERE id = 10")
	// Emps 1 and 2 went with dept 10 (their loans to 20 and 30 with
	// them); emp 3's loan to 10 was set to NULL.
	if got := scalar(t, admin, qDepts); got != "20:300.00:1:300.00:300.00:0.00 30:0.00:0:-:-:0.00" {
		t.Fatalf("departments: %s", got)
	}
	if got := scalar(t, admin, "SELECT string_agg(concat_ws(':', id, coalesce(loan_id::text, 'null')), ' ') FROM emp"); got != "3:null" {
		t.Fatalf("emps: %s", got)
	}
	if got := scalar(t, admin, "SELECT string_agg(total::text, ' ' ORDER BY id) FROM region"); got != "300.00 0.00" {
		t.Fatalf("regions: %s", got)
	}
	// A table without rules whose deletes cascade to one with rules: its
	// deletes run through the engine too, and TRUNCATE ... CASCADE is
	// refused.
	scalar(t, admin, "CREATE TABLE site (id int PRIMARY KEY); INSERT INTO site VALUES (1); ALTER TABLE dept ADD site_id int REFERENCES site ON DELETE CASCADE")
	scalar(t, c, "SELECT pgrules.formula('dept.budget', '1000')") // a rule change reloads the catalog
	scalar(t, c, "UPDATE dept SET site_id = 1")
	if e := pgError(t, c, "TRUNCATE site CASCADE"); e == nil || e.Code != "0A000" {
		t.Fatalf("TRUNCATE site CASCADE: %v", e)
	}
	scalar(t, c, "DELETE FROM site")
	if got := scalar(t, admin, "SELECT (SELECT count(*) FROM dept) || ' ' || (SELECT count(*) FROM emp) || ' ' || (SELECT string_agg(total::text, ' ' ORDER BY id) FROM region)"); got != "0 0 0.00 0.00" {
		t.Fatalf("after deleting the site: %s", got)
	}
}

// TestConstraintAtEveryLevel: a constraint on a parent fails the child's
// statement, leaves nothing of it, names the rule, and the session goes on.
func TestConstraintAtEveryLevel(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 900)")
	e := pgError(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (2, 10, 50), (3, 10, 60)")
	if e == nil || e.Code != "23514" || e.ConstraintName != "within_budget" || e.TableName != "dept" || e.SchemaName != "public" ||
		e.Message != "dept 10 spends 1010.00 of 1000.00" {
		t.Fatalf("over budget: %+v", e)
	}
	if got := scalar(t, admin, "SELECT count(*) || ':' || (SELECT total FROM dept WHERE id = 10) FROM emp"); got != "1:900.00" {
		t.Fatalf("after the failed statement: %s", got)
	}
	if got := scalar(t, c, "SELECT 1"); got != "1" {
		t.Fatalf("the session after the error: %s", got)
	}
}

// TestAnotherRole: a role that owns nothing of the pgrules schema and was
// granted only its tables gets the rules: the engine's statements and its
// errors use the schema's functions, which every role may call.
func TestAnotherRole(t *testing.T) {
	_, admin, p, db := orgProxy(t)
	role := db + "_clerk"
	scalar(t, admin, fmt.Sprintf("CREATE ROLE %[1]s LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %[1]s", role))
	t.Cleanup(func() { scalar(t, admin, fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	u := connect(t, p.url(role, "", db))
	scalar(t, u, "INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 100), (2, 10, 200), (3, 20, 300)")
	scalar(t, u, "UPDATE emp SET salary = salary + 1")
	if got := scalar(t, admin, "SELECT string_agg(id || ':' || total, ' ' ORDER BY id) FROM dept"); got != "10:302.00 20:301.00 30:0.00" {
		t.Fatalf("dept totals: %s", got)
	}
	if e := pgError(t, u, "UPDATE emp SET salary = 1000 WHERE id = 1"); e == nil || e.Code != "23514" || e.ConstraintName != "within_budget" {
		t.Fatalf("over budget: %+v", e)
	}
}

// TestSeveralStatements: the writes of a Query of several statements run
// their rules, whatever statement comes first.
func TestSeveralStatements(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	for i, sql := range []string{
		"SELECT 1; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 1) RETURNING amount",
		"BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 1) RETURNING amount; COMMIT",
		"SET application_name = 'x'; UPDATE lineitem SET quantity = 2 WHERE id = 1 RETURNING amount",
	} {
		res, err := c.Exec(context.Background(), sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if got := string(res[1].Rows[0][0]); got != []string{"25.50", "25.50", "51.00"}[i] {
			t.Fatalf("%s: amount %s", sql, got)
		}
	}
	if got := scalar(t, admin, "SELECT amount_total || ' ' || (SELECT balance FROM customer WHERE id = 1) FROM orders"); got != "76.50 76.50" {
		t.Fatalf("order total, balance: %s", got)
	}
	if drift := scalar(t, admin, qDrift); drift != "0" {
		t.Fatalf("%s values drift", drift)
	}
}

// TestRunTimeError: a rule failing while it runs gets a 22xxx error naming
// the rule and the row's key; nothing is written and the session goes on.
func TestRunTimeError(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, c, `SELECT pgrules.formula('emp.rate', 'row.salary / (row.salary - 100)')`)
	e := pgError(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (7, 10, 100)")
	if e == nil || e.Code != "22012" || !strings.Contains(e.Message, "emp.rate") || !strings.Contains(e.Message, "id=7") {
		t.Fatalf("division by zero: %+v", e)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM emp"); got != "0" {
		t.Fatalf("rows after the failure: %s", got)
	}
	if e := pgError(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (8, 10, 300)"); e != nil {
		t.Fatalf("the next statement: %v", e)
	}
	if got := scalar(t, admin, "SELECT rate FROM emp WHERE id = 8"); got != "1.50" {
		t.Fatalf("rate %s", got)
	}
	// A filter failing on the rows of an update or a delete: the client
	// gets the rule's error, not the failed transaction's 25P02.
	scalar(t, c, `SELECT pgrules.sum('dept.loaned', 'emp.salary', 'row.salary / (row.salary - 50) > 0', via => 'emp_loan_id_fkey')`)
	scalar(t, c, "INSERT INTO emp (id, dept_id, loan_id, salary) VALUES (9, 10, 20, 300)")
	for _, sql := range []string{"UPDATE emp SET salary = 50 WHERE id = 9", "UPDATE emp SET salary = 50 WHERE id = 9 RETURNING id"} {
		if e := pgError(t, c, sql); e == nil || e.Code != "22012" || !strings.Contains(e.Message, "dept.loaned") {
			t.Fatalf("%s: %+v, want 22012 naming the filter's rule", sql, e)
		}
	}
	scalar(t, admin, unguarded("UPDATE emp SET salary = 50 WHERE id = 9"))
	if e := pgError(t, c, "DELETE FROM emp WHERE id = 9"); e == nil || e.Code != "22012" || !strings.Contains(e.Message, "dept.loaned") {
		t.Fatalf("a delete: %+v, want 22012 naming the filter's rule", e)
	}
}

// TestRefusedForms: what the engine does not run is refused with 0A000 (or
// 428C9 for a derived column set by hand), never let past the rules.
func TestRefusedForms(t *testing.T) {
	c, admin := orgDB(t)
	scalar(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 100)")
	for sql, code := range map[string]string{
		"UPDATE dept SET total = 0 WHERE id = 10": "428C9",
		"UPDATE emp SET bonus = 1":                "428C9",
		"TRUNCATE emp":                            "0A000",
		"MERGE INTO emp e USING (SELECT 1 AS id) s ON e.id = s.id WHEN MATCHED THEN DELETE":                                 "0A000",
		"INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 5) ON CONFLICT (id) DO UPDATE SET bonus = 5":                  "428C9",
		"INSERT INTO emp (id, dept_id, salary) VALUES (1, 10, 5) ON CONFLICT (id) WHERE salary > 0 DO UPDATE SET bonus = 5": "428C9",
		// PostgreSQL's own error, whatever the rows.
		"UPDATE emp SET salary = 1, salary = 2 WHERE id = 99": "42601",
	} {
		if e := pgError(t, c, sql); e == nil || e.Code != code {
			t.Errorf("%s: %v, want %s", sql, e, code)
		}
		if got := scalar(t, admin, qDepts+" WHERE id = 10"); got != "10:100.00:1:100.00:100.00:0.00" {
			t.Fatalf("%s changed the department: %s", sql, got)
		}
	}
}

// TestStandardConformingStrings: the engine reads SQL as PostgreSQL does
// with standard_conforming_strings on, so a session that has it off — by
// SET, by a SET in the same Query, or in its startup options — has its
// writes on tables with rules refused with 0A000, not misread; everything
// else it sends is the server's, and turning the setting on again (or a
// rollback undoing the SET) lets the writes through.
func TestStandardConformingStrings(t *testing.T) {
	c, admin, p, db := orgProxy(t)
	scalar(t, admin, "CREATE TABLE note (id int PRIMARY KEY, body text)")
	emps := func() string {
		return scalar(t, admin, "SELECT count(*) || ' ' || (SELECT total FROM dept WHERE id = 10) FROM emp")
	}
	for i, proto := range protocols {
		insert := fmt.Sprintf("INSERT INTO emp (id, dept_id, salary) VALUES (%d, 10, 100)", i+1)
		ex, must := runner(t, proto.exec, c)
		must("SET standard_conforming_strings = off")
		if e := ex(insert); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, "standard_conforming_strings") {
			t.Fatalf("%s: a write with standard_conforming_strings off: %+v", proto.name, e)
		}
		must(fmt.Sprintf(`INSERT INTO note VALUES (%d, 'it\'s')`, i+1))
		if got := scalar(t, admin, fmt.Sprintf("SELECT body FROM note WHERE id = %d", i+1)); got != "it's" {
			t.Fatalf("%s: a table without rules read the string as %q", proto.name, got)
		}
		must("SET standard_conforming_strings = on")
		must(insert)
		if got, want := emps(), fmt.Sprintf("%d %d.00", i+1, 100*(i+1)); got != want {
			t.Fatalf("%s: emps and the department's total %q, want %q", proto.name, got, want)
		}
	}

	// In one Query the SET is relayed before the write reaches the
	// engine; the failed Query rolls the SET back, and the server's
	// ParameterStatus says so.
	if e := pgError(t, c, "SET standard_conforming_strings = off; INSERT INTO emp (id, dept_id, salary) VALUES (5, 10, 1)"); e == nil || e.Code != "0A000" {
		t.Fatalf("a SET and a write in one Query: %+v", e)
	}
	if e := pgError(t, c, "INSERT INTO emp (id, dept_id, salary) VALUES (5, 10, 1)"); e != nil {
		t.Fatalf("after the Query's SET was rolled back: %v", e)
	}
	if got := emps(); got != "3 201.00" {
		t.Fatalf("emps and the department's total %q", got)
	}

	off := connect(t, p.url("", "", db)+"&options=-c%20standard_conforming_strings%3Doff")
	if e := pgError(t, off, "DELETE FROM emp"); e == nil || e.Code != "0A000" {
		t.Fatalf("a write by a session started with standard_conforming_strings off: %+v", e)
	}
	if got := emps(); got != "3 201.00" {
		t.Fatalf("emps and the department's total %q after the refused delete", got)
	}
}

// TestDateStyle: the engine reads dates and times as DateStyle ISO writes
// them, so where rules read a time column a session with another DateStyle
// has its writes refused with 0A000 rather than its times misread; with
// ISO (whatever the field order) they run.
func TestDateStyle(t *testing.T) {
	c, admin, _, _ := rulesDB(t, `CREATE TABLE shipment (id int PRIMARY KEY, ordered timestamptz NOT NULL, shipped timestamptz)`, []string{
		`SELECT pgrules.constraint('shipment', 'row.shipped == nil || row.shipped >= row.ordered', 'shipment {row.id} ships before it is ordered', name => 'ships_after_order')`,
		`SELECT pgrules.commit_constraint('shipment', 'row.ordered > date("2000-01-01")', 'shipment {row.id} is too old', name => 'recent')`,
	})
	const insert = `INSERT INTO shipment VALUES (%d, '2025-12-03 10:00+00', '2026-01-05 09:00+00')`
	for i, proto := range protocols {
		ex, must := runner(t, proto.exec, c)
		must("SET DateStyle = 'SQL, MDY'")
		if e := ex(fmt.Sprintf(insert, i+1)); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, "DateStyle") {
			t.Fatalf("%s: a write with DateStyle SQL: %+v", proto.name, e)
		}
		must("SET DateStyle = 'ISO, DMY'")
		must(fmt.Sprintf(insert, i+1))
		if e := ex(fmt.Sprintf("UPDATE shipment SET shipped = '2025-12-01 00:00+00' WHERE id = %d", i+1)); e == nil || e.Code != "23514" {
			t.Fatalf("%s: a shipment before its order: %+v", proto.name, e)
		}
	}
	if got := scalar(t, admin, "SELECT count(*) FROM shipment WHERE shipped > ordered"); got != "2" {
		t.Fatalf("shipments: %s", got)
	}
	// The commit constraints read the rows again at COMMIT, in the
	// DateStyle of then.
	scalar(t, c, "BEGIN")
	scalar(t, c, fmt.Sprintf(insert, 9))
	scalar(t, c, "SET DateStyle = 'Postgres'")
	if e := pgError(t, c, "COMMIT"); e == nil || e.Code != "0A000" {
		t.Fatalf("a COMMIT with DateStyle Postgres: %+v", e)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM shipment"); got != "2" {
		t.Fatalf("shipments after the refused COMMIT: %s", got)
	}
}

// TestSearchPath: an unqualified table name means what it means to the
// server in that session (rules-api.md: unqualified names follow the
// session's search_path): a SET, a role's own search_path, a SET rolled
// back, and a temporary table that hides a table with rules all decide
// which table a write reaches, and so which rules run.
func TestSearchPath(t *testing.T) {
	const tenant = `
CREATE SCHEMA %[1]s;
CREATE TABLE %[1]s.parent (id int PRIMARY KEY, total numeric(12,2) NOT NULL DEFAULT 0);
CREATE TABLE %[1]s.child (id int PRIMARY KEY, parent_id int REFERENCES %[1]s.parent(id), amount numeric(12,2));
INSERT INTO %[1]s.parent VALUES (1);`
	c, admin, p, db := rulesDB(t, fmt.Sprintf(tenant, "t1")+fmt.Sprintf(tenant, "t2"), []string{
		`SELECT pgrules.sum('t1.parent.total', 't1.child.amount', name => 't1_total')`,
		`SELECT pgrules.sum('t2.parent.total', 't2.child.amount', name => 't2_total')`,
	})
	totals := func() string {
		return scalar(t, admin, "SELECT (SELECT total FROM t1.parent) || ' ' || (SELECT total FROM t2.parent)")
	}
	for i, proto := range protocols {
		ex, must := runner(t, proto.exec, c)
		must("SET search_path = t2, public")
		must(fmt.Sprintf("INSERT INTO child VALUES (%d, 1, 10)", 10+i))
		must("BEGIN")
		must("SET LOCAL search_path = t1")
		must(fmt.Sprintf("INSERT INTO child VALUES (%d, 1, 1)", 20+i))
		must("ROLLBACK")
		// The rollback undid the SET LOCAL (and the insert): t2 again.
		must(fmt.Sprintf("UPDATE child SET amount = amount + 5 WHERE id = %d", 10+i))
		if got := totals(); got != "0.00 15.00" {
			t.Fatalf("%s: totals %q", proto.name, got)
		}
		// A temporary table of the same name comes first in the path.
		must("CREATE TEMP TABLE child (id int PRIMARY KEY, parent_id int, amount numeric(12,2))")
		if e := ex(fmt.Sprintf("INSERT INTO child VALUES (%d, 1, 100)", 30+i)); e != nil {
			t.Fatalf("%s: an insert into a temporary table: %v", proto.name, e)
		}
		if got := scalar(t, c, "SELECT count(*) FROM pg_temp.child"); got != "1" {
			t.Fatalf("%s: rows in the temporary table: %s", proto.name, got)
		}
		must("DROP TABLE pg_temp.child")
		must(fmt.Sprintf("DELETE FROM child WHERE id = %d", 10+i))
		if got := totals(); got != "0.00 0.00" {
			t.Fatalf("%s: totals %q after the temporary table", proto.name, got)
		}
		must("RESET search_path")
	}

	// A SET and a write in one Query: the SET runs first.
	if e := pgError(t, c, "SET search_path = t1; INSERT INTO child VALUES (50, 1, 3)"); e != nil {
		t.Fatalf("a SET and a write in one Query: %v", e)
	}
	if got := totals(); got != "3.00 0.00" {
		t.Fatalf("totals %q after a SET and a write in one Query", got)
	}

	// A role's own search_path, set where the proxy's catalog connection
	// does not see it.
	scalar(t, admin, "CREATE ROLE tenant1 LOGIN; GRANT ALL ON SCHEMA t1, t2, pgrules TO tenant1; GRANT ALL ON ALL TABLES IN SCHEMA t1, t2, pgrules TO tenant1; ALTER ROLE tenant1 SET search_path = t1")
	t1 := connect(t, p.url("tenant1", "", db))
	if e := pgError(t, t1, "INSERT INTO child VALUES (40, 1, 7)"); e != nil {
		t.Fatalf("an insert by tenant1: %v", e)
	}
	if got := totals(); got != "10.00 0.00" {
		t.Fatalf("totals %q after tenant1's insert", got)
	}
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("pgrules.verify() finds %s drifting rows", got)
	}
}

// TestWriteForms runs each form of write on the check-credit scenario and
// checks the rows, the command tag, RETURNING and the derived values.
func TestWriteForms(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(sql string) *pgconn.Result {
		t.Helper()
		res, err := c.Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return res[len(res)-1]
	}
	check := func(what, want string) {
		t.Helper()
		if got := scalar(t, admin, qCustomers) + " " + scalar(t, admin, "SELECT coalesce(string_agg(id || ':' || amount_total, ' ' ORDER BY id), '') FROM orders"); got != want {
			t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
		}
	}
	steps := []struct {
		sql, tag, returning, state string
	}{
		{"INSERT INTO orders (id, customer_id) VALUES (1, 1), (2, 2) RETURNING id, amount_total", "INSERT 0 2", "1,0.00 2,0.00",
			"Alice:0.00/1 Bob:0.00/1 1:0.00 2:0.00"},
		{"INSERT INTO lineitem (order_id, product_id, quantity) SELECT o.id, 1, o.id FROM orders o RETURNING order_id, amount", "INSERT 0 2", "1,10.00 2,20.00",
			"Alice:10.00/1 Bob:20.00/1 1:10.00 2:20.00"},
		{"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 1, 1) ON CONFLICT DO NOTHING RETURNING id", "INSERT 0 0", "",
			"Alice:10.00/1 Bob:20.00/1 1:10.00 2:20.00"},
		{"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 1, 1), (10, 1, 2, 1) ON CONFLICT (id) DO NOTHING", "INSERT 0 1", "",
			"Alice:35.50/1 Bob:20.00/1 1:35.50 2:20.00"},
		{"UPDATE lineitem l SET quantity = l.quantity * 2 FROM orders o WHERE o.id = l.order_id AND o.customer_id = 2 RETURNING l.id, l.amount", "UPDATE 1", "2,40.00",
			"Alice:35.50/1 Bob:40.00/1 1:35.50 2:40.00"},
		{"DELETE FROM lineitem l USING product p WHERE p.id = l.product_id AND p.name = 'gadget' RETURNING l.id", "DELETE 1", "10",
			"Alice:10.00/1 Bob:40.00/1 1:10.00 2:40.00"},
		{"WITH o AS (INSERT INTO orders (id, customer_id) VALUES (3, 1) RETURNING id) INSERT INTO lineitem (order_id, product_id, quantity) SELECT id, 3, 10 FROM o RETURNING amount", "INSERT 0 1", "1.00",
			"Alice:11.00/2 Bob:40.00/1 1:10.00 2:40.00 3:1.00"},
		{"WITH gone AS (DELETE FROM lineitem WHERE order_id = 3 RETURNING order_id) SELECT count(*) FROM gone", "SELECT 1", "1",
			"Alice:10.00/2 Bob:40.00/1 1:10.00 2:40.00 3:0.00"},
		{"UPDATE orders SET paid = true WHERE id IN (1, 3) RETURNING *", "UPDATE 2", "1,1,10.00,t, 3,1,0.00,t,",
			"Alice:0.00/0 Bob:40.00/1 1:10.00 2:40.00 3:0.00"},
		{"UPDATE orders SET paid = false WHERE id = 999", "UPDATE 0", "", "Alice:0.00/0 Bob:40.00/1 1:10.00 2:40.00 3:0.00"},
		{"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (2, 2, 1, 1), (20, 2, 1, 2) ON CONFLICT (id) DO UPDATE SET quantity = lineitem.quantity + excluded.quantity RETURNING id, quantity, amount",
			"INSERT 0 2", "20,2,20.00 2,5,50.00", "Alice:0.00/0 Bob:70.00/1 1:10.00 2:70.00 3:0.00"},
		{"INSERT INTO lineitem AS l (id, order_id, product_id, quantity) VALUES (2, 2, 1, 9), (20, 2, 1, 9) ON CONFLICT (id) DO UPDATE SET quantity = excluded.quantity WHERE l.quantity < 3",
			"INSERT 0 1", "", "Alice:0.00/0 Bob:140.00/1 1:10.00 2:140.00 3:0.00"},
		{"DELETE FROM orders WHERE id = 3", "DELETE 1", "", "Alice:0.00/0 Bob:140.00/1 1:10.00 2:140.00"},
		{"UPDATE lineitem SET (quantity, product_id) = (1, 2) WHERE id = 20 RETURNING unit_price, amount", "UPDATE 1", "25.50,25.50",
			"Alice:0.00/0 Bob:75.50/1 1:10.00 2:75.50"},
	}
	for _, st := range steps {
		res := run(st.sql)
		if res.CommandTag.String() != st.tag {
			t.Fatalf("%s: tag %q, want %q", st.sql, res.CommandTag, st.tag)
		}
		var rows []string
		for _, r := range res.Rows {
			vals := make([]string, len(r))
			for i, v := range r {
				vals[i] = string(v)
			}
			rows = append(rows, strings.Join(vals, ","))
		}
		if got := strings.Join(rows, " "); got != st.returning {
			t.Fatalf("%s: returned %q, want %q", st.sql, got, st.returning)
		}
		check(st.sql, st.state)
	}
	if drift := scalar(t, admin, qDrift); drift != "0" {
		t.Fatalf("%s values drift", drift)
	}
}

// TestExtendedParameters: statements with parameters, prepared once and
// run many times, and a pipelined batch mixing reads and writes.
func TestExtendedParameters(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Prepare(ctx, "line", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES ($1, $2, $3) RETURNING amount", nil); err != nil {
		t.Fatal(err)
	}
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	for i, want := range []string{"10.00", "51.00", "0.30"} {
		args := [][]byte{[]byte("1"), []byte{byte('1' + i)}, []byte{byte('1' + i)}}
		res := c.ExecPrepared(ctx, "line", args, nil, nil).Read()
		if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != want {
			t.Fatalf("execution %d: %v %q, want %s", i, res.Err, res.Rows, want)
		}
	}
	// Binary parameters and results.
	res := c.ExecParams(ctx, "UPDATE lineitem SET quantity = $1 WHERE id = $2 RETURNING quantity",
		[][]byte{{0, 0, 0, 4}, {0, 0, 0, 1}}, []uint32{23, 23}, []int16{1}, []int16{1}).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != string([]byte{0, 0, 0, 4}) {
		t.Fatalf("binary: %v %v", res.Err, res.Rows)
	}
	batch := &pgconn.Batch{}
	batch.ExecParams("SELECT balance FROM customer WHERE id = $1", [][]byte{[]byte("1")}, nil, nil, nil)
	batch.ExecParams("UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = $1", [][]byte{[]byte("1")}, nil, nil, nil)
	batch.ExecParams("SELECT balance FROM customer WHERE id = $1", [][]byte{[]byte("1")}, nil, nil, nil)
	results, err := c.ExecBatch(ctx, batch).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// 4 widgets + 2 gadgets + 3 gizmos = 40 + 51 + 0.30; then one more each.
	if got := string(results[0].Rows[0][0]) + " " + results[1].CommandTag.String() + " " + string(results[2].Rows[0][0]); got != "91.30 UPDATE 3 126.90" {
		t.Fatalf("batch: %s", got)
	}
	if drift := scalar(t, admin, qDrift); drift != "0" {
		t.Fatalf("%s values drift", drift)
	}
}

// TestCommitConstraint: "an order has at least one line", checked at
// COMMIT (explicit, of an autocommit statement, PREPARE TRANSACTION) for
// the rows the transaction touched; ROLLBACK TO SAVEPOINT forgets rows.
func TestCommitConstraint(t *testing.T) {
	db, p, admin := creditDB(t)
	c := connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	scalar(t, admin, "ALTER TABLE orders ADD line_count int NOT NULL DEFAULT 0")
	scalar(t, c, `SELECT pgrules.count('orders.line_count', 'lineitem')`)
	scalar(t, c, `SELECT pgrules.commit_constraint('orders', 'row.line_count > 0', 'order {row.id} has no lines', name => 'has_lines')`)

	// Autocommit: the statement and its commit fail together.
	if e := pgError(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)"); e == nil || e.Code != "23514" || e.ConstraintName != "has_lines" || e.Message != "order 1 has no lines" {
		t.Fatalf("autocommit: %+v", e)
	}
	// A COMMIT that comes after another statement of its Query, in a
	// transaction: the commit constraint holds it as any COMMIT.
	for _, end := range []string{"SELECT 1; COMMIT", "SAVEPOINT s; RELEASE SAVEPOINT s; COMMIT"} {
		scalar(t, c, "BEGIN")
		scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
		if e := pgError(t, c, end); e == nil || e.Code != "23514" || e.ConstraintName != "has_lines" {
			t.Fatalf("%s: %+v, want the commit constraint's 23514", end, e)
		}
		if got := scalar(t, admin, "SELECT count(*) FROM orders"); got != "0" {
			t.Fatalf("%s committed an order without lines", end)
		}
	}
	// In a transaction: fine once a line is there.
	scalar(t, c, "BEGIN")
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	scalar(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 1)")
	scalar(t, c, "COMMIT")
	// Deleting the last line fails at COMMIT, which rolls back.
	scalar(t, c, "BEGIN")
	scalar(t, c, "DELETE FROM lineitem WHERE order_id = 1")
	if e := pgError(t, c, "COMMIT"); e == nil || e.Code != "23514" || e.ConstraintName != "has_lines" {
		t.Fatalf("COMMIT: %+v", e)
	}
	if c.TxStatus() != 'I' || scalar(t, admin, "SELECT count(*) FROM lineitem") != "1" {
		t.Fatalf("after the failed COMMIT: status %c, lines %s", c.TxStatus(), scalar(t, admin, "SELECT count(*) FROM lineitem"))
	}
	// A savepoint rolled back forgets the rows touched since.
	scalar(t, c, "BEGIN")
	scalar(t, c, "SAVEPOINT a")
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (2, 1)")
	scalar(t, c, "ROLLBACK TO SAVEPOINT a")
	scalar(t, c, "RELEASE a")
	scalar(t, c, "COMMIT")
	// PREPARE TRANSACTION checks them too, before the server (here without
	// prepared transactions) would refuse it.
	scalar(t, c, "BEGIN")
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (3, 1)")
	if e := pgError(t, c, "PREPARE TRANSACTION 'x'"); e == nil || e.Code != "23514" || e.ConstraintName != "has_lines" {
		t.Fatalf("PREPARE TRANSACTION: %+v", e)
	}
	// A deleted order is not checked; the rules of deleting it ran.
	scalar(t, c, "BEGIN")
	scalar(t, c, "DELETE FROM lineitem WHERE order_id = 1")
	scalar(t, c, "DELETE FROM orders WHERE id = 1")
	scalar(t, c, "COMMIT")
	if got := scalar(t, admin, qCustomers); got != "Alice:0.00/0 Bob:0.00/0" {
		t.Fatalf("customers: %s", got)
	}
}

// creditTraced is a connection through a proxy to a database with the
// check-credit schema and rules, and the NOTICEs it has received.
func creditTraced(t *testing.T) (*pgconn.PgConn, *[]string) {
	t.Helper()
	db, p, _ := creditDB(t)
	url := p.url("", "", db)
	defineCreditRules(t, connect(t, url))
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	notices := new([]string)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { *notices = append(*notices, n.Message) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c, notices
}

// TestTrace: SET pgrules.trace = on reports, as NOTICEs indented by level,
// what the logic did.
func TestTrace(t *testing.T) {
	c, notices := creditTraced(t)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	if len(*notices) != 0 {
		t.Fatalf("notices without the trace: %q", notices)
	}
	scalar(t, c, "SET pgrules.trace = on")
	scalar(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 2)")
	got := strings.Join(*notices, "\n")
	for _, want := range []string{
		"INSERT on lineitem",
		"  copy lineitem.unit_price = 25.50",
		"  formula lineitem.amount = 51.00",
		"  adjust orders 1: orders.amount_total +51",
		"    adjust customer 1: customer.balance +51",
		"      constraint credit_limit holds on 1 row(s)",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Fatalf("trace misses %q:\n%s", want, got)
		}
	}
	*notices = nil
	scalar(t, c, "RESET pgrules.trace")
	scalar(t, c, "UPDATE lineitem SET quantity = 1")
	if len(*notices) != 0 {
		t.Fatalf("notices after RESET: %q", notices)
	}
}

// TestWritesAmongNotifications: notifications that reach an idle session
// through the proxy just as it writes a table with rules (the engine takes
// the upstream connection at its next message) all arrive, in order, and
// every write is answered.
func TestWritesAmongNotifications(t *testing.T) {
	limits := "UPDATE customer SET credit_limit = 100000"
	c, admin, p, db := rulesDB(t, demo.Schema+demo.Data+limits, nil)
	defineCreditRules(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgconn.ParseConfig(p.url("", "", db))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { got = append(got, n.Payload) }
	l, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	scalar(t, l, "LISTEN news")
	const n = 50
	for i := 1; i <= n; i++ {
		scalar(t, admin, fmt.Sprintf("NOTIFY news, '%d'", i))
		if e := pgError(t, l, fmt.Sprintf("INSERT INTO orders (customer_id) VALUES (%d)", 1+i%2)); e != nil {
			t.Fatalf("insert %d: %v", i, e)
		}
	}
	for len(got) < n {
		if err := l.WaitForNotification(ctx); err != nil {
			t.Fatalf("after %d of %d notifications: %v", len(got), n, err)
		}
	}
	for i, payload := range got {
		if payload != strconv.Itoa(i+1) {
			t.Fatalf("notifications %q, want 1 to %d in order", got, n)
		}
	}
	if count := scalar(t, admin, "SELECT sum(unpaid_order_count) FROM customer"); count != strconv.Itoa(n) {
		t.Fatalf("%s unpaid orders counted, want %d", count, n)
	}
}

// TestTwoKeysToOneParent: one statement that changes both foreign keys of
// a row to the same parent table (an employee who works for one
// department and is on loan to another, with a count along each) adjusts
// both counts, and the parent's formula over them and the grandparent's
// sums see both, on the table whose writes take one round trip (a_) and on
// its twin that takes the usual steps (b_).
func TestTwoKeysToOneParent(t *testing.T) {
	const schema = `
CREATE TABLE %[1]s_region (id int PRIMARY KEY, works int NOT NULL DEFAULT 0, staff int NOT NULL DEFAULT 0);
CREATE TABLE %[1]s_department (id int PRIMARY KEY, region_id int REFERENCES %[1]s_region,
  works_n int NOT NULL DEFAULT 0, loan_n int NOT NULL DEFAULT 0, staff int);
CREATE TABLE %[1]s_employee (id int PRIMARY KEY,
  works_for_id int CONSTRAINT %[1]s_works_for REFERENCES %[1]s_department,
  on_loan_id int CONSTRAINT %[1]s_on_loan REFERENCES %[1]s_department);
INSERT INTO %[1]s_region (id) VALUES (1);
INSERT INTO %[1]s_department (id, region_id, staff) VALUES (1, 1, 0), (2, 1, 0);`
	rules := []string{
		`SELECT pgrules.count('%[1]s_department.works_n', '%[1]s_employee', via => '%[1]s_works_for')`,
		`SELECT pgrules.count('%[1]s_department.loan_n', '%[1]s_employee', via => '%[1]s_on_loan')`,
		`SELECT pgrules.formula('%[1]s_department.staff', 'row.works_n + row.loan_n')`,
		`SELECT pgrules.sum('%[1]s_region.works', '%[1]s_department.works_n')`,
		`SELECT pgrules.sum('%[1]s_region.staff', '%[1]s_department.staff')`,
	}
	var all []string
	for _, tw := range []string{"a", "b"} {
		for _, r := range rules {
			all = append(all, fmt.Sprintf(r, tw))
		}
	}
	all = append(all, `SELECT pgrules.event('b_employee', 'early', 'nil', name => 'b_usual_way')`)
	c, admin, _, _ := rulesDB(t, fmt.Sprintf(schema, "a")+fmt.Sprintf(schema, "b"), all)
	state := func(tw string) string {
		return scalar(t, admin, fmt.Sprintf(`SELECT (SELECT string_agg(concat_ws(':', id, works_n, loan_n, staff), ' ' ORDER BY id) FROM %[1]s_department)
			|| ' | ' || (SELECT string_agg(concat_ws(':', works, staff), ' ') FROM %[1]s_region)`, tw))
	}
	ctx := context.Background()
	for _, step := range []struct {
		sql, arg string
		want     string // department id:works_n:loan_n:staff | region works:staff
	}{
		{"INSERT INTO %[1]s_employee VALUES ($1, 2, 1)", "3", "1:0:1:1 2:1:0:1 | 1:2"},
		{"UPDATE %[1]s_employee SET works_for_id = 1, on_loan_id = NULL WHERE id = $1", "3", "1:1:0:1 2:0:0:0 | 1:1"},
		{"INSERT INTO %[1]s_employee VALUES ($1, 1, 1)", "4", "1:2:1:3 2:0:0:0 | 2:3"},
		{"UPDATE %[1]s_employee SET works_for_id = on_loan_id, on_loan_id = works_for_id WHERE id = $1", "3", "1:1:2:3 2:0:0:0 | 1:3"},
		{"UPDATE %[1]s_employee SET works_for_id = 2, on_loan_id = 2 WHERE id >= $1", "3", "1:0:0:0 2:2:2:4 | 2:4"},
		{"DELETE FROM %[1]s_employee WHERE id = $1", "4", "1:0:0:0 2:1:1:2 | 1:2"},
	} {
		for _, tw := range []string{"a", "b"} {
			sql := fmt.Sprintf(step.sql, tw)
			// With a parameter, so that a_ takes one round trip.
			if _, err := c.ExecParams(ctx, sql, [][]byte{[]byte(step.arg)}, nil, nil, nil).Close(); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if got := state(tw); got != step.want {
				t.Fatalf("%s:\n got %s\nwant %s", sql, got, step.want)
			}
		}
		if drift := scalar(t, c, "SELECT coalesce(string_agg(concat_ws(' ', rule, key, stored, computed), '; '), '') FROM pgrules.verify()"); drift != "" {
			t.Fatalf("%s: verify finds %s", step.sql, drift)
		}
	}
}

// TestTwoKeysToOneGrandparent: a parent whose two foreign keys reach the
// same grandparent row gets both of its sums adjusted when a child's
// write changes the parent (the grandparents adjusted in the write's own
// statement, a_, or in the usual steps, b_).
func TestTwoKeysToOneGrandparent(t *testing.T) {
	const schema = `
CREATE TABLE %[1]s_region (id int PRIMARY KEY, home numeric(12,2) NOT NULL DEFAULT 0, billed numeric(12,2) NOT NULL DEFAULT 0);
CREATE TABLE %[1]s_dept (id int PRIMARY KEY, total numeric(12,2) NOT NULL DEFAULT 0,
  home_id int CONSTRAINT %[1]s_home REFERENCES %[1]s_region, bill_id int CONSTRAINT %[1]s_bill REFERENCES %[1]s_region);
CREATE TABLE %[1]s_emp (id int PRIMARY KEY, dept_id int REFERENCES %[1]s_dept, salary numeric(12,2));
INSERT INTO %[1]s_region (id) VALUES (1), (2);
INSERT INTO %[1]s_dept (id, home_id, bill_id) VALUES (1, 1, 1), (2, 1, 2);`
	rules := []string{
		`SELECT pgrules.sum('%[1]s_dept.total', '%[1]s_emp.salary')`,
		`SELECT pgrules.sum('%[1]s_region.home', '%[1]s_dept.total', via => '%[1]s_home')`,
		`SELECT pgrules.sum('%[1]s_region.billed', '%[1]s_dept.total', via => '%[1]s_bill')`,
	}
	var all []string
	for _, tw := range []string{"a", "b"} {
		for _, r := range rules {
			all = append(all, fmt.Sprintf(r, tw))
		}
	}
	all = append(all, `SELECT pgrules.event('b_emp', 'early', 'nil', name => 'b_usual_way')`)
	c, admin, _, _ := rulesDB(t, fmt.Sprintf(schema, "a")+fmt.Sprintf(schema, "b"), all)
	ctx := context.Background()
	for _, step := range []struct {
		sql, arg string
		want     string // region id:home:billed
	}{
		{"INSERT INTO %[1]s_emp VALUES (1, 1, $1)", "10", "1:10.00:10.00 2:0.00:0.00"},
		{"INSERT INTO %[1]s_emp VALUES (2, 2, $1)", "5", "1:15.00:10.00 2:0.00:5.00"},
		{"UPDATE %[1]s_emp SET salary = salary + $1", "1", "1:17.00:11.00 2:0.00:6.00"},
		{"UPDATE %[1]s_emp SET dept_id = 1 WHERE id = $1", "2", "1:17.00:17.00 2:0.00:0.00"},
		{"DELETE FROM %[1]s_emp WHERE id = $1", "1", "1:6.00:6.00 2:0.00:0.00"},
	} {
		for _, tw := range []string{"a", "b"} {
			sql := fmt.Sprintf(step.sql, tw)
			if _, err := c.ExecParams(ctx, sql, [][]byte{[]byte(step.arg)}, nil, nil, nil).Close(); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			if got := scalar(t, admin, fmt.Sprintf("SELECT string_agg(concat_ws(':', id, home, billed), ' ' ORDER BY id) FROM %s_region", tw)); got != step.want {
				t.Fatalf("%s:\n got %s\nwant %s", sql, got, step.want)
			}
		}
		if drift := scalar(t, c, "SELECT coalesce(string_agg(concat_ws(' ', rule, key, stored, computed), '; '), '') FROM pgrules.verify()"); drift != "" {
			t.Fatalf("%s: verify finds %s", step.sql, drift)
		}
	}
}

// TestChainedFormulasRound: a formula's result is rounded to its column's
// type before the next formula reads it (rules-api.md §8), so chained
// formulas give what PL/pgSQL triggers give: in one trip (a_), in the
// usual steps (b_), and with a division (c_).
func TestChainedFormulasRound(t *testing.T) {
	const schema = `
CREATE TABLE %[1]s_item (id int PRIMARY KEY, x numeric(14,2), h numeric(14,2), b numeric(14,2), n int, m int);`
	rules := []string{
		`SELECT pgrules.formula('%[1]s_item.h', 'row.x * 0.5')`,
		`SELECT pgrules.formula('%[1]s_item.b', 'row.h * 3')`,
		`SELECT pgrules.formula('%[1]s_item.n', 'row.x * 0.5')`,
		`SELECT pgrules.formula('%[1]s_item.m', 'row.n * 3')`,
	}
	var all []string
	for _, tw := range []string{"a", "b"} {
		for _, r := range rules {
			all = append(all, fmt.Sprintf(r, tw))
		}
	}
	all = append(all, `SELECT pgrules.event('b_item', 'early', 'nil', name => 'b_usual_way')`,
		`SELECT pgrules.formula('c_item.h', 'row.x / 3')`, `SELECT pgrules.formula('c_item.b', 'row.h * 3')`,
		`SELECT pgrules.formula('c_item.n', 'row.x / 3')`, `SELECT pgrules.formula('c_item.m', 'row.n * 3')`)
	c, admin, _, _ := rulesDB(t, fmt.Sprintf(schema, "a")+fmt.Sprintf(schema, "b")+fmt.Sprintf(schema, "c")+
		fmt.Sprintf(schema, "ta")+fmt.Sprintf(schema, "tc")+`
CREATE FUNCTION half() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.h := NEW.x * 0.5; NEW.b := NEW.h * 3; NEW.n := NEW.x * 0.5; NEW.m := NEW.n * 3; RETURN NEW; END $$;
CREATE FUNCTION third() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.h := NEW.x / 3; NEW.b := NEW.h * 3; NEW.n := NEW.x / 3; NEW.m := NEW.n * 3; RETURN NEW; END $$;
CREATE TRIGGER half BEFORE INSERT OR UPDATE ON ta_item FOR EACH ROW EXECUTE FUNCTION half();
CREATE TRIGGER third BEFORE INSERT OR UPDATE ON tc_item FOR EACH ROW EXECUTE FUNCTION third();`, all)
	ctx := context.Background()
	state := func(table string) string {
		return scalar(t, admin, "SELECT string_agg(concat_ws(':', id, x, h, b, n, m), ' ' ORDER BY id) FROM "+table)
	}
	for _, step := range []struct{ sql, arg string }{
		{"INSERT INTO %s (id, x) VALUES (1, $1)", "10"},
		{"INSERT INTO %s (id, x) VALUES (2, $1)", "0.05"},
		{"UPDATE %s SET x = $1 WHERE id = 2", "0.06"},
		{"UPDATE %s SET x = $1 WHERE id = 1", "0.07"},
		{"UPDATE %s SET x = -x WHERE id <= $1", "2"},
		{"INSERT INTO %s (id, x) SELECT 3, $1", "1.01"},
	} {
		for _, tw := range []string{"a", "b", "c", "ta", "tc"} {
			sql := fmt.Sprintf(step.sql, tw+"_item")
			if _, err := c.ExecParams(ctx, sql, [][]byte{[]byte(step.arg)}, nil, nil, nil).Close(); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		for tw, oracle := range map[string]string{"a": "ta", "b": "ta", "c": "tc"} {
			if got, want := state(tw+"_item"), state(oracle+"_item"); got != want {
				t.Fatalf("%s: %s_item\n     got %s\ntriggers %s", step.sql, tw, got, want)
			}
		}
	}
	if drift := scalar(t, c, "SELECT coalesce(string_agg(concat_ws(' ', rule, key, stored, computed), '; '), '') FROM pgrules.verify()"); drift != "" {
		t.Fatalf("verify finds %s", drift)
	}
}

// TestFormulaReadsGeneratedColumn: a stored generated column reads, in a
// formula, as the value PostgreSQL stores (rules-api.md §8), on insert and
// when what it is computed from changes; one computed from a derived
// column cannot be, and a formula reading it is refused.
func TestFormulaReadsGeneratedColumn(t *testing.T) {
	c, admin, _, _ := rulesDB(t, `
CREATE TABLE item (id int PRIMARY KEY, qty int, price numeric(10,2),
  gross numeric(12,2) GENERATED ALWAYS AS (qty * price) STORED, fee numeric(12,2), twice int,
  again int GENERATED ALWAYS AS (twice + 1) STORED, n int);`,
		[]string{`SELECT pgrules.formula('item.fee', 'row.gross * 0.1')`, `SELECT pgrules.formula('item.twice', 'row.qty * 2')`})
	ctx := context.Background()
	for _, step := range []struct{ sql, arg, want string }{
		{"INSERT INTO item (id, qty, price) VALUES (1, 2, $1)", "5", "1:2:5.00:10.00:1.00"},
		{"INSERT INTO item (id, qty, price) SELECT 2, 3, $1::numeric", "0.05", "1:2:5.00:10.00:1.00 2:3:0.05:0.15:0.02"},
		{"UPDATE item SET price = $1 WHERE id = 1", "7", "1:2:7.00:14.00:1.40 2:3:0.05:0.15:0.02"},
		{"UPDATE item SET qty = qty + $1", "1", "1:3:7.00:21.00:2.10 2:4:0.05:0.20:0.02"},
		{"UPDATE item SET n = $1", "1", "1:3:7.00:21.00:2.10 2:4:0.05:0.20:0.02"},
	} {
		for _, extended := range []bool{false, true} {
			scalar(t, c, "BEGIN")
			var err error
			if extended {
				_, err = c.ExecParams(ctx, step.sql, [][]byte{[]byte(step.arg)}, nil, nil, nil).Close()
			} else {
				_, err = c.Exec(ctx, strings.ReplaceAll(step.sql, "$1", "'"+step.arg+"'")).ReadAll()
			}
			if err != nil {
				t.Fatalf("%s: %v", step.sql, err)
			}
			if got := scalar(t, c, "SELECT string_agg(concat_ws(':', id, qty, price, gross, fee), ' ' ORDER BY id) FROM item"); got != step.want {
				t.Fatalf("%s (extended %v):\n got %s\nwant %s", step.sql, extended, got, step.want)
			}
			scalar(t, c, map[bool]string{false: "ROLLBACK", true: "COMMIT"}[extended])
		}
		if drift := scalar(t, c, "SELECT coalesce(string_agg(concat_ws(' ', rule, key, stored, computed), '; '), '') FROM pgrules.verify()"); drift != "" {
			t.Fatalf("%s: verify finds %s", step.sql, drift)
		}
	}
	e := pgError(t, c, `SELECT pgrules.formula('item.n', 'row.again * 2')`)
	if e == nil || e.Code != "0A000" || !strings.Contains(e.Message, "again") || !strings.Contains(e.Message, "item.twice") {
		t.Fatalf("a formula reading a generated column computed from a derived one: %v, want 0A000", e)
	}
	if n := scalar(t, admin, "SELECT count(*) FROM pgrules.rule WHERE name = 'item.n'"); n != "0" {
		t.Fatal("the refused formula is stored")
	}
}

// TestNumericNaN: a numeric NaN or infinity read by a rule computes as
// PostgreSQL computes it (NaN * 2 + 1 is NaN, NaN sorts after every
// number), in formulas, constraints and sums kept by adjustment, where
// PL/pgSQL triggers that add differences end in the same state.
func TestNumericNaN(t *testing.T) {
	const schema = `
CREATE TABLE %[1]s_p (id int PRIMARY KEY, total numeric NOT NULL DEFAULT 0, top numeric);
CREATE TABLE %[1]s_c (id int PRIMARY KEY, p_id int REFERENCES %[1]s_p, x numeric, y numeric);
INSERT INTO %[1]s_p (id) VALUES (1);`
	c, admin, _, _ := rulesDB(t, fmt.Sprintf(schema, "e")+fmt.Sprintf(schema, "t")+`
CREATE FUNCTION t_y() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.y := NEW.x * 2 + 1;
  IF NOT coalesce(NEW.x >= -1, true) THEN RAISE EXCEPTION 'negative' USING ERRCODE = '23514'; END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION t_total() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE t_p SET total = total + coalesce(NEW.y, 0) - coalesce(OLD.y, 0),
    top = (SELECT max(y) FROM t_c WHERE p_id = 1) WHERE id = 1;
  RETURN NULL;
END $$;
CREATE TRIGGER y BEFORE INSERT OR UPDATE ON t_c FOR EACH ROW EXECUTE FUNCTION t_y();
CREATE TRIGGER total AFTER INSERT OR UPDATE ON t_c FOR EACH ROW EXECUTE FUNCTION t_total();`,
		[]string{
			`SELECT pgrules.formula('e_c.y', 'row.x * 2 + 1')`,
			`SELECT pgrules.sum('e_p.total', 'e_c.y')`,
			`SELECT pgrules.max('e_p.top', 'e_c.y')`,
			`SELECT pgrules.constraint('e_c', 'row.x >= -1', 'negative')`,
		})
	for _, sql := range []string{
		"INSERT INTO %[1]s_c VALUES (1, 1, 'NaN')",
		"INSERT INTO %[1]s_c VALUES (2, 1, 4)",
		"UPDATE %[1]s_c SET x = 5 WHERE id = 1",
		"INSERT INTO %[1]s_c VALUES (3, 1, 'Infinity')",
		"UPDATE %[1]s_c SET x = 'NaN' WHERE id = 2",
		"INSERT INTO %[1]s_c VALUES (4, 1, '-Infinity')",
	} {
		var errs [2]string
		for i, tw := range []string{"e", "t"} {
			if e := pgError(t, c, fmt.Sprintf(sql, tw)); e != nil {
				errs[i] = e.Code
			}
		}
		if errs[0] != errs[1] {
			t.Fatalf("%s: SQLSTATE %q, triggers %q", sql, errs[0], errs[1])
		}
		state := "SELECT (SELECT string_agg(concat_ws(':', id, x, y), ' ' ORDER BY id) FROM %[1]s_c) || ' | ' || (SELECT concat_ws(':', total, top) FROM %[1]s_p)"
		if got, want := scalar(t, admin, fmt.Sprintf(state, "e")), scalar(t, admin, fmt.Sprintf(state, "t")); got != want {
			t.Fatalf("%s:\n     got %s\ntriggers %s", sql, got, want)
		}
	}
}

// TestInsertFewerValues: INSERT ... VALUES without a column list and with
// fewer values than the table has columns gives the others their
// defaults, as PostgreSQL does; VALUES lists of different lengths get
// PostgreSQL's 42601.
func TestInsertFewerValues(t *testing.T) {
	c, admin := orgDB(t)
	if e := pgError(t, c, "INSERT INTO emp VALUES (1, 10, NULL, 100), (2, 10)"); e == nil || e.Code != "42601" {
		t.Fatalf("VALUES lists of two lengths: %v, want 42601", e)
	}
	for _, sql := range []string{"INSERT INTO emp VALUES (1, 10, NULL, 100)", "INSERT INTO emp VALUES (2, 10)"} {
		if e := pgError(t, c, sql); e != nil {
			t.Fatalf("%s: %v", sql, e)
		}
	}
	if got := scalar(t, admin, "SELECT total || ':' || headcount FROM dept WHERE id = 10"); got != "100.00:2" {
		t.Fatalf("dept 10: %s", got)
	}
}

// TestAccumulatingFormula: a formula that reads its own target keeps a
// stock by what ships (rules-api.md §8): row.units_in_stock is the value
// before the change, given by the client or its default on insert; an
// UPDATE setting it is refused with 428C9; verify() does not report it and
// rebuild() leaves it alone. PL/pgSQL triggers that subtract what ships
// from the stock end in the same state.
func TestAccumulatingFormula(t *testing.T) {
	const schema = `
CREATE TABLE %[1]s_product (id int PRIMARY KEY, units_in_stock int NOT NULL DEFAULT 100, units_shipped int NOT NULL DEFAULT 0);
CREATE TABLE %[1]s_shipment (id int PRIMARY KEY, product_id int REFERENCES %[1]s_product, qty int NOT NULL);
INSERT INTO %[1]s_product VALUES (9, 7, 0);`
	c, admin, _, _ := rulesDB(t, fmt.Sprintf(schema, "e")+fmt.Sprintf(schema, "t")+`
CREATE FUNCTION t_ship() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    UPDATE t_product SET units_shipped = units_shipped - OLD.qty, units_in_stock = units_in_stock + OLD.qty WHERE id = OLD.product_id;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    UPDATE t_product SET units_shipped = units_shipped + NEW.qty, units_in_stock = units_in_stock - NEW.qty WHERE id = NEW.product_id;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER ship AFTER INSERT OR UPDATE OR DELETE ON t_shipment FOR EACH ROW EXECUTE FUNCTION t_ship();`,
		[]string{
			`SELECT pgrules.sum('e_product.units_shipped', 'e_shipment.qty')`,
			`SELECT pgrules.formula('e_product.units_in_stock', 'old == nil ? row.units_in_stock : row.units_in_stock - (row.units_shipped - old.units_shipped)')`,
		})
	state := "SELECT string_agg(concat_ws(':', id, units_in_stock, units_shipped), ' ' ORDER BY id) FROM %s_product"
	if got := scalar(t, admin, fmt.Sprintf(state, "e")); got != "9:7:0" {
		t.Fatalf("the stock before the rule is history: %s", got)
	}
	ctx := context.Background()
	for _, step := range []struct {
		sql  string
		args []string // nil: the simple protocol
	}{
		{"INSERT INTO %[1]s_product (id) VALUES (1)", nil},
		{"INSERT INTO %[1]s_product (id, units_in_stock) VALUES ($1, $2)", []string{"2", "50"}},
		{"INSERT INTO %[1]s_shipment VALUES ($1, 1, $2)", []string{"1", "10"}},
		{"INSERT INTO %[1]s_shipment VALUES (2, 1, 5), (3, 2, 7), (4, 9, 2)", nil},
		{"UPDATE %[1]s_shipment SET qty = $2 WHERE id = $1", []string{"2", "8"}},
		{"UPDATE %[1]s_shipment SET product_id = 2 WHERE id = 1", nil},
		{"UPDATE %[1]s_shipment SET qty = qty + $1", []string{"1"}},
		{"DELETE FROM %[1]s_shipment WHERE id = $1", []string{"3"}},
	} {
		for _, tw := range []string{"e", "t"} {
			sql := fmt.Sprintf(step.sql, tw)
			var err error
			if step.args == nil {
				_, err = c.Exec(ctx, sql).ReadAll()
			} else {
				params := make([][]byte, len(step.args))
				for i, a := range step.args {
					params[i] = []byte(a)
				}
				_, err = c.ExecParams(ctx, sql, params, nil, nil, nil).Close()
			}
			if err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		if got, want := scalar(t, admin, fmt.Sprintf(state, "e")), scalar(t, admin, fmt.Sprintf(state, "t")); got != want {
			t.Fatalf("%s:\n     got %s\ntriggers %s", step.sql, got, want)
		}
	}
	if e := pgError(t, c, "UPDATE e_product SET units_in_stock = 5 WHERE id = 1"); e == nil || e.Code != "428C9" {
		t.Fatalf("an UPDATE setting the accumulated column: %v, want 428C9", e)
	}
	before := scalar(t, admin, fmt.Sprintf(state, "e"))
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("verify: %s rows", got)
	}
	if got := scalar(t, c, "SELECT coalesce(string_agg(rule || ':' || rows_corrected, ' '), '') FROM pgrules.rebuild()"); got != "e_product.units_shipped:0" {
		t.Fatalf("rebuild: %s", got)
	}
	if got := scalar(t, admin, fmt.Sprintf(state, "e")); got != before {
		t.Fatalf("after rebuild: %s, was %s", got, before)
	}
}
