package compiler

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/sqltext"
)

// Translator writes rule expressions as SQL over the rows of one table.
// Translate serves the set-based statements that compute derived columns
// of rows that exist already (a derivation defined on a full table), that
// verify them, and that adjust parents by filtered aggregates; Exact the
// derivations of a write in one statement.
type Translator struct {
	Snap  *catalog.Snapshot
	Table *catalog.Table
	Alias string // the SQL alias of the row
	Rule  string // the rule's name, for messages
	// Lock, when set, is the locking clause of the sub-selects that read
	// the parent rows the expression reads.
	Lock string
	src  string
	n    int // counter for subquery aliases
}

// Translate covers what formulas and filters mostly are: columns of the
// row and of its parents, literals, arithmetic, comparisons, and/or/not,
// nil tests and the ternary. Anything else is refused with 0A000 naming
// the construct: the caller fails rather than compute something else.
func (g *Translator) Translate(src string) (string, error) {
	tree, err := parseExpr(src)
	if err != nil {
		return "", pgerr.New(pgerr.InvalidObjectDefinition, "rule %q: %w", g.Rule, err)
	}
	g.src = src
	return g.node(tree.Node)
}

func (g *Translator) unsupported(what string) error {
	return pgerr.New(pgerr.FeatureNotSupported, "rule %q: existing rows cannot be computed in SQL: %s in %q is not supported there", g.Rule, what, g.src)
}

func (g *Translator) node(n ast.Node) (string, error) {
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
		return sqltext.Literal(n.Value), nil
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

func (g *Translator) binary(n *ast.BinaryNode) (string, error) {
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
func (g *Translator) isText(n ast.Node) bool {
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
func (g *Translator) member(n *ast.MemberNode) (string, error) {
	path, err := g.memberPath(n)
	if err != nil {
		return "", err
	}
	t, alias := g.Table, g.Alias
	var from, where []string
	for i, name := range path {
		if i == len(path)-1 {
			if t.Column(name) == nil {
				return "", pgerr.New(pgerr.UndefinedColumn, "rule %q: table %s has no column %q", g.Rule, t.QualifiedName(), name)
			}
			col := alias + "." + sqltext.Ident(name)
			if len(from) == 0 {
				return col, nil
			}
			lock := ""
			if g.Lock != "" {
				lock = " " + g.Lock
			}
			return "(SELECT " + col + " FROM " + strings.Join(from, ", ") + " WHERE " + strings.Join(where, " AND ") + lock + ")", nil
		}
		fk := parentByAccessor(t, name)
		if fk == nil {
			return "", pgerr.New(pgerr.UndefinedColumn, "rule %q: table %s has no parent %q", g.Rule, t.QualifiedName(), name)
		}
		parent := g.Snap.Tables[fk.Parent]
		g.n++
		pa := fmt.Sprintf("p%d", g.n)
		from = append(from, sqltext.Table(parent)+" "+pa)
		where = append(where, sqltext.KeyMatch(fk, alias, pa))
		t, alias = parent, pa
	}
	return alias, g.unsupported("a whole row")
}

// memberPath is the names of row.a.b...: the accessors, then the column.
func (g *Translator) memberPath(n *ast.MemberNode) ([]string, error) {
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

// Exact is the SQL of src when that SQL gives what the engine's evaluation
// gives, value for value (exactSQL); false otherwise.
func (g *Translator) Exact(src string) (string, bool) {
	tree, err := parseExpr(src)
	if err != nil {
		return "", false
	}
	g.src = src
	return g.exactSQL(tree.Node)
}

// exactSQL translates the part of the expression language whose SQL gives
// what the engine's evaluation gives, value for value: numbers (integer
// and decimal columns of the row and its parents, literals), +, -, *,
// unary minus and ??. Integers are computed as numeric, since the engine's
// do not overflow at 32 bits. Division, comparisons, conditions and text
// are left to the engine: their NULLs or scales differ in SQL.
func (g *Translator) exactSQL(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.NilNode:
		return "NULL", true
	case *ast.IntegerNode:
		return "CAST(" + strconv.Itoa(n.Value) + " AS numeric)", true
	case *ast.FloatNode:
		x, err := g.node(n)
		return x, err == nil
	case *ast.UnaryNode:
		if n.Operator != "-" && n.Operator != "+" {
			return "", false
		}
		x, ok := g.exactSQL(n.Node)
		if !ok {
			return "", false
		}
		return "(" + n.Operator + x + ")", true
	case *ast.BinaryNode:
		op := n.Operator
		if op != "+" && op != "-" && op != "*" && op != "??" {
			return "", false
		}
		l, ok := g.exactSQL(n.Left)
		if !ok {
			return "", false
		}
		r, ok := g.exactSQL(n.Right)
		if !ok {
			return "", false
		}
		if op == "??" {
			return "coalesce(" + l + ", " + r + ")", true
		}
		return "(" + l + " " + op + " " + r + ")", true
	case *ast.MemberNode:
		c := g.memberColumn(n)
		if c == nil || c.Generated || c.Kind != catalog.KindInt && c.Kind != catalog.KindDecimal {
			return "", false
		}
		x, err := g.member(n)
		if err != nil {
			return "", false
		}
		return "CAST(" + x + " AS numeric)", true
	}
	return "", false
}

// memberColumn is the column row.x or row.parent[.parent...].x names, nil
// when it names none.
func (g *Translator) memberColumn(n *ast.MemberNode) *catalog.Column {
	if n.Optional {
		return nil
	}
	path, err := g.memberPath(n)
	if err != nil {
		return nil
	}
	t := g.Table
	for _, name := range path[:len(path)-1] {
		fk := parentByAccessor(t, name)
		if fk == nil {
			return nil
		}
		t = g.Snap.Tables[fk.Parent]
	}
	return t.Column(path[len(path)-1])
}
