package rules

import (
	"fmt"
	"slices"
	"strings"

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
func targetColumn(t *catalog.Table, tc sqlparse.TargetColumn) (*catalog.Column, error) {
	if tc.Indirection {
		return nil, compiler.WriteNotSupported(t, "assigning to a part of column %q (an array element or a field) is not supported; assign the whole column", tc.Name)
	}
	c := t.Column(tc.Name)
	if c == nil {
		e := pgerr.New(pgerr.UndefinedColumn, "column %q of relation %q does not exist", tc.Name, t.Name)
		e.Schema, e.Table, e.Column = t.Schema, t.Name, tc.Name
		return nil, e
	}
	return c, nil
}

// assignments reads a SET list.
func assignments(t *catalog.Table, items []sqlparse.Assignment) (setList, error) {
	var s setList
	for i, a := range items {
		c, err := targetColumn(t, a.TargetColumn)
		if err != nil {
			return s, err
		}
		if slices.Contains(s.cols, c) {
			// PostgreSQL's own error, which it gives whatever the rows.
			return s, pgerr.New(pgerr.SyntaxError, "multiple assignments to same column %q", a.Name)
		}
		switch {
		case a.Subselect != nil:
			v, err := s.subselectValue(t, items[i:])
			if err != nil {
				return s, err
			}
			s.add(c, v, true)
		case a.OtherSource:
			return s, compiler.WriteNotSupported(t, "SET (...) = %s is not supported; assign each column", "a row that is neither (x, y) nor (SELECT ...)")
		case a.Default:
			s.add(c, defaultSQL(c), false)
		default:
			s.add(c, fmt.Sprintf("CAST((%s) AS %s)", a.Value, sqltext.ValueType(c)), false)
		}
	}
	return s, nil
}

func (s *setList) add(c *catalog.Column, value string, fromSubselect bool) {
	s.cols = append(s.cols, c)
	s.values = append(s.values, value)
	s.fromSubselect = append(s.fromSubselect, fromSubselect)
}

// subselectValue is the value of the column rest[0] of SET (...) = (SELECT
// ...); the first column's adds the sub-select's array, from the columns
// of rest, the SET list from that column on.
func (s *setList) subselectValue(t *catalog.Table, rest []sqlparse.Assignment) (string, error) {
	a := rest[0]
	if a.Colno == 1 {
		n := a.Subselect.Width
		if n < 0 {
			return "", compiler.WriteNotSupported(t, "SET (...) = (SELECT * ...) is not supported; name the sub-select's columns")
		}
		if n != a.Ncolumns || len(rest) < n {
			return "", pgerr.New(pgerr.SyntaxError, "number of columns does not match number of values")
		}
		elems := make([]string, n)
		names := make([]string, n)
		for k := range n {
			c := t.Column(rest[k].Name)
			if c == nil {
				return "", pgerr.New(pgerr.UndefinedColumn, "column %q of relation %q does not exist", rest[k].Name, t.Name)
			}
			elems[k] = fmt.Sprintf("CAST(CAST(pgrules_s.c%d AS %s) AS text)", k+1, sqltext.ValueType(c))
			names[k] = fmt.Sprintf("c%d", k+1)
		}
		s.subselects = append(s.subselects, fmt.Sprintf("(SELECT ARRAY[%s] FROM (%s) AS pgrules_s(%s))",
			strings.Join(elems, ", "), a.Subselect.SQL, strings.Join(names, ", ")))
	}
	c := t.Column(a.Name)
	return fmt.Sprintf("CAST(pgrules_x.pgrules_a%d[%d] AS %s)", len(s.subselects), a.Colno, sqltext.ValueType(c)), nil
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
