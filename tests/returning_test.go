package tests

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestReturningAfterRules holds the client's RETURNING rows to the rows as
// the statement leaves them, when the rules that run after the write
// change the same rows again: a child's formula reads the parent's column
// the update changed, and the parent's sum follows the child; or a row of
// a tree is the parent of another row the same statement changes.
func TestReturningAfterRules(t *testing.T) {
	schema := `CREATE TABLE p (id int PRIMARY KEY, a int, d_sum numeric(14,2));
        CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, price numeric(10,2), f1 numeric(14,2));
        CREATE TABLE n (id int PRIMARY KEY, parent_id int REFERENCES n, v int, total int);
        CREATE TABLE q (id int, ref int UNIQUE, parent_ref int REFERENCES q (ref), v int, total int)`
	rules := []string{
		"SELECT pgrules.formula('c.f1', 'row.price * (row.p?.a ?? 1)')",
		"SELECT pgrules.sum('p.d_sum', 'c.f1', via => 'c_p_id_fkey')",
		"SELECT pgrules.sum('n.total', 'n.v', via => 'n_parent_id_fkey')",
		"SELECT pgrules.sum('q.total', 'q.v', via => 'q_parent_ref_fkey')",
	}
	c, admin, _, _ := rulesDB(t, schema, rules)
	ctx := context.Background()
	for _, s := range []string{
		"INSERT INTO p (id, a) VALUES (1, 1), (2, 2), (3, 3)",
		"INSERT INTO c (id, p_id, price) VALUES (3, 2, 11.84), (9, 1, -33.36), (1, NULL, 24.07)",
		"INSERT INTO n (id, parent_id, v) VALUES (1, NULL, 1), (2, 1, 2), (3, 2, 3)",
		"INSERT INTO q (id, ref, parent_ref, v) VALUES (1, 10, NULL, 1), (2, 20, 10, 2)",
	} {
		scalar(t, c, s)
	}
	for _, tc := range []struct {
		name, sql string
		params    []string
		want      string // the RETURNING rows, sorted, or the SQLSTATE
	}{
		{"parent update, child formula reads it",
			"UPDATE p SET a = -1 WHERE id IN (1, 2) RETURNING id, a, d_sum", nil,
			"1|-1|33.36 2|-1|-11.84"},
		{"parent update, extended, parameters in RETURNING",
			"UPDATE p SET a = $1 WHERE id = 1 RETURNING id, d_sum + $2::numeric", []string{"2", "1000"},
			"1|933.28"},
		{"the same through an upsert",
			"INSERT INTO p (id, a) VALUES (2, 3) ON CONFLICT (id) DO UPDATE SET a = excluded.a RETURNING id, d_sum", nil,
			"2|35.52"},
		{"UPDATE ... FROM returning the FROM list",
			"UPDATE p SET a = v.a FROM (VALUES (1, 5, 'five')) AS v(id, a, label) WHERE p.id = v.id RETURNING v.label, p.d_sum", nil,
			"five|-166.80"},
		{"a tree: the parent's total follows its child in the same update",
			"UPDATE n SET v = v * 10 RETURNING id, v, total", nil,
			"1|10|20 2|20|30 3|30|0"},
		{"a tree: an insert whose child row comes in the same statement",
			"INSERT INTO n (id, parent_id, v) VALUES (4, NULL, 4), (5, 4, 5) RETURNING id, total", nil,
			"4|5 5|0"},
		{"a tree without a primary key is refused rather than answered stale",
			"UPDATE q SET v = v + 1 RETURNING id, total", nil,
			"0A000"},
		{"the rows are not written again: nothing to read",
			"UPDATE n SET v = v WHERE id = 3 RETURNING id, total", nil,
			"3|0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := returned(ctx, t, c, tc.sql, tc.params)
			if got != tc.want {
				t.Fatalf("%s\nreturned %q, want %q", tc.sql, got, tc.want)
			}
		})
	}
	if n := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); n != "0" {
		t.Fatalf("verify() found %s rows against their rules", n)
	}
	if got := scalar(t, admin, "SELECT string_agg(id || ':' || coalesce(total::text, '-'), ' ' ORDER BY id) FROM q"); got != "1:2 2:0" {
		t.Fatalf("the refused statement left q as %s", got)
	}
}

// returned runs sql (in the extended protocol with params) and renders its
// rows sorted, columns joined by |, or the error's SQLSTATE.
func returned(ctx context.Context, t *testing.T, c *pgconn.PgConn, sql string, params []string) string {
	t.Helper()
	var rows [][][]byte
	if params == nil {
		res, err := c.Exec(ctx, sql).ReadAll()
		if code := errCode(err); code != "" {
			return code
		} else if err != nil {
			t.Fatal(err)
		}
		rows = res[len(res)-1].Rows
	} else {
		args := make([][]byte, len(params))
		for i, p := range params {
			args[i] = []byte(p)
		}
		res := c.ExecParams(ctx, sql, args, nil, nil, nil).Read()
		if code := errCode(res.Err); code != "" {
			return code
		} else if res.Err != nil {
			t.Fatal(res.Err)
		}
		rows = res.Rows
	}
	lines := make([]string, len(rows))
	for i, r := range rows {
		cols := make([]string, len(r))
		for j, v := range r {
			cols[j] = string(v)
		}
		lines[i] = strings.Join(cols, "|")
	}
	slices.Sort(lines)
	return strings.Join(lines, " ")
}
