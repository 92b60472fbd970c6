package tests

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// An insert or update whose derivations the server can compute runs in
// one round trip (rules/onetrip.go). The tests run every write twice: on a
// table that takes that way (a_line) and on its twin, which an early event
// keeps on the engine's usual way (b_line); rows, parents, RETURNING and
// errors must be the same.

const twinSchema = `
CREATE TABLE %[1]s_parent (
  id int PRIMARY KEY,
  price numeric(14,4),
  total numeric(14,2) NOT NULL DEFAULT 0,
  n int NOT NULL DEFAULT 0,
  units bigint NOT NULL DEFAULT 0,
  cap numeric(14,2) NOT NULL DEFAULT 1000
);
CREATE TABLE %[1]s_line (
  id int PRIMARY KEY,
  parent_id int REFERENCES %[1]s_parent(id),
  qty int,
  price numeric(14,2),
  amount numeric(14,2),
  units int,
  more int,
  big numeric,
  note text DEFAULT 'none'
);
INSERT INTO %[1]s_parent (id, price) VALUES (1, 1.2345), (2, 10), (3, NULL);`

var twinRules = []string{
	`SELECT pgrules.copy('%[1]s_line.price', '%[1]s_parent.price')`,
	// Reads the price as the line stores it: the parent's rounded to two
	// decimals.
	`SELECT pgrules.formula('%[1]s_line.amount', 'row.qty * row.price')`,
	// An integer target is rounded (half away from zero) at once.
	`SELECT pgrules.formula('%[1]s_line.units', 'row.qty * 2.5')`,
	`SELECT pgrules.formula('%[1]s_line.more', '(row.units ?? 0) * 2 - -row.parent.n')`,
	// No 32-bit overflow on the way.
	`SELECT pgrules.formula('%[1]s_line.big', 'row.qty * 2147483647 * 3')`,
	`SELECT pgrules.sum('%[1]s_parent.total', '%[1]s_line.amount', 'row.note != ''skip''')`,
	`SELECT pgrules.count('%[1]s_parent.n', '%[1]s_line')`,
	`SELECT pgrules.sum('%[1]s_parent.units', '%[1]s_line.units')`,
	`SELECT pgrules.constraint('%[1]s_parent', 'row.total <= row.cap', 'parent {row.id} over its cap', name => '%[1]s_cap')`,
}

// twinDB returns a connection through the proxy to a database with the
// twin tables, and one directly to it.
func twinDB(t *testing.T) (c, admin *pgconn.PgConn, url string) {
	t.Helper()
	var rules []string
	for _, tw := range []string{"a", "b"} {
		for _, r := range twinRules {
			rules = append(rules, fmt.Sprintf(r, tw))
		}
	}
	rules = append(rules, `SELECT pgrules.event('b_line', 'early', 'nil', name => 'b_usual_way')`)
	c, admin, p, db := rulesDB(t, fmt.Sprintf(twinSchema, "a")+fmt.Sprintf(twinSchema, "b"), rules)
	return c, admin, p.url("", "", db)
}

// twinState is the lines and the parents of one twin, as text.
func twinState(t *testing.T, admin *pgconn.PgConn, tw string) string {
	t.Helper()
	return scalar(t, admin, fmt.Sprintf(`SELECT (SELECT string_agg(concat_ws(':', id, parent_id, qty, price, amount, units, more, big, note), ' ' ORDER BY id) FROM %[1]s_line)
		|| ' | ' || (SELECT string_agg(concat_ws(':', id, total, n, units), ' ' ORDER BY id) FROM %[1]s_parent)`, tw))
}

// onBoth runs sql (with %[1]s for the twin's name) on both twins and
// returns what each gave: its rows, tag and error.
func onBoth(t *testing.T, c *pgconn.PgConn, sql string, run func(sql string) string) {
	t.Helper()
	a, b := run(fmt.Sprintf(sql, "a")), run(fmt.Sprintf(sql, "b"))
	if a != b {
		t.Fatalf("%s:\none trip: %s\nusual:    %s", sql, a, b)
	}
}

func TestOneTrip(t *testing.T) {
	c, admin, url := twinDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	simple := func(sql string) string {
		res, err := c.Exec(ctx, sql).ReadAll()
		var out []string
		for _, r := range res {
			for _, row := range r.Rows {
				out = append(out, fmt.Sprintf("%q", row))
			}
			out = append(out, r.CommandTag.String())
		}
		if err != nil {
			out = append(out, errorText(err))
		}
		// A failed transaction block must not meet the twin's statement.
		if _, err := c.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "; ")
	}
	// With parameters (so prepared: a text with its values in it takes the
	// usual way, see inOneTrip), in the extended protocol, binary results.
	extended := func(sql string, args []string) string {
		params := make([][]byte, len(args))
		for i, a := range args {
			params[i] = []byte(a)
		}
		res := c.ExecParams(ctx, sql, params, nil, nil, []int16{1}).Read()
		// The order of RETURNING rows is not defined: a delete of one
		// trip returns them in key order, its twin in the table's.
		rows := make([]string, len(res.Rows))
		for i, r := range res.Rows {
			rows[i] = fmt.Sprintf("%q", r)
		}
		slices.Sort(rows)
		out := fmt.Sprintf("%s %s", rows, res.CommandTag)
		if res.Err != nil {
			out += " " + errorText(res.Err)
		}
		if _, err := c.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, step := range []struct {
		sql  string
		args []string // nil: the simple protocol
	}{
		{"INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (1, 1, 3)", nil},
		{"INSERT INTO %[1]s_line (id, parent_id, qty, note) VALUES (2, 1, 1, 'skip'), (3, 2, NULL, 'x'), (4, NULL, 2, NULL) RETURNING *", nil},
		{"INSERT INTO %[1]s_line (id, parent_id, qty, price, amount, units) VALUES (5, 3, 5, 99, 99, 99) RETURNING id, amount * 2 AS twice, price, note", nil},
		{"INSERT INTO %[1]s_line (id, parent_id, qty) SELECT 10 + g, 1 + g %% $1, g FROM generate_series(1, 20) g", []string{"2"}},
		{"INSERT INTO %[1]s_line (id, parent_id, qty) SELECT $1, 1, 1 WHERE false RETURNING id", []string{"100"}},
		{"WITH v(i) AS (VALUES (40), (41)) INSERT INTO %[1]s_line (id, parent_id, qty) SELECT i, $1, 1 FROM v RETURNING %[1]s_line.id, qty", []string{"2"}},
		// Over the cap: nothing of the statement stays.
		{"INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (50, 2, 1), (51, 2, 200)", nil},
		// A duplicate key: the server's error.
		{"INSERT INTO %[1]s_line (id, parent_id, qty) VALUES ($1, 1, 1)", []string{"1"}},
		{"BEGIN; INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (60, 1, 1); SAVEPOINT s; INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (61, 1, 1); ROLLBACK TO s; INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (62, 3, 2); COMMIT", nil},
		// A failure inside a transaction block.
		{"BEGIN; INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (63, 1, 1); INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (64, 2, 1); COMMIT", nil},
		{"INSERT INTO %[1]s_line (id, parent_id, qty) VALUES ($1, 2, $2) RETURNING id, amount, units", []string{"70", "2"}},
		// Updates: what the formulas read, the foreign key (the copy runs
		// again), a copy set by the client, a filter, NULLs, no row.
		{"UPDATE %[1]s_line SET qty = qty + $1 WHERE parent_id = $2 AND id < $3 RETURNING id, amount, units, more", []string{"1", "1", "20"}},
		{"UPDATE %[1]s_line SET parent_id = $1 WHERE id = $2 RETURNING *", []string{"3", "12"}},
		{"UPDATE %[1]s_line SET price = $1 WHERE id = $2 RETURNING price, amount", []string{"5", "13"}},
		{"UPDATE %[1]s_line AS l SET note = $1 WHERE l.id BETWEEN $2 AND $3", []string{"skip", "14", "16"}},
		{"UPDATE %[1]s_line SET qty = NULL, note = NULL WHERE id = $1 RETURNING amount, units, big", []string{"17"}},
		{"UPDATE %[1]s_line SET qty = $1 WHERE false RETURNING id", []string{"1"}},
		{"UPDATE %[1]s_parent SET price = $1 WHERE id = $2", []string{"2", "1"}},
		{"UPDATE %[1]s_line SET qty = 2 WHERE id = 18", nil},
		{"UPDATE %[1]s_line SET qty = $2 + 1 WHERE id = $1 RETURNING id, amount, units", []string{"70", "2"}},
		// Over the cap: the update is undone with its adjustments.
		{"UPDATE %[1]s_line SET qty = $1 WHERE id = $2", []string{"1000", "11"}},
		{"BEGIN; UPDATE %[1]s_line SET qty = 3 WHERE id = 19; SAVEPOINT s; UPDATE %[1]s_line SET parent_id = NULL WHERE id = 19; ROLLBACK TO s; UPDATE %[1]s_line SET qty = 4 WHERE id = 20; COMMIT", nil},
		// Deletes: one row, several, a filtered one, a NULL key, none.
		{"DELETE FROM %[1]s_line WHERE id = $1 RETURNING *", []string{"13"}},
		{"DELETE FROM %[1]s_line WHERE parent_id = $1 AND id > $2 RETURNING id, amount", []string{"1", "15"}},
		{"DELETE FROM %[1]s_line AS l WHERE l.note = $1", []string{"skip"}},
		{"DELETE FROM %[1]s_line WHERE parent_id IS NULL AND id <> $1", []string{"0"}},
		{"DELETE FROM %[1]s_line WHERE id = $1 RETURNING id", []string{"1000"}},
		{"DELETE FROM %[1]s_line USING %[1]s_parent p WHERE p.id = %[1]s_line.parent_id AND p.id = $1 AND %[1]s_line.id = $2", []string{"2", "11"}},
		{"BEGIN; DELETE FROM %[1]s_line WHERE id = 12; SAVEPOINT s; DELETE FROM %[1]s_line WHERE id = 20; ROLLBACK TO s; DELETE FROM %[1]s_line WHERE id = 70; COMMIT", nil},
	} {
		run := simple
		if step.args != nil {
			run = func(sql string) string { return extended(sql, step.args) }
		}
		onBoth(t, c, step.sql, run)
		if a, b := twinState(t, admin, "a"), twinState(t, admin, "b"); a != b {
			t.Fatalf("after %s:\none trip: %s\nusual:    %s", step.sql, a, b)
		}
		if step.sql == "INSERT INTO %[1]s_line (id, parent_id, qty) VALUES (1, 1, 3)" {
			// 1.2345 copied as 1.23, 3 × 1.23; 7.5 units stored as 8; more
			// follows the parent's count of lines.
			if got := twinState(t, admin, "a"); !strings.Contains(got, "1:1:3:1.23:3.69:8:"+scalar(t, admin, "SELECT 16 + n FROM a_parent WHERE id = 1")+":19327352823:none") {
				t.Fatalf("the first line is not as the engine computes it: %s", got)
			}
		}
	}
	for _, tw := range []string{"a", "b"} {
		if drift := scalar(t, c, "SELECT count(*) FROM pgrules.verify('"+tw+"_parent')"); drift != "0" {
			t.Fatalf("%s parent values of %s drift", drift, tw)
		}
	}

	// One round trip on the first twin, two on the other (a line without
	// a parent: no parent's count changes, which the formula more reads).
	var notices []string
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	traced, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer traced.Close(ctx)
	scalar(t, traced, "SET pgrules.trace = on")
	for tw, want := range map[string]string{"a": "1 round trip(s) to the server", "b": "2 round trip(s) to the server"} {
		// Twice: the first time also asks the server for the types of
		// the statements' parameters.
		for pass := range 2 {
			for _, step := range []struct {
				sql   string
				args  []string
				lines []string
			}{
				{"INSERT INTO %s_line (id, parent_id, qty) VALUES ($1, NULL, $2)", []string{"80", "2"}, []string{"INSERT on %s_line", "  1 row(s)", "  formula %s_line.units = 5", "  formula %s_line.big = 12884901882"}},
				{"UPDATE %s_line SET note = $2 WHERE id = $1", []string{"80", "x"}, []string{"UPDATE on %s_line", "  1 row(s)", "  formula %s_line.units pruned: nothing it reads changed"}},
				{"DELETE FROM %s_line WHERE id = $1 AND note = $2", []string{"80", "x"}, []string{"DELETE on %s_line", "  1 row(s)"}},
			} {
				sql, lines := step.sql, step.lines
				notices = nil
				if res := traced.ExecParams(ctx, fmt.Sprintf(sql, tw), [][]byte{[]byte(step.args[0]), []byte(step.args[1])}, nil, nil, nil).Read(); res.Err != nil {
					t.Fatal(res.Err)
				}
				got := strings.Join(notices, "\n")
				for _, line := range append(lines, want) {
					if line = strings.ReplaceAll(line, "%s", tw); pass == 1 && !strings.Contains(got, line) {
						t.Fatalf("%s: the trace misses %q:\n%s", fmt.Sprintf(sql, tw), line, got)
					}
				}
			}
		}
	}
}

// errorText is what the tests compare of an error: the twins' names in it
// are the first twin's.
func errorText(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	return strings.ReplaceAll(strings.Join([]string{pe.Code, pe.Message, pe.Detail, pe.TableName, pe.ConstraintName}, " "), "b_", "a_")
}

// TestOneTripKeyChanged: a row locked in its newest version, whose key a
// concurrent transaction changed, cannot be found by the update or the
// delete of one trip: the statement fails with 40001 and leaves nothing
// behind.
func TestOneTripKeyChanged(t *testing.T) {
	c, admin, _ := twinDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, write := range []string{
		"UPDATE a_line SET qty = qty + $1 WHERE qty = $2",
		"DELETE FROM a_line WHERE qty = $2 AND $1::int > 0",
	} {
		id := strconv.Itoa(i + 1)
		scalar(t, c, "INSERT INTO a_line (id, parent_id, qty) VALUES ("+id+", 2, 7)")
		before := twinState(t, admin, "a")
		scalar(t, admin, unguarded("BEGIN; UPDATE a_line SET id = 9"+id+" WHERE id = "+id))
		done := make(chan error, 1)
		go func() {
			_, err := c.ExecParams(ctx, write, [][]byte{[]byte("1"), []byte("7")}, nil, nil, nil).Close()
			done <- err
		}()
		// The write waits for the row's lock.
		waitFor(t, "the write to wait for the lock", func() bool {
			return scalar(t, admin, "SELECT count(*) FROM pg_locks WHERE NOT granted") != "0"
		})
		scalar(t, admin, "COMMIT")
		err := <-done
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "40001" {
			t.Fatalf("%s: %v, want 40001", write, err)
		}
		if got, want := twinState(t, admin, "a"), strings.Replace(before, id+":2:7:", "9"+id+":2:7:", 1); got != want {
			t.Fatalf("after the failed %s:\n%s\nwant\n%s", write, got, want)
		}
		if got := scalar(t, c, "SELECT 1"); got != "1" {
			t.Fatalf("the session after the error: %s", got)
		}
		scalar(t, c, "DELETE FROM a_line WHERE id = 9"+id)
	}
}

// TestOneTripParentConcurrent: a child written in one statement whose
// parent a concurrent transaction inserts, or deletes and inserts again
// under the same key, while the statement waits for another parent that
// transaction holds. The statement's snapshot does not see the parent its
// foreign-key check then finds, so its adjustment would be lost; the write
// fails with 40001 instead and leaves nothing behind, and its retry adjusts
// the parent.
func TestOneTripParentConcurrent(t *testing.T) {
	c, admin, p, db := rulesDB(t, `CREATE TABLE pc (id int PRIMARY KEY, s numeric(12,2) NOT NULL DEFAULT 0, k int NOT NULL DEFAULT 0);
		CREATE TABLE pg (id int PRIMARY KEY, pc_id int REFERENCES pc ON DELETE CASCADE, v numeric(10,2));
		INSERT INTO pc (id) VALUES (1), (3)`,
		[]string{`SELECT pgrules.sum('pc.s', 'pg.v')`, `SELECT pgrules.count('pc.k', 'pg')`})
	other := connect(t, p.url("", "", db))
	scalar(t, c, "INSERT INTO pg (id, pc_id, v) VALUES (10, 1, 1.50)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	insert := "INSERT INTO pg (id, pc_id, v) VALUES ($1, 1, 2.25), ($1 + 100, $2, 2.25)"
	for i, tc := range []struct {
		other         []string
		write, parent string
	}{
		{[]string{"INSERT INTO pc (id) VALUES (2)"}, insert, "2"},
		{[]string{"DELETE FROM pc WHERE id = 3", "INSERT INTO pc (id) VALUES (3)"}, insert, "3"},
		{[]string{"INSERT INTO pc (id) VALUES (4)"}, "UPDATE pg SET pc_id = $2 WHERE id = $1 - 12", "4"},
	} {
		scalar(t, other, "BEGIN")
		for _, sql := range tc.other {
			scalar(t, other, sql)
		}
		// Parent 1 locked by the other transaction: the write waits there.
		scalar(t, other, fmt.Sprintf("INSERT INTO pg (id, pc_id, v) VALUES (%d, 1, 1.00)", 11+i))
		done := make(chan error, 1)
		go func() {
			_, err := c.ExecParams(ctx, tc.write, [][]byte{[]byte(strconv.Itoa(20 + i)), []byte(tc.parent)}, nil, nil, nil).Close()
			done <- err
		}()
		var err error
		waitFor(t, "the write to wait for parent 1", func() bool {
			select {
			case err = <-done:
				t.Fatalf("%s did not wait for %s: %v", tc.write, tc.other, err)
			default:
			}
			return scalar(t, admin, "SELECT count(*) FROM pg_locks WHERE NOT granted") != "0"
		})
		scalar(t, other, "COMMIT")
		err = <-done
		if drift := scalar(t, other, "SELECT count(*) FROM pgrules.verify()"); drift != "0" {
			t.Fatalf("%s while another transaction ran %s: %v; verify() reports %s drifting rows", tc.write, tc.other, err, drift)
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "40001" {
			t.Fatalf("%s while another transaction ran %s: %v, want 40001", tc.write, tc.other, err)
		}
		// The retry sees the parent.
		if _, err := c.ExecParams(ctx, tc.write, [][]byte{[]byte(strconv.Itoa(20 + i)), []byte(tc.parent)}, nil, nil, nil).Close(); err != nil {
			t.Fatalf("%s again: %v", tc.write, err)
		}
	}
	if got := scalar(t, admin, "SELECT string_agg(concat_ws(':', id, s, k), ' ' ORDER BY id) FROM pc"); got != "1:7.50:5 2:2.25:1 3:2.25:1 4:1.50:1" {
		t.Fatalf("parents: %s", got)
	}
	if drift := scalar(t, other, "SELECT count(*) FROM pgrules.verify()"); drift != "0" {
		t.Fatalf("verify() reports %s drifting rows after the retries", drift)
	}
}
