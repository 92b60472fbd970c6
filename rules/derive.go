package rules

import (
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// changedColumns lists the columns whose value differs between old and new
// in any of the changes.
func changedColumns(tr *tableRules, changes []*change) []int {
	var out []int
	for i := range tr.t.Columns {
		for _, ch := range changes {
			if ch.old != nil && ch.new != nil && !bytes2Equal(ch.old.text[i], ch.new.text[i]) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func bytes2Equal(a, b []byte) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return string(a) == string(b)
}

// derive runs the copies and formulas of the table on the changed rows, in
// dependency order. On insert every derivation runs; on update a copy runs
// when its foreign key changed and a formula when a column it reads
// changed, in the row or, for parentChanged, in a parent.
func (r *runner) derive(tr *tableRules, changes []*change, parentChanged map[compiler.ColumnRef]bool) error {
	if len(tr.derivations) == 0 && !hasAggregateTargets(tr) {
		return nil
	}
	// Parents are needed by a new row, by a row whose copied foreign key
	// changed, and by every row when formulas read parents.
	var live []*row
	for _, ch := range changes {
		if ch.new != nil && (ch.verb == verbInsert || tr.parentFormulas || copyKeyChanged(tr, ch)) {
			live = append(live, ch.new)
		}
	}
	if err := r.loadParents(tr.derivePaths.paths, live, parentLock(tr)); err != nil {
		return err
	}
	if err := r.generate(tr, changes); err != nil {
		return err
	}
	for _, ch := range statementParents(tr, changes) {
		if ch.new == nil {
			continue
		}
		if ch.verb == verbInsert {
			// A new row has no children yet: its sums and counts are 0,
			// its min and max NULL.
			for col, d := range tr.derived {
				switch d.Rule.Kind {
				case catalog.Sum, catalog.Count:
					ch.new.set(tr.t, tr.index[col], 0)
				case catalog.Min, catalog.Max:
					ch.new.set(tr.t, tr.index[col], nil)
				}
			}
		}
		for _, d := range tr.derivations {
			i := tr.index[d.Rule.Column]
			switch d.Rule.Kind {
			case catalog.Copy:
				if ch.verb != verbInsert && !fkChanged(tr, d.FK, ch) {
					if triggerChanged(d.FK.Columns, ch) {
						// A trigger put the key back: so is the copy.
						ch.new.set(tr.t, i, ch.old.vals[d.Rule.Column])
					}
					continue
				}
				var v any
				if parent, _ := ch.new.vals[d.FK.Accessor].(map[string]any); parent != nil {
					v = parent[d.Rule.SourceColumn]
				}
				r.tracef("copy %s = %s", d.Target, traceValue(v))
				ch.new.set(tr.t, i, v)
			case catalog.Formula:
				if ch.verb != verbInsert && !r.readsChanged(tr, d, ch, parentChanged) {
					r.tracef("formula %s pruned: nothing it reads changed", d.Target)
					continue
				}
				v, err := d.Eval(compiler.Env{Row: ch.new.vals, Old: oldVals(ch), Verb: string(ch.verb)})
				if err != nil {
					return r.rowError(tr, err, ch.new)
				}
				r.tracef("formula %s = %s", d.Target, traceValue(v))
				ch.new.set(tr.t, i, v)
			}
		}
	}
	return nil
}

func copyKeyChanged(tr *tableRules, ch *change) bool {
	for _, d := range tr.derivations {
		if d.Rule.Kind == catalog.Copy && ch.old != nil && fkChanged(tr, d.FK, ch) {
			return true
		}
	}
	return false
}

func hasAggregateTargets(tr *tableRules) bool {
	for _, d := range tr.derived {
		if d.Rule.Kind.IsAggregate() {
			return true
		}
	}
	return false
}

func oldVals(ch *change) map[string]any {
	if ch.old == nil {
		return nil
	}
	return ch.old.vals
}

func fkChanged(tr *tableRules, fk *catalog.ForeignKey, ch *change) bool {
	for _, c := range fk.Columns {
		i := tr.index[c]
		if !bytes2Equal(ch.old.text[i], ch.new.text[i]) {
			return true
		}
	}
	return false
}

// readsChanged reports whether a column a rule reads changed in the row,
// or is among the parent columns that changed.
func (r *runner) readsChanged(tr *tableRules, d *compiler.Rule, ch *change, parentChanged map[compiler.ColumnRef]bool) bool {
	for _, ref := range d.Reads {
		// In a table that references itself a column read names the
		// row's own and its parent's alike: either changing counts.
		if parentChanged[ref] {
			return true
		}
		if ref.Table == tr.t.QualifiedName() && (!sameValue(ch.old.vals[ref.Column], ch.new.vals[ref.Column]) || triggerChanged([]string{ref.Column}, ch)) {
			return true
		}
	}
	return false
}

// loadParents attaches to each row the parent rows along the paths (read
// with lock, "" for none), one query per foreign key and level, the
// queries of a level in one round trip.
func (r *runner) loadParents(paths [][]*catalog.ForeignKey, rows []*row, lock string) error {
	if len(paths) == 0 || len(rows) == 0 {
		return nil
	}
	for level := 1; ; level++ {
		type load struct {
			path   []*catalog.ForeignKey
			owners []map[string]any // the rows (or parents) to attach to
		}
		var loads []load
		for _, p := range paths {
			if len(p) != level {
				continue
			}
			var owners []map[string]any
			for _, rw := range rows {
				m := rw.vals
				for _, fk := range p[:level-1] {
					m, _ = m[fk.Accessor].(map[string]any)
					if m == nil {
						break
					}
				}
				// A row keeps the parents loaded for it while its
				// foreign keys stay as they were.
				if _, loaded := m[p[level-1].Accessor]; m != nil && !loaded {
					owners = append(owners, m)
				}
			}
			loads = append(loads, load{p, owners})
		}
		if len(loads) == 0 {
			return nil
		}
		var sts []stmt.Statement
		var live []load
		for _, l := range loads {
			fk := l.path[len(l.path)-1]
			parent := r.snap.Tables[fk.Parent]
			keys := make([][][]byte, len(fk.Columns))
			seen := make(map[string]bool)
			for _, m := range l.owners {
				vals := parentKey(m, fk, parent)
				if vals == nil {
					m[fk.Accessor] = nil
					continue
				}
				k := string(joinKey(vals))
				if seen[k] {
					continue
				}
				seen[k] = true
				for i := range vals {
					keys[i] = append(keys[i], vals[i])
				}
			}
			if len(seen) == 0 {
				continue
			}
			sql, params := selectByKey(parent, fk.ParentColumns, keys, lock)
			sts = append(sts, stmt.Statement{SQL: sql, Params: params})
			live = append(live, l)
		}
		if len(sts) == 0 {
			continue
		}
		results, err := r.batch(sts)
		if err != nil {
			return err
		}
		for i, l := range live {
			fk := l.path[len(l.path)-1]
			parent := r.snap.Tables[fk.Parent]
			index := indexOf(parent)
			pidx := make([]int, len(fk.ParentColumns))
			for j, c := range fk.ParentColumns {
				pidx[j] = index[c]
			}
			byKey := make(map[string]map[string]any)
			for _, vals := range results[i].Rows {
				pr := newRow(parent, vals[0], vals[1:])
				byKey[keyOf(pr, pidx)] = pr.vals
			}
			for _, m := range l.owners {
				if vals := parentKey(m, fk, parent); vals != nil {
					m[fk.Accessor] = byKey[string(joinKey(vals))]
				}
			}
		}
	}
}

// parentKey is the text of the parent key a row's foreign key holds, as
// the parent's columns print it; nil when a column of it is NULL.
func parentKey(m map[string]any, fk *catalog.ForeignKey, parent *catalog.Table) [][]byte {
	vals := make([][]byte, len(fk.Columns))
	for i, c := range fk.Columns {
		if m[c] == nil {
			return nil
		}
		vals[i] = compiler.FormatValue(coerce(parent.Column(fk.ParentColumns[i]), m[c]))
	}
	return vals
}

func joinKey(vals [][]byte) []byte {
	return []byte(strings.Join(func() []string {
		s := make([]string, len(vals))
		for i, v := range vals {
			s[i] = string(v)
		}
		return s
	}(), "\x00"))
}

// selectByKey is a query for the rows of t whose columns cols hold one of
// the keys (one text array per column), with their ctid first; lock is
// appended (e.g. "FOR NO KEY UPDATE"), and with a lock the rows come in
// key order, so that concurrent writers lock them in the same order.
func selectByKey(t *catalog.Table, cols []string, keys [][][]byte, lock string) (string, [][]byte) {
	if len(keys) > 0 && len(keys[0]) == 1 {
		// One key: scalar parameters, and no order to keep.
		conds := make([]string, len(cols))
		params := make([][]byte, len(cols))
		for i, c := range cols {
			conds[i] = fmt.Sprintf("p.%s = CAST($%d AS %s)", sqltext.Ident(c), i+1, t.Column(c).Type)
			params[i] = keys[i][0]
		}
		sql := fmt.Sprintf("SELECT p.ctid, p.* FROM %s p WHERE %s", sqltext.Table(t), strings.Join(conds, " AND "))
		if lock != "" {
			sql += " " + lock + " OF p"
		}
		return sql, params
	}
	names := make([]string, len(cols))
	casts := make([]string, len(cols))
	args := make([]string, len(cols))
	ks := make([]string, len(cols))
	params := make([][]byte, len(cols))
	for i, c := range cols {
		names[i] = "p." + sqltext.Ident(c)
		casts[i] = fmt.Sprintf("CAST(k%d AS %s)", i+1, t.Column(c).Type)
		args[i] = fmt.Sprintf("$%d::text[]", i+1)
		ks[i] = fmt.Sprintf("k%d", i+1)
		params[i] = textArray(keys[i])
	}
	sql := fmt.Sprintf("SELECT p.ctid, p.* FROM %s p WHERE (%s) IN (SELECT %s FROM %s AS k(%s))",
		sqltext.Table(t), strings.Join(names, ", "), strings.Join(casts, ", "), unnestFrom(args...), strings.Join(ks, ", "))
	if lock != "" {
		sql += " ORDER BY " + strings.Join(names, ", ") + " " + lock + " OF p"
	}
	return sql, params
}
