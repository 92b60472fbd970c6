package rules

import (
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
)

// setList is the SET list of an UPDATE or of ON CONFLICT DO UPDATE: the
// columns, and each one's new value as SQL cast to its type.
//
// SET (a, b) = (SELECT ...) runs its sub-select once per row updated, as
// PostgreSQL does: the materialising query selects it, for the rows its
// FROM and WHERE keep, as one array of the values cast to their columns'
// types and then to text (a row value's fields could not be named), and
// takes the columns' values from that array a level up. The sub-select
// then fails as PostgreSQL's does (21000 for more than one row) and gives
// NULLs for none.
type setList struct {
	cols   []*catalog.Column
	values []string
	// subselects are the arrays of the sub-selects, as SQL; a value taken
	// from one is marked in fromSubselect and reads pgrules_x.pgrules_a<n>.
	subselects    []string
	fromSubselect []bool
}

// targetColumn is the column an INSERT's column list or a SET list names.
func targetColumn(t *catalog.Table, rt *pg_query.ResTarget) (*catalog.Column, error) {
	if len(rt.Indirection) > 0 {
		return nil, compiler.WriteNotSupported(t, "assigning to a part of column %q (an array element or a field) is not supported; assign the whole column", rt.Name)
	}
	c := t.Column(rt.Name)
	if c == nil {
		e := pgerr.New(pgerr.UndefinedColumn, "column %q of relation %q does not exist", rt.Name, t.Name)
		e.Schema, e.Table, e.Column = t.Schema, t.Name, rt.Name
		return nil, e
	}
	return c, nil
}

// assignments reads a SET list.
func assignments(t *catalog.Table, targets []*pg_query.Node) (setList, error) {
	var s setList
	for i, item := range targets {
		rt := item.GetResTarget()
		c, err := targetColumn(t, rt)
		if err != nil {
			return s, err
		}
		if slices.Contains(s.cols, c) {
			// PostgreSQL's own error, which it gives whatever the rows.
			return s, pgerr.New(pgerr.SyntaxError, "multiple assignments to same column %q", rt.Name)
		}
		val := rt.Val
		if m := val.GetMultiAssignRef(); m != nil {
			if sub := m.Source.GetSubLink(); sub != nil {
				v, err := s.subselectValue(t, targets[i:], m, sub)
				if err != nil {
					return s, err
				}
				s.add(c, v, true)
				continue
			}
			row := m.Source.GetRowExpr()
			if row == nil || int(m.Colno) > len(row.Args) {
				return s, compiler.WriteNotSupported(t, "SET (...) = %s is not supported; assign each column", "a row that is neither (x, y) nor (SELECT ...)")
			}
			val = row.Args[m.Colno-1]
		}
		if val.GetSetToDefault() != nil {
			s.add(c, defaultSQL(c), false)
			continue
		}
		e, err := exprSQL(val)
		if err != nil {
			return s, err
		}
		s.add(c, fmt.Sprintf("CAST((%s) AS %s)", e, c.Type), false)
	}
	return s, nil
}

func (s *setList) add(c *catalog.Column, value string, fromSubselect bool) {
	s.cols = append(s.cols, c)
	s.values = append(s.values, value)
	s.fromSubselect = append(s.fromSubselect, fromSubselect)
}

// subselectValue is the value of column m.Colno of SET (...) = (SELECT
// ...); the first column's adds the sub-select's array, from the columns
// of rest, the SET list from that column on.
func (s *setList) subselectValue(t *catalog.Table, rest []*pg_query.Node, m *pg_query.MultiAssignRef, sub *pg_query.SubLink) (string, error) {
	if m.Colno == 1 {
		n, ok := selectWidth(sub.Subselect.GetSelectStmt())
		if !ok {
			return "", compiler.WriteNotSupported(t, "SET (...) = (SELECT * ...) is not supported; name the sub-select's columns")
		}
		if n != int(m.Ncolumns) || len(rest) < n {
			return "", pgerr.New(pgerr.SyntaxError, "number of columns does not match number of values")
		}
		q, err := sqlparse.Deparse(sub.Subselect)
		if err != nil {
			return "", err
		}
		elems := make([]string, n)
		names := make([]string, n)
		for k := range n {
			c := t.Column(rest[k].GetResTarget().Name)
			if c == nil {
				return "", pgerr.New(pgerr.UndefinedColumn, "column %q of relation %q does not exist", rest[k].GetResTarget().Name, t.Name)
			}
			elems[k] = fmt.Sprintf("CAST(CAST(pgrules_s.c%d AS %s) AS text)", k+1, c.Type)
			names[k] = fmt.Sprintf("c%d", k+1)
		}
		s.subselects = append(s.subselects, fmt.Sprintf("(SELECT ARRAY[%s] FROM (%s) AS pgrules_s(%s))",
			strings.Join(elems, ", "), q, strings.Join(names, ", ")))
	}
	c := t.Column(rest[0].GetResTarget().Name)
	return fmt.Sprintf("CAST(pgrules_x.pgrules_a%d[%d] AS %s)", len(s.subselects), m.Colno, c.Type), nil
}

// selectWidth is the number of columns a SELECT gives; false when a * in
// it hides the number.
func selectWidth(sel *pg_query.SelectStmt) (int, bool) {
	if sel == nil {
		return 0, false
	}
	if sel.Op != pg_query.SetOperation_SETOP_NONE {
		return selectWidth(sel.Larg)
	}
	if len(sel.ValuesLists) > 0 {
		return len(sel.ValuesLists[0].GetList().GetItems()), true
	}
	for _, item := range sel.TargetList {
		if ref := item.GetResTarget().GetVal().GetColumnRef(); ref != nil && ref.Fields[len(ref.Fields)-1].GetAStar() != nil {
			return 0, false
		}
	}
	return len(sel.TargetList), true
}

// materialize is an UPDATE's materialising query for its FROM list (with
// its WHERE) and lock: the row's ctid, the row as it is, the new values,
// then extra (a select list's tail, ", ..."; never with a sub-select).
func (s setList) materialize(t *catalog.Table, alias, from, lock, extra string) string {
	if len(s.subselects) == 0 {
		return fmt.Sprintf("SELECT %s.ctid, %s.*, %s%s FROM %s ORDER BY %s %s OF %s",
			alias, alias, strings.Join(s.values, ", "), extra, from, keyOrder(t, alias), lock, alias)
	}
	inner := []string{alias + ".ctid AS pgrules_ctid", alias + ".*"}
	outer := []string{"pgrules_x.pgrules_ctid"}
	for _, c := range t.Columns {
		outer = append(outer, "pgrules_x."+sqltext.Ident(c.Name))
	}
	for i, v := range s.values {
		if s.fromSubselect[i] {
			outer = append(outer, v)
			continue
		}
		inner = append(inner, fmt.Sprintf("%s AS pgrules_v%d", v, i+1))
		outer = append(outer, fmt.Sprintf("pgrules_x.pgrules_v%d", i+1))
	}
	for i, q := range s.subselects {
		inner = append(inner, fmt.Sprintf("%s AS pgrules_a%d", q, i+1))
	}
	return fmt.Sprintf("SELECT %s FROM (SELECT %s FROM %s ORDER BY %s %s OF %s) AS pgrules_x",
		strings.Join(outer, ", "), strings.Join(inner, ", "), from, keyOrder(t, alias), lock, alias)
}
