package rules

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// A write usually costs two round trips: the materialising query, then
// the write with its follow statements (run.go). When everything the
// engine would compute for the rows between the two can be computed by the
// server, exactly, an insert, an update or a delete is one statement
// instead:
//
//	WITH pgrules_i AS (INSERT ... SELECT <the rows, derived> RETURNING ...),
//	     <each adjustment's follow, reading the new rows from pgrules_i>
//	SELECT <what the client asked for, each row as stored, the parents' rows>
//
// (an update or a delete locks and reads its rows in a CTE first, and its
// follows subtract what the rows gave before). The rows' copies and formulas are
// computed in layers over the materialising query, one derivation a layer,
// in the engine's order. The parents are not locked first: a single
// statement's foreign-key checks run at its end, when its own updates hold
// the parents already (the deadlock lockParents avoids needs two
// statements).

// oneTrip is what a write on a table needs to run in one round trip; nil
// when no write can.
type oneTrip struct {
	// exprs are the derivations' SQL, in tr.derivations' order; the i-th
	// reads the layer aliased pgrules_l<i>.
	exprs []string
	// conds say, over the same layers, when an update runs each
	// derivation: a copy when its foreign key changed, a formula when a
	// column of the row it reads changed, as the engine decides. updates
	// is false when updates cannot run in one trip (no primary key).
	conds   []string
	updates bool
	// deletes is false when deletes cannot run in one trip (no primary
	// key).
	deletes bool
	// inserts is false when the derivations read the table's own rows as
	// parents: a parent inserted by the same statement is not in the
	// table the statement's sub-selects read (tree.go).
	inserts bool
	// insert, update and delete are the follow statements of the
	// adjustments.
	insert, update, delete tripFollows
}

// tripFollows are the adjustments' follow statements and their chains, as
// CTEs; rows selects their rows as text, "<i> <level> <row>" for tr.up[i].
type tripFollows struct {
	ctes []string
	rows string
}

// oneTripFor works out t's oneTrip. The conditions: no early, pre_insert
// or failure events (they need the rows in the engine before the write,
// or what it was writing); every derivation translates exactly (see
// Translator.Exact); every aggregate the rows feed has a follow statement.
func (s *runSet) oneTripFor(tr *tableRules) *oneTrip {
	if len(tr.events[timingEarly])+len(tr.events[timingPreInsert])+len(tr.events[timingFailure]) > 0 {
		return nil
	}
	o := &oneTrip{}
	for i, d := range tr.derivations {
		e, ok := s.derivationSQL(tr, d, fmt.Sprintf("pgrules_l%d", i))
		if !ok {
			return nil
		}
		o.exprs = append(o.exprs, e)
	}
	var ok bool
	if o.insert, ok = s.tripFollows(tr, "(SELECT (pgrules_row).* FROM pgrules_i)", ""); !ok {
		return nil
	}
	o.inserts = len(selfKeys(tr)) == 0
	if len(tr.t.PrimaryKey) == 0 {
		return o
	}
	cols := make([]string, len(tr.t.Columns))
	for i, c := range tr.t.Columns {
		cols[i] = sqltext.Ident(c.Name)
	}
	o.delete, o.deletes = s.tripFollows(tr, "(SELECT * FROM "+sqltext.Table(tr.t)+" WHERE false)", "(SELECT (pgrules_row).* FROM pgrules_d)")
	if o.update, ok = s.tripFollows(tr, "(SELECT (pgrules_row).* FROM pgrules_u)", "(SELECT "+strings.Join(cols, ", ")+" FROM pgrules_o)"); !ok {
		return o
	}
	for i, d := range tr.derivations {
		alias := fmt.Sprintf("pgrules_l%d", i)
		var reads []string
		if d.Rule.Kind == catalog.Copy {
			reads = d.FK.Columns
		} else {
			for _, ref := range d.Reads {
				if ref.Table == tr.t.QualifiedName() {
					reads = append(reads, ref.Column)
				}
			}
		}
		changed := []string{"false"}
		for _, c := range reads {
			changed = append(changed, fmt.Sprintf("%s.%s IS DISTINCT FROM %s.pgrules_o%d", alias, sqltext.Ident(c), alias, tr.index[c]+1))
		}
		o.conds = append(o.conds, strings.Join(changed, " OR "))
	}
	o.updates = true
	return o
}

// tripFollows builds the follow statements of tr's adjustments over the
// rows as written, src, and before, oldSrc; false when one cannot be.
//
// Each table may be written once: PostgreSQL applies only one of two
// updates of a row in one statement, so a parent adjusted along two
// foreign keys (or reached twice up the chains, or the written table
// itself) would lose an adjustment. Such a write takes the usual steps.
func (s *runSet) tripFollows(tr *tableRules, src, oldSrc string) (tripFollows, bool) {
	var f tripFollows
	var rows []string
	written := map[*catalog.Table]bool{tr.t: true}
	writes := func(t *catalog.Table) bool {
		if written[t] {
			return false
		}
		written[t] = true
		return true
	}
	for i, a := range tr.up {
		if a.err != nil || a.follow == "" || !writes(a.parent) {
			return f, false
		}
		prefix := fmt.Sprintf("pgrules_a%d_", i+1)
		chain, with, selects := s.chainParts(a, followSQL(s.Snapshot(), tr.t, a, src, oldSrc), prefix)
		if len(chain) != len(a.chain) {
			return f, false
		}
		for _, b := range chain {
			if !writes(b.parent) {
				return f, false
			}
		}
		if len(chain) == 0 {
			with = with[:1] // the follow, without the old rows' CTE
		}
		f.ctes = append(f.ctes, with...)
		rows = append(rows, fmt.Sprintf("SELECT '%d ' || l || ' ' || r::text FROM (%s) x(l, r)", i, strings.Join(selects, " UNION ALL ")))
	}
	f.rows = strings.Join(rows, " UNION ALL ")
	return f, true
}

// derivationSQL is d's value for a new row, in SQL over the row aliased
// alias, when it is exactly what the engine computes; false otherwise.
func (s *runSet) derivationSQL(tr *tableRules, d *compiler.Rule, alias string) (string, bool) {
	target := tr.t.Column(d.Rule.Column)
	switch d.Rule.Kind {
	case catalog.Copy:
		parent := s.Snapshot().Tables[d.FK.Parent]
		src := parent.Column(d.Rule.SourceColumn)
		if src == nil || src.Kind != target.Kind || !copyable[target.Kind] {
			return "", false
		}
		e := fmt.Sprintf("(SELECT p.%s FROM %s p WHERE %s)", sqltext.Ident(src.Name), sqltext.Table(parent), sqltext.KeyMatch(d.FK, alias, "p"))
		if target.Kind == catalog.KindDecimal {
			// Rounded to the column's scale, as coerce does.
			e = "CAST(" + e + " AS " + target.Type + ")"
		}
		return e, true
	case catalog.Formula:
		if target.Kind != catalog.KindInt && target.Kind != catalog.KindDecimal || d.Accumulates {
			return "", false
		}
		g := &compiler.Translator{Snap: s.Snapshot(), Table: tr.t, Alias: alias, Rule: d.Rule.Name, Lock: parentLock(tr)}
		e, ok := g.Exact(d.Rule.Expression)
		if !ok {
			return "", false
		}
		// Rounded to the column's type, as coerce does, before a later
		// formula reads it.
		return "CAST(" + e + " AS " + target.Type + ")", true
	}
	return "", false
}

// copyable are the kinds whose values a copy passes through unchanged in
// the engine, as the server would.
var copyable = map[catalog.Kind]bool{catalog.KindInt: true, catalog.KindDecimal: true, catalog.KindText: true, catalog.KindBool: true}

// inOneTrip reports whether the write w can run in one round trip: an
// insert without ON CONFLICT, an update without FROM that keeps its rows'
// keys, or a delete without USING whose rows take no rows with rules with
// them, when the statement is prepared. (Built from a text with its
// values in it, the one statement would be planned at every execution,
// which costs the server more than the round trip saved.)
func (r *runner) inOneTrip(tr *tableRules, w *writeStmt, p clientParams) bool {
	o := tr.oneTrip
	// A BEFORE ROW trigger may change or skip a row after the statement
	// computed it.
	if o == nil || w.upsert != nil || r.noFollow || len(r.deleting) > 0 || beforeRow(tr.t, w.verb) != "" {
		return false
	}
	switch w.verb {
	case verbInsert:
		return o.inserts && w.conflict == "" && w.params(p).stable
	case verbUpdate:
		return o.updates && !w.joined && !w.setsKey && w.params(p).stable
	case verbDelete:
		return o.deletes && !w.joined && !r.set.CascadesTo(w.table) && w.params(p).stable
	}
	return false
}

// layers computes the derivations over base, a relation of rows with the
// columns cols (and, for an update, their old values, pgrules_o<i>): a
// layer per derivation, each reading the one before it.
func (o *oneTrip) layers(tr *tableRules, cols []*catalog.Column, base string, update bool) string {
	src := base
	for i, d := range tr.derivations {
		alias := fmt.Sprintf("pgrules_l%d", i)
		list := make([]string, 0, 1+2*len(cols))
		if update {
			list = append(list, alias+".pgrules_ctid")
		}
		for _, c := range cols {
			v := alias + "." + sqltext.Ident(c.Name)
			switch {
			case c.Name != d.Rule.Column:
			case update:
				v = fmt.Sprintf("CASE WHEN %s THEN %s ELSE %s END", o.conds[i], o.exprs[i], v)
			default:
				v = o.exprs[i]
			}
			list = append(list, v+" AS "+sqltext.Ident(c.Name))
		}
		if update {
			for j := range tr.t.Columns {
				list = append(list, fmt.Sprintf("%s.pgrules_o%d", alias, j+1))
			}
		}
		src = fmt.Sprintf("(SELECT %s FROM %s) AS pgrules_l%d", strings.Join(list, ", "), src, i+1)
	}
	return src
}

// column is the select list item that carries the adjusted parents, on
// the first row.
func (f tripFollows) column() string {
	if f.rows == "" {
		return "NULL::text[]"
	}
	return "CASE WHEN row_number() OVER () = 1 THEN (SELECT array_agg(f) FROM (" + f.rows + ") x(f)) END"
}

// insertOneTrip runs the insert w in one statement (see oneTrip) and
// returns what the client gets for it; top is set for the client's own
// statement.
func (r *runner) insertOneTrip(tr *tableRules, w *writeStmt, p clientParams, resultFormats []int16, top bool) (*stmt.Result, error) {
	t := w.table
	sql := w.oneTripSQL(len(p.values), func(n int) string { return insertOneTripSQL(tr, w, n) })
	k, n := w.nReturning, len(t.Columns)
	res, err := r.clientStatement(sql, w.params(p), resultFormatsFor(resultFormats, k, n+3), w.literals...)
	if err != nil {
		return nil, err
	}
	written := make([]*change, len(res.Rows))
	for i, vals := range res.Rows {
		written[i] = &change{verb: verbInsert, new: newRow(t, vals[k], vals[k+2:k+2+n])}
	}
	return r.tookOneTrip(tr, w, res, written, k+2+n, top)
}

// insertOneTripSQL is the statement of insertOneTrip, after nParams
// parameters of the client's.
func insertOneTripSQL(tr *tableRules, w *writeStmt, nParams int) string {
	t, o := w.table, tr.oneTrip
	names := make([]string, len(w.insertCols))
	for i, c := range w.insertCols {
		names[i] = sqltext.Ident(c.Name)
	}
	// The first layer is the materialised rows with a new row's sums and
	// counts (0) and min and max (NULL).
	first := make([]string, len(w.insertCols))
	for i, c := range w.insertCols {
		first[i] = names[i]
		switch d := tr.derived[c.Name]; {
		case d == nil:
		case d.Rule.Kind == catalog.Sum || d.Rule.Kind == catalog.Count:
			first[i] = "CAST(0 AS " + c.Type + ") AS " + names[i]
		case d.Rule.Kind == catalog.Min || d.Rule.Kind == catalog.Max:
			first[i] = "CAST(NULL AS " + c.Type + ") AS " + names[i]
		}
	}
	base := fmt.Sprintf("(SELECT %s FROM (%s) AS pgrules_m(%s)) AS pgrules_l0", strings.Join(first, ", "), w.materializeSQL(nParams), strings.Join(names, ", "))
	returning := oneTripReturning(w, "")
	with := append([]string{fmt.Sprintf("pgrules_i AS (INSERT INTO %s AS %s (%s) %s SELECT %s FROM %s RETURNING %s)",
		sqltext.Table(t), w.alias, strings.Join(names, ", "), w.overriding, strings.Join(names, ", "), o.layers(tr, w.insertCols, base, false), returning)}, o.insert.ctes...)
	return "WITH " + strings.Join(with, ",\n") + "\nSELECT pgrules_i.*, (pgrules_i.pgrules_row).*, " + o.insert.column() + " FROM pgrules_i"
}

// updateOneTrip runs the update w in one statement: the rows are locked
// and read (the materialising query, as a CTE), derived in layers and
// written, joined by primary key. A row a concurrent transaction changed
// comes locked in its newest version, which the update, seeing the
// statement's snapshot, finds by key, not by ctid. Should the key have
// changed meanwhile, the statement fails with 40001, to be retried.
func (r *runner) updateOneTrip(tr *tableRules, w *writeStmt, p clientParams, resultFormats []int16, top bool) (*stmt.Result, error) {
	if err := r.refuseDerivedSet(tr, w.setCols); err != nil {
		return nil, err
	}
	t := w.table
	n, k := len(t.Columns), w.nReturning
	sql := w.oneTripSQL(len(p.values), func(nParams int) string { return updateOneTripSQL(tr, w, nParams) })
	res, err := r.clientStatement(sql, w.params(p), resultFormatsFor(resultFormats, k, 3+n+1+n+len(w.setCols)+1), w.literals...)
	if err != nil {
		return nil, err
	}
	written := make([]*change, len(res.Rows))
	at := k + 3 + n // the locked row
	for i, vals := range res.Rows {
		if vals[k] == nil {
			return nil, r.fail(keyChanged(t, "update"))
		}
		written[i] = &change{verb: verbUpdate, old: newRow(t, vals[at], vals[at+1:at+1+n]), new: newRow(t, vals[k+1], vals[k+3:k+3+n])}
	}
	return r.tookOneTrip(tr, w, res, written, len(res.Fields)-1, top)
}

// updateOneTripSQL is the statement of updateOneTrip, after nParams
// parameters of the client's.
func updateOneTripSQL(tr *tableRules, w *writeStmt, nParams int) string {
	t, o := w.table, tr.oneTrip
	var extra []string
	set := make(map[string]int, len(w.setCols))
	for i, c := range w.setCols {
		extra = append(extra, fmt.Sprintf("pgrules_s%d", i+1))
		set[c.Name] = i + 1
	}
	first := []string{"pgrules_ctid"}
	for _, c := range t.Columns {
		if i := set[c.Name]; i > 0 {
			first = append(first, fmt.Sprintf("pgrules_s%d AS %s", i, sqltext.Ident(c.Name)))
		} else {
			first = append(first, sqltext.Ident(c.Name))
		}
	}
	for j, c := range t.Columns {
		first = append(first, fmt.Sprintf("%s AS pgrules_o%d", sqltext.Ident(c.Name), j+1))
	}
	// The new rows, under names that the client's RETURNING cannot mean.
	final := fmt.Sprintf("pgrules_l%d", len(tr.derivations))
	renamed := []string{final + ".pgrules_ctid AS pgrules_n0"}
	var sets []string
	for j, c := range t.Columns {
		renamed = append(renamed, fmt.Sprintf("%s.%s AS pgrules_n%d", final, sqltext.Ident(c.Name), j+1))
		if d := tr.derived[c.Name]; set[c.Name] > 0 || d != nil && (d.Rule.Kind == catalog.Copy || d.Rule.Kind == catalog.Formula) {
			sets = append(sets, fmt.Sprintf("%s = pgrules_n.pgrules_n%d", sqltext.Ident(c.Name), j+1))
		}
	}
	var keys []string
	for _, c := range t.PrimaryKey {
		keys = append(keys, fmt.Sprintf("%s.%s = pgrules_n.pgrules_n%d", w.alias, sqltext.Ident(c), tr.index[c]+1))
	}
	base := fmt.Sprintf("(SELECT %s FROM pgrules_o) AS pgrules_l0", strings.Join(first, ", "))
	with := append([]string{
		lockedRows(w, nParams, extra),
		fmt.Sprintf("pgrules_u AS (UPDATE %s AS %s SET %s FROM (SELECT %s FROM %s) AS pgrules_n WHERE %s RETURNING %s)",
			sqltext.Table(t), w.alias, strings.Join(sets, ", "), strings.Join(renamed, ", "), o.layers(tr, t.Columns, base, true), strings.Join(keys, " AND "), oneTripReturning(w, "pgrules_n.pgrules_n0")),
	}, o.update.ctes...)
	// Every locked row, with what became of it: a row without its update
	// is one whose key a concurrent transaction changed.
	return "WITH " + strings.Join(with, ",\n") + "\nSELECT pgrules_u.*, (pgrules_u.pgrules_row).*, pgrules_o.*, " + o.update.column() +
		" FROM pgrules_o LEFT JOIN pgrules_u ON pgrules_u.pgrules_k = pgrules_o.pgrules_ctid"
}

// deleteOneTrip runs the delete w in one statement: the rows are locked
// and read in a CTE, deleted by primary key, and the parents adjusted by
// what the deleted rows gave. As for an update, a row whose key a
// concurrent transaction changed in between fails the statement with
// 40001.
func (r *runner) deleteOneTrip(tr *tableRules, w *writeStmt, p clientParams, resultFormats []int16, top bool) (*stmt.Result, error) {
	t := w.table
	n, k := len(t.Columns), w.nReturning
	sql := w.oneTripSQL(len(p.values), func(nParams int) string { return deleteOneTripSQL(tr, w, nParams) })
	res, err := r.clientStatement(sql, w.params(p), resultFormatsFor(resultFormats, k, 3+n+1), w.literals...)
	if err != nil {
		return nil, err
	}
	written := make([]*change, len(res.Rows))
	for i, vals := range res.Rows {
		if vals[k] == nil {
			return nil, r.fail(keyChanged(t, "delete"))
		}
		written[i] = &change{verb: verbDelete, old: newRow(t, vals[k+1], vals[k+3:k+3+n])}
	}
	return r.tookOneTrip(tr, w, res, written, len(res.Fields)-1, top)
}

// deleteOneTripSQL is the statement of deleteOneTrip, after nParams
// parameters of the client's.
func deleteOneTripSQL(tr *tableRules, w *writeStmt, nParams int) string {
	t, o := w.table, tr.oneTrip
	// The keys under names that the client's RETURNING cannot mean.
	renamed := []string{"pgrules_ctid AS pgrules_n0"}
	var keys []string
	for _, c := range t.PrimaryKey {
		j := tr.index[c] + 1
		renamed = append(renamed, fmt.Sprintf("%s AS pgrules_n%d", sqltext.Ident(c), j))
		keys = append(keys, fmt.Sprintf("%s.%s = pgrules_n.pgrules_n%d", w.alias, sqltext.Ident(c), j))
	}
	with := append([]string{
		lockedRows(w, nParams, nil),
		fmt.Sprintf("pgrules_d AS (DELETE FROM %s AS %s USING (SELECT %s FROM pgrules_o) AS pgrules_n WHERE %s RETURNING %s)",
			sqltext.Table(t), w.alias, strings.Join(renamed, ", "), strings.Join(keys, " AND "), oneTripReturning(w, "pgrules_n.pgrules_n0")),
	}, o.delete.ctes...)
	// Every locked row, with what became of it (see updateOneTrip).
	return "WITH " + strings.Join(with, ",\n") + "\nSELECT pgrules_d.*, (pgrules_d.pgrules_row).*, " + o.delete.column() +
		" FROM pgrules_o LEFT JOIN pgrules_d ON pgrules_d.pgrules_k = pgrules_o.pgrules_ctid"
}

// lockedRows is the CTE pgrules_o of an update or a delete of one trip:
// the rows w's materialising query locks and reads (their ctid, each
// column, then the extra columns it selects).
func lockedRows(w *writeStmt, nParams int, extra []string) string {
	cols := []string{"pgrules_ctid"}
	for _, c := range w.table.Columns {
		cols = append(cols, sqltext.Ident(c.Name))
	}
	return fmt.Sprintf("pgrules_o(%s) AS MATERIALIZED (%s)", strings.Join(append(cols, extra...), ", "), w.materializeSQL(nParams))
}

// oneTripReturning is the RETURNING list of a write of one trip: the
// client's, then (after the locked row's ctid, key, for an update or a
// delete) each row's ctid and the row itself.
func oneTripReturning(w *writeStmt, key string) string {
	var items []string
	if w.returning != "" {
		items = append(items, w.returning)
	}
	if key != "" {
		items = append(items, key+" AS pgrules_k")
	}
	return strings.Join(append(items, w.alias+".ctid AS pgrules_ctid", w.alias+" AS pgrules_row"), ", ")
}

// keyChanged is the error of a one-trip write that found a row it had
// locked under another key: a concurrent transaction changed it.
func keyChanged(t *catalog.Table, verb string) *pgerr.Error {
	e := pgerr.New(pgerr.SerializationFailure, "could not %s a row of %s: a concurrent transaction changed its key", verb, catalog.ShortName(t.QualifiedName()))
	e.Hint = "Retry the transaction."
	return e
}

// tookOneTrip finishes a write in one trip: the client's rows, the trace,
// the parents' changes (column f of the first row) and the logic after the
// write.
func (r *runner) tookOneTrip(tr *tableRules, w *writeStmt, res *stmt.Result, written []*change, f int, top bool) (*stmt.Result, error) {
	out := &stmt.Result{Tag: tagOf(w.verb, len(res.Rows))}
	if w.returning != "" {
		out.Fields = res.Fields[:w.nReturning]
		out.Rows = make([][][]byte, len(res.Rows))
		for i, vals := range res.Rows {
			out.Rows[i] = vals[:w.nReturning]
		}
	}
	// The trace tells the derivations' values as the rows were stored.
	r.tracef("%d row(s)", len(written))
	for _, ch := range written {
		if ch.new == nil {
			continue // deleted: nothing derived
		}
		for _, d := range tr.derivations {
			switch {
			case ch.old == nil:
			case d.Rule.Kind == catalog.Copy && !fkChanged(tr, d.FK, ch):
				continue
			case d.Rule.Kind == catalog.Formula && !r.readsChanged(tr, d, ch, nil):
				r.tracef("formula %s pruned: nothing it reads changed", d.Target)
				continue
			}
			r.tracef("%s %s = %s", d.Rule.Kind, d.Target, traceValue(ch.new.vals[d.Rule.Column]))
		}
	}
	if top {
		r.failing.changes = written
		r.returnedRows(w, out, written)
	}
	if len(res.Rows) > 0 && len(tr.up) > 0 {
		if err := r.takeOneTripFollows(tr, res.Rows[0][f]); err != nil {
			return nil, err
		}
		if err := r.missedParents(tr, written); err != nil {
			return nil, err
		}
	}
	if err := r.afterWrite(tr, written); err != nil {
		return nil, err
	}
	return out, nil
}

var space = []byte{' '}

// takeOneTripFollows keeps the parents' changes of an insert in one trip,
// as takeFollow does a follow statement's: f is their text array.
func (r *runner) takeOneTripFollows(tr *tableRules, f []byte) error {
	bad := func(err error) error {
		return r.fail(pgerr.New(pgerr.InternalError, "pgrules read a malformed adjusted row: %w", err))
	}
	rows := make([][][][]byte, len(tr.up))
	if f != nil {
		items, err := parseTextArray(f)
		if err != nil {
			return bad(err)
		}
		for _, item := range items {
			a, rest, _ := bytes.Cut(item, space)
			level, row, ok := bytes.Cut(rest, space)
			i, err := strconv.Atoi(string(a))
			if err != nil || !ok || i < 0 || i >= len(rows) {
				return bad(fmt.Errorf("%q", item))
			}
			rows[i] = append(rows[i], [][]byte{level, row})
		}
	}
	if r.followed == nil {
		r.followed = make(map[*adjustment]followedChanges)
	}
	for i, a := range tr.up {
		if err := r.takeLevels(a, rows[i]); err != nil {
			return err
		}
		r.s.markLocked(a, r.followed[a].changes)
	}
	return nil
}

// missedParents fails a write in one trip whose adjustments did not reach
// every parent its rows move a sum or count of, at any level. The
// statement's updates of the parents see its snapshot: a parent that a
// concurrent transaction inserted, or deleted and inserted again under the
// same key, and committed while the statement waited for a lock, is not
// among the rows they update, yet the foreign-key checks at the end of the
// statement, which see it, let the rows in. Left so, its sums and counts
// would miss the rows; the statement fails with 40001 instead, and the
// retry sees the parent.
func (r *runner) missedParents(tr *tableRules, written []*change) error {
	for _, a := range tr.up {
		below := r.followed[a].changes
		if err := r.missedParent(tr, a, written, below); err != nil {
			return err
		}
		ptr := r.set.table(a.parent.QualifiedName())
		for _, b := range a.chain {
			if err := r.missedParent(ptr, b, below, r.followed[b].changes); err != nil {
				return err
			}
		}
	}
	return nil
}

// missedParent compares the parents a's deltas of changes reach with the
// parents the statement adjusted (the server groups the same deltas by
// key, and leaves out those that add nothing, as deltas does).
func (r *runner) missedParent(tr *tableRules, a *adjustment, changes, adjusted []*change) error {
	deltas, err := r.deltas(tr, a, changes)
	if err != nil {
		return r.fail(asPgError(err))
	}
	if len(adjusted) >= len(deltas) {
		return nil
	}
	e := pgerr.New(pgerr.SerializationFailure, "could not adjust %s: a concurrent transaction inserted or replaced a row of it that %s refers to", catalog.ShortName(a.parent.QualifiedName()), catalog.ShortName(tr.t.QualifiedName()))
	e.Schema, e.Table = a.parent.Schema, a.parent.Name
	e.Hint = "Retry the transaction."
	return r.fail(e)
}
