package sqlparse

import (
	"strconv"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// literalBase numbers the parameters that stand for an UPDATE's or a
// DELETE's constants: ten digits, above any parameter a client can send.
const literalBase = 2_000_000_000

// LiteralParam is how the SQL of a ModifyTable writes its k-th constant
// (from 1) that it takes as a parameter: a parameter numbered above any a
// client can send, which the caller renumbers after its own.
func LiteralParam(k int) string { return "$" + strconv.Itoa(literalBase+k) }

// literalText is the text of a constant: what PostgreSQL reads the
// literal as, before its type is resolved. False for NULL, a bit string,
// and anything that is not a constant.
func literalText(c *pg_query.A_Const) (string, bool) {
	if c == nil || c.Isnull {
		return "", false
	}
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return strconv.FormatInt(int64(v.Ival.Ival), 10), true
	case *pg_query.A_Const_Fval:
		return v.Fval.Fval, true
	case *pg_query.A_Const_Sval:
		return v.Sval.Sval, true
	case *pg_query.A_Const_Boolval:
		return strconv.FormatBool(v.Boolval.Boolval), true
	}
	return "", false
}

// constantType is the type PostgreSQL gives a constant: int4 for an
// integer, int8 or numeric for a larger one, numeric for a decimal, bool;
// "" for a string, whose type comes from where it stands.
func constantType(c *pg_query.A_Const) string {
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return "int4"
	case *pg_query.A_Const_Fval:
		if _, err := strconv.ParseInt(v.Fval.Fval, 10, 64); err == nil {
			return "int8"
		}
		return "numeric"
	case *pg_query.A_Const_Boolval:
		return "bool"
	}
	return ""
}

// bareValues are the SET values that are constants as a whole: they take
// their column's type.
func bareValues(targets []*pg_query.Node) map[*pg_query.Node]bool {
	bare := make(map[*pg_query.Node]bool)
	for _, item := range targets {
		if v := item.GetResTarget().GetVal(); v.GetAConst() != nil {
			bare[v] = true
		}
	}
	return bare
}

// literalRoots are the expressions whose constants literalParams makes
// parameters: the SET values, then the WHERE clause.
func literalRoots(targets []*pg_query.Node, where *pg_query.Node) []*pg_query.Node {
	var roots []*pg_query.Node
	for _, item := range targets {
		roots = append(roots, item.GetResTarget().GetVal())
	}
	if where != nil {
		roots = append(roots, where)
	}
	return roots
}

// literalsCanBeParams reports whether literalParams can make every
// constant of an UPDATE's SET list (targets, nil for a DELETE) and WHERE
// clause a parameter: no SET (a, b) = (...), whose columns would each
// count the row's constants; no sub-select, where a constant can be a
// position (ORDER BY 1); no string that is not a whole SET value, and no
// bit string.
// Constants under a type name (its modifiers) stay, and are not looked at:
// they must be constants.
func literalsCanBeParams(targets []*pg_query.Node, where *pg_query.Node) bool {
	for _, item := range targets {
		if item.GetResTarget().GetVal().GetMultiAssignRef() != nil {
			return false
		}
	}
	bare := bareValues(targets)
	ok := true
	var check func(n *pg_query.Node) bool
	check = func(n *pg_query.Node) bool {
		switch {
		case n.GetSubLink() != nil:
			ok = false
		case n.GetTypeCast() != nil:
			walkNodes(n.GetTypeCast().Arg, check)
			return false
		}
		if c := n.GetAConst(); c != nil && !c.Isnull {
			// A bit string has no text here to pass. Once false, ok
			// stays false: a later constant must not undo a sub-select
			// or a bit string seen before it.
			if _, readable := literalText(c); !readable || !bare[n] && constantType(c) == "" {
				ok = false
			}
		}
		return ok
	}
	for _, r := range literalRoots(targets, where) {
		walkNodes(r, check)
	}
	return ok
}

// literalParams makes the constants of an UPDATE's SET list (targets, nil
// for a DELETE) and WHERE clause parameters, numbered as LiteralParam
// numbers them, in the tree, and returns them in order; a number or a
// boolean is cast to its type, unless it is a whole SET value. The caller
// checks literalsCanBeParams first.
func literalParams(targets []*pg_query.Node, where *pg_query.Node) []Literal {
	bare := bareValues(targets)
	var lits []Literal
	var replace func(n *pg_query.Node) bool
	replace = func(n *pg_query.Node) bool {
		if tc := n.GetTypeCast(); tc != nil {
			walkNodes(tc.Arg, replace)
			return false
		}
		c := n.GetAConst()
		if c == nil || c.Isnull {
			return true
		}
		text, _ := literalText(c)
		typ := constantType(c)
		lits = append(lits, Literal{Offset: int(c.Location), Value: text})
		param := &pg_query.Node{Node: &pg_query.Node_ParamRef{ParamRef: &pg_query.ParamRef{Number: int32(literalBase + len(lits))}}}
		if bare[n] || typ == "" {
			n.Node = param.Node
		} else {
			n.Node = &pg_query.Node_TypeCast{TypeCast: &pg_query.TypeCast{Arg: param, Location: -1,
				TypeName: &pg_query.TypeName{Names: []*pg_query.Node{pg_query.MakeStrNode("pg_catalog"), pg_query.MakeStrNode(typ)}, Typemod: -1, Location: -1}}}
		}
		return false
	}
	for _, r := range literalRoots(targets, where) {
		walkNodes(r, replace)
	}
	return lits
}
