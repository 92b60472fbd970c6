package rules

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
	"github.com/shopspring/decimal"
)

// A client's write runs in these steps, set at a time (rules-api.md §5,
// DESIGN.md "A statement's way through"):
//
//  1. materialise: one query gives the rows the statement inserts (with
//     their defaults) or the rows it updates or deletes, locked, with
//     their new values;
//  2. derive: copies and formulas, in Go, in dependency order, each only
//     when something it reads changed;
//  3. write: one statement writes every row, returning what the client
//     asked for and each row as stored;
//  4. adjust: one statement per parent foreign key adds the deltas of the
//     sums and counts (min and max look again only when the extreme
//     leaves), returning each parent as it was and as it is; the parents'
//     own formulas run, and their changes go up the same way;
//  5. check the constraints of the rows;
//  6. cascade: formulas of child rows that read a changed parent column
//     run, and their changes go up again.
//  7. return: the client's RETURNING list is read again over the rows of
//     its own that steps 4 to 6 wrote again (rewritten.go).
//
// Each step is a round trip for all the rows of a table together, so a
// statement costs as many round trips as its rules are deep, whatever the
// number of rows.

// change is one row's change: old is nil for an insert, new for a delete.
type change struct {
	verb     verb
	old, new *row
	// from are the materialising query's columns for a RETURNING that
	// names the FROM or USING list (returning.go).
	from [][]byte
	// computed is, while the derivations are computed again from the row
	// a BEFORE ROW trigger stored (rederive), the row they were computed
	// from: what the trigger changed in it is as good as changed by the
	// update.
	computed *row
}

// runner runs one client statement's logic on the client's connection.
type runner struct {
	ctx  context.Context
	conn stmt.Conn
	s    *session
	set  *Set
	snap *catalog.Snapshot
	// deleting holds, per table, the keys of rows this statement deletes:
	// their children's deletions do not adjust them.
	deleting map[string]map[string]bool
	// doomed holds, per table, the ctids of the rows this statement
	// deletes: a row of a tree that is its own ancestor, or a child the
	// statement deletes itself, is not cascaded to again.
	doomed map[string]map[string]bool
	depth  int // nesting, for the trace
	// followed are the parents' changes of adjustments that ran in the
	// round trip of the write before (adjustment.follow), for
	// adjustParents to take; noFollow turns that off (an upsert's two
	// writes adjust once).
	followed map[*adjustment]followedChanges
	noFollow bool
	// c is the compiled catalog the statement runs with.
	c *compiled
	// log holds the rows the statement changed in tables with row events,
	// by outbox key in logIndex, for the row events at its end.
	log      []*logged
	logIndex map[string]*logged
	// failing are the rows of the client's statement, for its table's
	// failure events.
	failing *failing
	// returned is what the materialising query of the client's write gave
	// for a RETURNING that names its FROM or USING list.
	returned *returnedRun
	// rewritten follows the rows of the client's RETURNING while the
	// statement's logic runs (rewritten.go).
	rewritten *rewritten
}

// failing is the write a failure event sees: its table, verb and rows.
type failing struct {
	tr      *tableRules
	verb    verb
	changes []*change
}

// maxDepth bounds the chain of levels one statement may go through; rules
// whose changes do not settle stop there with an error.
const maxDepth = 64

func (r *runner) tracef(format string, args ...any) {
	if r.s.trace {
		r.conn.Notice(strings.Repeat("  ", r.depth) + fmt.Sprintf(format, args...))
	}
}

// query runs one of the engine's statements (text parameters, text
// results).
func (r *runner) query(sql string, params [][]byte) (*stmt.Result, error) {
	res, err := r.batch([]stmt.Statement{{SQL: sql, Params: params}})
	if len(res) == 0 {
		return nil, err
	}
	return res[0], err
}

// batch runs the engine's own statements in one round trip, prepared.
func (r *runner) batch(sts []stmt.Statement) ([]*stmt.Result, error) {
	return r.s.run(r.ctx, r.conn, sts, nil)
}

// runFlags say how run sends one statement.
type runFlags uint8

const (
	// unprepared marks a statement not worth preparing (built from a
	// client's text with its values in it).
	unprepared runFlags = 1 << iota
	// verbatim marks a client's or an event's own text, sent as it is:
	// it gets no guard header, since only the engine's own statements may
	// write tables with rules.
	verbatim
)

// run sends statements in one round trip and counts it. The engine's
// statements are prepared once per session and then run by name, so the
// server neither parses nor plans them again. Each statement the engine
// built, but for a SELECT (which writes nothing), begins with the guard
// header of the rules it was computed with (guard.go).
func (s *session) run(ctx context.Context, conn stmt.Conn, sts []stmt.Statement, flags []runFlags) ([]*stmt.Result, error) {
	s.trips++
	if s.hdr != s.preparedHdr {
		// Prepared with another header: the guard would refuse them.
		s.prepared, s.preparedHdr = nil, s.hdr
	}
	var fresh []string
	for i := range sts {
		st := &sts[i]
		var f runFlags
		if i < len(flags) {
			f = flags[i]
		}
		// A statement that brings its own header (the outbox's) keeps it.
		headed := f&verbatim == 0 && s.hdr != "" && st.SQL != "" && !strings.HasPrefix(st.SQL, "SELECT ") && !strings.HasPrefix(st.SQL, headerPrefix)
		// The key is the text without the header, which would make every
		// execution copy it; the parameter types are part of what was
		// prepared.
		key := st.SQL
		if headed {
			key = "\x01" + key
		}
		if len(st.ParamOIDs) > 0 {
			key += "\x00" + fmt.Sprint(st.ParamOIDs)
		}
		if name, ok := s.prepared[key]; ok && f&unprepared == 0 {
			st.Name, st.SQL = name, ""
			continue
		}
		if headed {
			st.SQL = s.hdr + st.SQL
		}
		if f&unprepared != 0 {
			continue
		}
		if len(s.prepared) >= maxPrepared {
			continue
		}
		s.named++
		st.Name = "pgrules_" + strconv.FormatInt(s.named, 10)
		fresh = append(fresh, key, st.Name)
	}
	res, err := conn.Batch(ctx, sts)
	if s.prepared == nil {
		s.prepared = make(map[string]string)
	}
	// A statement is known to be prepared when it completed; a name
	// whose Parse may or may not have run is never used again.
	for i := 0; i+1 < len(fresh); i += 2 {
		for j := range sts {
			if sts[j].Name == fresh[i+1] && j < len(res) {
				s.prepared[fresh[i]] = fresh[i+1]
			}
		}
	}
	return res, err
}

// maxPrepared bounds the statements the engine keeps prepared in a session.
const maxPrepared = 500

// clientParams are the client's parameters of st with their types, which
// the engine's statements built from it take first.
type clientParams struct {
	values  [][]byte
	formats []int16
	oids    []uint32
	// stable is set when the client's text carries no values of its own
	// (it has parameters): what the engine builds from it is worth
	// preparing.
	stable bool
}

// with returns the statement's parameters followed by the engine's (text
// arrays, or text values), in text format.
func (p clientParams) with(arrays ...[]byte) ([][]byte, []int16, []uint32) {
	values := append(slices.Clip(p.values), arrays...)
	var formats []int16
	if len(p.formats) > 0 {
		formats = append(slices.Clip(p.expanded().formats), make([]int16, len(arrays))...)
	}
	// The engine's own parameters are typed by the casts around them.
	oids := append(slices.Clip(p.oids), make([]uint32, len(arrays))...)
	return values, formats, oids
}

// flag is how run sends a statement built from the client's text.
func (p clientParams) flag() runFlags {
	if p.stable {
		return 0
	}
	return unprepared
}

// clientStatement runs SQL built from the client's statement with its
// parameters, and arrays of the engine's after them.
func (r *runner) clientStatement(sql string, p clientParams, resultFormats []int16, arrays ...[]byte) (*stmt.Result, error) {
	values, formats, oids := p.with(arrays...)
	res, err := r.s.run(r.ctx, r.conn, []stmt.Statement{{SQL: sql, Params: values, ParamFormats: formats, ParamOIDs: oids, ResultFormats: resultFormats}}, []runFlags{p.flag()})
	if len(res) == 0 {
		return nil, err
	}
	return res[0], err
}

// write runs one client write on a table with rules and returns what the
// client gets for it.
func (r *runner) write(w *writeStmt, p clientParams, resultFormats []int16) (*stmt.Result, error) {
	if r.failing != nil {
		return r.writeTable(w, p, resultFormats, false)
	}
	r.rewritten = &rewritten{w: w, p: p, formats: resultFormats, depth: r.depth + 1}
	out, err := r.writeTable(w, p, resultFormats, true)
	if err != nil {
		return nil, err
	}
	return out, r.readAgain()
}

// writeTable runs a write on a table with rules; top is set for the
// client's own statement.
func (r *runner) writeTable(w *writeStmt, p clientParams, resultFormats []int16, top bool) (*stmt.Result, error) {
	tr := r.set.table(w.table.QualifiedName())
	if tr == nil {
		tr = &tableRules{t: w.table, index: indexOf(w.table), derived: map[string]*Compiled{}}
	}
	r.tracef("%s on %s", strings.ToUpper(string(w.verb)), shortName(w.table.QualifiedName()))
	if top {
		r.failing = &failing{tr: tr, verb: w.verb}
	}
	r.depth++
	defer func() { r.depth-- }()
	if e := beforeRowWriteError(tr, w); e != nil {
		return nil, r.fail(e)
	}
	if r.inOneTrip(tr, w, p) {
		switch w.verb {
		case verbInsert:
			return r.insertOneTrip(tr, w, p, resultFormats, top)
		case verbUpdate:
			return r.updateOneTrip(tr, w, p, resultFormats, top)
		}
		return r.deleteOneTrip(tr, w, p, resultFormats, top)
	}
	changes, err := r.materialize(tr, w, p, resultFormats)
	if err != nil {
		return nil, err
	}
	r.tracef("%d row(s)", len(changes))
	if top {
		r.failing.changes = changes
	}
	if w.upsert != nil {
		return r.upsert(tr, w, changes, p, resultFormats)
	}
	if err := r.fire(tr, timingEarly, changes, nil, nil); err != nil {
		return nil, err
	}
	if w.verb == verbDelete {
		if err := r.cascadeDeletes(tr, changes); err != nil {
			return nil, err
		}
	} else if err := r.derive(tr, changes, nil); err != nil {
		return nil, err
	}
	if w.verb == verbInsert {
		if err := r.fire(tr, timingPreInsert, changes, nil, nil); err != nil {
			return nil, err
		}
	}
	if beforeRow(tr.t, w.verb) != "" {
		for _, ch := range changes {
			ch.computed = ch.new
		}
	}
	out, changes, err := r.clientWrite(tr, w, changes, p, resultFormats)
	if err != nil {
		return nil, err
	}
	if top && beforeRow(tr.t, w.verb) != "" {
		// The failure events see the rows written, not those a trigger
		// skipped.
		r.failing.changes = changes
	}
	if err := r.rederive(tr, w, changes, out, p, resultFormats); err != nil {
		return nil, err
	}
	r.returnedRows(w, out, changes)
	if err := r.afterWrite(tr, changes); err != nil {
		return nil, err
	}
	return out, nil
}

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
			conds[j] = fmt.Sprintf("p.%s = pgrules_m.c%d", quoteIdent(fk.ParentColumns[j]), pos[c])
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
	return quoteIdent(schema) + "." + quoteIdent(table)
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
			e := pgerr.New(pgerr.GeneratedAlways, "column %q of table %s is derived by rule %q (%s) and cannot be set", c.Name, shortName(tr.t.QualifiedName()), d.Rule.Name, d.Rule.Kind)
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
				v, err := ParseValue(c.Kind, nw.text[j])
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
			cols[i] = quoteIdent(c.Name)
			vals[i] = fmt.Sprintf("CAST($%d AS %s)", n+i+1, c.Type)
			arrays = append(arrays, changes[0].new.text[tr.index[c.Name]])
		}
		sql = fmt.Sprintf("INSERT INTO %s AS %s (%s) %s VALUES (%s) %s",
			qualified(t), w.alias, strings.Join(cols, ", "), w.overriding, strings.Join(vals, ", "), w.conflict)
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
			sets[i] = fmt.Sprintf("%s = CAST($%d AS %s)", quoteIdent(c.Name), n+i+2, c.Type)
			arrays = append(arrays, changes[0].new.text[j])
		}
		sql = fmt.Sprintf("UPDATE %s AS %s SET %s WHERE %s.ctid = CAST($%d AS tid)",
			qualified(t), w.alias, strings.Join(sets, ", "), w.alias, n+1)
	case one && w.verb == verbDelete:
		arrays = append(arrays, changes[0].old.ctid)
		sql = fmt.Sprintf("DELETE FROM %s AS %s WHERE %s.ctid = CAST($%d AS tid)", qualified(t), w.alias, w.alias, n+1)
	case w.verb == verbInsert:
		cols := make([]string, len(w.insertCols))
		casts := make([]string, len(w.insertCols))
		names := make([]string, len(w.insertCols))
		for i, c := range w.insertCols {
			cols[i] = quoteIdent(c.Name)
			casts[i] = fmt.Sprintf("CAST(v.c%d AS %s)", i+1, c.Type)
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
			qualified(t), w.alias, strings.Join(cols, ", "), w.overriding, strings.Join(casts, ", "), unnestFrom(params...), strings.Join(names, ", "), w.conflict)
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
			sets[i] = fmt.Sprintf("%s = CAST(pgrules_v.pgrules_c%d AS %s)", quoteIdent(c.Name), i+1, c.Type)
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
			qualified(t), w.alias, strings.Join(sets, ", "), unnestFrom(params...), strings.Join(names, ", "), w.alias, n+1, w.alias)
	case w.verb == verbDelete:
		ctids := make([][]byte, len(changes))
		for i, ch := range changes {
			ctids[i] = ch.old.ctid
		}
		arrays = append(arrays, textArray(ctids))
		sql = fmt.Sprintf("DELETE FROM %s AS %s WHERE %s.ctid = ANY($%d::text[]::tid[])", qualified(t), w.alias, w.alias, n+1)
	}
	return sql, arrays, okey
}

// clientWrite writes the client's rows in one statement that returns what
// the client asked for, and each row as stored, which replaces the
// engine's copy (the server may round, or a trigger change, a value).
func (r *runner) clientWrite(tr *tableRules, w *writeStmt, changes []*change, p clientParams, resultFormats []int16) (*stmt.Result, []*change, error) {
	t := w.table
	if len(changes) == 0 && w.returning == "" && w.from == nil {
		return &stmt.Result{Tag: tagOf(w.verb, 0)}, nil, nil
	}
	clientFormats := resultFormats
	ret := r.returned
	if w.from != nil && ret != nil && ret.w == w {
		clientFormats = ret.formats
	} else {
		ret = nil
	}
	n := len(p.values)
	sql, arrays, okey := writeSQL(tr, w, changes, n)
	// After the client's RETURNING list: for an update the row's ctid
	// before (to find its change), then the row as stored.
	k := w.nReturning
	extra := w.alias + ".ctid, " + w.alias + ".*"
	if w.verb == verbUpdate {
		extra = okey + ", " + extra
	}
	if w.returning != "" {
		sql += " RETURNING " + w.returning + ", " + extra
	} else {
		sql += " RETURNING " + extra
	}
	if w.verb == verbUpdate {
		k++ // the old ctid is read like a RETURNING column, then dropped
	}
	formats := resultFormatsFor(clientFormats, w.nReturning, 1+len(t.Columns)+k-w.nReturning)
	values, pformats, oids := p.with(arrays...)
	sts, err := r.lockParents(tr, changes)
	if err != nil {
		return nil, nil, r.fail(asPgError(err))
	}
	sts = append(sts, stmt.Statement{SQL: sql, Params: values, ParamFormats: pformats, ParamOIDs: oids, ResultFormats: formats})
	// The write's text holds the rows' values as parameters, not the
	// client's literals: it repeats with the statement's shape, and is
	// prepared like the engine's own.
	at := len(sts) - 1
	flags := make([]runFlags, len(sts))
	var follows []*adjustment
	// A BEFORE ROW trigger may change or skip the rows the follow
	// statements would read: adjustParents takes the rows as stored.
	if !r.noFollow && !w.doNothing && beforeRow(t, w.verb) == "" {
		for _, a := range tr.up {
			if st, ok := r.followStatement(tr, a, changes); ok {
				sts = append(sts, st)
				flags = append(flags, 0)
				follows = append(follows, a)
			}
		}
	}
	results, err := r.s.run(r.ctx, r.conn, sts, flags)
	if err != nil {
		return nil, nil, err
	}
	res := results[at]
	for i, a := range follows {
		if err := r.takeFollow(a, results[at+1+i].Rows); err != nil {
			return nil, nil, err
		}
	}
	out, written, gone, err := r.takeWritten(w, changes, res, k, ret)
	if err != nil || len(gone) == 0 {
		return out, written, err
	}
	rows, err := r.returnGone(w, gone, p, clientFormats)
	if err != nil {
		return nil, nil, err
	}
	out.Rows = append(out.Rows, rows...)
	return out, written, nil
}

// returnGone evaluates a DELETE's RETURNING list over rows that a cycle of
// ON DELETE CASCADE deleted before the statement reached them (see
// takeWritten), from the rows as they were: what PostgreSQL would have
// returned for them.
func (r *runner) returnGone(w *writeStmt, gone []*change, p clientParams, formats []int16) ([][][]byte, error) {
	t := w.table
	n := len(p.values)
	arrays := make([][]byte, len(t.Columns))
	args, names, cols := make([]string, len(t.Columns)), make([]string, len(t.Columns)), make([]string, len(t.Columns))
	for j, c := range t.Columns {
		vals := make([][]byte, len(gone))
		for i, ch := range gone {
			vals[i] = ch.old.text[j]
		}
		arrays[j] = textArray(vals)
		args[j] = fmt.Sprintf("$%d::text[]", n+j+1)
		names[j] = fmt.Sprintf("k%d", j+1)
		cols[j] = fmt.Sprintf("CAST(k%d AS %s) AS %s", j+1, c.Type, quoteIdent(c.Name))
	}
	sql := fmt.Sprintf("SELECT %s FROM (SELECT %s FROM %s AS pgrules_k(%s)) AS %s",
		w.returning, strings.Join(cols, ", "), unnestFrom(args...), strings.Join(names, ", "), w.alias)
	values, pformats, oids := p.with(arrays...)
	res, err := r.batch([]stmt.Statement{{SQL: sql, Params: values, ParamFormats: pformats, ParamOIDs: oids,
		ResultFormats: resultFormatsFor(formats, w.nReturning, 0)}})
	if err != nil {
		return nil, err
	}
	return res[0].Rows, nil
}

// takeWritten is what the client gets of the write's result (its RETURNING
// list in the first k columns), and the changes of the rows written, each
// as stored: a row a BEFORE ROW trigger or ON CONFLICT DO NOTHING skipped
// is not among them. gone are the rows of a DELETE with RETURNING that the
// statement deleted before reaching them, whose RETURNING rows are still
// to be made.
func (r *runner) takeWritten(w *writeStmt, changes []*change, res *stmt.Result, k int, ret *returnedRun) (out *stmt.Result, written, gone []*change, err error) {
	t := w.table
	out = &stmt.Result{Tag: tagOf(w.verb, len(res.Rows))}
	if w.returning != "" {
		out.Fields = res.Fields[:w.nReturning]
		out.Rows = make([][][]byte, len(res.Rows))
	}
	byCtid := make(map[string]*change, len(changes))
	if w.verb != verbInsert {
		for _, ch := range changes {
			byCtid[string(ch.old.ctid)] = ch
		}
	}
	written = make([]*change, 0, len(res.Rows))
	for i, vals := range res.Rows {
		if w.returning != "" {
			out.Rows[i] = vals[:w.nReturning]
		}
		stored := newRow(t, vals[k], vals[k+1:])
		switch w.verb {
		case verbInsert:
			written = append(written, &change{verb: verbInsert, new: stored})
		case verbUpdate:
			ch := byCtid[string(vals[k-1])]
			if ch == nil {
				return nil, nil, nil, r.fail(pgerr.New(pgerr.InternalError, "pgrules lost track of a row of %s it updated", shortName(t.QualifiedName())))
			}
			ch.new = stored
			written = append(written, ch)
		case verbDelete:
			if ch := byCtid[string(stored.ctid)]; ch != nil {
				written = append(written, ch)
			}
		}
	}
	if w.verb == verbDelete && len(written) < len(changes) && beforeRow(t, verbDelete) == "" {
		// The rows are locked: those the delete did not find went with a
		// row the engine deleted first, a child of theirs in a cycle of a
		// table that references itself (PostgreSQL's ON DELETE CASCADE).
		// The statement deleted them, as it would have without the engine.
		if w.returning != "" {
			if ret != nil {
				e := notSupported(t, "DELETE ... USING ... RETURNING the USING list, of rows that a cycle of ON DELETE CASCADE in %s deletes before the statement reaches them", shortName(t.QualifiedName()))
				e.Hint = "Return only the table's columns, or read the rows before deleting them."
				return nil, nil, nil, r.fail(e)
			}
			found := make(map[*change]bool, len(written))
			for _, ch := range written {
				found[ch] = true
			}
			for _, ch := range changes {
				if !found[ch] {
					gone = append(gone, ch)
				}
			}
		}
		written, out.Tag = changes, tagOf(verbDelete, len(changes))
	}
	if ret != nil {
		out.Fields, out.Rows = ret.rows(res, byCtid, k, w.verb)
	}
	if w.doNothing && len(written) < len(changes) {
		r.tracef("%d row(s) skipped by ON CONFLICT DO NOTHING", len(changes)-len(written))
	}
	return out, written, gone, nil
}

// lockParents returns the statement that locks, before the rows are
// written, the parents their aggregates will adjust, in key order, with the
// lock the adjustment takes; it runs in the write's round trip. Locked
// first, the parents are found locked by the transaction itself when the
// server checks the rows' foreign keys (FOR KEY SHARE), which otherwise,
// with another writer queued on the parent, deadlock. Nil when no parent
// needs a lock it does not hold already. A filter that fails on a row
// fails the statement here, before the write (whose round trip may
// compute the same filter in SQL, and fail without naming the rule).
func (r *runner) lockParents(tr *tableRules, changes []*change) ([]stmt.Statement, error) {
	var out []stmt.Statement
	for _, a := range tr.up {
		if a.err != nil {
			continue
		}
		deltas, err := r.deltas(tr, a, changes)
		if err != nil {
			return nil, err
		}
		if len(deltas) == 0 {
			continue
		}
		keys := make([][][]byte, len(a.fk.ParentColumns))
		var taken []string
		for _, d := range deltas {
			k := a.parent.QualifiedName() + "\x00" + string(joinKey(d.key))
			if r.s.tx.locked[k] {
				continue
			}
			taken = append(taken, k)
			for i := range keys {
				keys[i] = append(keys[i], d.key[i])
			}
		}
		if len(taken) == 0 {
			continue
		}
		sql, params := selectByKey(a.parent, a.fk.ParentColumns, keys, "FOR NO KEY UPDATE")
		out = append(out, stmt.Statement{SQL: sql, Params: params})
		if r.s.tx.locked == nil {
			r.s.tx.locked = make(map[string]bool)
		}
		// Marked now: should the batch fail, the transaction has failed
		// with it and the marks go with the transaction.
		for _, k := range taken {
			r.s.tx.locked[k] = true
		}
	}
	return out, nil
}

// followStatement is the adjustment a follows the write with, in its round
// trip (see adjustment.follow); false when a has none or the changes need
// the engine's usual adjustment.
func (r *runner) followStatement(tr *tableRules, a *adjustment, changes []*change) (stmt.Statement, bool) {
	if a.follow == "" || a.err != nil {
		return stmt.Statement{}, false
	}
	pkIdx := tr.columnIndexes(tr.t.PrimaryKey)
	pks := make([][][]byte, len(pkIdx))
	fkIdx := tr.columnIndexes(a.fk.Columns)
	olds := make([][][]byte, len(fkIdx)+len(a.aggs))
	skip := r.deleting[a.parent.QualifiedName()]
	for _, ch := range changes {
		if ch.new != nil {
			for i, j := range pkIdx {
				if ch.new.text[j] == nil {
					return stmt.Statement{}, false
				}
				pks[i] = append(pks[i], ch.new.text[j])
			}
		}
		if ch.old == nil {
			continue
		}
		k := keyOf(ch.old, fkIdx)
		if k == "" || skip[k] {
			continue
		}
		for i, j := range fkIdx {
			olds[i] = append(olds[i], ch.old.text[j])
		}
		for i, c := range a.aggs {
			in, err := c.Counts(ch.old.vals)
			if err != nil {
				return stmt.Statement{}, false // the usual way reports it
			}
			var v any = decimal.Zero
			if in {
				v = addend(c, ch.old.vals[c.Rule.SourceColumn])
			}
			olds[len(fkIdx)+i] = append(olds[len(fkIdx)+i], FormatValue(v))
		}
	}
	if len(skip) > 0 && len(pks) > 0 && len(pks[0]) > 0 {
		return stmt.Statement{}, false // new rows of parents being deleted
	}
	params := make([][]byte, 0, len(pks)+len(olds))
	for _, col := range pks {
		params = append(params, textArray(col))
	}
	for _, col := range olds {
		params = append(params, textArray(col))
	}
	if r.followed == nil {
		r.followed = make(map[*adjustment]followedChanges)
	}
	sql := a.follow
	if a.chained != "" {
		sql = a.chained
	}
	return stmt.Statement{SQL: sql, Params: params}, true
}

// takeFollow keeps the parents' changes a follow statement returned, for
// adjustParents; a chained one returns those of the parents' parents too,
// as text arrays tagged with their level.
func (r *runner) takeFollow(a *adjustment, rows [][][]byte) error {
	if a.chained == "" {
		r.followed[a] = followedChanges{changes: r.followChanges(a, rows, 0)}
		return nil
	}
	return r.takeLevels(a, rows)
}

// takeLevels is takeFollow for rows tagged with their level: a's own
// parents, then a.chain's.
func (r *runner) takeLevels(a *adjustment, rows [][][]byte) error {
	levels := make([][][][]byte, 1+len(a.chain))
	for _, vals := range rows {
		level, err := strconv.Atoi(string(vals[0]))
		if err != nil || level < 0 || level >= len(levels) {
			return r.fail(pgerr.New(pgerr.InternalError, "pgrules read a malformed adjustment level %q", vals[0]))
		}
		row, err := parseTextArray(vals[1])
		if err != nil {
			return r.fail(pgerr.New(pgerr.InternalError, "pgrules read a malformed adjusted row: %w", err))
		}
		levels[level] = append(levels[level], row)
	}
	first := r.followChanges(a, levels[0], 0)
	r.followed[a] = followedChanges{changes: first}
	for i, b := range a.chain {
		pchanges := r.followChanges(b, levels[i+1], 1)
		r.followed[b] = followedChanges{changes: pchanges, after: first}
		r.s.markLocked(b, pchanges)
	}
	return nil
}

// markLocked notes that the transaction holds the parents of a's changes
// (an adjustment's UPDATE locked them).
func (s *session) markLocked(a *adjustment, changes []*change) {
	if s.tx.locked == nil {
		s.tx.locked = make(map[string]bool)
	}
	idx := indexOf(a.parent)
	for _, ch := range changes {
		key := make([][]byte, len(a.fk.ParentColumns))
		for j, k := range a.fk.ParentColumns {
			key[j] = ch.new.text[idx[k]]
		}
		s.tx.locked[a.parent.QualifiedName()+"\x00"+string(joinKey(key))] = true
	}
}

// followChanges turns the rows a follow statement returned (the deltas,
// then the parent as it is) into the parents' changes.
// followedChanges are the parents' changes an adjustment made in a
// follow statement; after, for a chained one, are the changes of the level
// below it, the only ones it stands for.
type followedChanges struct {
	changes, after []*change
}

// standsFor reports whether the follow's changes are the adjustment of
// these changes of the level below.
func (f followedChanges) standsFor(changes []*change) bool {
	return f.after == nil || len(f.after) == len(changes) && (len(changes) == 0 || &f.after[0] == &changes[0])
}

func (r *runner) followChanges(a *adjustment, rows [][][]byte, level int) []*change {
	p := a.parent
	ptr := r.set.table(p.QualifiedName())
	out := make([]*change, 0, len(rows))
	n := len(a.aggs)
	for _, vals := range rows {
		nw := newRow(p, vals[n], vals[n+1:])
		old := nw.clone(p)
		for i, c := range a.aggs {
			d, err := decimal.NewFromString(string(vals[i]))
			if v := nw.vals[c.Rule.Column]; err == nil && v != nil {
				prev, _ := opSub(v, d)
				old.set(p, ptr.index[c.Rule.Column], prev)
				sign := "+"
				if d.IsNegative() {
					sign = ""
				}
				key := make([][]byte, len(a.fk.ParentColumns))
				for j, k := range a.fk.ParentColumns {
					key[j] = nw.text[ptr.index[k]]
				}
				if !d.IsZero() {
					r.depth += level
					r.tracef("adjust %s %s: %s %s%s", shortName(p.QualifiedName()), strings.Join(nullTexts(key), ","), c.Target, sign, d)
					r.depth -= level
				}
			}
		}
		out = append(out, &change{verb: verbUpdate, old: old, new: nw})
	}
	return out
}

// resultFormatsFor spreads the client's result formats over its k
// RETURNING columns and asks text for the engine's extra ones.
func resultFormatsFor(client []int16, k, extra int) []int16 {
	out := make([]int16, k+extra)
	for i := range k {
		switch len(client) {
		case 0:
		case 1:
			out[i] = client[0]
		default:
			if i < len(client) {
				out[i] = client[i]
			}
		}
	}
	return out
}

func tagOf(v verb, n int) string {
	switch v {
	case verbInsert:
		return "INSERT 0 " + strconv.Itoa(n)
	case verbUpdate:
		return "UPDATE " + strconv.Itoa(n)
	}
	return "DELETE " + strconv.Itoa(n)
}

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
func (r *runner) derive(tr *tableRules, changes []*change, parentChanged map[ColumnRef]bool) error {
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
				v, err := d.Eval(Env{Row: ch.new.vals, Old: oldVals(ch), Verb: string(ch.verb)})
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
func (r *runner) readsChanged(tr *tableRules, d *Compiled, ch *change, parentChanged map[ColumnRef]bool) bool {
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

// rowError names the rule's row by its key in a run-time error.
func (r *runner) rowError(tr *tableRules, err error, rw *row) error {
	return r.fail(rowErr(tr, err, rw))
}

// rowErr is a rule's error on a row, naming the row.
func rowErr(tr *tableRules, err error, rw *row) *pgerr.Error {
	e := asPgError(err)
	e.Message += " (row " + describeKey(tr, rw) + ")"
	return e
}

// describeKey renders a row's primary key, "id=5", or its ctid.
func describeKey(tr *tableRules, rw *row) string {
	if len(tr.t.PrimaryKey) == 0 {
		return "ctid=" + string(rw.ctid)
	}
	parts := make([]string, len(tr.t.PrimaryKey))
	for i, k := range tr.t.PrimaryKey {
		parts[i] = k + "=" + nullText(rw.text[tr.index[k]])
	}
	return strings.Join(parts, ", ")
}

func traceValue(v any) string {
	if v == nil {
		return "NULL"
	}
	return string(FormatValue(v))
}

// fail puts the client's transaction in the failed state for an error the
// engine found, and returns it.
func (r *runner) fail(e *pgerr.Error) error {
	r.s.trips++
	return failTx(r.ctx, r.conn, e)
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
		vals[i] = FormatValue(coerce(parent.Column(fk.ParentColumns[i]), m[c]))
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
			conds[i] = fmt.Sprintf("p.%s = CAST($%d AS %s)", quoteIdent(c), i+1, t.Column(c).Type)
			params[i] = keys[i][0]
		}
		sql := fmt.Sprintf("SELECT p.ctid, p.* FROM %s p WHERE %s", qualified(t), strings.Join(conds, " AND "))
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
		names[i] = "p." + quoteIdent(c)
		casts[i] = fmt.Sprintf("CAST(k%d AS %s)", i+1, t.Column(c).Type)
		args[i] = fmt.Sprintf("$%d::text[]", i+1)
		ks[i] = fmt.Sprintf("k%d", i+1)
		params[i] = textArray(keys[i])
	}
	sql := fmt.Sprintf("SELECT p.ctid, p.* FROM %s p WHERE (%s) IN (SELECT %s FROM %s AS k(%s))",
		qualified(t), strings.Join(names, ", "), strings.Join(casts, ", "), unnestFrom(args...), strings.Join(ks, ", "))
	if lock != "" {
		sql += " ORDER BY " + strings.Join(names, ", ") + " " + lock + " OF p"
	}
	return sql, params
}

// afterWrite runs what follows the write of a table's rows: the parents'
// adjustments (and, up the chain, their logic), the rows' constraints, and
// the formulas of child rows that read what changed.
func (r *runner) afterWrite(tr *tableRules, changes []*change) error {
	if len(changes) == 0 {
		return nil
	}
	if r.depth > maxDepth {
		return r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "the rules of %s went %d levels deep without settling", shortName(tr.t.QualifiedName()), maxDepth))
	}
	r.noteRewrite(tr, changes)
	if err := r.adjustParents(tr, changes); err != nil {
		return err
	}
	if err := r.checkConstraints(tr, changes); err != nil {
		return err
	}
	if err := r.cascadeChildren(tr, changes); err != nil {
		return err
	}
	r.s.touch(tr, changes)
	r.logRows(tr, changes)
	return nil
}

// delta is what one statement changes in one parent's aggregates.
type delta struct {
	key [][]byte
	// per aggregate: the sum or count to add (a decimal, or a special
	// when a NaN or an infinity arrives or leaves); for min and max the
	// extreme of the values arriving and of those leaving.
	add    []any
	arrive []any
	leave  []any
	moved  bool
}

// adjustParents adds the changes' deltas to the parents' sums and counts
// and looks again at their min and max: one statement per foreign key,
// all of them in one round trip. Each parent's changes then run its own
// logic.
func (r *runner) adjustParents(tr *tableRules, changes []*change) error {
	if len(tr.up) == 0 {
		return nil
	}
	var old, live []*row
	for _, ch := range changes {
		if ch.old != nil {
			old = append(old, ch.old)
		}
		if ch.new != nil {
			live = append(live, ch.new)
		}
	}
	if err := r.loadParents(tr.filterPaths.old, old, ""); err != nil {
		return err
	}
	if err := r.loadParents(tr.filterPaths.paths, live, ""); err != nil {
		return err
	}
	var sts []stmt.Statement
	var adjs []adjusting // what each statement adjusts
	var locking []string // parent rows the batch locks
	type done struct {
		a       *adjustment
		changes []*change
	}
	var followed []done
	for _, a := range tr.up {
		if a.err != nil {
			return r.fail(asPgError(a.err))
		}
		if f, ok := r.followed[a]; ok && f.standsFor(changes) {
			delete(r.followed, a)
			followed = append(followed, done{a, f.changes})
			continue
		}
		deltas, err := r.deltas(tr, a, changes)
		if err != nil {
			return r.fail(asPgError(err))
		}
		if len(deltas) == 0 {
			r.tracef("%s pruned: no parent of %s changes", aggNames(a), shortName(a.parent.QualifiedName()))
			continue
		}
		var held, fresh []*delta
		for _, d := range deltas {
			r.traceDelta(a, d)
			k := a.parent.QualifiedName() + "\x00" + string(joinKey(d.key))
			if r.s.tx.locked[k] {
				held = append(held, d)
			} else {
				fresh = append(fresh, d)
				locking = append(locking, k)
			}
		}
		switch {
		case a.additive && len(deltas) == 1:
			// One parent: its UPDATE locks it, in no order to keep.
			sts = append(sts, stmt.Statement{SQL: a.one, Params: additiveParams(a, deltas[0])})
			adjs = append(adjs, adjusting{a, deltas})
		case a.additive && len(fresh) == 0:
			sts = append(sts, stmt.Statement{SQL: a.many, Params: adjustParams(a, held)})
			adjs = append(adjs, adjusting{a, held})
		default:
			if len(fresh) > 0 {
				sts = append(sts, stmt.Statement{SQL: a.sql, Params: adjustParams(a, fresh)})
				adjs = append(adjs, adjusting{adjustment: a})
			}
			if len(held) > 0 {
				sts = append(sts, stmt.Statement{SQL: a.held, Params: adjustParams(a, held)})
				adjs = append(adjs, adjusting{adjustment: a})
			}
		}
	}
	var fromFollows parentChanges
	for _, f := range followed {
		fromFollows.add(f.a.parent, f.changes)
	}
	if err := r.parentsChanged(fromFollows); err != nil {
		return err
	}
	if len(sts) == 0 {
		return nil
	}
	results, err := r.batch(sts)
	if err != nil {
		return err
	}
	if r.s.tx.locked == nil {
		r.s.tx.locked = make(map[string]bool)
	}
	for _, k := range locking {
		r.s.tx.locked[k] = true
	}
	var fromBatch parentChanges
	for i := 0; i < len(adjs); i++ {
		a := adjs[i].adjustment
		var pchanges []*change
		if adjs[i].light != nil {
			pchanges = r.lightChanges(adjs[i], results[i].Rows)
		} else {
			rows := results[i].Rows
			if i+1 < len(adjs) && adjs[i+1].adjustment == a {
				// The same parents' rows, locked before and now: one level.
				i++
				rows = append(slices.Clip(rows), results[i].Rows...)
			}
			n := len(a.parent.Columns)
			pchanges = make([]*change, len(rows))
			for j, vals := range rows {
				pchanges[j] = &change{verb: verbUpdate, old: newRow(a.parent, vals[0], vals[1:1+n]), new: newRow(a.parent, vals[1+n], vals[2+n:])}
			}
		}
		fromBatch.add(a.parent, pchanges)
	}
	return r.parentsChanged(fromBatch)
}

// parentChanges are the changes of parent rows that statements run
// together returned, by parent table in the order they came.
type parentChanges struct {
	tables  []*catalog.Table
	changes [][]*change
}

func (pc *parentChanges) add(t *catalog.Table, changes []*change) {
	for i, seen := range pc.tables {
		if seen == t {
			pc.changes[i] = mergeChanges(t, pc.changes[i], changes)
			return
		}
	}
	pc.tables = append(pc.tables, t)
	pc.changes = append(pc.changes, changes)
}

// parentsChanged runs the logic of each parent table's changes.
func (r *runner) parentsChanged(pc parentChanges) error {
	for i, t := range pc.tables {
		if err := r.parentChanged(r.set.table(t.QualifiedName()), pc.changes[i]); err != nil {
			return err
		}
	}
	return nil
}

// mergeChanges joins the changes that two adjustments of one write made
// in the same parent table (two foreign keys to one parent, each with
// its aggregates). The statements ran one after the other before any of
// the parents' own logic, so a row adjusted by both came back from the
// later one with both adjustments: its logic must run once, from the row
// before the first to the row after the last. Run once per adjustment,
// the second would start from a row that predates what the first one's
// logic wrote (a formula over both aggregates), and leave it stale. Rows
// are matched by primary key; without one, nothing is merged.
func mergeChanges(t *catalog.Table, first, later []*change) []*change {
	if len(t.PrimaryKey) == 0 {
		return append(slices.Clip(first), later...)
	}
	idx := make([]int, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		idx[i] = indexOf(t)[k]
	}
	out := slices.Clone(first)
	at := make(map[string]int, len(out))
	for i, ch := range out {
		at[keyOf(ch.new, idx)] = i
	}
	for _, ch := range later {
		if i, ok := at[keyOf(ch.new, idx)]; ok {
			out[i] = &change{verb: verbUpdate, old: out[i].old, new: ch.new}
			continue
		}
		at[keyOf(ch.new, idx)] = len(out)
		out = append(out, ch)
	}
	return out
}

// adjusting is one adjustment statement of a batch; light holds the deltas
// of a light one, whose rows come back only as they are.
type adjusting struct {
	*adjustment
	light []*delta
}

// lightChanges turns the rows a light adjustment returned into changes:
// the row as it was is the row less each delta.
func (r *runner) lightChanges(ad adjusting, rows [][][]byte) []*change {
	p := ad.parent
	ptr := r.set.table(p.QualifiedName())
	idx := make([]int, len(ad.fk.ParentColumns))
	for i, k := range ad.fk.ParentColumns {
		idx[i] = indexOf(p)[k]
	}
	byKey := make(map[string]*delta, len(ad.light))
	for _, d := range ad.light {
		byKey[string(joinKey(d.key))] = d
	}
	out := make([]*change, 0, len(rows))
	for _, vals := range rows {
		nw := newRow(p, vals[0], vals[1:])
		old := nw.clone(p)
		if d := byKey[keyOf(nw, idx)]; d != nil {
			for i, c := range ad.aggs {
				j := ptr.index[c.Rule.Column]
				if v, ok := nw.vals[c.Rule.Column]; ok && v != nil {
					prev, _ := opSub(v, d.add[i])
					old.set(p, j, prev)
				}
			}
		}
		out = append(out, &change{verb: verbUpdate, old: old, new: nw})
	}
	return out
}

// additiveParams are a light adjustment's scalar parameters for one
// parent: its key, then each delta.
func additiveParams(a *adjustment, d *delta) [][]byte {
	params := append([][]byte(nil), d.key...)
	for i := range a.aggs {
		params = append(params, FormatValue(d.add[i]))
	}
	return params
}

// adjustParams are an adjustment's parameters for the deltas: the parent
// keys, one text array per key column, then each aggregate's delta (sum,
// count) or arriving and leaving extremes (min, max).
func adjustParams(a *adjustment, deltas []*delta) [][]byte {
	params := make([][]byte, 0, len(a.fk.ParentColumns)+2*len(a.aggs))
	for i := range a.fk.ParentColumns {
		col := make([][]byte, len(deltas))
		for j, d := range deltas {
			col[j] = d.key[i]
		}
		params = append(params, textArray(col))
	}
	for i, c := range a.aggs {
		switch c.Rule.Kind {
		case catalog.Sum, catalog.Count:
			col := make([][]byte, len(deltas))
			for j, d := range deltas {
				col[j] = FormatValue(d.add[i])
			}
			params = append(params, textArray(col))
		default:
			arrive, leave := make([][]byte, len(deltas)), make([][]byte, len(deltas))
			for j, d := range deltas {
				arrive[j], leave[j] = FormatValue(d.arrive[i]), FormatValue(d.leave[i])
			}
			params = append(params, textArray(arrive), textArray(leave))
		}
	}
	return params
}

func aggNames(a *adjustment) string {
	names := make([]string, len(a.aggs))
	for i, c := range a.aggs {
		names[i] = string(c.Rule.Kind) + " " + c.Target.String()
	}
	return strings.Join(names, ", ")
}

func (r *runner) traceDelta(a *adjustment, d *delta) {
	if !r.s.trace {
		return
	}
	var parts []string
	for i, c := range a.aggs {
		switch c.Rule.Kind {
		case catalog.Sum, catalog.Count:
			if !isZero(d.add[i]) {
				sign := "+"
				if c, _ := compare(d.add[i], 0); c < 0 {
					sign = ""
				}
				parts = append(parts, fmt.Sprintf("%s %s%s", c.Target, sign, FormatValue(d.add[i])))
			}
		default:
			if d.arrive[i] != nil || d.leave[i] != nil {
				parts = append(parts, fmt.Sprintf("%s %s: %s arrives, %s leaves", c.Target, c.Rule.Kind, traceValue(d.arrive[i]), traceValue(d.leave[i])))
			}
		}
	}
	r.tracef("adjust %s %s: %s", shortName(a.parent.QualifiedName()), strings.Join(nullTexts(d.key), ","), strings.Join(parts, ", "))
}

func nullTexts(vals [][]byte) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = nullText(v)
	}
	return out
}

// deltas works out, per parent, what the changes add to each aggregate of
// one foreign key (LogicBank's adjustment table): a row that arrives or
// starts to qualify adds its value, one that leaves or stops qualifying
// subtracts its old value, a reassigned row moves from the old parent to
// the new, a NULL key belongs to no parent. An error leaves the transaction
// as it is: the caller that reports it fails it.
func (r *runner) deltas(tr *tableRules, a *adjustment, changes []*change) ([]*delta, error) {
	kidx := tr.columnIndexes(a.fk.Columns)
	skip := r.deleting[a.parent.QualifiedName()]
	byKey := make(map[string]*delta)
	var order []*delta
	get := func(rw *row) *delta {
		k := keyOf(rw, kidx)
		if k == "" || skip[k] {
			return nil
		}
		d := byKey[k]
		if d == nil {
			key := make([][]byte, len(kidx))
			for i, j := range kidx {
				key[i] = rw.text[j]
			}
			d = &delta{key: key, add: make([]any, len(a.aggs)), arrive: make([]any, len(a.aggs)), leave: make([]any, len(a.aggs))}
			for i := range d.add {
				d.add[i] = decimal.Zero
			}
			byKey[k] = d
			order = append(order, d)
		}
		return d
	}
	for _, ch := range changes {
		var od, nd *delta
		if ch.old != nil {
			od = get(ch.old)
		}
		if ch.new != nil {
			nd = get(ch.new)
		}
		for i, c := range a.aggs {
			oldIn, newIn := false, false
			var err error
			if od != nil {
				if oldIn, err = c.Counts(ch.old.vals); err != nil {
					return nil, rowErr(tr, err, ch.old)
				}
			}
			if nd != nil {
				if newIn, err = c.Counts(ch.new.vals); err != nil {
					return nil, rowErr(tr, err, ch.new)
				}
			}
			var ov, nv any
			if ch.old != nil {
				ov = ch.old.vals[c.Rule.SourceColumn]
			}
			if ch.new != nil {
				nv = ch.new.vals[c.Rule.SourceColumn]
			}
			switch c.Rule.Kind {
			case catalog.Sum, catalog.Count:
				if oldIn {
					od.add[i], _ = opSub(od.add[i], addend(c, ov))
				}
				if newIn {
					nd.add[i], _ = opAdd(nd.add[i], addend(c, nv))
				}
			case catalog.Min, catalog.Max:
				same := oldIn && newIn && od == nd && sameValue(ov, nv)
				if same {
					continue
				}
				if oldIn && ov != nil {
					od.leave[i] = extreme(c.Rule.Kind, od.leave[i], ov)
					od.moved = true
				}
				if newIn && nv != nil {
					nd.arrive[i] = extreme(c.Rule.Kind, nd.arrive[i], nv)
					nd.moved = true
				}
			}
		}
	}
	out := order[:0]
	for _, d := range order {
		keep := d.moved
		for _, v := range d.add {
			keep = keep || !isZero(v)
		}
		if keep {
			out = append(out, d)
		}
	}
	return out, nil
}

// addend is what a qualifying child row adds to a sum (its value, NULL
// counting as 0) or a count (1).
func addend(c *Compiled, v any) any {
	switch {
	case c.Rule.Kind == catalog.Count:
		return decimal.NewFromInt(1)
	case v == nil:
		return decimal.Zero
	}
	if s, ok := v.(special); ok {
		return s // a sum that adds NaN stays NaN, as PostgreSQL adds it
	}
	return toDecimal(v)
}

// isZero reports whether a sum's delta adds nothing.
func isZero(v any) bool {
	d, ok := v.(decimal.Decimal)
	return ok && d.IsZero()
}

// extreme is the smaller (min) or larger (max) of two values, nil being
// none.
func extreme(k catalog.RuleKind, a, b any) any {
	if a == nil {
		return b
	}
	c, ok := compare(a, b)
	if !ok || (k == catalog.Min) == (c <= 0) {
		return a
	}
	return b
}

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
			where = append(where, fmt.Sprintf("%s.%s = CAST(pgrules_v.k%d AS %s)", alias, quoteIdent(k), i+1, t.Column(k).Type))
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
		sets[i] = fmt.Sprintf("%s = CAST(pgrules_v.c%d AS %s)", quoteIdent(c.Name), i+1, c.Type)
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
		qualified(t), alias, strings.Join(sets, ", "), unnestFrom(args...), strings.Join(names, ", "), strings.Join(where, " AND "), returning)
	res, err := r.writeAgain(sql, params, ret)
	if err != nil {
		return err
	}
	if len(res.Rows) != len(changes) {
		if name := t.BeforeRow["UPDATE"]; name != "" {
			return r.fail(beforeTriggerAgain(t, name, "skipped"))
		}
		return r.fail(pgerr.New(pgerr.InternalError, "pgrules wrote %d of %d rows of %s", len(res.Rows), len(changes), shortName(t.QualifiedName())))
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
			return r.fail(pgerr.New(pgerr.InternalError, "pgrules lost track of a row of %s it updated", shortName(t.QualifiedName())))
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

// newRows are the changes' rows as they are now, deleted ones left out.
func newRows(changes []*change) []*row {
	var live []*row
	for _, ch := range changes {
		if ch.new != nil {
			live = append(live, ch.new)
		}
	}
	return live
}

// checkConstraints checks the constraints of the inserted and updated
// rows; the first that is false fails the statement (23514, named after
// the rule).
func (r *runner) checkConstraints(tr *tableRules, changes []*change) error {
	if len(tr.constraints) == 0 {
		return nil
	}
	live := newRows(changes)
	if len(live) == 0 {
		return nil
	}
	if err := r.loadParents(tr.checkPaths.paths, live, ""); err != nil {
		return err
	}
	for _, c := range tr.constraints {
		for _, ch := range changes {
			if ch.new == nil {
				continue
			}
			env := Env{Row: ch.new.vals, Old: oldVals(ch), Verb: string(ch.verb)}
			ok, err := c.Holds(env)
			if err != nil {
				return r.rowError(tr, err, ch.new)
			}
			if ok {
				continue
			}
			msg, err := c.Message(env)
			if err != nil {
				return r.rowError(tr, err, ch.new)
			}
			if msg == "" {
				msg = fmt.Sprintf("constraint %q of %s is not met", c.Rule.Name, shortName(tr.t.QualifiedName()))
			}
			r.tracef("constraint %s fails on %s: %s", c.Rule.Name, describeKey(tr, ch.new), msg)
			e := pgerr.New(pgerr.CheckViolation, "%s", msg)
			e.Constraint, e.Schema, e.Table = c.Rule.Name, tr.t.Schema, tr.t.Name
			e.Detail = fmt.Sprintf("Failing row of %s: %s.", shortName(tr.t.QualifiedName()), describeKey(tr, ch.new))
			return r.fail(e)
		}
		r.tracef("constraint %s holds on %d row(s)", c.Rule.Name, len(live))
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
		reason map[ColumnRef]bool
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
			g = &group{child: cs.child, path: cs.path, reason: make(map[ColumnRef]bool)}
			groups = append(groups, g)
		}
		for _, c := range cs.columns {
			if changed[c] {
				g.reason[ColumnRef{tr.t.QualifiedName(), c}] = true
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
		r.tracef("%d row(s) of %s read changed columns of %s", len(res.Rows), shortName(g.child.QualifiedName()), shortName(tr.t.QualifiedName()))
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
	from := qualified(child) + " c"
	alias := "c"
	for i, fk := range path[:len(path)-1] {
		pa := fmt.Sprintf("p%d", i+1)
		from += fmt.Sprintf(" JOIN %s %s ON %s", qualified(snap.Tables[fk.Parent]), pa, keyMatch(fk, alias, pa))
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
		names[i] = alias + "." + quoteIdent(c)
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
		return r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "the deletes of %s cascaded %d levels deep", shortName(tr.t.QualifiedName()), maxDepth))
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
		r.tracef("%d row(s) of %s go with them (ON DELETE %s)", len(rows), shortName(fk.Child), map[byte]string{'c': "CASCADE", 'n': "SET NULL", 'd': "SET DEFAULT"}[fk.OnDelete])
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
				ch.new.vals[c], _ = ParseValue(child.Column(c).Kind, v)
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

// upsert runs INSERT ... ON CONFLICT (keys) DO UPDATE: the rows that
// conflict with a row already there (locked, in key order) become updates
// of it, with the SET values computed by the server from the row and
// excluded, where the WHERE condition holds; the others are inserted. Both
// go through the rules; the client gets both parts' RETURNING rows
// (inserted ones first) and a tag counting both. A row inserted
// concurrently after the look-up makes the insert fail with the server's
// unique violation rather than go past the rules.
// upsertUpdates are the updates of the rows there that the proposed rows
// conflict with (pairs: old the row there, new the proposed one), where
// DO UPDATE's WHERE holds: the SET values, computed by the server with the
// row there as the table's alias and the proposed row as excluded.
func (r *runner) upsertUpdates(tr *tableRules, w *writeStmt, pairs []*change, p clientParams) ([]*change, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	u, t := w.upsert, w.table
	var updates []*change
	if err := r.refuseDerivedSet(tr, u.setCols); err != nil {
		return nil, r.fail(asPgError(err))
	}
	n := len(p.values)
	var arrays [][]byte
	ctids := make([][]byte, len(pairs))
	for i, pc := range pairs {
		ctids[i] = pc.old.ctid
	}
	arrays = append(arrays, textArray(ctids))
	cols := []string{"CAST(pgrules_u.k AS tid) AS pgrules_ctid"}
	args := []string{fmt.Sprintf("$%d::text[]", n+1)}
	unames := []string{"k"}
	for i, c := range w.insertCols {
		vals := make([][]byte, len(pairs))
		for j, pc := range pairs {
			vals[j] = pc.new.text[tr.index[c.Name]]
		}
		arrays = append(arrays, textArray(vals))
		cols = append(cols, fmt.Sprintf("CAST(pgrules_u.c%d AS %s) AS %s", i+1, c.Type, quoteIdent(c.Name)))
		args = append(args, fmt.Sprintf("$%d::text[]", n+i+2))
		unames = append(unames, fmt.Sprintf("c%d", i+1))
	}
	where := "true"
	if u.where != "" {
		where = "coalesce((" + u.where + "), false)"
	}
	// The server's rows come in its own order: they are matched by ctid.
	sql := fmt.Sprintf("SELECT %s.ctid, %s, %s FROM %s AS %s, (SELECT %s FROM %s AS pgrules_u(%s)) AS excluded WHERE %s.ctid = excluded.pgrules_ctid",
		w.alias, where, strings.Join(u.values, ", "), qualified(t), w.alias, strings.Join(cols, ", "), unnestFrom(args...), strings.Join(unames, ", "), w.alias)
	res, err := r.clientStatement(sql, p, nil, arrays...)
	if err != nil {
		return nil, err
	}
	byCtid := make(map[string]*change, len(pairs))
	for _, pc := range pairs {
		byCtid[string(pc.old.ctid)] = pc
	}
	for _, vals := range res.Rows {
		pc := byCtid[string(vals[0])]
		if pc == nil || string(vals[1]) != "t" {
			continue // DO UPDATE ... WHERE is false: the row is left
		}
		nw := pc.old.clone(t)
		for i, c := range u.setCols {
			j := tr.index[c.Name]
			nw.text[j] = vals[2+i]
			v, err := ParseValue(c.Kind, nw.text[j])
			if err != nil {
				v = string(nw.text[j])
			}
			nw.vals[c.Name] = v
		}
		updates = append(updates, &change{verb: verbUpdate, old: pc.old, new: nw})
	}
	return updates, nil
}

func (r *runner) upsert(tr *tableRules, w *writeStmt, proposed []*change, p clientParams, resultFormats []int16) (*stmt.Result, error) {
	r.noFollow = true
	defer func() { r.noFollow = false }()
	existing, err := r.conflicts(tr, w.upsert, proposed)
	if err != nil {
		return nil, err
	}
	var inserts, pairs []*change // pairs conflict: old is the row there, new the proposed one
	for _, ch := range proposed {
		if old := existing[ch]; old != nil {
			pairs = append(pairs, &change{verb: verbUpdate, old: old, new: ch.new})
		} else {
			inserts = append(inserts, ch)
		}
	}
	updates, err := r.upsertUpdates(tr, w, pairs, p)
	if err != nil {
		return nil, err
	}
	r.tracef("ON CONFLICT: %d row(s) to insert, %d to update", len(inserts), len(updates))
	for _, changes := range [][]*change{inserts, updates} {
		if err := r.fire(tr, timingEarly, changes, nil, nil); err != nil {
			return nil, err
		}
		if err := r.derive(tr, changes, nil); err != nil {
			return nil, err
		}
	}
	if err := r.fire(tr, timingPreInsert, inserts, nil, nil); err != nil {
		return nil, err
	}
	ins := *w
	ins.upsert = nil
	out, written, err := r.clientWrite(tr, &ins, inserts, p, resultFormats)
	if err != nil {
		return nil, err
	}
	if len(updates) > 0 {
		upd := *w
		upd.upsert, upd.verb, upd.setCols = nil, verbUpdate, w.upsert.setCols
		res, more, err := r.clientWrite(tr, &upd, updates, p, resultFormats)
		if err != nil {
			return nil, err
		}
		out.Rows = append(out.Rows, res.Rows...)
		written = append(written, more...)
	}
	out.Tag = tagOf(verbInsert, len(written))
	r.returnedRows(w, out, written)
	if err := r.afterWrite(tr, written); err != nil {
		return nil, err
	}
	return out, nil
}
