package sqlparse

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/pgerr"
)

// chain is n+1 terms joined by op.
func chain(term, op string, n int) string {
	return strings.Repeat(term+op, n) + term
}

// deepTexts are texts whose trees nest about n levels deep, one of each
// kind of nesting the grammar has.
func deepTexts(n int) map[string]string {
	return map[string]string{
		"plus":      "SELECT " + chain("1", "+", n),
		"concat":    "SELECT " + chain("'a'", "||", n),
		"minus":     "SELECT " + strings.Repeat("- ", n) + "1",
		"not":       "SELECT " + strings.Repeat("NOT ", n) + "true",
		"cast":      "SELECT 1" + strings.Repeat("::int", n),
		"is":        "SELECT 1" + strings.Repeat(" IS NULL", n),
		"collate":   "SELECT 'a'" + strings.Repeat(` COLLATE "C"`, n),
		"attz":      "SELECT now()" + strings.Repeat(" AT TIME ZONE 'UTC'", n),
		"paren":     "SELECT " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n),
		"subquery":  strings.Repeat("SELECT (", n) + "SELECT 1" + strings.Repeat(")", n),
		"array":     "SELECT " + strings.Repeat("ARRAY[", n) + "1" + strings.Repeat("]", n),
		"row":       "SELECT " + strings.Repeat("ROW(", n) + "1" + strings.Repeat(")", n),
		"case":      "SELECT " + strings.Repeat("CASE WHEN true THEN ", n) + "1" + strings.Repeat(" END", n),
		"join":      "SELECT * FROM t" + strings.Repeat(" JOIN t ON true", n),
		"union":     "SELECT 1" + strings.Repeat(" UNION SELECT 1", n),
		"from":      "SELECT * FROM " + strings.Repeat("(SELECT * FROM ", n) + "t" + strings.Repeat(") s", n),
		"insert":    "INSERT INTO no_such_table VALUES (" + chain("1", "+", n) + ")",
		"update":    "UPDATE lineitem SET quantity = " + strings.Repeat("0+", n) + "quantity WHERE id = 1",
		"comment":   "SELECT " + chain("1", "+", n) + " /* pgrules. */",
		"dollar id": "SELECT a$b$, " + chain("1", "+", n) + ", c$b$",
		"e string":  `SELECT E'\'', ` + chain("1", "+", n) + `, '\'`,
	}
}

func TestNestingBoundRefusesDeepTexts(t *testing.T) {
	for name, sql := range deepTexts(MaxNesting + 1) {
		t.Run(name, func(t *testing.T) {
			if b := NestingBound(sql, MaxNesting); b <= MaxNesting {
				t.Errorf("bound %d for a text nested %d deep", b, MaxNesting+1)
			}
			_, err := parseTree(sql)
			if pgerr.Code(err) != pgerr.StatementTooComplex {
				t.Fatalf("parseTree: %v, want SQLSTATE %s", err, pgerr.StatementTooComplex)
			}
			var e *pgerr.Error
			if !errors.As(err, &e) || e.Hint == "" {
				t.Errorf("no hint: %#v", err)
			}
		})
	}
}

// TestNestingBoundIsAnUpperBound checks the bound against the depth of the
// tree the parser gives, for texts within the limit.
func TestNestingBoundIsAnUpperBound(t *testing.T) {
	texts := deepTexts(40)
	for i, sql := range []string{
		"SELECT a + (b * (c - d)) FROM t WHERE x = 1 AND (y = 2 OR z = 3) ORDER BY a",
		"INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y') ON CONFLICT (a) DO UPDATE SET b = excluded.b",
		"WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
		"SELECT CASE WHEN a > 1 THEN b + 1 ELSE -c END FROM t",
		"SELECT 1 FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id) WHERE a.x IN (SELECT x FROM d WHERE d.y = ANY ('{1,2}'))",
		"SELECT $1::int + $2, $$a$$ || 'b'",
	} {
		texts[fmt.Sprint(i)] = sql
	}
	for name, sql := range texts {
		t.Run(name, func(t *testing.T) {
			tree, err := pg_query.Parse(sql)
			if err != nil {
				t.Fatal(err)
			}
			// Each level of the bound stands for at most a few
			// messages (a Node and what it holds, a SubLink's query).
			msgs := messageDepth(tree.ProtoReflect(), 1<<20)
			b := NestingBound(sql, MaxNesting)
			if msgs > 6*b+8 {
				t.Errorf("bound %d, but the tree nests %d messages deep", b, msgs)
			}
		})
	}
}

// TestWideTextsAreShallow: lists the grammar keeps flat do not count.
// (tests/security_parser_test.go runs such statements, five times larger,
// through the proxy.)
func TestWideTextsAreShallow(t *testing.T) {
	values := make([]string, 20000)
	for i := range values {
		values[i] = fmt.Sprintf("(%d, 'v%d', %d + 1)", i, i, i)
	}
	in := make([]string, 20000)
	for i := range in {
		in[i] = fmt.Sprint(i)
	}
	ands := make([]string, 5000)
	for i := range ands {
		ands[i] = fmt.Sprintf("a <> %d", i)
	}
	whens := make([]string, 5000)
	for i := range whens {
		whens[i] = fmt.Sprintf("WHEN a = %d THEN %d", i, i*2)
	}
	for name, sql := range map[string]string{
		"rows":   "INSERT INTO t (a, b, c) VALUES " + strings.Join(values, ", "),
		"in":     "SELECT * FROM t WHERE a IN (" + strings.Join(in, ", ") + ")",
		"and":    "SELECT * FROM t WHERE " + strings.Join(ands, " AND "),
		"or":     "SELECT * FROM t WHERE " + strings.Join(ands, " OR "),
		"case":   "SELECT CASE " + strings.Join(whens, " ") + " END FROM t",
		"select": "SELECT " + strings.Repeat("a + 1, ", 20000) + "1 FROM t",
		"union":  "SELECT 1" + strings.Repeat(" UNION ALL SELECT a + b FROM t WHERE c = 1", 900),
		"script": strings.Repeat("SELECT a + b FROM t JOIN u ON t.id = u.id UNION SELECT 1; ", 3000),
	} {
		t.Run(name, func(t *testing.T) {
			if b := NestingBound(sql, MaxNesting); b > 20 && name != "union" || b > MaxNesting {
				t.Errorf("bound %d", b)
			}
			if _, err := parseTree(sql); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDeparseRefusesDeepTrees(t *testing.T) {
	e := pg_query.MakeColumnRefNode([]*pg_query.Node{pg_query.MakeStrNode("q")}, 0)
	for range MaxDeparseDepth {
		e = pg_query.MakeAExprNode(pg_query.A_Expr_Kind_AEXPR_OP, []*pg_query.Node{pg_query.MakeStrNode("+")}, pg_query.MakeAConstIntNode(0, 0), e, 0)
	}
	sel := &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: &pg_query.SelectStmt{
		TargetList: []*pg_query.Node{pg_query.MakeResTargetNodeWithVal(e, 0)},
	}}}
	if _, err := deparse(sel); pgerr.Code(err) != pgerr.StatementTooComplex {
		t.Fatalf("Deparse: %v, want SQLSTATE %s", err, pgerr.StatementTooComplex)
	}
	tree, err := parseTree("UPDATE lineitem SET quantity = " + strings.Repeat("0+", MaxNesting/2) + "quantity WHERE id = 1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deparse(tree.Stmts[0].Stmt); err != nil {
		t.Fatalf("Deparse of a statement within the limits: %v", err)
	}
}

// TestDeparseParameterZero: the parser takes $0, which the deparser would
// write as "?"; Deparse answers as PostgreSQL does instead.
func TestDeparseParameterZero(t *testing.T) {
	tree, err := parseTree("UPDATE t SET a = $0 WHERE id = $1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deparse(tree.Stmts[0].Stmt); pgerr.Code(err) != pgerr.UndefinedParameter {
		t.Fatalf("Deparse: %v, want SQLSTATE %s", err, pgerr.UndefinedParameter)
	}
}
