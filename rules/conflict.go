package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// The engine runs ON CONFLICT DO UPDATE by looking for the conflicting
// rows itself (upsert, below), by equality of key columns. The arbiter
// PostgreSQL would take — the constraint named, or the unique indexes the
// conflict target infers — is resolved here from the catalog to those
// columns, with the partial index's predicate when the arbiter is one;
// what does not resolve so is refused, and what PostgreSQL itself would
// reject gets its error.

// arbiter is what a conflict with a row already there means: equal values
// in keys, and, for a partial unique index, its predicate holding for both
// rows (SQL over the table's columns, "" for a whole index).
type arbiter struct {
	keys      []*catalog.Column
	predicate string
}

// conflictArbiter resolves the conflict target of ON CONFLICT DO UPDATE.
func conflictArbiter(t *catalog.Table, infer *sqlparse.InferClause) (*arbiter, error) {
	if infer == nil {
		// PostgreSQL's own error, which it gives before any row.
		return nil, pgerr.New(pgerr.SyntaxError, "ON CONFLICT DO UPDATE requires inference specification or constraint name")
	}
	if infer.Constraint != "" {
		return constraintArbiter(t, infer.Constraint)
	}
	for _, name := range infer.Columns {
		if name == "" {
			return nil, compiler.WriteNotSupported(t, "ON CONFLICT DO UPDATE whose conflict target has an expression, a collation or an operator class is not supported; name an index's columns, or its constraint with ON CONFLICT ON CONSTRAINT")
		}
		if t.Column(name) == nil {
			e := pgerr.New(pgerr.UndefinedColumn, "column %q does not exist", name)
			e.Schema, e.Table, e.Column = t.Schema, t.Name, name
			return nil, e
		}
	}
	return inferArbiter(t, infer.Columns, infer.Where)
}

// constraintArbiter is ON CONFLICT ON CONSTRAINT name: the columns of a
// primary key or unique constraint.
func constraintArbiter(t *catalog.Table, name string) (*arbiter, error) {
	for _, u := range t.Uniques {
		if u.Constraint != name {
			continue
		}
		switch {
		case u.Exclusion:
			return nil, pgerr.New(pgerr.WrongObjectType, "ON CONFLICT DO UPDATE not supported with exclusion constraints")
		case u.Deferrable:
			return nil, deferrableArbiter(t, u)
		case u.NullsNotDistinct:
			return nil, nullsNotDistinct(t, u)
		case u.Expressions || u.Predicate != "":
			return nil, compiler.WriteNotSupported(t, "ON CONFLICT ON CONSTRAINT %s, whose index has expressions or a predicate, is not supported; name the columns of a unique index", sqltext.Ident(name))
		}
		return &arbiter{keys: columnsOf(t, u.Columns)}, nil
	}
	e := pgerr.New(pgerr.UndefinedObject, "constraint %q for table %q does not exist", name, t.Name)
	e.Schema, e.Table = t.Schema, t.Name
	return nil, e
}

// inferArbiter is ON CONFLICT (names) [WHERE where]: as PostgreSQL infers
// it, every valid unique index on exactly those columns whose predicate,
// if it has one, the WHERE implies. A whole index among them makes the
// partial ones moot (a conflict in one is a conflict in it). A partial
// index is taken when where is its predicate, as both deparse; the
// implications PostgreSQL proves beyond that are refused, naming the
// predicate to write.
func inferArbiter(t *catalog.Table, names []string, where string) (*arbiter, error) {
	var whole, partial []*catalog.Unique
	for _, u := range t.Uniques {
		if u.Exclusion || u.Expressions || !sameColumns(u.Columns, names) {
			continue
		}
		if u.Predicate == "" {
			whole = append(whole, u)
		} else {
			partial = append(partial, u)
		}
	}
	var implied []*catalog.Unique
	for _, u := range partial {
		if where != "" && normalPredicate(u.Predicate) == where {
			implied = append(implied, u)
		}
	}
	for _, u := range slices.Concat(whole, implied) {
		if u.Deferrable {
			return nil, deferrableArbiter(t, u)
		}
		if u.NullsNotDistinct {
			return nil, nullsNotDistinct(t, u)
		}
	}
	switch {
	case len(whole) > 0:
		return &arbiter{keys: columnsOf(t, names)}, nil
	case len(implied) > 0:
		return &arbiter{keys: columnsOf(t, names), predicate: implied[0].Predicate}, nil
	case where != "" && len(partial) > 0:
		return nil, compiler.WriteNotSupported(t, "ON CONFLICT (%s) WHERE %s: pgrules takes a partial unique index as the conflict target when the WHERE is its predicate as written in the index; write WHERE %s",
			strings.Join(quoteIdents(names), ", "), where, normalPredicate(partial[0].Predicate))
	}
	return nil, pgerr.New(pgerr.InvalidColumnReference, "there is no unique or exclusion constraint matching the ON CONFLICT specification")
}

// deferrableArbiter is PostgreSQL's error for a deferrable arbiter.
func deferrableArbiter(t *catalog.Table, u *catalog.Unique) *pgerr.Error {
	e := pgerr.New(pgerr.ObjectNotInPrereqState, "ON CONFLICT does not support deferrable unique constraints/exclusion constraints as arbiters")
	e.Schema, e.Table, e.Constraint = t.Schema, t.Name, u.Constraint
	return e
}

// nullsNotDistinct refuses an arbiter whose NULLs conflict: the engine
// finds conflicts by equality, where NULL conflicts with nothing.
func nullsNotDistinct(t *catalog.Table, u *catalog.Unique) *pgerr.Error {
	return compiler.WriteNotSupported(t, "ON CONFLICT DO UPDATE on %s, a NULLS NOT DISTINCT index, is not supported; use a unique index whose NULLs are distinct, or write the rows with INSERT and UPDATE", sqltext.Ident(u.Index))
}

// normalPredicate is an index predicate as sqlparse writes a conflict
// target's WHERE, to compare with it; the predicate itself when it does
// not parse.
func normalPredicate(pred string) string {
	if s, ok := sqlparse.NormalExpr(pred); ok {
		return s
	}
	return pred
}

func sameColumns(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(c string) bool { return !slices.Contains(b, c) }) &&
		!slices.ContainsFunc(b, func(c string) bool { return !slices.Contains(a, c) })
}

func columnsOf(t *catalog.Table, names []string) []*catalog.Column {
	cols := make([]*catalog.Column, len(names))
	for i, n := range names {
		cols[i] = t.Column(n)
	}
	return cols
}

func quoteIdents(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = sqltext.Ident(n)
	}
	return out
}

// conflicts finds, locked in key order, the row already there that each
// proposed row conflicts with. Two proposed rows that would conflict with
// each other get PostgreSQL's error, as the second would update the row
// the first inserted. A row a partial arbiter's predicate does not hold
// for is not in its index, and conflicts with nothing.
func (r *runner) conflicts(tr *tableRules, u *upsert, proposed []*change) (map[*change]*row, error) {
	t := tr.t
	kidx := make([]int, len(u.keys))
	names := make([]string, len(u.keys))
	for i, c := range u.keys {
		kidx[i], names[i] = tr.index[c.Name], c.Name
	}
	in, err := r.inIndex(tr, u.predicate, proposed)
	if err != nil {
		return nil, err
	}
	keys := make([][][]byte, len(u.keys))
	seen := make(map[string]bool)
	for i, ch := range proposed {
		k := keyOf(ch.new, kidx)
		if k == "" || !in[i] {
			continue // NULL never conflicts
		}
		if seen[k] {
			e := pgerr.New(pgerr.CardinalityViolation, "ON CONFLICT DO UPDATE command cannot affect row a second time")
			e.Hint = "Ensure that no rows proposed for insertion within the same command have duplicate constrained values."
			return nil, r.fail(e)
		}
		seen[k] = true
		for i, j := range kidx {
			keys[i] = append(keys[i], ch.new.text[j])
		}
	}
	found := make(map[*change]*row)
	if len(seen) == 0 {
		return found, nil
	}
	lock := "FOR UPDATE"
	if u.predicate != "" {
		lock = ""
	}
	sql, params := selectByKey(t, names, keys, lock)
	if u.predicate != "" {
		sql += fmt.Sprintf(" AND (%s) ORDER BY %s FOR UPDATE OF p", u.predicate, keyOrder(t, "p"))
	}
	res, err := r.query(sql, params)
	if err != nil {
		return nil, err
	}
	existing := make(map[string]*row)
	for _, vals := range res.Rows {
		old := newRow(t, vals[0], vals[1:])
		existing[keyOf(old, kidx)] = old
	}
	for i, ch := range proposed {
		if k := keyOf(ch.new, kidx); k != "" && in[i] && existing[k] != nil {
			found[ch] = existing[k]
		}
	}
	return found, nil
}

// inIndex reports, for each proposed row, whether it would be in a partial
// index of predicate: the server evaluates the predicate over the row's
// values. Every row is in a whole index.
func (r *runner) inIndex(tr *tableRules, predicate string, proposed []*change) ([]bool, error) {
	in := make([]bool, len(proposed))
	if predicate == "" || len(proposed) == 0 {
		for i := range in {
			in[i] = true
		}
		return in, nil
	}
	t := tr.t
	cols := []string{"CAST(pgrules_v.i AS int) AS pgrules_i"}
	args := []string{"$1::text[]"}
	vnames := []string{"i"}
	ords := make([][]byte, len(proposed))
	for i := range proposed {
		ords[i] = []byte(strconv.Itoa(i))
	}
	arrays := [][]byte{textArray(ords)}
	for j, c := range t.Columns {
		if c.Generated {
			continue // computed as the row is written: a predicate reading one fails here with the server's error
		}
		vals := make([][]byte, len(proposed))
		for i, ch := range proposed {
			vals[i] = ch.new.text[tr.index[c.Name]]
		}
		arrays = append(arrays, textArray(vals))
		cols = append(cols, fmt.Sprintf("CAST(pgrules_v.c%d AS %s) AS %s", j, c.Type, sqltext.Ident(c.Name)))
		args = append(args, fmt.Sprintf("$%d::text[]", len(args)+1))
		vnames = append(vnames, fmt.Sprintf("c%d", j))
	}
	sql := fmt.Sprintf("SELECT pgrules_i, coalesce((%s), false) FROM (SELECT %s FROM %s AS pgrules_v(%s)) AS pgrules_p",
		predicate, strings.Join(cols, ", "), unnestFrom(args...), strings.Join(vnames, ", "))
	res, err := r.query(sql, arrays)
	if err != nil {
		return nil, err
	}
	for _, vals := range res.Rows {
		i, err := strconv.Atoi(string(vals[0]))
		if err != nil || i < 0 || i >= len(in) {
			return nil, pgerr.New(pgerr.InternalError, "the partial index's predicate: row %q", vals[0])
		}
		in[i] = string(vals[1]) == "t"
	}
	return in, nil
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
		cols = append(cols, fmt.Sprintf("CAST(pgrules_u.c%d AS %s) AS %s", i+1, c.Type, sqltext.Ident(c.Name)))
		args = append(args, fmt.Sprintf("$%d::text[]", n+i+2))
		unames = append(unames, fmt.Sprintf("c%d", i+1))
	}
	where := "true"
	if u.where != "" {
		where = "coalesce((" + u.where + "), false)"
	}
	// The server's rows come in its own order: they are matched by ctid.
	sql := fmt.Sprintf("SELECT %s.ctid, %s, %s FROM %s AS %s, (SELECT %s FROM %s AS pgrules_u(%s)) AS excluded WHERE %s.ctid = excluded.pgrules_ctid",
		w.alias, where, strings.Join(u.values, ", "), sqltext.Table(t), w.alias, strings.Join(cols, ", "), unnestFrom(args...), strings.Join(unames, ", "), w.alias)
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
			v, err := compiler.ParseValue(c.Kind, nw.text[j])
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
		if err := r.fire(tr, timingEarly, changes, nil); err != nil {
			return nil, err
		}
		if err := r.derive(tr, changes, nil); err != nil {
			return nil, err
		}
	}
	if err := r.fire(tr, timingPreInsert, inserts, nil); err != nil {
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
