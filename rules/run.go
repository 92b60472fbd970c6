package rules

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/stmt"
)

// A client's write runs in these steps, set at a time (rules-api.md §5,
// DESIGN.md "A statement's way through"), each in a file of its own:
//
//  1. materialise (materialize.go): one query gives the rows the statement
//     inserts (with their defaults) or the rows it updates or deletes,
//     locked, with their new values;
//  2. derive (derive.go): copies and formulas, in Go, in dependency order,
//     each only when something it reads changed;
//  3. write (written.go): one statement writes every row, returning what
//     the client asked for and each row as stored;
//  4. adjust (adjust.go): one statement per parent foreign key adds the
//     deltas of the sums and counts (min and max look again only when the
//     extreme leaves), returning each parent as it was and as it is; the
//     parents' own formulas run, and their changes go up the same way;
//  5. check the constraints of the rows (adjust.go);
//  6. cascade (cascade.go): formulas of child rows that read a changed
//     parent column run, and their changes go up again;
//  7. return (rewritten.go): the client's RETURNING list is read again over
//     the rows of its own that steps 4 to 6 wrote again.
//
// An upsert's two parts are in conflict.go, a write in one round trip in
// onetrip.go, the rows of a tree written together in tree.go. Each step is
// a round trip for all the rows of a table together, so a statement costs
// as many round trips as its rules are deep, whatever the number of rows.

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
	set  *runSet
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
	if s.hdr != s.preparedHdr {
		// Prepared with another header: the guard would refuse them.
		s.prepared, s.preparedHdr = nil, s.hdr
	}
	type named struct {
		key  preparedKey
		name string
	}
	var fresh []named
	for i := range sts {
		st := &sts[i]
		var f runFlags
		if i < len(flags) {
			f = flags[i]
		}
		// A statement that brings its own header (the outbox's) keeps it.
		headed := f&verbatim == 0 && s.hdr != "" && st.SQL != "" && !strings.HasPrefix(st.SQL, "SELECT ") && !strings.HasPrefix(st.SQL, headerPrefix)
		// The key holds the text as it is, without the header: a key
		// built by concatenation would copy the text at every execution.
		key := preparedKey{sql: st.SQL, headed: headed, types: paramTypes(st.ParamOIDs)}
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
		fresh = append(fresh, named{key, st.Name})
	}
	res, err := conn.Batch(ctx, sts)
	if s.prepared == nil {
		s.prepared = make(map[preparedKey]string)
	}
	// A statement is known to be prepared when it completed; a name
	// whose Parse may or may not have run is never used again.
	for _, f := range fresh {
		for j := range sts {
			if sts[j].Name == f.name && j < len(res) {
				s.prepared[f.key] = f.name
			}
		}
	}
	return res, err
}

// preparedKey is what a statement was prepared from: its text without the
// guard header, whether it was sent with one, and its parameter types.
type preparedKey struct {
	sql    string
	headed bool
	types  string
}

// paramTypes encodes parameter type OIDs as a comparable string.
func paramTypes(oids []uint32) string {
	if len(oids) == 0 {
		return ""
	}
	b := make([]byte, 0, 4*len(oids))
	for _, o := range oids {
		b = binary.BigEndian.AppendUint32(b, o)
	}
	return string(b)
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
		tr = &tableRules{t: w.table, index: indexOf(w.table), derived: map[string]*compiler.Rule{}}
	}
	r.tracef("%s on %s", strings.ToUpper(string(w.verb)), catalog.ShortName(w.table.QualifiedName()))
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
	if err := r.fire(tr, timingEarly, changes, nil); err != nil {
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
		if err := r.fire(tr, timingPreInsert, changes, nil); err != nil {
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
	return string(compiler.FormatValue(v))
}

// fail puts the client's transaction in the failed state for an error the
// engine found, and returns it.
func (r *runner) fail(e *pgerr.Error) error {
	return failTx(r.ctx, r.conn, e)
}
