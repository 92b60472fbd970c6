package rules

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// TestLiteralParams: the numbers and booleans of an UPDATE or a DELETE,
// and an UPDATE's whole SET values, become parameters with the types
// PostgreSQL gives them; a statement with other constants is left as it
// is.
func TestLiteralParams(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		texts []string // nil: left as it is
		want  []string // in the deparsed statement
	}{
		{"UPDATE t SET a = 1, b = 'x', c = c + 2.5 WHERE id = 3000000000 AND flag = true AND n = -7",
			[]string{"1", "x", "2.5", "3000000000", "true", "-7"},
			[]string{"a = $2000000001", "b = $2000000002", "c + $2000000003::numeric", "id = $2000000004::bigint", "flag = $2000000005::boolean", "n = $2000000006::int"}},
		{"UPDATE t SET a = NULL WHERE x::numeric(10,2) = 1", []string{"1"}, []string{"a = NULL", "::numeric(10, 2)", "$2000000001::int"}},
		{"UPDATE t SET a = 1 WHERE name = 'x'", nil, nil},
		{"UPDATE t SET a = 1 WHERE id IN (SELECT 1)", nil, nil},
		{"UPDATE t SET a = (SELECT 1)", nil, nil},
		{"UPDATE t SET (a, b) = (1, 2)", nil, nil},
		{"UPDATE t SET a = u.a FROM u WHERE u.id = 1", nil, nil},
		{"DELETE FROM t WHERE id = 5 AND ok = false", []string{"5", "false"}, []string{"id = $2000000001::int", "ok = $2000000002::boolean"}},
		{"DELETE FROM t WHERE name = 'x'", nil, nil},
		{"DELETE FROM t USING u WHERE u.id = t.id AND u.n = 1", nil, nil},
		{"WITH x AS (SELECT 1) DELETE FROM t WHERE id = 2", nil, nil},
	} {
		tree, err := pg_query.Parse(tc.sql)
		if err != nil {
			t.Fatal(err)
		}
		var (
			texts [][]byte
			ok    bool
		)
		if up := tree.Stmts[0].Stmt.GetUpdateStmt(); up != nil {
			texts, _, ok = literalParams(up.TargetList, up.WhereClause, up.WithClause == nil && len(up.FromClause) == 0)
		} else {
			del := tree.Stmts[0].Stmt.GetDeleteStmt()
			texts, _, ok = literalParams(nil, del.WhereClause, del.WithClause == nil && len(del.UsingClause) == 0)
		}
		if ok != (tc.texts != nil) || len(texts) != len(tc.texts) {
			t.Fatalf("%s: %q, %v", tc.sql, texts, ok)
		}
		for i := range texts {
			if string(texts[i]) != tc.texts[i] {
				t.Fatalf("%s: %q, want %q", tc.sql, texts, tc.texts)
			}
		}
		out, err := pg_query.Deparse(tree)
		if err != nil {
			t.Fatal(err)
		}
		if tc.texts == nil && out != strings.TrimSpace(mustDeparse(t, tc.sql)) {
			t.Fatalf("%s was changed: %s", tc.sql, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: %s lacks %q", tc.sql, out, w)
			}
		}
	}
}

func mustDeparse(t *testing.T, sql string) string {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pg_query.Deparse(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
