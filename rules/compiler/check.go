package compiler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// kind is the static type the checker infers for an expression.
type kind int

const (
	kAny kind = iota // not known until run time (JSON, function results)
	kNil
	kInt
	kDecimal
	kFloat
	kText
	kBool
	kTime
	kRow
)

var kNames = [...]string{"any value", "nil", "an integer", "a decimal", "a float", "text", "a boolean", "a time", "a row"}

func (k kind) String() string { return kNames[k] }

func kindOf(k catalog.Kind) kind {
	switch k {
	case catalog.KindInt:
		return kInt
	case catalog.KindDecimal:
		return kDecimal
	case catalog.KindFloat:
		return kFloat
	case catalog.KindText, catalog.KindOther:
		return kText
	case catalog.KindBool:
		return kBool
	case catalog.KindTime:
		return kTime
	}
	return kAny
}

func (k kind) numeric() bool { return k == kInt || k == kDecimal || k == kFloat }

// assignable reports whether a value of kind k can be stored in a column
// of kind col.
func assignable(k kind, col catalog.Kind) bool {
	switch k {
	case kAny, kNil:
		return true
	case kInt, kDecimal, kFloat:
		return col == catalog.KindInt || col == catalog.KindDecimal || col == catalog.KindFloat || col == catalog.KindText || col == catalog.KindOther
	case kText:
		return col == catalog.KindText || col == catalog.KindOther || col == catalog.KindJSON
	case kBool:
		return col == catalog.KindBool || col == catalog.KindText
	case kTime:
		return col == catalog.KindTime || col == catalog.KindText
	}
	return false
}

// holds reports whether column dst holds every value of column src
// without loss, for a sum, min, max or copy (rules-api.md §8): the same
// kind of value, or integers into a decimal or float column. A decimal
// summed into an integer column would be rounded row by row, and a number
// in a text column is no longer a number the next adjustment can add to;
// floats and decimals convert with rounding either way. Values of types
// the rules pass around as text (KindOther) must be of the same type. The
// definition functions make the same check (pgrules._check_types in
// sql/functions.sql), so that a direct connection is refused too.
func holds(dst, src *catalog.Column) bool {
	switch {
	case src.Kind == catalog.KindOther || dst.Kind == catalog.KindOther:
		return src.TypeOID == dst.TypeOID
	case src.Kind == dst.Kind:
		return true
	}
	return src.Kind == catalog.KindInt && (dst.Kind == catalog.KindDecimal || dst.Kind == catalog.KindFloat)
}

// sumHolds reports whether a sum of src can be kept in dst by adjustment:
// a numeric column with fewer decimals than its source would round each
// adjustment on its own, and drift from the rounded total. (A copy, a min
// or a max stores one value, rounded once as the column rounds it.)
func sumHolds(dst, src *catalog.Column) bool {
	if dst.Kind != catalog.KindDecimal || !dst.HasScale {
		return true
	}
	switch src.Kind {
	case catalog.KindDecimal:
		return src.HasScale && src.Scale <= dst.Scale
	case catalog.KindInt:
		return dst.Scale >= 0
	}
	return true
}

// checker checks one expression: every name and column exists, operators
// get operands they can combine, and it records the columns read.
type checker struct {
	set    *Set
	c      *Rule
	table  *catalog.Table
	part   string
	src    string
	action bool
	err    *pgerr.Error
	// rows maps row-valued nodes to their table; old marks those reached
	// from old, whose reads are not dependencies (old values never change).
	rows map[ast.Node]*catalog.Table
	old  map[ast.Node]bool
	// paths are the foreign keys followed from the rule's row to reach a
	// row-valued node (empty for row and old themselves).
	paths map[ast.Node][]*catalog.ForeignKey
}

func (ck *checker) fail(n ast.Node, code, format string, args ...any) kind {
	if ck.err == nil {
		line, col := position(ck.src, n.Location().From)
		ck.err = ruleError(ck.c.Rule, code, "%s in the %s at %d:%d", fmt.Sprintf(format, args...), ck.part, line, col)
	}
	return kAny
}

// position turns a rune offset into a 1-based line and column.
func position(src string, offset int) (line, col int) {
	line, col = 1, 1
	for i, r := range []rune(src) {
		if i >= offset {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

func (ck *checker) read(t *catalog.Table, column string) {
	ref := ColumnRef{t.QualifiedName(), column}
	if !slices.Contains(ck.c.Reads, ref) {
		ck.c.Reads = append(ck.c.Reads, ref)
	}
}

func (ck *checker) rowOf(n ast.Node, t *catalog.Table, old bool, path []*catalog.ForeignKey) kind {
	if ck.rows == nil {
		ck.rows, ck.old, ck.paths = make(map[ast.Node]*catalog.Table), make(map[ast.Node]bool), make(map[ast.Node][]*catalog.ForeignKey)
	}
	ck.rows[n], ck.old[n], ck.paths[n] = t, old, path
	if len(path) > 0 {
		ck.c.addPath(path, old)
	}
	return kRow
}

// check infers the kind of n, checking it and what it is made of; the
// first failure is kept in ck.err.
func (ck *checker) check(n ast.Node) kind {
	switch n := n.(type) {
	case *ast.NilNode:
		return kNil
	case *ast.IntegerNode:
		return kInt
	case *ast.FloatNode:
		return kDecimal
	case *ast.StringNode:
		return kText
	case *ast.BoolNode:
		return kBool
	case *ast.IdentifierNode:
		switch n.Value {
		case "row", "old":
			return ck.rowOf(n, ck.table, n.Value == "old", nil)
		case "verb":
			return kText
		case "error":
			if ck.c.Rule.Timing == "failure" {
				return kAny
			}
		}
		return ck.fail(n, pgerr.UndefinedColumn, "unknown name %q (expressions see row, old and verb)", n.Value)
	case *ast.MemberNode:
		return ck.member(n)
	case *ast.ChainNode:
		return ck.check(n.Node)
	case *ast.UnaryNode:
		return ck.unary(n)
	case *ast.BinaryNode:
		return ck.binary(n)
	case *ast.ConditionalNode:
		if k := ck.check(n.Cond); k != kBool && k != kAny && k != kNil {
			return ck.fail(n.Cond, pgerr.DatatypeMismatch, "the condition of ?: is %s, not a boolean", k)
		}
		a, b := ck.check(n.Exp1), ck.check(n.Exp2)
		if a == b {
			return a
		}
		return kAny
	case *ast.CallNode:
		return ck.call(n)
	case *ast.BuiltinNode:
		for _, a := range n.Arguments {
			ck.check(a)
		}
		return kAny
	case *ast.ArrayNode:
		for _, e := range n.Nodes {
			ck.check(e)
		}
		return kAny
	case *ast.MapNode:
		for _, p := range n.Pairs {
			if pair, ok := p.(*ast.PairNode); ok {
				ck.check(pair.Value)
			}
		}
		return kAny
	}
	return kAny
}

// member checks row.column, row.parent and so on: a column of the row's
// table, read (a dependency unless reached from old), or a parent through
// its accessor, whose foreign key columns are read.
func (ck *checker) member(n *ast.MemberNode) kind {
	base := ck.check(n.Node)
	if base != kRow {
		return kAny
	}
	prop, ok := n.Property.(*ast.StringNode)
	if !ok {
		return ck.fail(n, pgerr.InvalidObjectDefinition, "a row's columns are named, not indexed")
	}
	t, old, path := ck.rows[n.Node], ck.old[n.Node], ck.paths[n.Node]
	if col := t.Column(prop.Value); col != nil {
		if !old {
			ck.read(t, prop.Value)
			if len(path) > 0 {
				ck.c.ParentReads = append(ck.c.ParentReads, ParentRead{Path: path, Column: prop.Value})
			}
		}
		return kindOf(col.Kind)
	}
	if fk := parentByAccessor(t, prop.Value); fk != nil {
		for _, c := range fk.Columns {
			if !old {
				ck.read(t, c)
				if len(path) > 0 {
					ck.c.ParentReads = append(ck.c.ParentReads, ParentRead{Path: path, Column: c})
				}
			}
		}
		return ck.rowOf(n, ck.set.snap.Tables[fk.Parent], old, append(slices.Clip(path), fk))
	}
	var names []string
	for _, fk := range t.Parents {
		names = append(names, fk.Accessor)
	}
	hint := ""
	if len(names) > 0 {
		hint = " (its parents are " + strings.Join(names, ", ") + ")"
	}
	return ck.fail(n.Property, pgerr.UndefinedColumn, "table %s has no column or parent %q%s", catalog.ShortName(t.QualifiedName()), prop.Value, hint)
}

func (ck *checker) unary(n *ast.UnaryNode) kind {
	k := ck.check(n.Node)
	switch n.Operator {
	case "not", "!":
		if k != kBool && k != kAny && k != kNil {
			return ck.fail(n, pgerr.DatatypeMismatch, "%s applies to a boolean, not %s", n.Operator, k)
		}
		return kBool
	case "-", "+":
		if !k.numeric() && k != kAny && k != kNil {
			return ck.fail(n, pgerr.DatatypeMismatch, "%s applies to a number, not %s", n.Operator, k)
		}
		return k
	}
	return kAny
}

func (ck *checker) binary(n *ast.BinaryNode) kind {
	l, r := ck.check(n.Left), ck.check(n.Right)
	loose := func(k kind) bool { return k == kAny || k == kNil }
	switch n.Operator {
	case "and", "&&", "or", "||":
		for _, k := range []kind{l, r} {
			if k != kBool && !loose(k) {
				return ck.fail(n, pgerr.DatatypeMismatch, "%s combines booleans, not %s", n.Operator, k)
			}
		}
		return kBool
	case "+", "-", "*", "/", "%":
		if n.Operator == "+" && (l == kText || r == kText) {
			if (l == kText || loose(l)) && (r == kText || loose(r)) {
				return kText
			}
		} else if (l.numeric() || loose(l)) && (r.numeric() || loose(r)) {
			switch {
			case loose(l) || loose(r):
				return kAny
			case n.Operator == "/" && l != kFloat && r != kFloat, l == kDecimal || r == kDecimal:
				return kDecimal
			case l == kFloat || r == kFloat:
				return kFloat
			}
			return kInt
		}
		return ck.fail(n, pgerr.DatatypeMismatch, "operator %s cannot combine %s and %s", n.Operator, l, r)
	case "<", "<=", ">", ">=", "==", "!=":
		if !loose(l) && !loose(r) && l != r && !(l.numeric() && r.numeric()) {
			return ck.fail(n, pgerr.DatatypeMismatch, "operator %s cannot compare %s with %s", n.Operator, l, r)
		}
		return kBool
	}
	return kAny
}

func (ck *checker) call(n *ast.CallNode) kind {
	id, ok := n.Callee.(*ast.IdentifierNode)
	if !ok {
		return ck.fail(n, pgerr.InvalidObjectDefinition, "only the action functions can be called")
	}
	f, known := actionFuncs[id.Value]
	if !known || !ck.action {
		return ck.fail(n, pgerr.UndefinedFunction, "unknown function %s (events' actions may call set, reject, insert, update, delete, notify, sql and post)", id.Value)
	}
	if len(n.Arguments) < f.min || len(n.Arguments) > f.max {
		return ck.fail(n, pgerr.InvalidObjectDefinition, "%s takes %d to %d arguments, not %d", id.Value, f.min, f.max, len(n.Arguments))
	}
	if f.timings != nil && !slices.Contains(f.timings, ck.c.Rule.Timing) {
		return ck.fail(n, pgerr.InvalidObjectDefinition, "%s is not allowed in a %s event (only %s)", id.Value, ck.c.Rule.Timing, strings.Join(f.timings, ", "))
	}
	for _, a := range n.Arguments {
		ck.check(a)
	}
	// Names given as literals are checked now rather than on the first
	// row that runs the event.
	if name, ok := n.Arguments[0].(*ast.StringNode); ok {
		switch id.Value {
		case "set":
			if ck.table.Column(name.Value) == nil {
				return ck.fail(name, pgerr.UndefinedColumn, "set: column %q of table %s does not exist", name.Value, catalog.ShortName(ck.table.QualifiedName()))
			}
		case "insert", "update", "delete":
			if ck.set.snap.Lookup(name.Value) == nil {
				return ck.fail(name, pgerr.UndefinedTable, "%s: table %q does not exist", id.Value, name.Value)
			}
		}
	}
	return kAny
}
