package rules

import (
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/stmt"
)

// A table's own BEFORE ROW trigger fires when the engine writes the
// client's rows, after the engine derived them: it may change a row or
// skip it. The write returns each row as stored, so a skipped row is not
// among them and gets no logic, and rederive computes the derivations
// again from what the trigger stored, as derivations written as the last
// BEFORE trigger of the table would see it.

// beforeRow names the table's enabled BEFORE ROW trigger that fires on
// the verb, or is "".
func beforeRow(t *catalog.Table, v verb) string {
	return t.BeforeRow[strings.ToUpper(string(v))]
}

// beforeRowWriteError refuses the writes on a table with a BEFORE ROW
// trigger whose rows the engine could not take as stored. An upsert's
// update is computed from the proposed row before the server decides
// which rows conflict, and the triggers of both verbs fire in between. A
// RETURNING that names an UPDATE's FROM list takes those items from the
// materialising query, and the table's from the write: the latter could
// not be evaluated again, in the client's order, over rows the engine
// writes again.
func beforeRowWriteError(tr *tableRules, w *writeStmt) *pgerr.Error {
	t := w.table
	if w.upsert != nil {
		for _, v := range []verb{verbInsert, verbUpdate} {
			if name := beforeRow(t, v); name != "" {
				e := compiler.WriteNotSupported(t, "INSERT ... ON CONFLICT DO UPDATE, when BEFORE ROW trigger %q on %s may change or skip the rows after pgrules computed both the insert and the update", name, catalog.ShortName(t.QualifiedName()))
				e.Hint = "Write the insert and the update as statements of their own, make the trigger an AFTER trigger, or write what it does as rules or events."
				return e
			}
		}
		return nil
	}
	name := beforeRow(t, w.verb)
	if name != "" && w.verb == verbUpdate && w.from != nil && w.returning != "" && len(tr.derivations) > 0 {
		e := compiler.WriteNotSupported(t, "a RETURNING list that names the FROM list and the table, when BEFORE ROW trigger %q on %s may change what the derived columns are computed from", name, catalog.ShortName(t.QualifiedName()))
		e.Hint = "Return only the columns of the table, or read the joined values in a query after the update."
		return e
	}
	return nil
}

// clientReturning is the client's RETURNING list, to be evaluated again
// over rows the engine writes again (writeDerived); out holds its rows in
// the order of the changes.
type clientReturning struct {
	w       *writeStmt
	p       clientParams
	formats []int16
	out     *stmt.Result
}

// rederive computes the derivations of the written rows again from the
// rows as stored when the table's BEFORE ROW trigger fired on the write,
// and writes back what differs: an UPDATE by key, on which the table's
// BEFORE UPDATE trigger fires again. A trigger that then changes the row
// again, or skips it, could make the engine write without end: the
// statement is refused (0A000) instead.
func (r *runner) rederive(tr *tableRules, w *writeStmt, changes []*change, out *stmt.Result, p clientParams, resultFormats []int16) error {
	name := beforeRow(tr.t, w.verb)
	if name == "" || w.verb == verbDelete || len(changes) == 0 || len(tr.derivations) == 0 && !hasAggregateTargets(tr) {
		return nil
	}
	var ret *clientReturning
	if w.returning != "" {
		ret = &clientReturning{w: w, p: p, formats: resultFormats, out: out}
	}
	defer func() {
		for _, ch := range changes {
			ch.computed = nil
		}
	}()
	for again := false; ; again = true {
		before := make([]*row, len(changes))
		for i, ch := range changes {
			before[i] = ch.new.clone(tr.t)
		}
		if err := r.derive(tr, changes, nil); err != nil {
			return err
		}
		keepAggregates(tr, changes)
		if !rowsDiffer(tr.t, changes, before) {
			return nil
		}
		if again {
			return r.fail(beforeTriggerAgain(tr.t, tr.t.BeforeRow["UPDATE"], "changed"))
		}
		r.tracef("BEFORE ROW trigger %q changed what the derivations read: derived columns written again", name)
		for _, ch := range changes {
			ch.computed = ch.new
		}
		if err := r.writeDerived(tr, changes, before, ret); err != nil {
			return err
		}
	}
}

// keepAggregates puts back the sums, counts, minimums and maximums of
// updated rows that a trigger changed: they follow the rows' children,
// which the update did not change.
func keepAggregates(tr *tableRules, changes []*change) {
	for col, d := range tr.derived {
		if !d.Rule.Kind.IsAggregate() {
			continue
		}
		i := tr.index[col]
		for _, ch := range changes {
			if ch.verb == verbUpdate && !sameStored(ch.old.vals[col], ch.new.vals[col]) {
				ch.new.set(tr.t, i, ch.old.vals[col])
			}
		}
	}
}

// rowsDiffer reports whether a column of a change's row differs in value
// from before (text may differ for one value, as 60 and 60.00).
func rowsDiffer(t *catalog.Table, changes []*change, before []*row) bool {
	for i, ch := range changes {
		for _, c := range t.Columns {
			if !sameStored(before[i].vals[c.Name], ch.new.vals[c.Name]) {
				return true
			}
		}
	}
	return false
}

// triggerChanged reports whether a BEFORE ROW trigger stored other values
// in the columns than those the derivations were computed from.
func triggerChanged(cols []string, ch *change) bool {
	if ch.computed == nil || ch.new == nil {
		return false
	}
	for _, c := range cols {
		if !sameStored(ch.computed.vals[c], ch.new.vals[c]) {
			return true
		}
	}
	return false
}

func sameStored(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return sameValue(a, b)
}

// writeAgain runs writeDerived's statement; with ret, after the client's
// parameters, which its RETURNING list may read, with the client's result
// formats for that list.
func (r *runner) writeAgain(sql string, params [][]byte, ret *clientReturning) (*stmt.Result, error) {
	if ret == nil {
		return r.query(sql, params)
	}
	values, pformats, oids := ret.p.with(params...)
	formats := resultFormatsFor(ret.formats, ret.w.nReturning, 2+len(ret.w.table.Columns))
	res, err := r.batch([]stmt.Statement{{SQL: sql, Params: values, ParamFormats: pformats, ParamOIDs: oids, ResultFormats: formats}})
	if len(res) == 0 {
		return nil, err
	}
	return res[0], err
}

// beforeTriggerAgain is the error when the table's BEFORE UPDATE trigger
// changes or skips a row as the engine writes the columns derived from it.
func beforeTriggerAgain(t *catalog.Table, name, what string) *pgerr.Error {
	e := compiler.WriteNotSupported(t, "BEFORE ROW trigger %q on %s %s a row again when pgrules wrote the columns derived from the row as stored", name, catalog.ShortName(t.QualifiedName()), what)
	e.Hint = "Make the trigger leave a row it already changed as it is when it fires again (or fire only on the columns it reads, BEFORE UPDATE OF ...), make it an AFTER trigger, or write what it does as rules."
	return e
}
