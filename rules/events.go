package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// Events (rules-api.md §4) run at these points of a write:
//
//   - early, on the rows a statement writes, before their derivations
//     (write, upsert); pre_insert on the inserted rows after them;
//   - row, at the end of the statement, once for every row its logic
//     changed, the parents the rules adjusted included, as the row ended;
//   - commit, at COMMIT, once per row the transaction touched, then
//     after_commit, whose effects go to the outbox in the same
//     transaction;
//   - failure, when the statement fails, on the rows it was writing.
//
// An action's writes and notifications are queued while the rows of one
// timing and table are evaluated, and run together: consecutive writes of
// one shape become one statement, through the engine, so an event costs
// a round trip for all the rows, not one per row.

// The timings of events.
const (
	timingEarly       = "early"
	timingPreInsert   = "pre_insert"
	timingRow         = "row"
	timingCommit      = "commit"
	timingAfterCommit = "after_commit"
	timingFailure     = "failure"
)

// maxEventRounds bounds the rounds of row or commit events one statement
// or commit goes through: events whose writes keep changing rows that have
// not had their events stop there with an error.
const maxEventRounds = 16

// fires reports whether an event runs for rows written with verb.
func fires(ev *compiler.Rule, v verb) bool {
	return len(ev.Rule.Verbs) == 0 || slices.Contains(ev.Rule.Verbs, string(v))
}

// eventsOf are the events of a table at a timing.
func (tr *tableRules) eventsOf(timing string) []*compiler.Rule {
	if tr == nil {
		return nil
	}
	return tr.events[timing]
}

// vetoCause marks a veto's error with the event that made it, for the
// failure events' error.rule.
type vetoCause struct{ rule string }

func (v vetoCause) Error() string { return "vetoed by " + v.rule }

// vetoError stops an action's evaluation at reject(); coded is set when
// the SQLSTATE was given.
type vetoError struct {
	e     *pgerr.Error
	coded bool
}

func (v *vetoError) Error() string { return v.e.Message }

// actions is one evaluation of an event on one row: what its functions
// may change and where their effects go.
type actions struct {
	r      *runner
	ev     *compiler.Rule
	tr     *tableRules
	verb   verb
	rw     *row // the row set() changes; nil where it cannot
	key    string
	queue  *[]effect
	outbox *[]outboxEntry
	// set is true once set() changed the row.
	set bool
}

// effect is a write or notification an action queued.
type effect struct {
	verb      verb // "" for a notification
	table     *catalog.Table
	key, vals []colValue // by column name
	channel   string
	payload   []byte
}

type colValue struct {
	col  *catalog.Column
	text []byte
}

// outboxEntry is one row of pgrules.outbox.
type outboxEntry struct {
	rule, timing, key, kind, target string
	payload                         []byte
	args                            [][]byte
	hasArgs                         bool
}

// Call carries out one function call of the action (compiler.Actions).
func (a *actions) Call(name string, args []any) (any, error) {
	switch name {
	case "set":
		return nil, a.setColumn(args[0], args[1])
	case "reject":
		e := pgerr.New(pgerr.RaiseException, "%s", textOf(args[0]))
		if len(args) > 1 {
			code, _ := args[1].(string)
			if !validSQLState(code) {
				return nil, pgerr.New(pgerr.InvalidParameterValue, "reject: %q is not a SQLSTATE (five digits or capital letters)", textOf(args[1]))
			}
			e.Code = code
		}
		return nil, &vetoError{e, len(args) > 1}
	case "insert", "update", "delete":
		return nil, a.write(verb(name), args)
	case "notify":
		channel, ok := args[0].(string)
		if !ok || channel == "" {
			return nil, pgerr.New(pgerr.InvalidParameterValue, "notify: the channel must be a non-empty string")
		}
		payload := payloadOf(args[1])
		if a.outbox != nil {
			a.record("notify", channel, payload, nil)
			return nil, nil
		}
		*a.queue = append(*a.queue, effect{channel: channel, payload: payload})
		return nil, nil
	case "sql":
		query, ok := args[0].(string)
		if !ok || strings.TrimSpace(query) == "" {
			return nil, pgerr.New(pgerr.InvalidParameterValue, "sql: the query must be a non-empty string")
		}
		params := make([][]byte, len(args)-1)
		for i, v := range args[1:] {
			params[i] = compiler.FormatValue(v)
		}
		if a.outbox != nil {
			a.record("sql", query, nil, params)
			return []any{}, nil
		}
		return a.r.eventSQL(a.queue, query, params)
	case "post":
		url, ok := args[0].(string)
		if !ok || !(strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://")) {
			return nil, pgerr.New(pgerr.InvalidParameterValue, "post: %q is not an http:// or https:// URL", textOf(args[0]))
		}
		a.record("post", url, payloadOf(args[1]), nil)
		return nil, nil
	}
	return nil, pgerr.New(pgerr.UndefinedFunction, "unknown action function %s", name)
}

// record adds an outbox entry for an after_commit or failure effect.
func (a *actions) record(kind, target string, payload []byte, args [][]byte) {
	*a.outbox = append(*a.outbox, outboxEntry{
		rule: a.ev.Rule.Name, timing: a.ev.Rule.Timing, key: a.key,
		kind: kind, target: target, payload: payload, args: args, hasArgs: kind == "sql",
	})
}

func (a *actions) setColumn(name, value any) error {
	col, _ := name.(string)
	if a.rw == nil {
		return pgerr.New(pgerr.FeatureNotSupported, "set: a %s has no new row to change", a.verb)
	}
	t := a.tr.t
	c := t.Column(col)
	if c == nil {
		return pgerr.New(pgerr.UndefinedColumn, "set: column %q of table %s does not exist", col, catalog.ShortName(t.QualifiedName()))
	}
	if d := a.tr.derived[col]; d != nil && d.Rule.Kind != catalog.Copy {
		return pgerr.New(pgerr.GeneratedAlways, "set: column %q is derived by rule %q (%s)", col, d.Rule.Name, d.Rule.Kind)
	}
	a.rw.set(t, a.tr.index[col], value)
	// A parent read through a foreign key that changed is read again.
	for _, fk := range t.Parents {
		if slices.Contains(fk.Columns, col) {
			delete(a.rw.vals, fk.Accessor)
		}
	}
	a.set = true
	return nil
}

// write queues insert(), update() or delete(); after a commit it becomes
// an outbox entry that runs the statement in a transaction of its own.
func (a *actions) write(v verb, args []any) error {
	name, _ := args[0].(string)
	t := a.r.snap.Lookup(name)
	if t == nil {
		return pgerr.New(pgerr.UndefinedTable, "%s: table %q does not exist", v, textOf(args[0]))
	}
	e := effect{verb: v, table: t}
	var err error
	switch v {
	case verbInsert:
		e.vals, err = columnValues(t, string(v), args[1])
	case verbUpdate:
		if e.key, err = columnValues(t, string(v), args[1]); err == nil {
			e.vals, err = columnValues(t, string(v), args[2])
		}
	case verbDelete:
		e.key, err = columnValues(t, string(v), args[1])
	}
	if err != nil {
		return err
	}
	if v != verbInsert && len(e.key) == 0 {
		return pgerr.New(pgerr.InvalidParameterValue, "%s: the key of the row of %s is empty", v, catalog.ShortName(t.QualifiedName()))
	}
	if a.outbox != nil {
		sql, params := effectSQL([]effect{e})
		a.record("sql", sql, nil, params)
		return nil
	}
	*a.queue = append(*a.queue, e)
	return nil
}

// columnValues reads an action's {column: value} map against a table.
func columnValues(t *catalog.Table, fn string, m any) ([]colValue, error) {
	vals, ok := m.(map[string]any)
	if !ok && m != nil {
		return nil, pgerr.New(pgerr.InvalidParameterValue, "%s: expected a map of columns to values, not %s", fn, compiler.TypeName(m))
	}
	out := make([]colValue, 0, len(vals))
	for name, v := range vals {
		c := t.Column(name)
		if c == nil {
			return nil, pgerr.New(pgerr.UndefinedColumn, "%s: column %q of table %s does not exist", fn, name, catalog.ShortName(t.QualifiedName()))
		}
		out = append(out, colValue{col: c, text: compiler.FormatValue(coerce(c, v))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].col.Name < out[j].col.Name })
	return out, nil
}

func textOf(v any) string {
	if v == nil {
		return ""
	}
	return string(compiler.FormatValue(v))
}

// payloadOf is a notification's payload or a post's body: a string as it
// is, any other value as JSON.
func payloadOf(v any) []byte {
	if s, ok := v.(string); ok {
		return []byte(s)
	}
	b, err := compiler.EncodeJSON(v)
	if err != nil {
		return []byte(textOf(v))
	}
	return b
}

func validSQLState(s string) bool {
	if len(s) != 5 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// evalEvent runs one event's action on one row; failure is the error a
// failure event handles (nil for the others). A veto (reject(), or a
// non-empty string as the action's value) is returned apart from a
// failure of the action itself.
func (r *runner) evalEvent(a *actions, ch *change, failure map[string]any) (veto *vetoError, err error) {
	env := compiler.Env{Verb: string(ch.verb), Error: failure}
	if ch.new != nil {
		env.Row = ch.new.vals
	} else if ch.old != nil {
		env.Row = ch.old.vals // a delete's events see the row it deletes
	}
	if ch.old != nil {
		env.Old = ch.old.vals
	}
	out, err := a.ev.Act(env, a)
	var ve *vetoError
	switch {
	case errors.As(err, &ve):
		return ve, nil
	case err != nil:
		return nil, a.ev.Failure(err)
	}
	if s, ok := out.(string); ok && s != "" && a.ev.Rule.Timing != timingAfterCommit {
		return &vetoError{e: pgerr.New(pgerr.RaiseException, "%s", s)}, nil
	}
	return nil, nil
}

// vetoes gathers the vetoes of one statement's rows: it fails once, with
// the first message and SQLSTATE, and every distinct message in the detail
// as a JSON array (rules-api.md §4).
type vetoes struct {
	first *pgerr.Error
	msgs  []string
}

func (v *vetoes) add(ev *compiler.Rule, tr *tableRules, e *pgerr.Error) {
	if v.first == nil {
		e.Schema, e.Table = tr.t.Schema, tr.t.Name
		e.Err = vetoCause{ev.Rule.Name}
		v.first = e
	}
	if !slices.Contains(v.msgs, e.Message) {
		v.msgs = append(v.msgs, e.Message)
	}
}

func (v *vetoes) err() *pgerr.Error {
	if v.first == nil {
		return nil
	}
	detail, _ := json.Marshal(v.msgs)
	v.first.Detail = string(detail)
	return v.first
}

// fire runs the events of a timing on rows of one table, then their queued
// effects; outbox, when set, receives the effects of after_commit events.
func (r *runner) fire(tr *tableRules, timing string, changes []*change, outbox *[]outboxEntry) error {
	evs := tr.eventsOf(timing)
	if len(evs) == 0 || len(changes) == 0 {
		return nil
	}
	var news, olds []*row
	for _, ch := range changes {
		if ch.new != nil {
			news = append(news, ch.new)
		} else if ch.old != nil {
			news = append(news, ch.old)
		}
		if ch.old != nil {
			olds = append(olds, ch.old)
		}
	}
	if err := r.loadParents(tr.eventPaths.paths, news, ""); err != nil {
		return err
	}
	if err := r.loadParents(tr.eventPaths.old, olds, ""); err != nil {
		return err
	}
	var q []effect
	var v vetoes
	reran := false
	for _, ch := range changes {
		rw := ch.new
		if rw == nil {
			rw = ch.old
		}
		for _, ev := range evs {
			if !fires(ev, ch.verb) {
				continue
			}
			a := &actions{r: r, ev: ev, tr: tr, verb: ch.verb, queue: &q, outbox: outbox}
			if outbox != nil {
				a.key = outboxKey(tr, rw) // only an outbox entry names its row
			}
			if timing == timingEarly || timing == timingPreInsert {
				a.rw = ch.new
			}
			r.tracef("event %s (%s) on %s", ev.Rule.Name, timing, describeKey(tr, rw))
			veto, err := r.evalEvent(a, ch, nil)
			if err != nil {
				return r.rowError(tr, err, rw)
			}
			if veto != nil {
				r.tracef("  vetoed: %s", veto.e.Message)
				v.add(ev, tr, veto.e)
			}
			reran = reran || a.set
		}
	}
	if e := v.err(); e != nil {
		return r.fail(e)
	}
	if reran && timing == timingPreInsert {
		// What the event set may be read by the row's formulas.
		if err := r.derive(tr, changes, nil); err != nil {
			return err
		}
	}
	return r.flush(&q)
}

// outboxKey is a row's key in the outbox: its table and primary key.
func outboxKey(tr *tableRules, rw *row) string {
	idx := tr.columnIndexes(tr.t.PrimaryKey)
	parts := make([]string, len(idx))
	for i, j := range idx {
		parts[i] = nullText(rw.text[j])
	}
	if len(idx) == 0 {
		parts = []string{string(rw.ctid)}
	}
	return tr.t.QualifiedName() + ":" + strings.Join(parts, ",")
}

// flush runs the queued effects in order; consecutive ones of one shape
// (the same write on the same table and columns, or notifications) run as
// one statement.
func (r *runner) flush(q *[]effect) error {
	list := *q
	*q = nil
	for len(list) > 0 {
		n := 1
		for n < len(list) && n < maxEffectRows && sameShape(list[0], list[n]) {
			n++
		}
		sql, params := effectSQL(list[:n])
		if _, err := r.eventStatement(sql, params); err != nil {
			return err
		}
		list = list[n:]
	}
	return nil
}

// maxEffectRows bounds the rows of one effect statement, whose parameters
// PostgreSQL counts in 16 bits.
const maxEffectRows = 1000

func sameShape(a, b effect) bool {
	if a.verb != b.verb || a.table != b.table || len(a.key) != len(b.key) || len(a.vals) != len(b.vals) {
		return false
	}
	if a.verb == verbInsert && len(a.vals) == 0 {
		return false // DEFAULT VALUES is one row
	}
	for i := range a.key {
		if a.key[i].col != b.key[i].col {
			return false
		}
	}
	for i := range a.vals {
		if a.vals[i].col != b.vals[i].col {
			return false
		}
	}
	return true
}

// effectSQL is the statement of effects of one shape, with its text
// parameters: each value cast to its column's type.
func effectSQL(list []effect) (string, [][]byte) {
	e := list[0]
	var params [][]byte
	param := func(text []byte) string {
		params = append(params, text)
		return fmt.Sprintf("$%d", len(params))
	}
	if e.verb == "" {
		chans, payloads := make([][]byte, len(list)), make([][]byte, len(list))
		for i, x := range list {
			chans[i], payloads[i] = []byte(x.channel), x.payload
		}
		return "SELECT pg_notify(n.c, n.p) FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(c, p, o) ORDER BY n.o",
			[][]byte{textArray(chans), textArray(payloads)}
	}
	t := sqltext.Table(e.table)
	switch e.verb {
	case verbInsert:
		if len(e.vals) == 0 {
			return "INSERT INTO " + t + " DEFAULT VALUES", nil
		}
		cols := make([]string, len(e.vals))
		for i, cv := range e.vals {
			cols[i] = sqltext.Ident(cv.col.Name)
		}
		rows := make([]string, len(list))
		for i, x := range list {
			vals := make([]string, len(x.vals))
			for j, cv := range x.vals {
				vals[j] = fmt.Sprintf("CAST(%s AS %s)", param(cv.text), sqltext.ValueType(cv.col))
			}
			rows[i] = "(" + strings.Join(vals, ", ") + ")"
		}
		return fmt.Sprintf("INSERT INTO %s (%s) VALUES %s", t, strings.Join(cols, ", "), strings.Join(rows, ", ")), params
	}
	// An update or delete joins the rows' keys (and new values) as VALUES.
	var names, match, sets []string
	for i, cv := range e.key {
		names = append(names, fmt.Sprintf("k%d", i+1))
		match = append(match, fmt.Sprintf("pgrules_t.%s = CAST(pgrules_v.k%d AS %s)", sqltext.Ident(cv.col.Name), i+1, cv.col.Type))
	}
	for i, cv := range e.vals {
		names = append(names, fmt.Sprintf("v%d", i+1))
		sets = append(sets, fmt.Sprintf("%s = CAST(pgrules_v.v%d AS %s)", sqltext.Ident(cv.col.Name), i+1, sqltext.ValueType(cv.col)))
	}
	rows := make([]string, len(list))
	for i, x := range list {
		var vals []string
		for _, cv := range append(slices.Clip(x.key), x.vals...) {
			vals = append(vals, param(cv.text))
		}
		rows[i] = "(" + strings.Join(vals, ", ") + ")"
	}
	from := fmt.Sprintf("(VALUES %s) AS pgrules_v(%s)", strings.Join(rows, ", "), strings.Join(names, ", "))
	if e.verb == verbDelete {
		return fmt.Sprintf("DELETE FROM %s AS pgrules_t USING %s WHERE %s", t, from, strings.Join(match, " AND ")), params
	}
	if len(sets) == 0 {
		// Nothing to set: the row is written as it is, so its rules run.
		sets = append(sets, fmt.Sprintf("%s = pgrules_t.%s", sqltext.Ident(e.key[0].col.Name), sqltext.Ident(e.key[0].col.Name)))
	}
	return fmt.Sprintf("UPDATE %s AS pgrules_t SET %s FROM %s WHERE %s", t, strings.Join(sets, ", "), from, strings.Join(match, " AND ")), params
}

// eventStatement runs a statement of an event (its writes, or its sql())
// with text parameters: through the engine when it writes a table with
// rules, as it is otherwise.
func (r *runner) eventStatement(sql string, params [][]byte) (*stmt.Result, error) {
	p := r.s.plan(r.c, sql)
	st := stmt.Statement{SQL: sql, Params: params}
	if !p.intercept {
		res, err := r.s.run(r.ctx, r.conn, []stmt.Statement{st}, []runFlags{verbatim})
		if len(res) == 0 {
			return nil, err
		}
		return res[0], err
	}
	if p.define || p.trace || p.txControl {
		return nil, r.fail(pgerr.New(pgerr.FeatureNotSupported, "an event's sql() cannot define rules, set pgrules.trace or control the transaction: %s", sql))
	}
	if err := r.s.refuseBroken(r.ctx, r.conn, r.c, p); err != nil {
		return nil, err
	}
	p.analyse(r.c, sql)
	if p.writeErr != nil {
		return nil, r.fail(asPgError(p.writeErr))
	}
	cp, err := r.s.clientParams(r.ctx, r.conn, st)
	if err != nil {
		return nil, err
	}
	if p.cte != nil {
		return r.s.runCTE(r, r.c, p.cte, cp, nil)
	}
	return r.write(p.write, cp, nil)
}

// eventSQL runs an action's sql() after the effects queued before it, and
// returns its rows as maps of column to value.
func (r *runner) eventSQL(q *[]effect, query string, params [][]byte) (any, error) {
	if err := r.flush(q); err != nil {
		return nil, err
	}
	res, err := r.eventStatement(query, params)
	if err != nil {
		return nil, err
	}
	rows := make([]any, len(res.Rows))
	for i, vals := range res.Rows {
		m := make(map[string]any, len(vals))
		for j, f := range res.Fields {
			v, err := compiler.ParseValue(catalog.KindOf(f.TypeOID), vals[j])
			if err != nil {
				v = string(vals[j])
			}
			m[f.Name] = v
		}
		rows[i] = m
	}
	return rows, nil
}

// logged is a row the statement changed in a table with row events: its
// first old and its latest new state.
type logged struct {
	tr    *tableRules
	ch    *change
	fired bool
	gone  bool // inserted and deleted by the statement
}

// logRows records changes for the statement's row events.
func (r *runner) logRows(tr *tableRules, changes []*change) {
	if len(tr.eventsOf(timingRow)) == 0 {
		return
	}
	if r.logIndex == nil {
		r.logIndex = make(map[string]*logged)
	}
	for _, ch := range changes {
		rw := ch.new
		if rw == nil {
			rw = ch.old
		}
		k := outboxKey(tr, rw)
		if l := r.logIndex[k]; l != nil && ch.old != nil {
			switch {
			case ch.verb == verbDelete && l.ch.verb == verbInsert:
				l.gone = true
			case ch.verb == verbDelete:
				l.ch = &change{verb: verbDelete, old: l.ch.old}
			default:
				l.ch = &change{verb: l.ch.verb, old: l.ch.old, new: ch.new}
			}
			continue
		}
		l := &logged{tr: tr, ch: ch}
		r.logIndex[k] = l
		r.log = append(r.log, l)
	}
}

// rowEvents runs the row events of the rows the statement changed, round
// after round while the events' own writes change rows that have not had
// theirs.
func (r *runner) rowEvents() error {
	for round := 0; ; round++ {
		var pending []*logged
		for _, l := range r.log {
			if !l.fired && !l.gone {
				pending = append(pending, l)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if round == maxEventRounds {
			return r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "row events went %d rounds without settling: their writes keep changing rows whose events then run (event %s on %s)",
				maxEventRounds, pending[0].tr.eventsOf(timingRow)[0].Rule.Name, catalog.ShortName(pending[0].tr.t.QualifiedName())))
		}
		var order []*tableRules
		by := make(map[*tableRules][]*change)
		for _, l := range pending {
			l.fired = true
			if by[l.tr] == nil {
				order = append(order, l.tr)
			}
			by[l.tr] = append(by[l.tr], l.ch)
		}
		for _, tr := range order {
			if err := r.fire(tr, timingRow, by[tr], nil); err != nil {
				return err
			}
		}
	}
}

// failureEvents runs the failure events of the client statement's table
// when the statement failed, before the client hears of it. The
// transaction has failed, so they only read what the engine holds: a
// reject() replaces the error's message (and SQLSTATE when given), and
// their notify() and post() wait in the session for the rollback, then go
// to the outbox in a transaction of their own.
func (r *runner) failureEvents(err error) error {
	f := r.failing
	if f == nil || len(f.tr.eventsOf(timingFailure)) == 0 {
		return err
	}
	e := asPgError(err)
	var rule string
	if r.set.Rule(e.Constraint) != nil {
		rule = e.Constraint // a constraint of the rules, not of the table
	}
	var vc vetoCause
	if errors.As(e.Err, &vc) {
		rule = vc.rule
	}
	errVal := map[string]any{"code": e.Code, "message": e.Message, "detail": e.Detail, "rule": rule, "table": e.Table}
	if rule == "" {
		errVal["rule"] = nil
	}
	changes := f.changes
	if len(changes) == 0 {
		changes = []*change{{verb: f.verb}} // failed before its rows were known
	}
	var replaced *vetoError
	var entries []outboxEntry
	for _, ch := range changes {
		rw := ch.new
		if rw == nil {
			rw = ch.old
		}
		key := f.tr.t.QualifiedName() + ":"
		if rw != nil {
			key = outboxKey(f.tr, rw)
		}
		for _, ev := range f.tr.eventsOf(timingFailure) {
			if !fires(ev, ch.verb) {
				continue
			}
			a := &actions{r: r, ev: ev, tr: f.tr, verb: ch.verb, outbox: &entries, key: key}
			veto, everr := r.evalEvent(a, ch, errVal)
			if everr != nil {
				r.s.log.Warn().Err(everr).Str("rule", ev.Rule.Name).Msg("a failure event failed; the client gets the statement's own error")
				continue
			}
			if veto != nil && replaced == nil {
				replaced = veto
			}
		}
	}
	r.s.failures = append(r.s.failures, entries...)
	if replaced == nil {
		return err
	}
	out := *e
	out.Message = replaced.e.Message
	if replaced.coded {
		out.Code = replaced.e.Code
	}
	r.tracef("failure event replaced the error: %s %s", out.Code, out.Message)
	return &out
}

// outboxSQL records entries in pgrules.outbox and wakes the dispatchers,
// in one statement: eight text arrays (rule, timing, key, kind, target,
// payload, args as array literals, role). It runs on the engine's own
// connection, whose role owns the outbox (the failure events' entries).
const outboxSQL = `WITH e AS (INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, args, role, rule_digest)
  SELECT x.r, x.t, x.k, x.kd, x.tg, x.p, x.a::text[], coalesce(nullif(x.ro, ''), current_user)::name, pgrules._rule_digest(x.r, x.t)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS x(r, t, k, kd, tg, p, a, ro, o)
  ORDER BY x.o RETURNING 1)
SELECT pg_notify('pgrules_outbox', '') FROM (SELECT 1 FROM e LIMIT 1) AS n`

// outboxAddSQL records the after_commit entries in the client's own
// transaction, as its role, which holds no privilege on the outbox:
// pgrules._outbox_add runs only as exactly this text behind the outbox
// header (outboxHeader), and takes the role from current_user. Its
// parameters are outboxSQL's first seven.
const outboxAddSQL = `SELECT pgrules._outbox_add($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], current_user)`

// outboxHeader is the header that tells pgrules._outbox_add the engine's
// statement: the guard key, which only the engine presents (a client's
// text that begins with a header is refused).
func outboxHeader(key string) string {
	return headerPrefix + key + " outbox */\n"
}

// outboxParams are outboxSQL's parameters for entries recorded by role,
// and, for role "", outboxAddSQL's.
func outboxParams(entries []outboxEntry, role string) [][]byte {
	n := 7
	if role != "" {
		n = 8
	}
	cols := make([][][]byte, n)
	for _, e := range entries {
		var args []byte
		if e.hasArgs {
			args = textArray(e.args)
		}
		for i, v := range [][]byte{[]byte(e.rule), []byte(e.timing), []byte(e.key), []byte(e.kind), []byte(e.target), e.payload, args, []byte(role)}[:n] {
			cols[i] = append(cols[i], v)
		}
	}
	params := make([][]byte, len(cols))
	for i, c := range cols {
		params[i] = textArray(c)
	}
	return params
}
