package tests

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestTreeParentFormula: in a table that references itself, a formula
// reading the parent row's column is computed again on the children when
// that column changes, even where the column has the same name as one of
// the row's own (which once pruned it as "nothing it reads changed"), on
// a row that is its own parent too; the parents' sums follow.
func TestTreeParentFormula(t *testing.T) {
	schema := `CREATE TABLE g (id int PRIMARY KEY, v numeric(10,2), w int, up_id int REFERENCES g ON DELETE CASCADE, gf numeric(14,2), sub numeric(14,2))`
	c, admin, _, _ := rulesDB(t, schema, []string{
		"SELECT pgrules.formula('g.gf', 'row.v * (row.up?.w ?? 1)')",
		"SELECT pgrules.sum('g.sub', 'g.gf', via => 'g_up_id_fkey')",
	})
	const rows = "SELECT string_agg(concat_ws(':', id, up_id, w, gf, sub), ' ' ORDER BY id) FROM g"
	scalar(t, c, "INSERT INTO g (id, up_id, v) VALUES (6, 3, 26.49), (3, 3, 19.16), (1, NULL, 2.00), (2, 1, 5.00)")
	treeSteps(t, c, admin, rows, []treeStep{
		{"UPDATE g SET w = 4", "1:4:2.00:20.00 2:1:4:20.00:0.00 3:3:4:76.64:182.60 6:3:4:105.96:0.00"},
		{"UPDATE g SET w = 2 WHERE id IN (1, 3)", "1:2:2.00:10.00 2:1:4:10.00:0.00 3:3:2:38.32:91.30 6:3:4:52.98:0.00"},
		{"UPDATE g SET up_id = 2 WHERE id = 3", "1:2:2.00:10.00 2:1:4:10.00:76.64 3:2:2:76.64:52.98 6:3:4:52.98:0.00"},
	})
}

// treeStep is a statement and the rows it leaves.
type treeStep struct{ sql, want string }

// treeSteps runs each step's statement through c and holds the rows query
// (run as admin) to what the step wants after it; verify() then finds
// nothing.
func treeSteps(t *testing.T, c, admin *pgconn.PgConn, rows string, steps []treeStep) {
	t.Helper()
	for _, st := range steps {
		scalar(t, c, st.sql)
		if got := scalar(t, admin, rows); got != st.want {
			t.Fatalf("after %s:\n got %s\nwant %s", st.sql, got, st.want)
		}
	}
	if n := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); n != "0" {
		t.Fatalf("verify() found %s rows against their rules", n)
	}
}

// TestTreeInsertedTogether: an insert that brings rows and their parents
// in one statement (in any order), or a row that is its own parent, or two
// rows each the other's parent: each row's copy and formula read its parent
// as the statement inserts it, and the sums follow.
func TestTreeInsertedTogether(t *testing.T) {
	schema := `CREATE TABLE g (id int PRIMARY KEY, v numeric(10,2), w int, up_id int REFERENCES g, label text,
        gf numeric(14,2), sub numeric(14,2), inherited text, top_w int)`
	c, admin, _, _ := rulesDB(t, schema, []string{
		"SELECT pgrules.formula('g.gf', 'row.v * (row.up?.w ?? 1)')",
		"SELECT pgrules.sum('g.sub', 'g.gf', via => 'g_up_id_fkey')",
		"SELECT pgrules.copy('g.inherited', 'g.label', via => 'g_up_id_fkey')",
		"SELECT pgrules.formula('g.top_w', 'row.up?.up?.w ?? -1')",
	})
	const rows = "SELECT string_agg(concat_ws(':', id, coalesce(up_id::text, '-'), gf, sub, coalesce(inherited, '-'), top_w), ' ' ORDER BY id) FROM g"
	treeSteps(t, c, admin, rows, []treeStep{
		// The grandchild first, its parent, then the root.
		{"INSERT INTO g (id, up_id, v, w, label) VALUES (3, 2, 1.00, 5, 'c'), (2, 1, 2.00, 3, 'b'), (1, NULL, 4.00, 7, 'a')",
			"1:-:4.00:14.00:-:-1 2:1:14.00:3.00:a:-1 3:2:3.00:0.00:b:7"},
		{"INSERT INTO g (id, up_id, v, w, label) VALUES (4, 4, 2.50, 4, 'self')",
			"1:-:4.00:14.00:-:-1 2:1:14.00:3.00:a:-1 3:2:3.00:0.00:b:7 4:4:10.00:10.00:self:4"},
		{"INSERT INTO g (id, up_id, v, w, label) VALUES (5, 6, 1.00, 2, 'x'), (6, 5, 1.00, 3, 'y')",
			"1:-:4.00:14.00:-:-1 2:1:14.00:3.00:a:-1 3:2:3.00:0.00:b:7 4:4:10.00:10.00:self:4 5:6:3.00:2.00:y:2 6:5:2.00:3.00:x:3"},
	})
}

// TestTreeAndAnotherParent: rows of a tree that also sum into a parent
// table are counted there once (the adjustment of the tree's own parents,
// made in the write's round trip, once stood for the other parent's and
// the write adjusted it twice).
func TestTreeAndAnotherParent(t *testing.T) {
	schema := `CREATE TABLE c (id int PRIMARY KEY, s numeric(14,2), deep numeric(14,2));
        CREATE TABLE p (id int PRIMARY KEY, c_id int REFERENCES c, deep numeric(14,2));
        CREATE TABLE g (id int PRIMARY KEY, c_id int REFERENCES c, v numeric(10,2), w int, up_id int REFERENCES g,
          gf numeric(14,2), sub numeric(14,2))`
	c, admin, _, _ := rulesDB(t, schema, []string{
		"SELECT pgrules.sum('c.s', 'g.v', via => 'g_c_id_fkey')",
		"SELECT pgrules.formula('g.gf', 'row.v * (row.up?.w ?? 1)')",
		"SELECT pgrules.sum('g.sub', 'g.gf', via => 'g_up_id_fkey')",
	})
	scalar(t, c, "INSERT INTO c (id) VALUES (1), (2)")
	treeSteps(t, c, admin, "SELECT string_agg(id || ':' || s, ' ' ORDER BY id) FROM c", []treeStep{
		{"INSERT INTO g (id, c_id, v, w) VALUES (1, 1, 14.41, 4)", "1:14.41 2:0.00"},
		{"INSERT INTO g (id, c_id, up_id, v) VALUES (2, 1, 1, 1.00), (3, 2, 1, 2.00)", "1:15.41 2:2.00"},
		{"UPDATE g SET v = v + 1", "1:17.41 2:3.00"},
	})
}

// TestTreeDeletes deletes rows of a table that references itself, as
// PostgreSQL's ON DELETE actions would: a row that is its own ancestor
// (which once sent the engine round the loop until the proxy's stack ran
// out), a parent and its child in one statement (both counted in the
// tag), and SET NULL on the survivors; the sums follow.
func TestTreeDeletes(t *testing.T) {
	for _, action := range []string{"CASCADE", "SET NULL"} {
		t.Run(action, func(t *testing.T) {
			schema := `CREATE TABLE n (id int PRIMARY KEY, parent_id int REFERENCES n ON DELETE ` + action + `, v int, total int)`
			c, admin, _, _ := rulesDB(t, schema, []string{"SELECT pgrules.sum('n.total', 'n.v', via => 'n_parent_id_fkey')"})
			ctx := context.Background()
			scalar(t, c, "INSERT INTO n (id, parent_id, v) VALUES (1, NULL, 1), (2, 1, 2), (3, 2, 3), (4, 1, 4), (5, NULL, 5), (6, 6, 6), (7, 8, 7), (8, NULL, 8)")
			scalar(t, c, "UPDATE n SET parent_id = 7 WHERE id = 8") // 7 and 8: each the other's parent
			for _, tc := range []struct{ sql, tag string }{
				{"DELETE FROM n WHERE id = 6", "DELETE 1"},
				{"DELETE FROM n WHERE id = 7", "DELETE 1"},
				{"DELETE FROM n WHERE id IN (2, 3)", "DELETE 2"},
			} {
				res, err := c.Exec(ctx, tc.sql).ReadAll()
				if err != nil {
					t.Fatalf("%s: %v", tc.sql, err)
				}
				if got := res[0].CommandTag.String(); got != tc.tag {
					t.Fatalf("%s: tag %q, want %q", tc.sql, got, tc.tag)
				}
			}
			// RETURNING gives the rows a cycle deleted before the
			// statement reached them too, from the rows as they were.
			scalar(t, c, "INSERT INTO n (id, parent_id, v) VALUES (9, NULL, 9), (10, 9, 10); UPDATE n SET parent_id = 10 WHERE id = 9")
			if got := returned(ctx, t, c, "DELETE FROM n WHERE id = $1 RETURNING id, v * $2::int", []string{"9", "2"}); got != "9|18" {
				t.Fatalf("DELETE ... RETURNING in a cycle: %s, want 9|18", got)
			}
			scalar(t, c, "DELETE FROM n WHERE id IN (9, 10)") // 10, where SET NULL left it
			want := map[string]string{
				"CASCADE":  "1:-:1:4 4:1:4:0 5:-:5:0",
				"SET NULL": "1:-:1:4 4:1:4:0 5:-:5:0 8:-:8:0",
			}[action]
			if got := scalar(t, admin, "SELECT string_agg(concat_ws(':', id, coalesce(parent_id::text, '-'), v, total), ' ' ORDER BY id) FROM n"); got != want {
				t.Fatalf("rows: %s, want %s", got, want)
			}
			if n := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); n != "0" {
				t.Fatalf("verify() found %s rows against their rules", n)
			}
		})
	}
}
