package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
	"github.com/shopspring/decimal"
)

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
		cols[j] = fmt.Sprintf("CAST(k%d AS %s) AS %s", j+1, c.Type, sqltext.Ident(c.Name))
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
				return nil, nil, nil, r.fail(pgerr.New(pgerr.InternalError, "pgrules lost track of a row of %s it updated", catalog.ShortName(t.QualifiedName())))
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
				e := compiler.WriteNotSupported(t, "DELETE ... USING ... RETURNING the USING list, of rows that a cycle of ON DELETE CASCADE in %s deletes before the statement reaches them", catalog.ShortName(t.QualifiedName()))
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
			olds[len(fkIdx)+i] = append(olds[len(fkIdx)+i], compiler.FormatValue(v))
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
				prev, _ := compiler.Sub(v, d)
				old.set(p, ptr.index[c.Rule.Column], prev)
				if r.s.trace && !d.IsZero() {
					r.traceFollowed(a, ptr, nw, c, d, level)
				}
			}
		}
		out = append(out, &change{verb: verbUpdate, old: old, new: nw})
	}
	return out
}

// traceFollowed reports an adjustment of aggregate c by d that the
// server made to parent row nw.
func (r *runner) traceFollowed(a *adjustment, ptr *tableRules, nw *row, c *compiler.Rule, d decimal.Decimal, level int) {
	sign := "+"
	if d.IsNegative() {
		sign = ""
	}
	key := make([][]byte, len(a.fk.ParentColumns))
	for j, k := range a.fk.ParentColumns {
		key[j] = nw.text[ptr.index[k]]
	}
	r.depth += level
	r.tracef("adjust %s %s: %s %s%s", catalog.ShortName(a.parent.QualifiedName()), strings.Join(nullTexts(key), ","), c.Target, sign, d)
	r.depth -= level
}
