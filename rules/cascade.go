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

// parentChanged runs a parent's logic after its aggregates were adjusted:
// the formulas that read them, written back in one statement, and then
// the parent's own parents, constraints and children.
func (r *runner) parentChanged(tr *tableRules, changes []*change) error {
	if len(changes) == 0 {
		return nil
	}
	r.depth++
	defer func() { r.depth-- }()
	before := make([]*row, len(changes))
	for i, ch := range changes {
		before[i] = ch.new.clone(tr.t)
	}
	if err := r.derive(tr, changes, nil); err != nil {
		return err
	}
	if err := r.writeDerived(tr, changes, before, nil); err != nil {
		return err
	}
	return r.afterWrite(tr, changes)
}

// writeDerived writes back the columns the engine's derivations changed
// in rows already written (compared with before), in one statement, and
// takes the rows as stored; with ret, the client's RETURNING list is
// evaluated again over them.
func (r *runner) writeDerived(tr *tableRules, changes []*change, before []*row, ret *clientReturning) error {
	var cols []int
	for i := range tr.t.Columns {
		for j, ch := range changes {
			if !bytes2Equal(before[j].text[i], ch.new.text[i]) {
				cols = append(cols, i)
				break
			}
		}
	}
	if len(cols) == 0 {
		return nil
	}
	t := tr.t
	keyCols := t.PrimaryKey
	alias, n, nr := "x", 0, 0
	if ret != nil {
		alias, n, nr = ret.w.alias, len(ret.p.values), ret.w.nReturning
	}
	var where []string
	names := []string{}
	var params [][]byte
	if len(keyCols) == 0 {
		ctids := make([][]byte, len(changes))
		for i, ch := range changes {
			ctids[i] = ch.new.ctid
		}
		params = append(params, textArray(ctids))
		names = append(names, "k1")
		where = append(where, fmt.Sprintf("%s.ctid = ANY($%d::text[]::tid[]) AND %s.ctid = CAST(pgrules_v.k1 AS tid)", alias, n+1, alias))
	} else {
		for i, k := range keyCols {
			vals := make([][]byte, len(changes))
			for j, ch := range changes {
				vals[j] = ch.new.text[tr.index[k]]
			}
			params = append(params, textArray(vals))
			names = append(names, fmt.Sprintf("k%d", i+1))
			where = append(where, fmt.Sprintf("%s.%s = CAST(pgrules_v.k%d AS %s)", alias, sqltext.Ident(k), i+1, t.Column(k).Type))
		}
	}
	sets := make([]string, len(cols))
	for i, j := range cols {
		c := t.Columns[j]
		vals := make([][]byte, len(changes))
		for k, ch := range changes {
			vals[k] = ch.new.text[j]
		}
		params = append(params, textArray(vals))
		names = append(names, fmt.Sprintf("c%d", i+1))
		sets[i] = fmt.Sprintf("%s = CAST(pgrules_v.c%d AS %s)", sqltext.Ident(c.Name), i+1, sqltext.ValueType(c))
	}
	args := make([]string, len(params))
	for i := range params {
		args[i] = fmt.Sprintf("$%d::text[]", n+i+1)
	}
	// Each row comes back with the key it was found by (without a primary
	// key, its ctid before the update), then as stored.
	returning := fmt.Sprintf("pgrules_v.k1, %s.ctid, %s.*", alias, alias)
	if ret != nil {
		returning = ret.w.returning + ", " + returning
	}
	sql := fmt.Sprintf("UPDATE %s AS %s SET %s FROM %s AS pgrules_v(%s) WHERE %s RETURNING %s",
		sqltext.Table(t), alias, strings.Join(sets, ", "), unnestFrom(args...), strings.Join(names, ", "), strings.Join(where, " AND "), returning)
	res, err := r.writeAgain(sql, params, ret)
	if err != nil {
		return err
	}
	if len(res.Rows) != len(changes) {
		if name := t.BeforeRow["UPDATE"]; name != "" {
			return r.fail(beforeTriggerAgain(t, name, "skipped"))
		}
		return r.fail(pgerr.New(pgerr.InternalError, "pgrules wrote %d of %d rows of %s", len(res.Rows), len(changes), catalog.ShortName(t.QualifiedName())))
	}
	return r.takeRewritten(tr, changes, res.Rows, nr, ret)
}

// takeRewritten takes the rows writeDerived wrote as stored, each after
// nr columns of the client's RETURNING list and the key it was found by.
func (r *runner) takeRewritten(tr *tableRules, changes []*change, rows [][][]byte, nr int, ret *clientReturning) error {
	t, keyCols := tr.t, tr.t.PrimaryKey
	key := func(rw *row) string {
		if len(keyCols) == 0 {
			return string(rw.ctid)
		}
		return keyOf(rw, tr.columnIndexes(keyCols))
	}
	byKey := make(map[string]int, len(changes))
	for i, ch := range changes {
		byKey[key(ch.new)] = i
	}
	for _, vals := range rows {
		stored := newRow(t, vals[nr+1], vals[nr+2:])
		found := key(stored)
		if len(keyCols) == 0 {
			found = string(vals[nr])
		}
		i, ok := byKey[found]
		if !ok {
			return r.fail(pgerr.New(pgerr.InternalError, "pgrules lost track of a row of %s it updated", catalog.ShortName(t.QualifiedName())))
		}
		ch := changes[i]
		// The derived columns changed, not the foreign keys: the parents
		// loaded for the row still are its parents.
		for _, fk := range t.Parents {
			if p, ok := ch.new.vals[fk.Accessor]; ok {
				stored.vals[fk.Accessor] = p
			}
		}
		ch.new = stored
		if ret != nil {
			ret.out.Rows[i] = vals[:nr]
		}
	}
	return nil
}

// cascadeChildren runs the formulas of child rows that read a column of
// these rows that changed: the children are locked, recomputed and
// written, and their changes go up like any other.
func (r *runner) cascadeChildren(tr *tableRules, changes []*change) error {
	if len(tr.down) == 0 {
		return nil
	}
	changed := make(map[string]bool)
	for _, i := range changedColumns(tr, changes) {
		changed[tr.t.Columns[i].Name] = true
	}
	type group struct {
		child  *catalog.Table
		path   []*catalog.ForeignKey
		reason map[compiler.ColumnRef]bool
	}
	var groups []*group
	for _, cs := range tr.down {
		hit := false
		for _, c := range cs.columns {
			hit = hit || changed[c]
		}
		if !hit {
			continue
		}
		var g *group
		for _, x := range groups {
			if x.child == cs.child && slices.Equal(x.path, cs.path) {
				g = x
			}
		}
		if g == nil {
			g = &group{child: cs.child, path: cs.path, reason: make(map[compiler.ColumnRef]bool)}
			groups = append(groups, g)
		}
		for _, c := range cs.columns {
			if changed[c] {
				g.reason[compiler.ColumnRef{Table: tr.t.QualifiedName(), Column: c}] = true
			}
		}
	}
	for _, g := range groups {
		ctr := r.set.table(g.child.QualifiedName())
		last := g.path[len(g.path)-1]
		var updated []*row
		for _, ch := range changes {
			if ch.new != nil && ch.old != nil {
				updated = append(updated, ch.new)
			}
		}
		keys := distinctKeys(updated, tr.columnIndexes(last.ParentColumns))
		if keys == nil {
			continue
		}
		sql, params := childrenSQL(r.snap, g.child, g.path, keys)
		res, err := r.query(sql, params)
		if err != nil {
			return err
		}
		if len(res.Rows) == 0 {
			continue
		}
		r.tracef("%d row(s) of %s read changed columns of %s", len(res.Rows), catalog.ShortName(g.child.QualifiedName()), catalog.ShortName(tr.t.QualifiedName()))
		r.depth++
		kids := make([]*change, len(res.Rows))
		before := make([]*row, len(res.Rows))
		for i, vals := range res.Rows {
			old := newRow(g.child, vals[0], vals[1:])
			kids[i] = &change{verb: verbUpdate, old: old, new: old.clone(g.child)}
			before[i] = old
		}
		err = r.derive(ctr, kids, g.reason)
		if err == nil {
			err = r.writeDerived(ctr, kids, before, nil)
		}
		if err == nil {
			err = r.afterWrite(ctr, kids)
		}
		r.depth--
		if err != nil {
			return err
		}
	}
	return nil
}

// distinctKeys collects the distinct non-NULL values of the columns idx of
// the rows, one slice per column (the text arrays of a query by key); nil
// when there are none.
func distinctKeys(rows []*row, idx []int) [][][]byte {
	keys := make([][][]byte, len(idx))
	seen := make(map[string]bool)
	for _, rw := range rows {
		k := keyOf(rw, idx)
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		for i, j := range idx {
			keys[i] = append(keys[i], rw.text[j])
		}
	}
	if len(seen) == 0 {
		return nil
	}
	return keys
}

// childrenSQL selects, locked in key order, the rows of child whose path
// of foreign keys leads to one of the keys of its last table.
func childrenSQL(snap *catalog.Snapshot, child *catalog.Table, path []*catalog.ForeignKey, keys [][][]byte) (string, [][]byte) {
	from := sqltext.Table(child) + " c"
	alias := "c"
	for i, fk := range path[:len(path)-1] {
		pa := fmt.Sprintf("p%d", i+1)
		from += fmt.Sprintf(" JOIN %s %s ON %s", sqltext.Table(snap.Tables[fk.Parent]), pa, sqltext.KeyMatch(fk, alias, pa))
		alias = pa
	}
	last := path[len(path)-1]
	parent := snap.Tables[last.Parent]
	names := make([]string, len(last.Columns))
	casts := make([]string, len(last.Columns))
	args := make([]string, len(last.Columns))
	ks := make([]string, len(last.Columns))
	params := make([][]byte, len(last.Columns))
	for i, c := range last.Columns {
		names[i] = alias + "." + sqltext.Ident(c)
		casts[i] = fmt.Sprintf("CAST(k%d AS %s)", i+1, parent.Column(last.ParentColumns[i]).Type)
		args[i] = fmt.Sprintf("$%d::text[]", i+1)
		ks[i] = fmt.Sprintf("k%d", i+1)
		params[i] = textArray(keys[i])
	}
	order := keyOrder(child, "c")
	return fmt.Sprintf("SELECT c.ctid, c.* FROM %s WHERE (%s) IN (SELECT %s FROM %s AS k(%s)) ORDER BY %s FOR NO KEY UPDATE OF c",
		from, strings.Join(names, ", "), strings.Join(casts, ", "), unnestFrom(args...), strings.Join(ks, ", "), order), params
}

// cascadeDeletes runs, before rows are deleted, the rules of the rows
// that PostgreSQL would delete or set to NULL with them (ON DELETE
// CASCADE, SET NULL, SET DEFAULT), by deleting or updating those rows
// through the engine first.
func (r *runner) cascadeDeletes(tr *tableRules, changes []*change) error {
	if len(changes) == 0 {
		return nil
	}
	if r.depth > maxDepth {
		return r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "the deletes of %s cascaded %d levels deep", catalog.ShortName(tr.t.QualifiedName()), maxDepth))
	}
	name := tr.t.QualifiedName()
	if r.deleting == nil {
		r.deleting = make(map[string]map[string]bool)
		r.doomed = make(map[string]map[string]bool)
	}
	if r.deleting[name] == nil {
		r.deleting[name] = make(map[string]bool)
		r.doomed[name] = make(map[string]bool)
	}
	for _, ch := range changes {
		r.doomed[name][string(ch.old.ctid)] = true
		for _, fk := range tr.t.Children {
			r.deleting[name][keyOf(ch.old, tr.columnIndexes(fk.ParentColumns))] = true
		}
	}
	for _, fk := range tr.t.Children {
		if fk.OnDelete != 'c' && fk.OnDelete != 'n' && fk.OnDelete != 'd' {
			continue
		}
		ctr := r.set.table(fk.Child)
		if ctr == nil || !r.set.Involves(fk.Child) {
			continue
		}
		child := r.snap.Tables[fk.Child]
		old := make([]*row, len(changes))
		for i, ch := range changes {
			old[i] = ch.old
		}
		keys := distinctKeys(old, tr.columnIndexes(fk.ParentColumns))
		if keys == nil {
			continue
		}
		sql, params := childrenSQL(r.snap, child, []*catalog.ForeignKey{fk}, keys)
		if fk.OnDelete == 'c' {
			sql = strings.Replace(sql, "FOR NO KEY UPDATE", "FOR UPDATE", 1)
		}
		res, err := r.query(sql, params)
		if err != nil {
			return err
		}
		doomed := r.doomed[fk.Child]
		rows := slices.DeleteFunc(res.Rows, func(vals [][]byte) bool { return doomed[string(vals[0])] })
		if len(rows) == 0 {
			continue
		}
		r.tracef("%d row(s) of %s go with them (ON DELETE %s)", len(rows), catalog.ShortName(fk.Child), map[byte]string{'c': "CASCADE", 'n': "SET NULL", 'd': "SET DEFAULT"}[fk.OnDelete])
		r.depth++
		err = r.cascadeChild(ctr, fk, rows)
		r.depth--
		if err != nil {
			return err
		}
	}
	return nil
}

// cascadeChild deletes (ON DELETE CASCADE) or sets to NULL or their
// default (SET NULL, SET DEFAULT) the child rows of deleted parents,
// through the engine, so that their own rules run.
func (r *runner) cascadeChild(ctr *tableRules, fk *catalog.ForeignKey, rows [][][]byte) error {
	child := ctr.t
	var w *writeStmt
	changes := make([]*change, len(rows))
	for i, vals := range rows {
		old := newRow(child, vals[0], vals[1:])
		changes[i] = &change{verb: verbDelete, old: old}
	}
	if fk.OnDelete == 'c' {
		if err := r.cascadeDeletes(ctr, changes); err != nil {
			return err
		}
		w = &writeStmt{verb: verbDelete, table: child, alias: "c"}
	} else {
		w = &writeStmt{verb: verbUpdate, table: child, alias: "c"}
		var defaults []string
		for _, c := range fk.Columns {
			col := child.Column(c)
			w.setCols = append(w.setCols, col)
			if fk.OnDelete == 'd' {
				defaults = append(defaults, defaultSQL(col))
			}
		}
		var dv [][]byte
		if len(defaults) > 0 {
			res, err := r.query("SELECT "+strings.Join(defaults, ", "), nil)
			if err != nil {
				return err
			}
			dv = res.Rows[0]
		}
		for _, ch := range changes {
			ch.verb = verbUpdate
			ch.new = ch.old.clone(child)
			for i, c := range fk.Columns {
				var v []byte
				if dv != nil {
					v = dv[i]
				}
				j := ctr.index[c]
				ch.new.text[j] = v
				ch.new.vals[c], _ = compiler.ParseValue(child.Column(c).Kind, v)
			}
		}
		if err := r.derive(ctr, changes, nil); err != nil {
			return err
		}
	}
	_, written, err := r.clientWrite(ctr, w, changes, clientParams{}, nil)
	if err != nil {
		return err
	}
	return r.afterWrite(ctr, written)
}
