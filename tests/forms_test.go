package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The forms of write beyond the plain ones, each run twice: through
// pgrules on a table with rules, and directly on a twin database where
// PL/pgSQL triggers keep the same sum, count and formula. Both must give
// the same rows, command tag, RETURNING rows and SQLSTATE.

const formsSchema = `
CREATE TABLE account (id int PRIMARY KEY, name text, total numeric(12,2) NOT NULL DEFAULT 0, n int NOT NULL DEFAULT 0);
CREATE TABLE entry (
  id int PRIMARY KEY,
  account_id int REFERENCES account(id),
  code text,
  ref text,
  tag text,
  slot int,
  amount numeric(12,2) NOT NULL DEFAULT 0,
  doubled numeric(12,2),
  deleted boolean NOT NULL DEFAULT false,
  nnd int,
  CONSTRAINT entry_code_key UNIQUE (account_id, code),
  CONSTRAINT entry_slot_key UNIQUE (slot) DEFERRABLE
);
CREATE UNIQUE INDEX entry_live_ref ON entry (ref) WHERE NOT deleted;
CREATE UNIQUE INDEX entry_lower_tag ON entry (lower(tag));
CREATE UNIQUE INDEX entry_nnd ON entry (nnd, id) NULLS NOT DISTINCT;
INSERT INTO account (id, name) VALUES (1, 'one'), (2, 'two');`

var formsRules = []string{
	`SELECT pgrules.sum('account.total', 'entry.amount', 'not row.deleted')`,
	`SELECT pgrules.count('account.n', 'entry')`,
	`SELECT pgrules.formula('entry.doubled', 'row.amount * 2')`,
}

// formsTriggers are formsRules as a PostgreSQL developer would write them.
const formsTriggers = `
CREATE FUNCTION entry_derive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.doubled := NEW.amount * 2;
  RETURN NEW;
END $$;
CREATE TRIGGER entry_derive BEFORE INSERT OR UPDATE ON entry FOR EACH ROW EXECUTE FUNCTION entry_derive();
CREATE FUNCTION entry_adjust() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE account SET total = total - CASE WHEN OLD.deleted THEN 0 ELSE OLD.amount END, n = n - 1 WHERE id = OLD.account_id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    UPDATE account SET total = total + CASE WHEN NEW.deleted THEN 0 ELSE NEW.amount END, n = n + 1 WHERE id = NEW.account_id;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER entry_adjust AFTER INSERT OR UPDATE OR DELETE ON entry FOR EACH ROW EXECUTE FUNCTION entry_adjust();`

// formsPair is a database with formsSchema and formsRules behind a proxy
// (c through it, admin directly) and its twin with formsTriggers (oracle).
func formsPair(t *testing.T) (c, admin, oracle *pgconn.PgConn) {
	t.Helper()
	c, admin, _, _ = rulesDB(t, formsSchema, formsRules)
	oracle = connect(t, shared.url("", "", shared.newDB(t)))
	scalar(t, oracle, formsSchema+";"+formsTriggers)
	return c, admin, oracle
}

// outcome is what a client sees of a statement sent in the simple
// protocol, or in the extended one when extended is set: its SQLSTATE, or
// its tag, its rows sorted (pgrules returns an upsert's inserted rows
// before the updated ones, PostgreSQL in the order proposed) and its
// columns' names and types.
func outcome(t *testing.T, c *pgconn.PgConn, sql string, extended bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last *pgconn.Result
	if extended {
		last = c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	} else {
		res, err := c.Exec(ctx, sql).ReadAll()
		if err == nil {
			last = res[len(res)-1]
		} else {
			last = &pgconn.Result{Err: err}
		}
	}
	if err := last.Err; err != nil {
		if e, ok := err.(*pgconn.PgError); ok {
			return "ERROR " + e.Code
		}
		t.Fatalf("%s: %v", sql, err)
	}
	var rows []string
	for _, r := range last.Rows {
		vals := make([]string, len(r))
		for i, v := range r {
			vals[i] = string(v)
			if v == nil {
				vals[i] = "NULL"
			}
		}
		rows = append(rows, "("+strings.Join(vals, ",")+")")
	}
	slices.Sort(rows)
	out := last.CommandTag.String() + " " + strings.Join(rows, " ")
	if len(last.FieldDescriptions) > 0 {
		cols := make([]string, len(last.FieldDescriptions))
		for i, f := range last.FieldDescriptions {
			cols[i] = fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID)
		}
		out += " [" + strings.Join(cols, " ") + "]"
	}
	return out
}

const formsState = `SELECT (SELECT string_agg(concat_ws(':', id, account_id, code, ref, tag, slot, amount, doubled, deleted), ' ' ORDER BY id) FROM entry)
	|| ' | ' || (SELECT string_agg(concat_ws(':', id, name, total, n), ' ' ORDER BY id) FROM account)`

// same runs sql through pgrules and on the oracle, in the simple
// protocol, and fails unless both give want (when set) and the same, and
// leave the same rows.
func same(t *testing.T, c, admin, oracle *pgconn.PgConn, sql, want string) {
	t.Helper()
	sameIn(t, false, c, admin, oracle, sql, want)
}

// sameIn is same in the extended protocol when extended is set, where a
// write whose derivations the server can compute runs in one statement.
func sameIn(t *testing.T, extended bool, c, admin, oracle *pgconn.PgConn, sql, want string) {
	t.Helper()
	got, exp := outcome(t, c, sql, extended), outcome(t, oracle, sql, extended)
	if got != exp {
		t.Fatalf("%s:\npgrules    %s\npostgresql %s", sql, got, exp)
	}
	if want != "" && got != want {
		t.Fatalf("%s: %s, want %s", sql, got, want)
	}
	if g, e := scalar(t, admin, formsState), scalar(t, oracle, formsState); g != e {
		t.Fatalf("%s: rows\npgrules    %s\npostgresql %s", sql, g, e)
	}
}

// refusedForm checks that sql is refused through pgrules with code, and that
// nothing changed.
func refusedForm(t *testing.T, c, admin *pgconn.PgConn, sql, code string) {
	t.Helper()
	before := scalar(t, admin, formsState)
	if e := pgError(t, c, sql); e == nil || e.Code != code {
		t.Fatalf("%s: %+v, want %s", sql, e, code)
	}
	if after := scalar(t, admin, formsState); after != before {
		t.Fatalf("%s changed the rows:\n%s\n%s", sql, before, after)
	}
}

// TestConflictTargets: ON CONFLICT DO UPDATE with its arbiter named (ON
// CONSTRAINT), inferred from columns in any order, or a partial unique
// index inferred with its predicate; PostgreSQL's errors where it gives
// one; an expression index or a WHERE pgrules cannot match refused.
func TestConflictTargets(t *testing.T) {
	c, admin, oracle := formsPair(t)
	same(t, c, admin, oracle, `INSERT INTO entry (id, account_id, code, ref, tag, slot, amount) VALUES
		(1, 1, 'a', 'r1', 't1', NULL, 10), (2, 1, 'b', 'r2', 't2', NULL, 20), (3, 2, 'a', 'r3', 't3', NULL, 30), (4, 2, 'b', 'r4', 't4', NULL, 1)`, "INSERT 0 4 ")
	same(t, c, admin, oracle, "UPDATE entry SET deleted = true WHERE id = 4", "UPDATE 1 ")
	for _, sql := range []string{
		`INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'x', 5), (5, 1, 'c', 7)
			ON CONFLICT ON CONSTRAINT entry_pkey DO UPDATE SET amount = entry.amount + excluded.amount RETURNING id, amount, doubled`,
		`INSERT INTO entry AS e (id, account_id, code, amount) VALUES (10, 1, 'b', 2), (11, 2, 'a', 3), (12, 2, 'z', 4)
			ON CONFLICT ON CONSTRAINT entry_code_key DO UPDATE SET amount = e.amount * 10 WHERE e.amount < 25 RETURNING *`,
		`INSERT INTO entry (id, account_id, code, amount) VALUES (13, 2, 'z', 6)
			ON CONFLICT (code, account_id) DO UPDATE SET amount = excluded.amount, code = 'y' RETURNING id, code, amount`,
		// ref r4 is deleted: not in the index, so its namesake is new; a
		// new row that is deleted itself conflicts with nothing.
		`INSERT INTO entry (id, account_id, ref, amount, deleted) VALUES (20, 1, 'r1', 1, false), (21, 2, 'r4', 2, false), (22, 2, 'r3', 3, true)
			ON CONFLICT (ref) WHERE NOT deleted DO UPDATE SET amount = entry.amount + excluded.amount RETURNING id, ref, amount, deleted`,
		// A whole index on the columns is the arbiter, whatever the WHERE.
		`INSERT INTO entry (id, account_id, amount) VALUES (2, 1, 99) ON CONFLICT (id) WHERE amount > 1000 DO UPDATE SET amount = 98 RETURNING amount`,
	} {
		same(t, c, admin, oracle, sql, "")
	}
	sameIn(t, true, c, admin, oracle, `INSERT INTO entry AS e (id, account_id, code, ref, amount) VALUES (60, 1, 'a', 'r60', 1), (61, 2, 'n', 'r2', 2)
		ON CONFLICT ON CONSTRAINT entry_code_key DO UPDATE SET amount = e.amount + 100 RETURNING id, code, amount`, "")
	sameIn(t, true, c, admin, oracle, `WITH up AS (INSERT INTO entry (id, account_id, ref, amount) VALUES (62, 2, 'r2', 5) ON CONFLICT (ref) WHERE NOT deleted DO UPDATE SET amount = excluded.amount RETURNING id, amount)
		SELECT * FROM up`, "")
	for _, sql := range []string{
		"INSERT INTO entry (id, account_id, amount) VALUES (1, 1, 1) ON CONFLICT ON CONSTRAINT nope DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, amount) VALUES (1, 1, 1) ON CONFLICT ON CONSTRAINT entry_slot_key DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, slot, amount) VALUES (30, 1, 1, 1) ON CONFLICT (slot) DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, amount) VALUES (1, 1, 1) ON CONFLICT (amount) DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, ref, amount) VALUES (31, 1, 'r1', 1) ON CONFLICT (ref) DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, amount) VALUES (1, 1, 1), (1, 1, 2) ON CONFLICT ON CONSTRAINT entry_pkey DO UPDATE SET amount = 1",
		"INSERT INTO entry (id, account_id, ref, amount) VALUES (40, 1, 'q', 1), (41, 1, 'q', 2) ON CONFLICT (ref) WHERE NOT deleted DO UPDATE SET amount = 1",
	} {
		if got := outcome(t, oracle, sql, false); !strings.HasPrefix(got, "ERROR") {
			t.Fatalf("%s: the oracle gives %s", sql, got)
		}
		same(t, c, admin, oracle, sql, "")
	}
	refusedForm(t, c, admin, "INSERT INTO entry (id, account_id, ref, amount) VALUES (50, 1, 'r1', 1) ON CONFLICT (ref) WHERE deleted = false DO UPDATE SET amount = 1", "0A000")
	refusedForm(t, c, admin, "INSERT INTO entry (id, account_id, tag, amount) VALUES (51, 1, 'T1', 1) ON CONFLICT (lower(tag)) DO UPDATE SET amount = 1", "0A000")
	refusedForm(t, c, admin, "INSERT INTO entry (id, account_id, amount) VALUES (52, 1, 1) ON CONFLICT (id, nnd) DO UPDATE SET amount = 1", "0A000")
	if drift := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); drift != "0" {
		t.Fatalf("pgrules.verify() finds %s rows", drift)
	}
}

// TestSetFromSubselect: UPDATE ... SET (a, b) = (SELECT ...), correlated
// with the row and a FROM list, among other assignments, in both
// protocols: the same rows, RETURNING and errors as PostgreSQL, and the
// sub-select run once per row updated, only for those.
func TestSetFromSubselect(t *testing.T) {
	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprint("extended=", extended), func(t *testing.T) {
			c, admin, oracle := formsPair(t)
			sameIn(t, extended, c, admin, oracle, `INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'a', 10), (2, 1, 'b', 20), (3, 2, 'c', 30)`, "INSERT 0 3 ")
			for _, sql := range []string{
				`UPDATE entry e SET (amount, code) = (SELECT a.id * 100 + e.id, a.name FROM account a WHERE a.id = e.account_id) WHERE e.id IN (1, 3) RETURNING id, code, amount, doubled`,
				`UPDATE entry e SET (amount, tag) = (SELECT max(x.amount) + a.id, 'm' FROM entry x WHERE x.account_id = a.id) FROM account a WHERE a.id = e.account_id AND a.id = 1 RETURNING e.id, e.amount, e.doubled, e.tag`,
				`UPDATE entry SET deleted = true, (amount, slot) = (SELECT 5.005, 7), code = 'q' WHERE id = 2 RETURNING *`,
				`UPDATE entry SET (amount) = (SELECT 1.5 UNION ALL SELECT 2.5 ORDER BY 1 DESC LIMIT 1), (code, ref) = (SELECT 'x', 'y' WHERE false) WHERE id = 3 RETURNING code, ref, amount`,
				`UPDATE entry SET (deleted, amount) = (VALUES (false, 3)) WHERE id = 2`,
			} {
				sameIn(t, extended, c, admin, oracle, sql, "")
			}
			for _, sql := range []string{
				`UPDATE entry SET (amount, code) = (SELECT generate_series(1, 2), 'z') WHERE id = 1`,
				`UPDATE entry SET (amount, code) = (SELECT 1) WHERE id = 1`,
				`UPDATE entry SET (amount, code) = (SELECT 1, 'a', 2) WHERE id = 1`,
			} {
				if got := outcome(t, oracle, sql, extended); !strings.HasPrefix(got, "ERROR") {
					t.Fatalf("%s: the oracle gives %s", sql, got)
				}
				sameIn(t, extended, c, admin, oracle, sql, "")
			}
			// Once per row updated: one row of three.
			sameIn(t, extended, c, admin, oracle, "CREATE SEQUENCE calls", "")
			sameIn(t, extended, c, admin, oracle, "UPDATE entry SET (slot, amount) = (SELECT nextval('calls'), 4) WHERE account_id = 2 RETURNING slot", "UPDATE 1 (1) [slot:23]")
			if got := scalar(t, admin, "SELECT last_value FROM calls"); got != "1" {
				t.Fatalf("the sub-select ran %s times for one row", got)
			}
			refusedForm(t, c, admin, "UPDATE entry SET (amount, code) = (SELECT * FROM (SELECT 1, 'a') s) WHERE id = 1", "0A000")
			if drift := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); drift != "0" {
				t.Fatalf("pgrules.verify() finds %s rows", drift)
			}
		})
	}
}

// TestReturningJoined: the RETURNING of UPDATE ... FROM and DELETE ...
// USING names the FROM list's columns, qualified or not, its items' *,
// and * for all of them, as PostgreSQL gives them (the join row the SET
// took, the columns' names and types), in both protocols and in binary;
// an item reading both sides is refused.
func TestReturningJoined(t *testing.T) {
	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprint("extended=", extended), func(t *testing.T) {
			c, admin, oracle := formsPair(t)
			sameIn(t, extended, c, admin, oracle, `INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'a', 10), (2, 1, 'b', 20), (3, 2, 'c', 30), (4, 2, 'd', 40)`, "INSERT 0 4 ")
			for _, sql := range []string{
				`UPDATE entry e SET amount = e.amount + a.id FROM account a WHERE a.id = e.account_id AND a.id = 1 RETURNING *`,
				`UPDATE entry e SET amount = 5 FROM account a, (SELECT 7 AS seven) s WHERE a.id = e.account_id AND e.id IN (2, 3)
					RETURNING e.id, a.name, s.seven, a.*, name, e.doubled, s, upper(a.name) AS shout, total`,
				`UPDATE entry e SET code = x.tag FROM account a JOIN (VALUES (1, 'one!'), (2, 'two!')) AS x(id, tag) USING (id) WHERE a.id = e.account_id RETURNING *`,
				`UPDATE entry e SET amount = 1 FROM account a WHERE a.id = e.account_id AND false RETURNING *`,
				`WITH u AS (UPDATE entry e SET amount = 3 FROM account a WHERE a.id = e.account_id AND e.id = 1 RETURNING e.id, a.name, a.*) SELECT * FROM u`,
				`DELETE FROM entry e USING account a WHERE a.id = e.account_id AND a.name = 'two' AND e.id = 3 RETURNING *, a.total`,
				`DELETE FROM entry e USING account a WHERE a.id = e.account_id AND e.id = 4 RETURNING a.n, e.amount, (SELECT count(*) FROM entry x WHERE x.account_id = a.id) AS left_there`,
			} {
				sameIn(t, extended, c, admin, oracle, sql, "")
			}
			refusedForm(t, c, admin, "UPDATE entry e SET amount = 2 FROM account a WHERE a.id = e.account_id RETURNING e.amount + a.id", "0A000")
			if drift := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); drift != "0" {
				t.Fatalf("pgrules.verify() finds %s rows", drift)
			}
		})
	}

	// Binary results, a format per column (as pgx asks): the same bytes.
	c, admin, oracle := formsPair(t)
	same(t, c, admin, oracle, `INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'a', 10), (2, 2, 'b', 20)`, "INSERT 0 2 ")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	binary := func(conn *pgconn.PgConn, sql string, formats []int16) string {
		res := conn.ExecParams(ctx, sql, nil, nil, nil, formats).Read()
		if res.Err != nil {
			return res.Err.Error()
		}
		return fmt.Sprintf("%s %q", res.CommandTag, res.Rows)
	}
	for _, st := range []struct {
		sql     string
		formats []int16
	}{
		{"UPDATE entry e SET amount = 7 FROM account a WHERE a.id = e.account_id AND e.id = 1 RETURNING *", []int16{1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1}},
		{"UPDATE entry e SET amount = 8 FROM account a WHERE a.id = e.account_id AND e.id = 2 RETURNING a.total, e.amount, a.name", []int16{1}},
		{"DELETE FROM entry e USING account a WHERE a.id = e.account_id AND e.id = 2 RETURNING e.id, a.*", []int16{0, 1, 0, 1, 1}},
	} {
		if got, want := binary(c, st.sql, st.formats), binary(oracle, st.sql, st.formats); got != want {
			t.Fatalf("%s in binary:\npgrules    %s\npostgresql %s", st.sql, got, want)
		}
	}
	if e := binary(c, "UPDATE entry e SET amount = 9 FROM account a WHERE a.id = e.account_id RETURNING *", []int16{1}); !strings.Contains(e, "0A000") {
		t.Fatalf("RETURNING * in binary with one format code: %s", e)
	}
}

// TestStillRefused: the forms of write pgrules does not run are refused
// with 0A000, and change nothing.
func TestStillRefused(t *testing.T) {
	c, admin, _ := formsPair(t)
	scalar(t, c, "INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'a', 10)")
	for _, sql := range []string{
		"BEGIN; DECLARE cur CURSOR FOR SELECT * FROM entry FOR UPDATE; FETCH cur; UPDATE entry SET amount = 1 WHERE CURRENT OF cur",
		"INSERT INTO entry (id, account_id, code, amount) VALUES (1, 1, 'a', 1) ON CONFLICT (id) DO UPDATE SET (amount, code) = (SELECT 2, 'b')",
		"UPDATE entry SET (amount, code) = (SELECT * FROM (VALUES (2, 'b')) v) WHERE id = 1",
		"UPDATE entry e SET (amount, code) = (SELECT 2, a.name) FROM account a WHERE a.id = e.account_id RETURNING a.name",
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3), d AS (DELETE FROM entry WHERE id IN (SELECT i FROM n) RETURNING id) SELECT * FROM d",
		"EXPLAIN ANALYZE DELETE FROM entry",
		"MERGE INTO entry e USING account a ON e.account_id = a.id WHEN MATCHED THEN UPDATE SET amount = 0",
		"TRUNCATE entry",
	} {
		refusedForm(t, c, admin, sql, "0A000")
		scalar(t, c, "ROLLBACK")
	}
}
