package rules

import (
	"slices"
	"strings"

	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// The RETURNING list of an UPDATE ... FROM or a DELETE ... USING may name
// the columns of the FROM (USING) list: the row the table's row was
// joined with. The engine's own write does not join that list again (it
// would find other rows, or none). The materialising query, which joins
// it, selects those items for each row, from the join row whose values
// the SET list took; the write returns the items over the table's
// columns, and the client's rows are put together from both, in its
// order. An item reading both the table's and the list's columns is
// refused.

// returnedFrom is the layout of such a RETURNING list.
type returnedFrom struct {
	items []returnItem
	// selects are the materialising query's items for the list's side,
	// in order; a star item is followed by a marker column that ends it.
	selects []string
}

type returnItem struct {
	// write is the number of columns the item takes from the write's
	// RETURNING (the table's columns of a bare *, or one).
	write int
	// from is set for an item the materialising query gives: one column,
	// or, with star, the columns up to the marker (for a bare *, after
	// the table's own, which * there gives first).
	from, star bool
}

// endMarker names the column that ends a star item's columns in the
// materialising query.
const endMarker = "pgrules_end"

// returningOf analyses the statement's RETURNING list into w.returning,
// w.nReturning and, for a statement with a FROM or USING list whose
// RETURNING names it, w.from.
func (w *writeStmt) returningOf(list []sqlparse.ResTarget) error {
	if len(list) == 0 {
		return nil
	}
	t, alias := w.table, w.alias
	var parts []string
	from := &returnedFrom{}
	outside := false
	for _, item := range list {
		if item.Star {
			switch {
			case !w.joined || item.Qualifier != "" && sqltext.Ident(item.Qualifier) == alias:
				parts = append(parts, alias+".*")
				from.items = append(from.items, returnItem{write: len(t.Columns)})
			case item.Qualifier == "":
				parts = append(parts, alias+".*")
				from.items = append(from.items, returnItem{write: len(t.Columns), from: true, star: true})
				from.selects = append(from.selects, "*", "NULL AS "+endMarker)
				outside = true
			default:
				from.items = append(from.items, returnItem{from: true, star: true})
				from.selects = append(from.selects, item.SQL, "NULL AS "+endMarker)
				outside = true
			}
			continue
		}
		if w.joined && w.readsList(item.ColumnRefs) {
			if w.readsTable(item.ColumnRefs) {
				return compiler.WriteNotSupported(t, "a RETURNING item that reads both %s and the FROM or USING list is not supported; return their columns as items of their own", alias)
			}
			from.items = append(from.items, returnItem{from: true})
			from.selects = append(from.selects, item.SQL)
			outside = true
			continue
		}
		parts = append(parts, item.SQL)
		from.items = append(from.items, returnItem{write: 1})
	}
	w.returning = strings.Join(parts, ", ")
	for _, it := range from.items {
		w.nReturning += it.write
	}
	if outside {
		w.from = from
	}
	return nil
}

// readsList reports whether an expression, by its column references,
// names a column of the FROM or USING list: through another qualifier, or
// by a name the table has no column of. Inside a sub-select, where names
// may be its own, only qualifiers count.
func (w *writeStmt) readsList(refs []sqlparse.ColumnRef) bool {
	return slices.ContainsFunc(refs, func(ref sqlparse.ColumnRef) bool {
		if ref.Qualified {
			return sqltext.Ident(ref.Head) != w.alias
		}
		return !ref.InSubselect && w.table.Column(ref.Head) == nil && sqltext.Ident(ref.Head) != w.alias
	})
}

// readsTable reports whether an expression, by its column references,
// names a column of the table.
func (w *writeStmt) readsTable(refs []sqlparse.ColumnRef) bool {
	return slices.ContainsFunc(refs, func(ref sqlparse.ColumnRef) bool {
		if ref.Qualified {
			return sqltext.Ident(ref.Head) == w.alias
		}
		return !ref.InSubselect && (w.table.Column(ref.Head) != nil || sqltext.Ident(ref.Head) == w.alias)
	})
}

// selectList is the tail of the materialising query's select list for
// the list's side of RETURNING: ", ..."; "" without.
func (f *returnedFrom) selectList() string {
	if f == nil {
		return ""
	}
	return ", " + strings.Join(f.selects, ", ")
}

// source is where a column of the client's RETURNING comes from: the
// write's RETURNING, or the materialising query's columns after the
// engine's own (at), by position.
type source struct {
	write bool
	at    int
}

// plan lays the client's RETURNING columns out over their sources, given
// how many columns of the list each star item gives (in order) and n, the
// table's columns.
func (f *returnedFrom) plan(starCols []int, n int) []source {
	var out []source
	w, m, s := 0, 0, 0
	for _, it := range f.items {
		for range it.write {
			out = append(out, source{write: true, at: w})
			w++
		}
		switch {
		case it.star:
			if it.write > 0 {
				m += n // a bare * gives the table's own columns first
			}
			for range starCols[s] {
				out = append(out, source{at: m})
				m++
			}
			m++ // the marker
			s++
		case it.from:
			out = append(out, source{at: m})
			m++
		}
	}
	return out
}

// starCols counts the columns of each star item in the materialising
// query's columns after the engine's own, by its markers.
func (f *returnedFrom) starCols(fields []stmt.Field, n int) []int {
	var out []int
	at := 0
	for _, it := range f.items {
		switch {
		case it.star:
			if it.write > 0 {
				at += n
			}
			k := 0
			for at+k < len(fields) && fields[at+k].Name != endMarker {
				k++
			}
			out = append(out, k)
			at += k + 1
		case it.from:
			at++
		}
	}
	return out
}

// formats are the result formats for the write's RETURNING columns (as
// resultFormatsFor takes the client's) and for the materialising query
// (base columns of the engine's, in text, then the list's side), for the
// client's result formats. Their columns are counted before the query
// runs only when the client gives a format per column and there is at
// most one star item; otherwise only text is possible, and asking for
// binary is refused.
func (f *returnedFrom) formats(t *writeStmt, client []int16, base int) (write, materialize []int16, err error) {
	if !slices.Contains(client, 1) {
		return client, nil, nil
	}
	stars, known := 0, 0
	for _, it := range f.items {
		known += it.write
		if it.star {
			stars++
		} else if it.from {
			known++
		}
	}
	if len(client) == 1 && stars == 0 {
		client = slices.Repeat(client, known)
	}
	if len(client) == 1 || stars > 1 {
		return nil, nil, compiler.WriteNotSupported(t.table, "RETURNING * or list.* of the FROM or USING list in binary is supported only with a format per column, and one such item; name the columns")
	}
	starCols := []int{}
	if stars == 1 {
		starCols = append(starCols, len(client)-known)
	}
	n := len(t.table.Columns)
	materialize = make([]int16, base+f.width(starCols, n))
	for i, src := range f.plan(starCols, n) {
		if src.write {
			write = append(write, client[i])
		} else {
			materialize[base+src.at] = client[i]
		}
	}
	return write, materialize, nil
}

// width is the number of the materialising query's columns for the list's
// side, markers and a bare *'s table columns included.
func (f *returnedFrom) width(starCols []int, n int) int {
	k, s := 0, 0
	for _, it := range f.items {
		switch {
		case it.star:
			if it.write > 0 {
				k += n
			}
			k += starCols[s] + 1
			s++
		case it.from:
			k++
		}
	}
	return k
}

// returnedRun is what a write whose RETURNING names its FROM or USING list
// keeps of its materialising query until its own write: that query's
// fields for the list's side, the write's result formats, and the plan.
type returnedRun struct {
	w       *writeStmt
	fields  []stmt.Field
	formats []int16
	plan    []source
}

// rows puts the client's RETURNING rows together from the write's result
// (whose columns after k-1 are the row's old ctid, for an update, at k-1
// and its ctid and columns as stored, from k) and the changes by ctid.
func (ret *returnedRun) rows(res *stmt.Result, byCtid map[string]*change, k int, v verb) ([]stmt.Field, [][][]byte) {
	fields := make([]stmt.Field, len(ret.plan))
	for i, src := range ret.plan {
		if src.write {
			fields[i] = res.Fields[src.at]
		} else {
			fields[i] = ret.fields[src.at]
		}
	}
	rows := make([][][]byte, len(res.Rows))
	for r, vals := range res.Rows {
		key := vals[k]
		if v == verbUpdate {
			key = vals[k-1]
		}
		var from [][]byte
		if ch := byCtid[string(key)]; ch != nil {
			from = ch.from
		}
		row := make([][]byte, len(ret.plan))
		for i, src := range ret.plan {
			switch {
			case src.write:
				row[i] = vals[src.at]
			case src.at < len(from):
				row[i] = from[src.at]
			}
		}
		rows[r] = row
	}
	return fields, rows
}
