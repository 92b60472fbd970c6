package sqlparse

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"github.com/pgrules/pgrules/pgerr"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz/<name>/)
// as ordinary tests on every `go test`; `make fuzz-targets` (or
// go test -fuzz=FuzzParse ./sqlparse/) searches for new failures. Keep any
// input it reports under testdata/fuzz/<name>/.

// fuzzSeeds are statements of every kind pgrules looks at.
var fuzzSeeds = []string{
	"SELECT 1",
	"insert into sales.orders values (1)",
	"INSERT INTO t (a, b) VALUES (1, 'x'), (2, E'\\'y') ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING *",
	"UPDATE t SET a = a + 1, b = (SELECT max(c) FROM u WHERE u.id = t.id) FROM v WHERE t.id = v.id",
	"DELETE FROM t USING u WHERE t.id = u.id AND t.x IN (1, 2, 3) RETURNING *",
	"WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
	"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (u.id)",
	"COPY t FROM STDIN",
	"TRUNCATE a, s.b CASCADE",
	"EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t",
	"BEGIN; insert into t values (';'); COMMIT AND CHAIN",
	"SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s",
	"SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_price')",
	"SELECT $1::int + $2, $$a$$ || $tag$b$tag$, U&'\\0041', B'101', X'ff', 1e+5, .5",
	"SELECT CASE WHEN a > 1 THEN b ELSE -c END, a IS NOT DISTINCT FROM b, x BETWEEN 1 AND 2 FROM t /* c /* nested */ */ -- end",
	"SELECT a$b$, 1 + 2, c$b$",
	"SELECT ((((1)))) + ARRAY[ARRAY[1]][1][1] + (ROW(1, 2)).f1",
	"SELECT 1 UNION ALL SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4",
	"SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id) CROSS JOIN LATERAL (SELECT 1) d",
	"CREATE TABLE x (a int DEFAULT 1 + 2 CHECK (a > 0)); ALTER TABLE x ADD b int",
	"SELECT 1 " + strings.Repeat("+ 1 ", 300),
	"SELECT " + strings.Repeat("(", 200) + "1" + strings.Repeat(")", 200),
	"SELECT " + strings.Repeat("NOT ", 300) + "true",
	"SELECT '" + strings.Repeat("(", 2000) + "'",
}

// FuzzParse: no text crashes or panics the parser, or any of the cheap
// checks made before it; a text is parsed, refused as a syntax error (or,
// not being UTF-8, as undecodable), or refused with 54001; NestingBound really bounds the tree's depth; a text
// MayWrite says cannot write writes nothing; and what Deparse makes of a
// statement of the kinds pgrules deparses parses again, to the same text.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if ContainsFold(sql, "pgrules.") != strings.Contains(strings.ToLower(sql), "pgrules.") {
			t.Fatal("ContainsFold disagrees with strings.Contains of the lower-cased text")
		}
		LeadingKeyword(sql)
		Tx(sql)
		Shape(sql)
		bound := NestingBound(sql, MaxNesting)
		tree, err := parseTree(sql)
		if err != nil {
			var syntax *parser.Error
			if utf8.ValidString(sql) && !errors.As(err, &syntax) && pgerr.Code(err) != pgerr.StatementTooComplex {
				t.Fatalf("parseTree: %v (%T), neither a syntax error nor 54001", err, err)
			}
			if pgerr.Code(err) == pgerr.StatementTooComplex && bound <= MaxNesting {
				t.Fatalf("54001 for a text of bound %d", bound)
			}
			return
		}
		if bound > MaxNesting {
			t.Fatalf("parsed a text of bound %d", bound)
		}
		// Each level of the bound stands for a few messages: a subquery
		// in brackets is the deepest, six.
		if d := messageDepth(tree.ProtoReflect(), 1<<20); d > 8*bound+16 {
			t.Fatalf("the tree nests %d messages deep, NestingBound is %d", d, bound)
		}
		sts, err := Parse(sql)
		if err != nil {
			t.Fatalf("Parse after parseTree: %v", err)
		}
		mayWrite := MayWrite(sql)
		for _, st := range sts {
			if !strings.Contains(sql, st.SQL) {
				t.Fatalf("statement %q is not part of the text", st.SQL)
			}
			if len(st.Writes) > 0 && !mayWrite {
				t.Fatalf("MayWrite is false, but %q writes %v", st.SQL, st.Writes)
			}
			if !deparsed(st.Tree.node) {
				continue
			}
			if _, ok := st.Tree.ResultRelation(); ok {
				if _, err := st.Tree.ModifyTable(); err != nil && pgerr.Code(err) == "" {
					t.Fatalf("ModifyTable: %v, not a *pgerr.Error", err)
				}
			}
			out, err := deparse(st.Tree.node)
			if err != nil {
				if pgerr.Code(err) == "" {
					t.Fatalf("Deparse: %v, not a *pgerr.Error", err)
				}
				continue
			}
			again, err := parseTree(out)
			if err != nil {
				t.Fatalf("%q deparsed to %q, which does not parse: %v", st.SQL, out, err)
			}
			if len(again.Stmts) != 1 {
				t.Fatalf("%q deparsed to %q, %d statements", st.SQL, out, len(again.Stmts))
			}
			if out2, err := deparse(again.Stmts[0].Stmt); err != nil || out2 != out {
				t.Fatalf("%q deparsed to %q, and that to %q (%v)", st.SQL, out, out2, err)
			}
		}
	})
}

// deparsed reports whether n is of a kind pgrules rewrites and deparses:
// the writes it runs the rules of, and queries. (pg_query's deparser does
// not give back every statement of other kinds, e.g. an expression in a
// column type's modifiers.)
func deparsed(n *pg_query.Node) bool {
	switch n.GetNode().(type) {
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_SelectStmt:
		return true
	}
	return false
}
