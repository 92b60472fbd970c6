package sqlparse

import (
	"errors"
	"reflect"
	"testing"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// TestResultRelation: the table an INSERT, UPDATE or DELETE writes, as
// named; nothing for other statements.
func TestResultRelation(t *testing.T) {
	for sql, want := range map[string]Write{
		`INSERT INTO "S"."T" VALUES (1)`:          {"S", "T", Insert},
		`UPDATE s.t AS x SET a = 1`:               {"s", "t", Update},
		`WITH d AS (DELETE FROM a) DELETE FROM b`: {"", "b", Delete},
		`SELECT 1`:                      {},
		`EXPLAIN ANALYZE DELETE FROM t`: {},
		`MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE`: {},
	} {
		tree, err := ParseStatement(sql)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := tree.ResultRelation()
		if got != want || ok != (want != Write{}) {
			t.Errorf("%s: %v, %v; want %v", sql, got, ok, want)
		}
		if tree.Explain() != (sql == `EXPLAIN ANALYZE DELETE FROM t`) {
			t.Errorf("%s: Explain is %v", sql, tree.Explain())
		}
	}
}

func TestParseStatement(t *testing.T) {
	if _, err := ParseStatement("SELECT 1; SELECT 2"); pgerr.Code(err) != pgerr.InternalError {
		t.Fatalf("two statements: %v", err)
	}
	var syntax *SyntaxError
	if _, err := ParseStatement("SELEC 1"); !errors.As(err, &syntax) {
		t.Fatalf("a syntax error: %v (%T)", err, err)
	}
}

// TestModifyingWith: a statement whose WITH writes is rebuilt around the
// WITH clause its caller gives it, CTE by CTE.
func TestModifyingWith(t *testing.T) {
	for _, sql := range []string{"WITH a AS (SELECT 1) INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)", "SELECT 1",
		"MERGE INTO t USING (WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d) u ON true WHEN MATCHED THEN DELETE"} {
		tree, err := ParseStatement(sql)
		if err != nil {
			t.Fatal(err)
		}
		if w := tree.ModifyingWith(); w != nil {
			t.Fatalf("%s: %+v, its WITH does not write", sql, w)
		}
	}
	tree, err := ParseStatement(`WITH RECURSIVE k AS (SELECT 1 AS n), "D"(id) AS (DELETE FROM a WHERE a.n IN (SELECT n FROM k) RETURNING a.id), ` +
		`u AS (UPDATE s.b SET n = 0 FROM "D" WHERE b.id = "D".id), m AS (MERGE INTO c USING k ON true WHEN MATCHED THEN DELETE) SELECT * FROM "D"`)
	if err != nil {
		t.Fatal(err)
	}
	w := tree.ModifyingWith()
	if w == nil || !w.Recursive {
		t.Fatalf("%+v", w)
	}
	var names []string
	var verbs []Verb
	for _, c := range w.CTEs {
		names, verbs = append(names, c.Name), append(verbs, c.Verb)
	}
	if !reflect.DeepEqual(names, []string{"k", "D", "u", "m"}) || !reflect.DeepEqual(verbs, []Verb{"", Delete, Update, Merge}) {
		t.Fatalf("CTEs %q, %q", names, verbs)
	}
	k, d, u := w.CTEs[0], w.CTEs[1], w.CTEs[2]
	for _, tc := range []struct {
		got  func() (string, error)
		want string
	}{
		{func() (string, error) { return d.QuerySQL(nil) }, "DELETE FROM a WHERE a.n IN (SELECT n FROM k) RETURNING a.id"},
		{func() (string, error) { return d.QuerySQL([]CTE{k}) }, "WITH k AS (SELECT 1 AS n) DELETE FROM a WHERE a.n IN (SELECT n FROM k) RETURNING a.id"},
		{func() (string, error) {
			returned, err := d.As("SELECT CAST(v.c1 AS integer) AS id FROM unnest($1::text[]) AS v(c1)")
			if err != nil {
				return "", err
			}
			return u.QuerySQL([]CTE{k, returned})
		}, `WITH k AS (SELECT 1 AS n), "D"(id) AS (SELECT v.c1::int AS id FROM unnest($1::text[]) v(c1)) UPDATE s.b SET n = 0 FROM "D" WHERE b.id = "D".id`},
		{func() (string, error) { return w.SQL([]CTE{k}) }, `WITH k AS (SELECT 1 AS n) SELECT * FROM "D"`},
		{func() (string, error) { return w.SQL(nil) }, `SELECT * FROM "D"`},
	} {
		got, err := tc.got()
		if err != nil || got != tc.want {
			t.Errorf("got  %s, %v\nwant %s", got, err, tc.want)
		}
	}
	// The tree itself is left as it was.
	if got, err := w.CTEs[1].QuerySQL(nil); err != nil || got != "DELETE FROM a WHERE a.n IN (SELECT n FROM k) RETURNING a.id" {
		t.Errorf("after rebuilding: %s, %v", got, err)
	}
	if _, err := d.As("SELECT 1; SELECT 2"); pgerr.Code(err) != pgerr.InternalError {
		t.Errorf("a CTE over two statements: %v", err)
	}
}

// TestCopy: a COPY's columns, and the same COPY into another table.
func TestCopy(t *testing.T) {
	for _, tc := range []struct {
		sql     string
		columns []string
		into    string
	}{
		{`COPY "S".t ("A", b) FROM STDIN WITH (FORMAT csv, HEADER true) WHERE b > 0`, []string{"A", "b"},
			`COPY pg_temp.pgrules_copy("A", b) FROM STDIN WITH (FORMAT CSV, HEADER true) WHERE b > 0`},
		{`COPY t FROM STDIN`, nil, `COPY pg_temp.pgrules_copy(x) FROM STDIN`},
	} {
		sts, err := Parse(tc.sql)
		if err != nil {
			t.Fatal(err)
		}
		cp := sts[0].Tree.Copy()
		if cp == nil || !reflect.DeepEqual(cp.Columns, tc.columns) {
			t.Fatalf("%s: %+v", tc.sql, cp)
		}
		cols := tc.columns
		if cols == nil {
			cols = []string{"x"}
		}
		if got, err := cp.Into("pg_temp", "pgrules_copy", cols); err != nil || got != tc.into {
			t.Errorf("%s: %s, %v; want %s", tc.sql, got, err, tc.into)
		}
		if again := sts[0].Tree.Copy(); !reflect.DeepEqual(again.Columns, tc.columns) {
			t.Errorf("%s: the tree changed: %+v", tc.sql, again)
		}
	}
	var none *Tree
	if none.Copy() != nil {
		t.Error("a nil tree is a COPY")
	}
	tree, err := ParseStatement("SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	if tree.Copy() != nil {
		t.Error("SELECT is a COPY")
	}
}

// TestNormalExpr: an expression is written as the pieces of a ModifyTable
// are, whatever its spelling.
func TestNormalExpr(t *testing.T) {
	for expr, want := range map[string]string{
		"(status)::text = 'open'::text": "status::text = 'open'::text",
		"A>0 AND (b IS NOT NULL)":       "a > 0 AND b IS NOT NULL",
		`"Col" <> 1`:                    `"Col" <> 1`,
	} {
		if got, ok := NormalExpr(expr); !ok || got != want {
			t.Errorf("%s: %s, %v; want %s", expr, got, ok, want)
		}
	}
	for _, expr := range []string{"a, b", "1; SELECT 2", "(", "a b c"} {
		if got, ok := NormalExpr(expr); ok {
			t.Errorf("%s: %s is one expression", expr, got)
		}
	}
}

// TestTxSavepoint: Parse tells the transaction statement and the
// savepoint it names.
func TestTxSavepoint(t *testing.T) {
	for sql, want := range map[string]Statement{
		"SAVEPOINT \"A b\"":       {Tx: stmt.TxSavepoint, Savepoint: "A b"},
		"RELEASE SAVEPOINT a":     {Tx: stmt.TxRelease, Savepoint: "a"},
		"ROLLBACK TO a":           {Tx: stmt.TxRollbackTo, Savepoint: "a"},
		"COMMIT AND CHAIN":        {Tx: stmt.TxCommitChain},
		"PREPARE TRANSACTION 'x'": {Tx: stmt.TxPrepare},
	} {
		sts, err := Parse(sql)
		if err != nil || len(sts) != 1 || sts[0].Tx != want.Tx || sts[0].Savepoint != want.Savepoint {
			t.Errorf("%s: %+v, %v", sql, sts, err)
		}
	}
}
