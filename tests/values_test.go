package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestExactValues holds two results of the engine's arithmetic to what
// PostgreSQL computes: an integer formula past 64 bits is refused as out of
// the column's range (it once wrapped round and stored 5), and text joined
// with + from columns, a parent's included, is computed for the rows already
// there when the rule is defined (its SQL once said text + text).
func TestExactValues(t *testing.T) {
	schema := `CREATE TABLE p (id int PRIMARY KEY, name text);
        CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, code text, label text, big int)`
	c, admin, _, _ := rulesDB(t, schema, []string{
		// Divided by 1, so that the engine computes it (not one trip).
		"SELECT pgrules.formula('c.big', '(row.id * 9223372036854775807 + row.id * 9223372036854775807 + 7) / 1', name => 'big')",
	})
	scalar(t, admin, "INSERT INTO p VALUES (1, 'Alice'), (2, 'Bob')")
	if e := pgError(t, c, "INSERT INTO c (id, p_id, code) VALUES (1, 1, 'a')"); e == nil || e.Code != "22003" {
		t.Fatalf("a formula past 64 bits into an integer: %v, want 22003", e)
	}
	scalar(t, c, "SELECT pgrules.drop_rule('big')")
	scalar(t, c, "INSERT INTO c (id, p_id, code) VALUES (1, 1, 'a'), (2, 2, 'b')")
	scalar(t, c, "SELECT pgrules.formula('c.label', 'row.p.name + \": \" + row.code')")
	if got := scalar(t, admin, "SELECT string_agg(label, ' | ' ORDER BY id) FROM c"); got != "Alice: a | Bob: b" {
		t.Fatalf("labels of the rows there: %q", got)
	}
}

// TestLengthTypes: a value too long for a varchar(n), char(n) or varbit(n)
// column, or of the wrong length for a bit(n), is refused through pgrules
// with PostgreSQL's own error (22001, 22026) in every form of write, where
// an explicit cast would cut or pad it; one that fits is written as
// PostgreSQL writes it. Each statement runs directly on a table without
// rules, and through pgrules on one whose writes run in one statement
// (lr) and on one whose formula the engine computes (ls).
func TestLengthTypes(t *testing.T) {
	cols := "(id int PRIMARY KEY, v varchar(3), c char(2), b bit(4), vb varbit(3), va varchar(2)[], n int, m int)"
	c, admin, _, _ := rulesDB(t, "CREATE TABLE ln "+cols+"; CREATE TABLE lr "+cols+"; CREATE TABLE ls "+cols, []string{
		"SELECT pgrules.formula('lr.m', 'row.n * 2')",
		// Divided by 1, so that the engine computes it (not one trip).
		"SELECT pgrules.formula('ls.m', 'row.n * 2 / 1')",
	})
	ctx := context.Background()
	code := func(conn *pgconn.PgConn, sql string, params ...string) string {
		t.Helper()
		var err error
		if params == nil {
			_, err = conn.Exec(ctx, sql).ReadAll()
		} else {
			var args [][]byte
			for _, p := range params {
				args = append(args, []byte(p))
			}
			_, err = conn.ExecParams(ctx, sql, args, nil, nil, nil).Close()
		}
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("%s: %v", sql, err)
			}
			return pe.Code
		}
		return "ok"
	}
	for _, st := range []struct {
		sql    string
		params []string
	}{
		{"INSERT INTO %s (id, v, n) VALUES (1, 'abcdef', 1)", nil},
		{"INSERT INTO %s (id, v, c, b, vb, va, n) VALUES (1, 'ab', 'x', B'1010', B'01', '{ab,c}', 1)", nil},
		{"INSERT INTO %s (id, c, n) VALUES (2, 'xyz', 1)", nil},
		{"INSERT INTO %s (id, c, n) VALUES (2, 'xy  ', 1)", nil},
		{"INSERT INTO %s (id, b, n) VALUES (3, B'1', 1)", nil},
		{"INSERT INTO %s (id, b, n) VALUES (3, X'F', 1)", nil},
		{"INSERT INTO %s (id, vb, n) VALUES (4, B'1111', 1)", nil},
		{"INSERT INTO %s (id, va, n) VALUES (4, '{abc}', 1)", nil},
		{"INSERT INTO %s (id, v, n) VALUES ($1, $2, 1)", []string{"4", "four"}},
		{"INSERT INTO %s (id, v, n) SELECT 5, 'long' || 'er', 1", nil},
		{"INSERT INTO %s (id, v, n) SELECT 5, 'ok', 1", nil},
		{"UPDATE %s SET v = 'toolong' WHERE id = 1", nil},
		{"UPDATE %s SET v = $1 WHERE id = 1", []string{"abcd"}},
		{"UPDATE %s SET v = 'new', n = 2 WHERE id = 1", nil},
		{"UPDATE %s SET b = X'A', v = 'zz' WHERE id = 1", nil},
		{"UPDATE %s SET b = B'10101' WHERE id = 1", nil},
		{"UPDATE %s SET (v, n) = (SELECT 'abcd', 3) WHERE id = 1", nil},
		{"UPDATE %s SET (v, n) = (SELECT 'abc', 3) WHERE id = 1", nil},
		{"UPDATE %s SET c = 'q', va = '{x,yz}' WHERE id = 1", nil},
	} {
		want := code(admin, fmt.Sprintf(st.sql, "ln"), st.params...)
		for _, table := range []string{"lr", "ls"} {
			if got := code(c, fmt.Sprintf(st.sql, table), st.params...); got != want {
				t.Errorf("%s through pgrules: %s, directly: %s", fmt.Sprintf(st.sql, table), got, want)
			}
		}
	}
	rows := func(table string) string {
		return scalar(t, admin, "SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, v, c, b, vb, va, n), ';' ORDER BY id) FROM "+table)
	}
	want := rows("ln")
	for _, table := range []string{"lr", "ls"} {
		if got := rows(table); got != want {
			t.Errorf("%s holds %q, directly %q", table, got, want)
		}
	}
}
