package sqlparse

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"github.com/pgrules/pgrules/pgerr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// SyntaxError is the parser's error for a text that does not parse.
type SyntaxError = parser.Error

// Tree is one statement's parse tree. Only this package reads it; callers
// ask it what the statement is (ResultRelation, ModifyingWith, Explain,
// Copy) and what it writes (ModifyTable). A Tree is never changed, so one
// may be shared.
type Tree struct {
	node *pg_query.Node
}

// ParseStatement parses a text of one statement, as parseTree does. A
// text of another number of statements gets an InternalError: callers
// hand it a statement Parse has cut out, or one they wrote.
func ParseStatement(sql string) (*Tree, error) {
	tree, err := parseTree(sql)
	if err != nil {
		return nil, err
	}
	if len(tree.Stmts) != 1 {
		return nil, pgerr.New(pgerr.InternalError, "pgrules was given %d statements to run as one", len(tree.Stmts))
	}
	return &Tree{node: tree.Stmts[0].Stmt}, nil
}

// ResultRelation is the table an INSERT, UPDATE or DELETE writes; false
// for any other statement.
func (t *Tree) ResultRelation() (Write, bool) {
	var rv *pg_query.RangeVar
	var v Verb
	switch x := t.node.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		rv, v = x.InsertStmt.Relation, Insert
	case *pg_query.Node_UpdateStmt:
		rv, v = x.UpdateStmt.Relation, Update
	case *pg_query.Node_DeleteStmt:
		rv, v = x.DeleteStmt.Relation, Delete
	default:
		return Write{}, false
	}
	return Write{Schema: rv.Schemaname, Table: rv.Relname, Verb: v}, true
}

// Explain reports whether the statement is an EXPLAIN.
func (t *Tree) Explain() bool {
	return t.node.GetExplainStmt() != nil
}

// ModifyingWith is an INSERT, UPDATE, DELETE or SELECT whose WITH clause
// holds a data-modifying statement (hasModifyingCTE, in PostgreSQL's
// terms). Its SQL is rebuilt around the WITH clause a caller gives it,
// which lets a caller run the CTEs one by one and put what they returned
// in their place.
type ModifyingWith struct {
	// Recursive marks WITH RECURSIVE.
	Recursive bool
	// CTEs are the WITH clause's common table expressions, in order.
	CTEs []CTE
	stmt *pg_query.Node
}

// CTE is a common table expression of a WITH clause.
type CTE struct {
	Name string
	// Verb is the write of a data-modifying CTE: Insert, Update, Delete
	// or Merge; "" for a query.
	Verb Verb
	cte  *pg_query.CommonTableExpr
}

// ModifyingWith is the statement as a ModifyingWith; nil unless its WITH
// clause writes.
func (t *Tree) ModifyingWith() *ModifyingWith {
	w := withClause(t.node)
	if w == nil {
		return nil
	}
	m := &ModifyingWith{Recursive: w.Recursive, stmt: t.node}
	modifying := false
	for _, item := range w.Ctes {
		c := item.GetCommonTableExpr()
		cte := CTE{Name: c.Ctename, cte: c}
		switch c.GetCtequery().GetNode().(type) {
		case *pg_query.Node_InsertStmt:
			cte.Verb = Insert
		case *pg_query.Node_UpdateStmt:
			cte.Verb = Update
		case *pg_query.Node_DeleteStmt:
			cte.Verb = Delete
		case *pg_query.Node_MergeStmt:
			cte.Verb = Merge
		}
		modifying = modifying || cte.Verb != ""
		m.CTEs = append(m.CTEs, cte)
	}
	if !modifying {
		return nil
	}
	return m
}

// SQL is the statement as SQL with the WITH clause of with in place of
// its own (none when with is empty).
func (m *ModifyingWith) SQL(with []CTE) (string, error) {
	n := proto.Clone(m.stmt).(*pg_query.Node)
	setWith(n, withOf(with))
	return deparse(n)
}

// QuerySQL is the CTE's statement as SQL, with the WITH clause of with in
// place of its own when with is not empty.
func (c CTE) QuerySQL(with []CTE) (string, error) {
	q := c.cte.Ctequery
	if len(with) > 0 {
		q = proto.Clone(q).(*pg_query.Node)
		setWith(q, withOf(with))
	}
	return deparse(q)
}

// As is the CTE with its name and column names over query instead: name
// [(columns)] AS (query). query is parsed, and its errors are
// ParseStatement's.
func (c CTE) As(query string) (CTE, error) {
	tree, err := ParseStatement(query)
	if err != nil {
		return CTE{}, err
	}
	return CTE{Name: c.Name, cte: &pg_query.CommonTableExpr{
		Ctename: c.cte.Ctename, Aliascolnames: c.cte.Aliascolnames, Ctequery: tree.node,
		Ctematerialized: pg_query.CTEMaterialize_CTEMaterializeDefault,
	}}, nil
}

// withOf is the WITH clause of ctes; nil for none.
func withOf(ctes []CTE) *pg_query.WithClause {
	if len(ctes) == 0 {
		return nil
	}
	w := &pg_query.WithClause{}
	for _, c := range ctes {
		w.Ctes = append(w.Ctes, &pg_query.Node{Node: &pg_query.Node_CommonTableExpr{CommonTableExpr: c.cte}})
	}
	return w
}

// withClause is the WITH clause of an INSERT, UPDATE, DELETE or SELECT.
func withClause(n *pg_query.Node) *pg_query.WithClause {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		return x.InsertStmt.WithClause
	case *pg_query.Node_UpdateStmt:
		return x.UpdateStmt.WithClause
	case *pg_query.Node_DeleteStmt:
		return x.DeleteStmt.WithClause
	case *pg_query.Node_SelectStmt:
		return x.SelectStmt.WithClause
	}
	return nil
}

func setWith(n *pg_query.Node, w *pg_query.WithClause) {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		x.InsertStmt.WithClause = w
	case *pg_query.Node_UpdateStmt:
		x.UpdateStmt.WithClause = w
	case *pg_query.Node_DeleteStmt:
		x.DeleteStmt.WithClause = w
	case *pg_query.Node_SelectStmt:
		x.SelectStmt.WithClause = w
	}
}

// CopyStmt is a COPY statement.
type CopyStmt struct {
	// Columns are the columns it names; none when it names none.
	Columns []string
	stmt    *pg_query.CopyStmt
}

// Copy is the statement as a CopyStmt; nil unless it is a COPY (or t is
// nil).
func (t *Tree) Copy() *CopyStmt {
	if t == nil {
		return nil
	}
	cp := t.node.GetCopyStmt()
	if cp == nil {
		return nil
	}
	c := &CopyStmt{stmt: cp}
	for _, a := range cp.Attlist {
		c.Columns = append(c.Columns, a.GetString_().GetSval())
	}
	return c
}

// Into is the statement as SQL with another table and columns: the same
// data, format, options and WHERE clause.
func (c *CopyStmt) Into(schema, table string, columns []string) (string, error) {
	cp := proto.Clone(c.stmt).(*pg_query.CopyStmt)
	cp.Relation = &pg_query.RangeVar{Schemaname: schema, Relname: table, Inh: true, Relpersistence: "p"}
	cp.Attlist = nil
	for _, name := range columns {
		cp.Attlist = append(cp.Attlist, pg_query.MakeStrNode(name))
	}
	return deparse(&pg_query.Node{Node: &pg_query.Node_CopyStmt{CopyStmt: cp}})
}

// NormalExpr is the text of an expression as this package writes the
// expressions of a statement: two texts of one expression, written
// differently, give the same. False when expr is not one expression.
func NormalExpr(expr string) (string, bool) {
	tree, err := parseTree("SELECT " + expr)
	if err != nil || len(tree.Stmts) != 1 {
		return "", false
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || len(sel.TargetList) != 1 {
		return "", false
	}
	s, err := exprSQL(sel.TargetList[0].GetResTarget().GetVal())
	if err != nil {
		return "", false
	}
	return s, true
}

func selectNode(sel *pg_query.SelectStmt) *pg_query.Node {
	sel.LimitOption = pg_query.LimitOption_LIMIT_OPTION_DEFAULT
	sel.Op = pg_query.SetOperation_SETOP_NONE
	return &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: sel}}
}

// targetsSQL deparses a list of result targets (a RETURNING list).
func targetsSQL(targets []*pg_query.Node) (string, error) {
	s, err := deparse(selectNode(&pg_query.SelectStmt{TargetList: targets}))
	return strings.TrimPrefix(s, "SELECT "), err
}

// exprSQL deparses one expression.
func exprSQL(n *pg_query.Node) (string, error) {
	return targetsSQL([]*pg_query.Node{pg_query.MakeResTargetNodeWithVal(n, 0)})
}

// fromSQL deparses a FROM list, with the WHERE clause when there is one.
func fromSQL(items []*pg_query.Node, where *pg_query.Node) (string, error) {
	s, err := deparse(selectNode(&pg_query.SelectStmt{
		TargetList:  []*pg_query.Node{pg_query.MakeResTargetNodeWithVal(pg_query.MakeAConstIntNode(1, 0), 0)},
		FromClause:  items,
		WhereClause: where,
	}))
	return strings.TrimPrefix(s, "SELECT 1 FROM "), err
}

// withSQL deparses a WITH clause, followed by a space; "" for none.
func withSQL(w *pg_query.WithClause) (string, error) {
	if w == nil || len(w.Ctes) == 0 {
		return "", nil
	}
	s, err := deparse(selectNode(&pg_query.SelectStmt{
		WithClause: w,
		TargetList: []*pg_query.Node{pg_query.MakeResTargetNodeWithVal(pg_query.MakeAConstIntNode(1, 0), 0)},
	}))
	return strings.TrimSuffix(s, "SELECT 1"), err
}

// walkNodes calls fn on n and on every node below it, depth first; fn
// returns false to skip what is below a node.
func walkNodes(n *pg_query.Node, fn func(*pg_query.Node) bool) {
	if n == nil || !fn(n) {
		return
	}
	walkMessage(n.ProtoReflect(), fn)
}

func walkMessage(m protoreflect.Message, fn func(*pg_query.Node) bool) {
	visit := func(v protoreflect.Message) {
		if node, ok := v.Interface().(*pg_query.Node); ok {
			walkNodes(node, fn)
		} else {
			walkMessage(v, fn)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		} else {
			visit(v.Message())
		}
		return true
	})
}
