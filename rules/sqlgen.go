package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// sqlGen translates rule expressions into SQL over one table's rows, for
// the set-based statements that compute derived columns of rows that exist
// already (a derivation defined on a full table) and that verify them. It
// covers what formulas and filters mostly are: columns of the row and of
// its parents, literals, arithmetic, comparisons, and/or/not, nil tests and
// the ternary. Anything else is refused with 0A000 naming the construct:
// the caller fails rather than compute something else.
type sqlGen struct {
	snap  *catalog.Snapshot
	table *catalog.Table
	alias string // the SQL alias of the row
	rule  string // for messages
	src   string
	n     int // counter for subquery aliases
	// lock, when set, locks the parent rows the expression reads
	// (parentLock).
	lock string
}

func (g *sqlGen) translate(src string) (string, error) {
	tree, err := parseExpr(src)
	if err != nil {
		return "", pgerr.New(pgerr.InvalidObjectDefinition, "rule %q: %w", g.rule, err)
	}
	g.src = src
	return g.node(tree.Node)
}

func (g *sqlGen) unsupported(what string) error {
	return pgerr.New(pgerr.FeatureNotSupported, "rule %q: existing rows cannot be computed in SQL: %s in %q is not supported there", g.rule, what, g.src)
}

func (g *sqlGen) node(n ast.Node) (string, error) {
	switch n := n.(type) {
	case *ast.NilNode:
		return "NULL", nil
	case *ast.BoolNode:
		if n.Value {
			return "TRUE", nil
		}
		return "FALSE", nil
	case *ast.IntegerNode:
		return strconv.Itoa(n.Value), nil
	case *ast.FloatNode:
		// The shortest representation that reads back as the same float
		// is the literal as written (up to trailing zeros).
		return strconv.FormatFloat(n.Value, 'f', -1, 64) + "::numeric", nil
	case *ast.StringNode:
		return quoteLiteral(n.Value), nil
	case *ast.UnaryNode:
		x, err := g.node(n.Node)
		if err != nil {
			return "", err
		}
		switch n.Operator {
		case "not", "!":
			return "(NOT " + x + ")", nil
		case "-":
			return "(-" + x + ")", nil
		case "+":
			return x, nil
		}
		return "", g.unsupported("the operator " + n.Operator)
	case *ast.BinaryNode:
		return g.binary(n)
	case *ast.ConditionalNode:
		c, err := g.node(n.Cond)
		if err != nil {
			return "", err
		}
		a, err := g.node(n.Exp1)
		if err != nil {
			return "", err
		}
		b, err := g.node(n.Exp2)
		if err != nil {
			return "", err
		}
		return "(CASE WHEN " + c + " THEN " + a + " ELSE " + b + " END)", nil
	case *ast.MemberNode:
		return g.member(n)
	case *ast.ChainNode:
		return g.node(n.Node)
	}
	return "", g.unsupported(fmt.Sprintf("%T", n))
}

var sqlOps = map[string]string{
	"and": "AND", "&&": "AND", "or": "OR", "||": "OR",
	"<": "<", "<=": "<=", ">": ">", ">=": ">=",
	"+": "+", "-": "-", "*": "*", "%": "%",
	// Equality as expr has it: nil equals nil.
	"==": "IS NOT DISTINCT FROM", "!=": "IS DISTINCT FROM",
}

func (g *sqlGen) binary(n *ast.BinaryNode) (string, error) {
	l, err := g.node(n.Left)
	if err != nil {
		return "", err
	}
	r, err := g.node(n.Right)
	if err != nil {
		return "", err
	}
	if n.Operator == "/" {
		return "(" + l + "::numeric / " + r + ")", nil
	}
	if n.Operator == "??" {
		return "coalesce(" + l + ", " + r + ")", nil
	}
	if n.Operator == "+" && (g.isText(n.Left) || g.isText(n.Right)) {
		return "(" + l + " || " + r + ")", nil
	}
	op, ok := sqlOps[n.Operator]
	if !ok {
		return "", g.unsupported("the operator " + n.Operator)
	}
	return "(" + l + " " + op + " " + r + ")", nil
}

// isText reports whether n gives text, whose + is SQL's ||: a literal, a
// text column, or an expression of them (row.a + ' ' + row.b is text all
// the way up, and text + text is no operator in SQL).
func (g *sqlGen) isText(n ast.Node) bool {
	switch n := n.(type) {
	case *ast.StringNode:
		return true
	case *ast.MemberNode:
		c := g.memberColumn(n)
		return c != nil && c.Kind == catalog.KindText
	case *ast.BinaryNode:
		return (n.Operator == "+" || n.Operator == "??") && (g.isText(n.Left) || g.isText(n.Right))
	case *ast.ConditionalNode:
		return g.isText(n.Exp1) || g.isText(n.Exp2)
	case *ast.ChainNode:
		return g.isText(n.Node)
	}
	return false
}

// member translates row.column and row.parent[.parent...].column, the
// latter as a subquery following the foreign keys.
func (g *sqlGen) member(n *ast.MemberNode) (string, error) {
	path, err := g.memberPath(n)
	if err != nil {
		return "", err
	}
	t, alias := g.table, g.alias
	var from, where []string
	for i, name := range path {
		if i == len(path)-1 {
			if t.Column(name) == nil {
				return "", pgerr.New(pgerr.UndefinedColumn, "rule %q: table %s has no column %q", g.rule, t.QualifiedName(), name)
			}
			col := alias + "." + quoteIdent(name)
			if len(from) == 0 {
				return col, nil
			}
			lock := ""
			if g.lock != "" {
				lock = " " + g.lock
			}
			return "(SELECT " + col + " FROM " + strings.Join(from, ", ") + " WHERE " + strings.Join(where, " AND ") + lock + ")", nil
		}
		fk := parentByAccessor(t, name)
		if fk == nil {
			return "", pgerr.New(pgerr.UndefinedColumn, "rule %q: table %s has no parent %q", g.rule, t.QualifiedName(), name)
		}
		parent := g.snap.Tables[fk.Parent]
		g.n++
		pa := fmt.Sprintf("p%d", g.n)
		from = append(from, qualified(parent)+" "+pa)
		where = append(where, keyMatch(fk, alias, pa))
		t, alias = parent, pa
	}
	return alias, g.unsupported("a whole row")
}

// memberPath is the names of row.a.b...: the accessors, then the column.
func (g *sqlGen) memberPath(n *ast.MemberNode) ([]string, error) {
	var path []string
	var cur ast.Node = n
	for {
		m, ok := cur.(*ast.MemberNode)
		if !ok {
			break
		}
		prop, ok := m.Property.(*ast.StringNode)
		if !ok || m.Method {
			return nil, g.unsupported("an index or method")
		}
		path = append([]string{prop.Value}, path...)
		cur = m.Node
	}
	if id, ok := cur.(*ast.IdentifierNode); !ok || id.Value != "row" {
		return nil, g.unsupported("a name other than row")
	}
	return path, nil
}

func parentByAccessor(t *catalog.Table, name string) *catalog.ForeignKey {
	for _, fk := range t.Parents {
		if fk.Accessor == name {
			return fk
		}
	}
	return nil
}

// unnestFrom is unnest(arrays...) for a FROM clause, through
// pgrules._unnest, which the planner expects one element of. unnest's own
// estimate depends on the array: a custom plan sees its length, a generic
// plan assumes ten. The engine's statements are prepared once and run with
// the keys of a statement's rows, mostly a few; with unnest every generic
// plan looked dearer than the custom ones, so the server planned each
// execution anew, which cost more than running it.
func unnestFrom(arrays ...string) string {
	if len(arrays) == 1 {
		return "pgrules._unnest(" + arrays[0] + ")"
	}
	fns := make([]string, len(arrays))
	for i, a := range arrays {
		fns[i] = "pgrules._unnest(" + a + ")"
	}
	return "ROWS FROM (" + strings.Join(fns, ", ") + ")"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral is s as a string literal that reads the same whatever the
// session's standard_conforming_strings (as PostgreSQL's quote_literal
// writes it): with it off, a backslash in '...' escapes the next
// character, so a string with a backslash is written E'...', where
// backslashes are escapes under either setting.
func quoteLiteral(s string) string {
	q := strings.ReplaceAll(s, `'`, `''`)
	if !strings.Contains(s, `\`) {
		return `'` + q + `'`
	}
	return `E'` + strings.ReplaceAll(q, `\`, `\\`) + `'`
}

func qualified(t *catalog.Table) string { return quoteIdent(t.Schema) + "." + quoteIdent(t.Name) }

// keyMatch is the join condition of a foreign key between a child alias
// and a parent alias.
func keyMatch(fk *catalog.ForeignKey, child, parent string) string {
	conds := make([]string, len(fk.Columns))
	for i, c := range fk.Columns {
		conds[i] = child + "." + quoteIdent(c) + " = " + parent + "." + quoteIdent(fk.ParentColumns[i])
	}
	return strings.Join(conds, " AND ")
}
