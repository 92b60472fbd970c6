package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/stmt"
	"github.com/shopspring/decimal"
)

// afterWrite runs what follows the write of a table's rows: the parents'
// adjustments (and, up the chain, their logic), the rows' constraints, and
// the formulas of child rows that read what changed.
func (r *runner) afterWrite(tr *tableRules, changes []*change) error {
	if len(changes) == 0 {
		return nil
	}
	if r.depth > maxDepth {
		return r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "the rules of %s went %d levels deep without settling", catalog.ShortName(tr.t.QualifiedName()), maxDepth))
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
	if err := r.loadChangedParents(tr, changes); err != nil {
		return err
	}
	var b adjustBatch
	var fromFollows parentChanges
	for _, a := range tr.up {
		if a.err != nil {
			return r.fail(asPgError(a.err))
		}
		if f, ok := r.followed[a]; ok && f.standsFor(changes) {
			delete(r.followed, a)
			fromFollows.add(a.parent, f.changes)
			continue
		}
		if err := r.planAdjustment(&b, tr, a, changes); err != nil {
			return err
		}
	}
	if err := r.parentsChanged(fromFollows); err != nil {
		return err
	}
	if len(b.sts) == 0 {
		return nil
	}
	results, err := r.batch(b.sts)
	if err != nil {
		return err
	}
	if r.s.tx.locked == nil {
		r.s.tx.locked = make(map[string]bool)
	}
	for _, k := range b.locking {
		r.s.tx.locked[k] = true
	}
	return r.parentsChanged(r.adjustedParents(b.adjs, results))
}

// loadChangedParents loads the parents of the rows as they were and as
// they are, for the deltas to find.
func (r *runner) loadChangedParents(tr *tableRules, changes []*change) error {
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
	return r.loadParents(tr.filterPaths.paths, live, "")
}

// adjustBatch is what adjustParents sends in one round trip.
type adjustBatch struct {
	sts     []stmt.Statement
	adjs    []adjusting // what each statement adjusts
	locking []string    // parent rows the batch locks
}

// planAdjustment adds to b the statements that apply a's deltas: parents
// this transaction has locked already are adjusted apart from those it
// locks now.
func (r *runner) planAdjustment(b *adjustBatch, tr *tableRules, a *adjustment, changes []*change) error {
	deltas, err := r.deltas(tr, a, changes)
	if err != nil {
		return r.fail(asPgError(err))
	}
	if len(deltas) == 0 {
		r.tracef("%s pruned: no parent of %s changes", aggNames(a), catalog.ShortName(a.parent.QualifiedName()))
		return nil
	}
	var held, fresh []*delta
	for _, d := range deltas {
		r.traceDelta(a, d)
		k := a.parent.QualifiedName() + "\x00" + string(joinKey(d.key))
		if r.s.tx.locked[k] {
			held = append(held, d)
		} else {
			fresh = append(fresh, d)
			b.locking = append(b.locking, k)
		}
	}
	switch {
	case a.additive && len(deltas) == 1:
		// One parent: its UPDATE locks it, in no order to keep.
		b.sts = append(b.sts, stmt.Statement{SQL: a.one, Params: additiveParams(a, deltas[0])})
		b.adjs = append(b.adjs, adjusting{a, deltas})
	case a.additive && len(fresh) == 0:
		b.sts = append(b.sts, stmt.Statement{SQL: a.many, Params: adjustParams(a, held)})
		b.adjs = append(b.adjs, adjusting{a, held})
	default:
		if len(fresh) > 0 {
			b.sts = append(b.sts, stmt.Statement{SQL: a.sql, Params: adjustParams(a, fresh)})
			b.adjs = append(b.adjs, adjusting{adjustment: a})
		}
		if len(held) > 0 {
			b.sts = append(b.sts, stmt.Statement{SQL: a.held, Params: adjustParams(a, held)})
			b.adjs = append(b.adjs, adjusting{adjustment: a})
		}
	}
	return nil
}

// adjustedParents turns the rows the statements of adjs returned into the
// parents' changes.
func (r *runner) adjustedParents(adjs []adjusting, results []*stmt.Result) parentChanges {
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
	return fromBatch
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
					prev, _ := compiler.Sub(v, d.add[i])
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
		params = append(params, compiler.FormatValue(d.add[i]))
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
				col[j] = compiler.FormatValue(d.add[i])
			}
			params = append(params, textArray(col))
		default:
			arrive, leave := make([][]byte, len(deltas)), make([][]byte, len(deltas))
			for j, d := range deltas {
				arrive[j], leave[j] = compiler.FormatValue(d.arrive[i]), compiler.FormatValue(d.leave[i])
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
				if c, _ := compiler.Compare(d.add[i], 0); c < 0 {
					sign = ""
				}
				parts = append(parts, fmt.Sprintf("%s %s%s", c.Target, sign, compiler.FormatValue(d.add[i])))
			}
		default:
			if d.arrive[i] != nil || d.leave[i] != nil {
				parts = append(parts, fmt.Sprintf("%s %s: %s arrives, %s leaves", c.Target, c.Rule.Kind, traceValue(d.arrive[i]), traceValue(d.leave[i])))
			}
		}
	}
	r.tracef("adjust %s %s: %s", catalog.ShortName(a.parent.QualifiedName()), strings.Join(nullTexts(d.key), ","), strings.Join(parts, ", "))
}

func nullTexts(vals [][]byte) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = nullText(v)
	}
	return out
}

// zero is decimal.Zero as an any, boxed once: every delta starts from it.
var zero any = decimal.Zero

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
			n := len(a.aggs)
			vals := make([]any, 3*n)
			d = &delta{key: key, add: vals[:n:n], arrive: vals[n : 2*n : 2*n], leave: vals[2*n:]}
			for i := range d.add {
				d.add[i] = zero
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
					od.add[i], _ = compiler.Sub(od.add[i], addend(c, ov))
				}
				if newIn {
					nd.add[i], _ = compiler.Add(nd.add[i], addend(c, nv))
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
func addend(c *compiler.Rule, v any) any {
	switch {
	case c.Rule.Kind == catalog.Count:
		return decimal.NewFromInt(1)
	case v == nil:
		return decimal.Zero
	}
	if compiler.IsSpecial(v) {
		return v // a sum that adds NaN stays NaN, as PostgreSQL adds it
	}
	return compiler.ToDecimal(v)
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
	c, ok := compiler.Compare(a, b)
	if !ok || (k == catalog.Min) == (c <= 0) {
		return a
	}
	return b
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
			env := compiler.Env{Row: ch.new.vals, Old: oldVals(ch), Verb: string(ch.verb)}
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
				msg = fmt.Sprintf("constraint %q of %s is not met", c.Rule.Name, catalog.ShortName(tr.t.QualifiedName()))
			}
			r.tracef("constraint %s fails on %s: %s", c.Rule.Name, describeKey(tr, ch.new), msg)
			e := pgerr.New(pgerr.CheckViolation, "%s", msg)
			e.Constraint, e.Schema, e.Table = c.Rule.Name, tr.t.Schema, tr.t.Name
			e.Detail = fmt.Sprintf("Failing row of %s: %s.", catalog.ShortName(tr.t.QualifiedName()), describeKey(tr, ch.new))
			return r.fail(e)
		}
		r.tracef("constraint %s holds on %d row(s)", c.Rule.Name, len(live))
	}
	return nil
}
