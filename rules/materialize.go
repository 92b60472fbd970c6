package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
)

// parentsJoined are the parents an insert's derivations read directly
// (copies, formulas of row.parent.column): the materialising query fetches
// them with the rows, saving a round trip.
func (r *runner) parentsJoined(tr *tableRules, w *writeStmt) []*catalog.ForeignKey {
	if w.verb != verbInsert {
		return nil
	}
	var out []*catalog.ForeignKey
	for _, path := range tr.derivePaths.paths {
		if len(path) == 1 {
			out = append(out, path[0])
		}
	}
	return out
}

// joinParents wraps an insert's materialising query so that each row comes
// with its parent through each foreign key (its ctid and columns, NULL
// when there is none), read with lock ("" for none).
func joinParents(w *writeStmt, materialize string, fks []*catalog.ForeignKey, lock string) string {
	pos := make(map[string]int)
	names := make([]string, len(w.insertCols))
	for i, c := range w.insertCols {
		pos[c.Name] = i + 1
		names[i] = fmt.Sprintf("c%d", i+1)
	}
	if lock != "" {
		lock = " " + lock
	}
	var cols, joins []string
	for i, fk := range fks {
		alias := fmt.Sprintf("pgrules_p%d", i+1)
		conds := make([]string, len(fk.Columns))
		for j, c := range fk.Columns {
			conds[j] = fmt.Sprintf("p.%s = pgrules_m.c%d", sqltext.Ident(fk.ParentColumns[j]), pos[c])
		}
		cols = append(cols, ", "+alias+".*")
		joins = append(joins, fmt.Sprintf(" LEFT JOIN LATERAL (SELECT p.ctid, p.* FROM %s p WHERE %s%s) %s ON true",
			quoteIdentQualified(fk.Parent), strings.Join(conds, " AND "), lock, alias))
	}
	return "SELECT pgrules_m.*" + strings.Join(cols, "") + " FROM (" + materialize + ") pgrules_m(" + strings.Join(names, ", ") + ")" + strings.Join(joins, "")
}

// parentLock is how the parents a table's derivations read are locked. A
// formula reading a parent column is recomputed on the children that a
// change of that column finds; the parents are share-locked, so that such
// a change concurrent with the write either waits for it and then finds
// its rows, or runs first and the write reads its value.
func parentLock(tr *tableRules) string {
	if tr.parentFormulas {
		return "FOR SHARE"
	}
	return ""
}

// quoteIdentQualified quotes a "schema.table" name.
func quoteIdentQualified(name string) string {
	schema, table, _ := strings.Cut(name, ".")
	return sqltext.Ident(schema) + "." + sqltext.Ident(table)
}

func indexOf(t *catalog.Table) map[string]int {
	m := make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		m[c.Name] = i
	}
	return m
}

// refuseDerivedSet fails an UPDATE that assigns a column a sum, count,
// min, max or formula derives: its value is the rule's, and taking the
// client's would leave it wrong. (A copy may be set: its value is the
// parent's at insert time, a default the client may change.)
func (r *runner) refuseDerivedSet(tr *tableRules, cols []*catalog.Column) error {
	for _, c := range cols {
		if d := tr.derived[c.Name]; d != nil && d.Rule.Kind != catalog.Copy {
			e := pgerr.New(pgerr.GeneratedAlways, "column %q of table %s is derived by rule %q (%s) and cannot be set", c.Name, catalog.ShortName(tr.t.QualifiedName()), d.Rule.Name, d.Rule.Kind)
			e.Schema, e.Table, e.Column = tr.t.Schema, tr.t.Name, c.Name
			e.Hint = "Change what the rule reads instead; pgrules.rebuild() recomputes derived columns."
			return e
		}
	}
	return nil
}

// materialize runs w's materialising query and returns the row changes it
// gives: the rows to insert, or the rows to update or delete, locked, with
// their new values.
func (r *runner) materialize(tr *tableRules, w *writeStmt, p clientParams, resultFormats []int16) ([]*change, error) {
	materialize, joined := w.materializeSQL(len(p.values)), r.parentsJoined(tr, w)
	if len(joined) > 0 {
		materialize = joinParents(w, materialize, joined, parentLock(tr))
	}
	base := 1 + len(w.table.Columns) + len(w.setCols)
	var writeFormats, formats []int16
	if w.from != nil {
		var err error
		if writeFormats, formats, err = w.from.formats(w, resultFormats, base); err != nil {
			return nil, r.fail(asPgError(err))
		}
	}
	res, err := r.clientStatement(materialize, w.params(p), formats, w.literals...)
	if err != nil {
		return nil, err
	}
	if w.from != nil {
		fields := res.Fields[base:]
		r.returned = &returnedRun{w: w, fields: fields, formats: writeFormats,
			plan: w.from.plan(w.from.starCols(fields, len(w.table.Columns)), len(w.table.Columns))}
	}
	var changes []*change
	switch w.verb {
	case verbInsert:
		for _, vals := range res.Rows {
			text := make([][]byte, len(w.table.Columns))
			for i, c := range w.insertCols {
				text[tr.index[c.Name]] = vals[i]
			}
			rw := newRow(w.table, nil, text)
			at := len(w.insertCols)
			for _, fk := range joined {
				parent := r.snap.Tables[fk.Parent]
				if vals[at] == nil {
					rw.vals[fk.Accessor] = nil
				} else {
					rw.vals[fk.Accessor] = newRow(parent, vals[at], vals[at+1:at+1+len(parent.Columns)]).vals
				}
				at += 1 + len(parent.Columns)
			}
			changes = append(changes, &change{verb: verbInsert, new: rw})
		}
	case verbUpdate:
		if err := r.refuseDerivedSet(tr, w.setCols); err != nil {
			return nil, err
		}
		seen := make(map[string]bool, len(res.Rows))
		n := len(w.table.Columns)
		for _, vals := range res.Rows {
			if seen[string(vals[0])] {
				continue // UPDATE ... FROM joined the row more than once
			}
			seen[string(vals[0])] = true
			old := newRow(w.table, vals[0], vals[1:1+n])
			nw := old.clone(w.table)
			var from [][]byte
			if w.from != nil {
				from = vals[base:]
			}
			for i, c := range w.setCols {
				j := tr.index[c.Name]
				nw.text[j] = vals[1+n+i]
				v, err := compiler.ParseValue(c.Kind, nw.text[j])
				if err != nil {
					v = string(nw.text[j])
				}
				nw.vals[c.Name] = v
			}
			changes = append(changes, &change{verb: verbUpdate, old: old, new: nw, from: from})
		}
	case verbDelete:
		seen := make(map[string]bool, len(res.Rows))
		for _, vals := range res.Rows {
			if seen[string(vals[0])] {
				continue
			}
			seen[string(vals[0])] = true
			ch := &change{verb: verbDelete, old: newRow(w.table, vals[0], vals[1:1+len(w.table.Columns)])}
			if w.from != nil {
				ch.from = vals[base:]
			}
			changes = append(changes, ch)
		}
	}
	return changes, nil
}

// writeSQL is the statement that writes the client's rows, its parameters
// after the client's n, and what an update returns as each row's key (its
// ctid before the update).
func writeSQL(tr *tableRules, w *writeStmt, changes []*change, n int) (sql string, arrays [][]byte, okey string) {
	t := w.table
	// A single row is written with scalar parameters: cheaper for the
	// server than joining arrays.
	one := len(changes) == 1
	okey = "pgrules_v.pgrules_k"
	switch {
	case one && w.verb == verbInsert:
		cols := make([]string, len(w.insertCols))
		vals := make([]string, len(w.insertCols))
		for i, c := range w.insertCols {
			cols[i] = sqltext.Ident(c.Name)
			vals[i] = fmt.Sprintf("CAST($%d AS %s)", n+i+1, sqltext.ValueType(c))
			arrays = append(arrays, changes[0].new.text[tr.index[c.Name]])
		}
		sql = fmt.Sprintf("INSERT INTO %s AS %s (%s) %s VALUES (%s) %s",
			sqltext.Table(t), w.alias, strings.Join(cols, ", "), w.overriding, strings.Join(vals, ", "), w.conflict)
	case one && w.verb == verbUpdate:
		cols := changedColumns(tr, changes)
		for _, c := range w.setCols {
			if !slices.Contains(cols, tr.index[c.Name]) {
				cols = append(cols, tr.index[c.Name])
			}
		}
		slices.Sort(cols)
		arrays = append(arrays, changes[0].old.ctid)
		okey = fmt.Sprintf("CAST($%d AS text)", n+1)
		sets := make([]string, len(cols))
		for i, j := range cols {
			c := t.Columns[j]
			sets[i] = fmt.Sprintf("%s = CAST($%d AS %s)", sqltext.Ident(c.Name), n+i+2, sqltext.ValueType(c))
			arrays = append(arrays, changes[0].new.text[j])
		}
		sql = fmt.Sprintf("UPDATE %s AS %s SET %s WHERE %s.ctid = CAST($%d AS tid)",
			sqltext.Table(t), w.alias, strings.Join(sets, ", "), w.alias, n+1)
	case one && w.verb == verbDelete:
		arrays = append(arrays, changes[0].old.ctid)
		sql = fmt.Sprintf("DELETE FROM %s AS %s WHERE %s.ctid = CAST($%d AS tid)", sqltext.Table(t), w.alias, w.alias, n+1)
	case w.verb == verbInsert:
		cols := make([]string, len(w.insertCols))
		casts := make([]string, len(w.insertCols))
		names := make([]string, len(w.insertCols))
		for i, c := range w.insertCols {
			cols[i] = sqltext.Ident(c.Name)
			casts[i] = fmt.Sprintf("CAST(v.c%d AS %s)", i+1, sqltext.ValueType(c))
			names[i] = fmt.Sprintf("c%d", i+1)
			vals := make([][]byte, len(changes))
			for j, ch := range changes {
				vals[j] = ch.new.text[tr.index[c.Name]]
			}
			arrays = append(arrays, textArray(vals))
		}
		params := make([]string, len(arrays))
		for i := range arrays {
			params[i] = fmt.Sprintf("$%d::text[]", n+i+1)
		}
		sql = fmt.Sprintf("INSERT INTO %s AS %s (%s) %s SELECT %s FROM %s WITH ORDINALITY AS v(%s, pgrules_ord) ORDER BY pgrules_ord %s",
			sqltext.Table(t), w.alias, strings.Join(cols, ", "), w.overriding, strings.Join(casts, ", "), unnestFrom(params...), strings.Join(names, ", "), w.conflict)
	case w.verb == verbUpdate:
		cols := changedColumns(tr, changes)
		for _, c := range w.setCols {
			if !slices.Contains(cols, tr.index[c.Name]) {
				cols = append(cols, tr.index[c.Name])
			}
		}
		slices.Sort(cols)
		ctids := make([][]byte, len(changes))
		for i, ch := range changes {
			ctids[i] = ch.old.ctid
		}
		arrays = append(arrays, textArray(ctids))
		sets := make([]string, len(cols))
		names := []string{"pgrules_k"}
		for i, j := range cols {
			c := t.Columns[j]
			sets[i] = fmt.Sprintf("%s = CAST(pgrules_v.pgrules_c%d AS %s)", sqltext.Ident(c.Name), i+1, sqltext.ValueType(c))
			names = append(names, fmt.Sprintf("pgrules_c%d", i+1))
			vals := make([][]byte, len(changes))
			for k, ch := range changes {
				vals[k] = ch.new.text[j]
			}
			arrays = append(arrays, textArray(vals))
		}
		params := make([]string, len(arrays))
		for i := range arrays {
			params[i] = fmt.Sprintf("$%d::text[]", n+i+1)
		}
		sql = fmt.Sprintf("UPDATE %s AS %s SET %s FROM %s AS pgrules_v(%s) WHERE %s.ctid = ANY($%d::text[]::tid[]) AND %s.ctid = CAST(pgrules_v.pgrules_k AS tid)",
			sqltext.Table(t), w.alias, strings.Join(sets, ", "), unnestFrom(params...), strings.Join(names, ", "), w.alias, n+1, w.alias)
	case w.verb == verbDelete:
		ctids := make([][]byte, len(changes))
		for i, ch := range changes {
			ctids[i] = ch.old.ctid
		}
		arrays = append(arrays, textArray(ctids))
		sql = fmt.Sprintf("DELETE FROM %s AS %s WHERE %s.ctid = ANY($%d::text[]::tid[])", sqltext.Table(t), w.alias, w.alias, n+1)
	}
	return sql, arrays, okey
}
