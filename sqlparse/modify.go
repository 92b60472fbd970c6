package sqlparse

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/pgerr"
	"google.golang.org/protobuf/proto"
)

// ModifyTable is an INSERT, UPDATE or DELETE as the engine runs it (the
// name of the node that runs one in PostgreSQL's executor): what it
// writes, in its own terms, with the pieces the engine reuses (values,
// conditions, FROM lists, WITH and RETURNING items) as SQL deparsed from
// PostgreSQL's own parse tree, so that they mean exactly what they meant
// in the statement. Identifiers are as the statement names them, quotes
// removed and case folded as PostgreSQL folds them.
type ModifyTable struct {
	// Operation is Insert, Update or Delete.
	Operation Verb
	// Relation is the table written.
	Relation RangeVar
	// With is the statement's WITH clause as SQL, followed by a space; ""
	// without one.
	With string
	// CurrentOf marks WHERE CURRENT OF; nothing but Operation, Relation
	// and With is read of such a statement.
	CurrentOf bool
	// Returning is the RETURNING list; empty without one.
	Returning []ResTarget

	// Columns are an INSERT's column list; empty without one.
	Columns    []TargetColumn
	Overriding string // "OVERRIDING SYSTEM VALUE" or "OVERRIDING USER VALUE"
	// An INSERT's rows come from one of: DEFAULT VALUES; Values, the rows
	// of a plain VALUES (without WITH, ORDER BY, LIMIT or OFFSET); Select,
	// any other query, as SQL.
	DefaultValues bool
	Values        [][]Value
	Select        string
	// Width is the number of columns each row of an INSERT's source
	// gives: of its first VALUES list, or its SELECT list; -1 when a * in
	// the list hides it. UnequalValues is set when its VALUES lists
	// differ in length.
	Width         int
	UnequalValues bool
	// OnConflict is an INSERT's ON CONFLICT clause; nil without one.
	OnConflict *OnConflict

	// Set is an UPDATE's SET list.
	Set []Assignment

	// From is what follows FROM in a query of the rows an UPDATE or a
	// DELETE writes: the table, the UPDATE's FROM list or the DELETE's
	// USING list, and the WHERE clause. Joined is set when the statement
	// has such a list.
	From   string
	Joined bool

	// Literals are the constants the statement's SQL takes as parameters,
	// so that it is the same whatever the values: each constant of a
	// plain VALUES, which Value.Literal numbers; in an UPDATE or a DELETE
	// without WITH, FROM or USING, its numbers and booleans and its whole
	// SET values, written in Set and From as LiteralParam(k) (with a
	// cast to the type PostgreSQL gives a number or a boolean; a string
	// takes its type from where it stands). An UPDATE or a DELETE with
	// another constant (a string elsewhere, a bit string, or one in a
	// sub-select, where a constant can be a position, as in ORDER BY 1),
	// or with SET (a, b) = (...), keeps all of its constants.
	Literals []Literal
	// LiteralsOnly is set when nothing else in the statement varies with
	// its values (parameters aside), which makes it worth preparing.
	LiteralsOnly bool
}

// RangeVar is a table as a statement names it.
type RangeVar struct {
	// Schema is empty when the name is unqualified; Alias without an
	// alias.
	Schema, Name, Alias string
}

// RefName is the name the statement refers to the table by: its alias,
// or its own name.
func (r RangeVar) RefName() string {
	if r.Alias != "" {
		return r.Alias
	}
	return r.Name
}

// TargetColumn is a column an INSERT's column list or a SET list names.
type TargetColumn struct {
	Name string
	// Indirection marks an assignment to a part of the column: an array
	// element or a field.
	Indirection bool
}

// Value is an item of a VALUES list.
type Value struct {
	// Default marks DEFAULT.
	Default bool
	// Literal numbers a constant among the statement's Literals, from 1;
	// 0 for anything else.
	Literal int
	// SQL is anything else: a parameter ($1), NULL, an expression.
	SQL string
}

// Assignment is an item of a SET list: a column and its new value.
type Assignment struct {
	TargetColumn
	// Default marks SET column = DEFAULT; otherwise Value is the new
	// value as SQL, unless it comes from a sub-select.
	Default bool
	Value   string
	// Colno is the column's place, from 1, among the Ncolumns of SET (a,
	// b, ...) = source; 0 for a single column. A row source's element for
	// the column is its Default or Value; a sub-select is Subselect, the
	// same for every column of the list. OtherSource is set for a source
	// that is neither (x, y, ...) with an element for the column nor a
	// sub-select.
	Colno, Ncolumns int
	Subselect       *Subselect
	OtherSource     bool
}

// Subselect is the (SELECT ...) of SET (a, b, ...) = (SELECT ...).
type Subselect struct {
	SQL string
	// Width is the number of columns it gives; -1 when a * hides it.
	Width int
}

// OnConflict is an INSERT's ON CONFLICT clause.
type OnConflict struct {
	// DoUpdate is set for DO UPDATE; the clause is DO NOTHING otherwise.
	DoUpdate bool
	// SQL is a DO NOTHING clause as SQL: "ON CONFLICT ... DO NOTHING".
	SQL string
	// Infer is the conflict target of DO UPDATE; nil without one.
	Infer *InferClause
	// Set and Where are DO UPDATE's SET list and WHERE condition ("" for
	// none), over the table's alias and excluded.
	Set   []Assignment
	Where string
}

// InferClause is the conflict target of ON CONFLICT: a constraint, or the
// columns of the unique indexes it infers, with their WHERE.
type InferClause struct {
	// Constraint is the name of ON CONFLICT ON CONSTRAINT; nothing else
	// is set with it.
	Constraint string
	// Columns are the index's columns, in order; "" stands for an
	// expression, or a column with a collation or an operator class.
	Columns []string
	// Where is the partial index's predicate as SQL; "" for none.
	Where string
}

// ResTarget is an item of a RETURNING list.
type ResTarget struct {
	// SQL is the item as SQL, with its AS name when it has one.
	SQL string
	// Star is set for * and x.*; Qualifier is then the first name before
	// the star ("" for a bare *).
	Star      bool
	Qualifier string
	// ColumnRefs are the columns an item that is not a star names.
	ColumnRefs []ColumnRef
}

// ColumnRef is where an expression names a column (x, t.x, t.*, s.t.x).
type ColumnRef struct {
	// Head is the first name: the column's when the reference is that one
	// name (Qualified false), otherwise the table's or schema's that
	// qualifies it.
	Head      string
	Qualified bool
	// InSubselect is set for a reference inside a sub-select, where a
	// name may be the sub-select's own.
	InSubselect bool
}

// ModifyTable is the statement as a ModifyTable. Any other statement gets
// a FeatureNotSupported error; a piece too deep to deparse gets
// StatementTooComplex, a parameter $0 UndefinedParameter.
func (t *Tree) ModifyTable() (*ModifyTable, error) {
	switch n := t.node.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		return insertStmt(n.InsertStmt)
	case *pg_query.Node_UpdateStmt:
		return updateStmt(n.UpdateStmt)
	case *pg_query.Node_DeleteStmt:
		return deleteStmt(n.DeleteStmt)
	}
	return nil, pgerr.New(pgerr.FeatureNotSupported, "only INSERT, UPDATE and DELETE are run with rules")
}

func newModifyTable(op Verb, rv *pg_query.RangeVar, with *pg_query.WithClause) (*ModifyTable, error) {
	m := &ModifyTable{Operation: op, Relation: RangeVar{Schema: rv.Schemaname, Name: rv.Relname, Alias: rv.GetAlias().GetAliasname()}}
	var err error
	m.With, err = withSQL(with)
	return m, err
}

func insertStmt(ins *pg_query.InsertStmt) (*ModifyTable, error) {
	m, err := newModifyTable(Insert, ins.Relation, ins.WithClause)
	if err != nil {
		return nil, err
	}
	switch ins.Override {
	case pg_query.OverridingKind_OVERRIDING_SYSTEM_VALUE:
		m.Overriding = "OVERRIDING SYSTEM VALUE"
	case pg_query.OverridingKind_OVERRIDING_USER_VALUE:
		m.Overriding = "OVERRIDING USER VALUE"
	}
	if oc := ins.OnConflictClause; oc != nil {
		if m.OnConflict, err = onConflict(oc); err != nil {
			return nil, err
		}
	}
	for _, item := range ins.Cols {
		m.Columns = append(m.Columns, targetColumn(item.GetResTarget()))
	}
	if err := m.insertSource(ins.SelectStmt); err != nil {
		return nil, err
	}
	m.Returning, err = returningList(ins.ReturningList)
	return m, err
}

// insertSource reads where an INSERT's rows come from.
func (m *ModifyTable) insertSource(n *pg_query.Node) error {
	sel := n.GetSelectStmt()
	if sel == nil {
		m.DefaultValues = true
		return nil
	}
	m.Width = selectWidth(sel)
	lists := sel.ValuesLists
	for _, l := range lists {
		m.UnequalValues = m.UnequalValues || len(l.GetList().Items) != len(lists[0].GetList().Items)
	}
	if len(lists) == 0 || sel.WithClause != nil || len(sel.SortClause) > 0 || sel.LimitCount != nil || sel.LimitOffset != nil {
		var err error
		m.Select, err = deparse(n)
		return err
	}
	m.LiteralsOnly = m.With == ""
	for _, l := range lists {
		items := l.GetList().Items
		row := make([]Value, len(items))
		for i, item := range items {
			if item.GetSetToDefault() != nil {
				row[i].Default = true
				continue
			}
			if text, ok := literalText(item.GetAConst()); ok {
				m.Literals = append(m.Literals, Literal{Offset: int(item.GetAConst().GetLocation()), Value: text})
				row[i].Literal = len(m.Literals)
				continue
			}
			if item.GetParamRef() == nil {
				m.LiteralsOnly = false
			}
			s, err := exprSQL(item)
			if err != nil {
				return err
			}
			row[i].SQL = s
		}
		m.Values = append(m.Values, row)
	}
	return nil
}

func updateStmt(up *pg_query.UpdateStmt) (*ModifyTable, error) {
	m, err := newModifyTable(Update, up.Relation, up.WithClause)
	if err != nil {
		return nil, err
	}
	if up.WhereClause.GetCurrentOfExpr() != nil {
		m.CurrentOf = true
		return m, nil
	}
	if up.WithClause == nil && len(up.FromClause) == 0 && literalsCanBeParams(up.TargetList, up.WhereClause) {
		up = proto.Clone(up).(*pg_query.UpdateStmt) // trees are never changed
		m.Literals, m.LiteralsOnly = literalParams(up.TargetList, up.WhereClause), true
	}
	if m.Set, err = assignments(up.TargetList); err != nil {
		return nil, err
	}
	if m.From, err = fromSQL(append([]*pg_query.Node{{Node: &pg_query.Node_RangeVar{RangeVar: up.Relation}}}, up.FromClause...), up.WhereClause); err != nil {
		return nil, err
	}
	m.Joined = len(up.FromClause) > 0
	m.Returning, err = returningList(up.ReturningList)
	return m, err
}

func deleteStmt(del *pg_query.DeleteStmt) (*ModifyTable, error) {
	m, err := newModifyTable(Delete, del.Relation, del.WithClause)
	if err != nil {
		return nil, err
	}
	if del.WhereClause.GetCurrentOfExpr() != nil {
		m.CurrentOf = true
		return m, nil
	}
	if del.WithClause == nil && len(del.UsingClause) == 0 && literalsCanBeParams(nil, del.WhereClause) {
		del = proto.Clone(del).(*pg_query.DeleteStmt) // trees are never changed
		m.Literals, m.LiteralsOnly = literalParams(nil, del.WhereClause), true
	}
	if m.From, err = fromSQL(append([]*pg_query.Node{{Node: &pg_query.Node_RangeVar{RangeVar: del.Relation}}}, del.UsingClause...), del.WhereClause); err != nil {
		return nil, err
	}
	m.Joined = len(del.UsingClause) > 0
	m.Returning, err = returningList(del.ReturningList)
	return m, err
}

func targetColumn(rt *pg_query.ResTarget) TargetColumn {
	return TargetColumn{Name: rt.Name, Indirection: len(rt.Indirection) > 0}
}

// assignments reads a SET list.
func assignments(targets []*pg_query.Node) ([]Assignment, error) {
	var out []Assignment
	var sub *Subselect
	for _, item := range targets {
		rt := item.GetResTarget()
		a := Assignment{TargetColumn: targetColumn(rt)}
		val := rt.Val
		if m := val.GetMultiAssignRef(); m != nil {
			a.Colno, a.Ncolumns = int(m.Colno), int(m.Ncolumns)
			if s := m.Source.GetSubLink(); s != nil {
				// The grammar gives every column of the list the same
				// source: it is read at the first.
				if m.Colno == 1 || sub == nil {
					q, err := deparse(s.Subselect)
					if err != nil {
						return nil, err
					}
					sub = &Subselect{SQL: q, Width: selectWidth(s.Subselect.GetSelectStmt())}
				}
				a.Subselect = sub
				out = append(out, a)
				continue
			}
			row := m.Source.GetRowExpr()
			if row == nil || int(m.Colno) > len(row.Args) {
				a.OtherSource = true
				out = append(out, a)
				continue
			}
			val = row.Args[m.Colno-1]
		}
		if val.GetSetToDefault() != nil {
			a.Default = true
		} else {
			s, err := exprSQL(val)
			if err != nil {
				return nil, err
			}
			a.Value = s
		}
		out = append(out, a)
	}
	return out, nil
}

// selectWidth is the number of columns a SELECT gives; -1 when a * in it
// hides the number.
func selectWidth(sel *pg_query.SelectStmt) int {
	if sel == nil {
		return -1
	}
	if sel.Op != pg_query.SetOperation_SETOP_NONE {
		return selectWidth(sel.Larg)
	}
	if len(sel.ValuesLists) > 0 {
		return len(sel.ValuesLists[0].GetList().GetItems())
	}
	for _, item := range sel.TargetList {
		if ref := item.GetResTarget().GetVal().GetColumnRef(); ref != nil && ref.Fields[len(ref.Fields)-1].GetAStar() != nil {
			return -1
		}
	}
	return len(sel.TargetList)
}

func onConflict(oc *pg_query.OnConflictClause) (*OnConflict, error) {
	c := &OnConflict{DoUpdate: oc.Action == pg_query.OnConflictAction_ONCONFLICT_UPDATE}
	if !c.DoUpdate {
		c.SQL = "ON CONFLICT DO NOTHING"
		if oc.Infer != nil {
			// The inference clause is deparsed through a statement of its
			// own, the only place the deparser prints it.
			s, err := deparse(&pg_query.Node{Node: &pg_query.Node_InsertStmt{InsertStmt: &pg_query.InsertStmt{
				Relation: &pg_query.RangeVar{Relname: "t", Inh: true, Relpersistence: "p"}, OnConflictClause: oc,
				SelectStmt: selectNode(&pg_query.SelectStmt{ValuesLists: []*pg_query.Node{pg_query.MakeListNode([]*pg_query.Node{pg_query.MakeAConstIntNode(1, 0)})}}),
			}}})
			if err != nil {
				return nil, err
			}
			_, clause, _ := strings.Cut(s, " ON CONFLICT ")
			c.SQL = "ON CONFLICT " + clause
		}
		return c, nil
	}
	if infer := oc.Infer; infer != nil {
		c.Infer = &InferClause{Constraint: infer.Conname}
		if infer.Conname == "" {
			for _, e := range infer.IndexElems {
				ie := e.GetIndexElem()
				name := ie.GetName()
				if len(ie.Collation) > 0 || len(ie.Opclass) > 0 {
					name = ""
				}
				c.Infer.Columns = append(c.Infer.Columns, name)
			}
			if infer.WhereClause != nil {
				s, err := exprSQL(infer.WhereClause)
				if err != nil {
					return nil, err
				}
				c.Infer.Where = s
			}
		}
	}
	var err error
	if c.Set, err = assignments(oc.TargetList); err != nil {
		return nil, err
	}
	if oc.WhereClause != nil {
		if c.Where, err = exprSQL(oc.WhereClause); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// returningList reads a RETURNING list.
func returningList(list []*pg_query.Node) ([]ResTarget, error) {
	var out []ResTarget
	for _, item := range list {
		s, err := targetsSQL([]*pg_query.Node{item})
		if err != nil {
			return nil, err
		}
		rt := ResTarget{SQL: s}
		val := item.GetResTarget().GetVal()
		if ref := val.GetColumnRef(); ref != nil && ref.Fields[len(ref.Fields)-1].GetAStar() != nil {
			rt.Star = true
			if len(ref.Fields) > 1 {
				rt.Qualifier = ref.Fields[0].GetString_().GetSval()
			}
		} else {
			rt.ColumnRefs = columnRefs(val)
		}
		out = append(out, rt)
	}
	return out, nil
}

// columnRefs are the column references in n that begin with a name.
func columnRefs(n *pg_query.Node) []ColumnRef {
	var refs []ColumnRef
	var visit func(inSub bool) func(*pg_query.Node) bool
	visit = func(inSub bool) func(*pg_query.Node) bool {
		return func(x *pg_query.Node) bool {
			if sub := x.GetSubLink(); sub != nil {
				walkNodes(sub.Testexpr, visit(inSub))
				walkNodes(sub.Subselect, visit(true))
				return false
			}
			if ref := x.GetColumnRef(); ref != nil {
				if head := ref.Fields[0].GetString_(); head != nil {
					refs = append(refs, ColumnRef{Head: head.Sval, Qualified: len(ref.Fields) > 1, InSubselect: inSub})
				}
				return false
			}
			return true
		}
	}
	walkNodes(n, visit(false))
	return refs
}
