package rules

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// txState is what the engine remembers of a session's open transaction:
// the rows written in it that commit constraints check, and where each
// savepoint began, so that ROLLBACK TO SAVEPOINT forgets the rows touched
// since (rules-api.md §5).
type txState struct {
	// ends is the connection's TxEnds when this state began.
	ends    uint64
	touched []touchedRow
	marks   []savepoint
	// defined is set when the transaction defined rules: its end waits for
	// the catalog to reload.
	defined bool
	// rules are the rules as the transaction sees them once it defined
	// some through the engine, until it ends; nil otherwise.
	rules *compiled
	// locked holds the parent rows (table and key) the engine has locked
	// in this transaction: adjusting one again needs no lock, and taking
	// it again, with another transaction queued on the row, is how
	// PostgreSQL deadlocks a transaction on its own row.
	locked map[string]bool
}

// touchedRow is a row by its primary key, with its state before the
// change that touched it (nil for an insert): the first of a key is the
// row as the transaction found it. A deleted row is not found again at
// commit, and so not checked.
type touchedRow struct {
	table string
	key   [][]byte
	old   *row
}

type savepoint struct {
	name string
	at   int // len(touched) when it was set
}

// syncTx starts afresh when the transaction the state belongs to has
// ended.
func (s *session) syncTx(conn stmt.Conn) {
	if ends := conn.TxEnds(); ends != s.tx.ends {
		s.tx = txState{ends: ends}
		s.flushFailures(context.Background())
	}
}

// hasCommitWork reports whether commits need the engine: some table has
// commit constraints, commit or after_commit events.
func (s *runSet) hasCommitWork() bool {
	for _, tr := range s.tables {
		if tr.commitWork() {
			return true
		}
	}
	return false
}

// commitWork reports whether the table's touched rows matter at commit.
func (tr *tableRules) commitWork() bool {
	return len(tr.commitConstraints) > 0 || len(tr.eventsOf(timingCommit)) > 0 || len(tr.eventsOf(timingAfterCommit)) > 0
}

// holdsTxControl tells, cheaply, that a text of several statements may
// hold one that ends a transaction or handles a savepoint after its first
// ("SELECT 1; COMMIT"): such a text is parsed, so that the engine sees the
// COMMIT (a false alarm costs only the parse).
func holdsTxControl(sql string) bool {
	if !strings.Contains(sql, ";") {
		return false
	}
	for _, k := range []string{"commit", "end", "prepare", "savepoint", "rollback", "release"} {
		if sqlparse.ContainsFold(sql, k) {
			return true
		}
	}
	return false
}

// isTxKeyword tells, from a statement's first word, that it may end a
// transaction or handle a savepoint.
func isTxKeyword(w string) bool {
	for _, k := range []string{"COMMIT", "END", "PREPARE", "SAVEPOINT", "ROLLBACK", "RELEASE"} {
		if strings.EqualFold(w, k) {
			return true
		}
	}
	return false
}

// followedTx reports whether a transaction statement is one the engine
// must run: a savepoint (what a rollback to it forgets), or, with commits
// set, a commit (its constraints). A plain ROLLBACK needs nothing: the
// state is dropped when the transaction ends.
func followedTx(sql string, commits bool) bool {
	k, _ := txKind(sql)
	switch k {
	case stmt.TxCommit, stmt.TxCommitChain, stmt.TxPrepare:
		return commits
	case stmt.TxSavepoint, stmt.TxRelease, stmt.TxRollbackTo:
		return true
	}
	return false
}

// txKind is what a text of one transaction-control statement does, and
// the savepoint it names.
func txKind(sql string) (stmt.TxKind, string) {
	sts, err := sqlparse.Parse(sql)
	if err != nil || len(sts) != 1 {
		return stmt.TxNone, ""
	}
	return sts[0].Tx, sts[0].Savepoint
}

// touch records the rows a statement wrote in tables whose rows matter at
// commit.
func (s *session) touch(tr *tableRules, changes []*change) {
	if !tr.commitWork() {
		return
	}
	idx := tr.columnIndexes(tr.t.PrimaryKey)
	for _, ch := range changes {
		rw := ch.new
		if rw == nil {
			rw = ch.old
		}
		key := make([][]byte, len(idx))
		for i, j := range idx {
			key[i] = rw.text[j]
		}
		s.tx.touched = append(s.tx.touched, touchedRow{table: tr.t.QualifiedName(), key: key, old: ch.old})
	}
}

// txControl runs COMMIT, PREPARE TRANSACTION and the savepoint statements
// while the database has commit work.
func (s *session) txControl(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	kind, name := txKind(st.SQL)
	var res *stmt.Result
	var err error
	switch {
	case conn.TxStatus() == stmt.TxActive && (kind == stmt.TxCommit || kind == stmt.TxCommitChain || kind == stmt.TxPrepare):
		res, err = s.commit(ctx, conn, c, st)
	default:
		res, err = conn.Exec(ctx, st)
	}
	if err != nil {
		return res, err
	}
	switch kind {
	case stmt.TxSavepoint:
		s.tx.marks = append(s.tx.marks, savepoint{name: name, at: len(s.tx.touched)})
	case stmt.TxRelease, stmt.TxRollbackTo:
		for i := len(s.tx.marks) - 1; i >= 0; i-- {
			if s.tx.marks[i].name != name {
				continue
			}
			if kind == stmt.TxRollbackTo {
				// The rollback released the locks taken since, which
				// are not told apart: all are taken again.
				s.tx.locked = nil
				s.tx.touched = s.tx.touched[:s.tx.marks[i].at]
				s.tx.marks = s.tx.marks[:i+1] // the savepoint stays
			} else {
				s.tx.marks = s.tx.marks[:i]
			}
			break
		}
	}
	return res, nil
}

// commit runs the commit work, then the client's COMMIT (or PREPARE
// TRANSACTION) in the same round trip as the outbox entries of the
// after_commit events. When the work fails the transaction is rolled back,
// as when a deferred constraint fails at COMMIT.
func (s *session) commit(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	start := s.exchangesFrom(conn)
	var pre []stmt.Statement
	var err error
	if e := dateStyleError(conn, c); e != nil && len(s.tx.touched) > 0 {
		err = e
	} else {
		pre, err = s.commitWork(ctx, conn, c)
	}
	if err == nil {
		// The client's statement is not the engine's to prepare.
		flags := make([]runFlags, len(pre)+1)
		flags[len(pre)] = unprepared | verbatim
		results, berr := s.run(ctx, conn, append(pre, st), flags)
		if berr == nil {
			s.traceCommit(conn, start, 0)
			return results[len(results)-1], nil
		}
		if len(results) == len(pre) {
			return nil, berr // the server's answer to the COMMIT itself
		}
		err = berr
	}
	if _, rerr := conn.Simple(ctx, "ROLLBACK"); rerr != nil && pgerr.Code(rerr) == "" {
		return nil, rerr
	}
	return nil, err
}

// traceCommit reports the round trips of a commit since start, the COMMIT
// itself included: after of them are still to come.
func (s *session) traceCommit(conn stmt.Conn, start, after uint64) {
	if s.trace {
		conn.Notice(fmt.Sprintf("%d round trip(s) to the server at commit", s.exchanged(conn)-start+after))
	}
}

// exchangesFrom is where the round trips of the statement that starts
// count from: the start of the client's message being answered, or the
// end of the engine's statement before it in that message, whichever came
// later, so that what the proxy relayed in between counts too.
func (s *session) exchangesFrom(conn stmt.Conn) uint64 {
	_, began := conn.Exchanges()
	return max(began, s.lastExchange)
}

// exchanged is the round trips so far, noted as the end of a statement's.
func (s *session) exchanged(conn stmt.Conn) uint64 {
	s.lastExchange, _ = conn.Exchanges()
	return s.lastExchange
}

// touchedGroup is the rows of one table the transaction touched, each
// once, with the state the transaction found it in.
type touchedGroup struct {
	tr    *tableRules
	keys  [][][]byte // by key column
	order []string
	first map[string]*row // nil: inserted by the transaction
}

// touchedGroups groups the touched rows of the tables want selects,
// leaving out the keys in skip.
func (s *session) touchedGroups(c *compiled, want func(*tableRules) bool, skip map[string]bool) ([]*touchedGroup, error) {
	var out []*touchedGroup
	by := make(map[string]*touchedGroup)
	for _, t := range s.tx.touched {
		id := t.table + "\x00" + string(joinKey(t.key))
		if skip[id] {
			continue
		}
		g := by[t.table]
		if g == nil {
			tr := c.set.table(t.table)
			if tr == nil || !want(tr) {
				continue
			}
			if len(tr.t.PrimaryKey) == 0 {
				return nil, pgerr.New(pgerr.FeatureNotSupported, "the commit constraints and commit events of %s need a primary key to find the rows a transaction touched", catalog.ShortName(tr.t.QualifiedName()))
			}
			g = &touchedGroup{tr: tr, keys: make([][][]byte, len(t.key)), first: make(map[string]*row)}
			by[t.table] = g
			out = append(out, g)
		}
		k := string(joinKey(t.key))
		if _, seen := g.first[k]; seen {
			continue
		}
		g.first[k] = t.old
		g.order = append(g.order, k)
		for i, v := range t.key {
			g.keys[i] = append(g.keys[i], v)
		}
	}
	return out, nil
}

// readTouched reads the groups' rows as they are now, in one round trip,
// and gives each row's change over the whole transaction: insert, update,
// or delete (the row gone; rows inserted and deleted are left out).
func (r *runner) readTouched(groups []*touchedGroup) ([][]*change, error) {
	sts := make([]stmt.Statement, len(groups))
	for i, g := range groups {
		sql, params := selectByKey(g.tr.t, g.tr.t.PrimaryKey, g.keys, "")
		sts[i] = stmt.Statement{SQL: sql, Params: params}
	}
	results, err := r.batch(sts)
	if err != nil {
		return nil, err
	}
	out := make([][]*change, len(groups))
	for i, g := range groups {
		idx := g.tr.columnIndexes(g.tr.t.PrimaryKey)
		live := make(map[string]*row, len(results[i].Rows))
		for _, vals := range results[i].Rows {
			rw := newRow(g.tr.t, vals[0], vals[1:])
			live[keyOf(rw, idx)] = rw
		}
		for _, k := range g.order {
			nw, old := live[k], g.first[k]
			switch {
			case nw != nil && old == nil:
				out[i] = append(out[i], &change{verb: verbInsert, new: nw})
			case nw != nil:
				out[i] = append(out[i], &change{verb: verbUpdate, old: old, new: nw})
			case old != nil:
				out[i] = append(out[i], &change{verb: verbDelete, old: old})
			}
		}
	}
	return out, nil
}

// commitWork runs, before a commit, the commit events of every row the
// transaction touched (round after round while their writes touch more),
// the commit constraints, and the after_commit events, whose outbox
// entries it returns as the statements to send with the COMMIT.
func (s *session) commitWork(ctx context.Context, conn stmt.Conn, c *compiled) ([]stmt.Statement, error) {
	if len(s.tx.touched) == 0 {
		return nil, nil
	}
	r := &runner{ctx: ctx, conn: conn, s: s, set: c.set, snap: c.snap, c: c}
	fired := make(map[string]bool)
	hasCommitEvents := func(tr *tableRules) bool { return len(tr.eventsOf(timingCommit)) > 0 }
	for round := 0; ; round++ {
		groups, err := s.touchedGroups(c, hasCommitEvents, fired)
		if err != nil {
			return nil, r.fail(asPgError(err))
		}
		if len(groups) == 0 {
			break
		}
		if round == maxEventRounds {
			return nil, r.fail(pgerr.New(pgerr.ProgramLimitExceeded, "commit events went %d rounds without settling: their writes keep touching rows whose commit events then run (table %s)", maxEventRounds, catalog.ShortName(groups[0].tr.t.QualifiedName())))
		}
		for _, g := range groups {
			for _, k := range g.order {
				fired[g.tr.t.QualifiedName()+"\x00"+k] = true
			}
		}
		changes, err := r.readTouched(groups)
		if err != nil {
			return nil, err
		}
		for i, g := range groups {
			if err := r.fire(g.tr, timingCommit, changes[i], nil); err != nil {
				return nil, err
			}
		}
		if err := r.rowEvents(); err != nil {
			return nil, err
		}
	}
	groups, err := s.touchedGroups(c, func(tr *tableRules) bool {
		return len(tr.commitConstraints) > 0 || len(tr.eventsOf(timingAfterCommit)) > 0
	}, nil)
	if err != nil {
		return nil, r.fail(asPgError(err))
	}
	if len(groups) == 0 {
		return nil, nil
	}
	changes, err := r.readTouched(groups)
	if err != nil {
		return nil, err
	}
	for i, g := range groups {
		if err := r.commitConstraints(g.tr, changes[i]); err != nil {
			return nil, err
		}
	}
	var entries []outboxEntry
	for i, g := range groups {
		if err := r.fire(g.tr, timingAfterCommit, changes[i], &entries); err != nil {
			return nil, err
		}
	}
	if len(entries) == 0 {
		return nil, nil
	}
	if c.snap.GuardKey == "" {
		return nil, r.fail(outboxKeyMissing(c))
	}
	r.tracef("%d outbox entr(ies) recorded for after the commit", len(entries))
	return []stmt.Statement{{SQL: outboxHeader(c.snap.GuardKey) + outboxAddSQL, Params: outboxParams(entries, "")}}, nil
}

// commitConstraints checks the commit constraints on the rows the
// transaction left. A false one fails the commit with 23514.
func (r *runner) commitConstraints(tr *tableRules, changes []*change) error {
	if len(tr.commitConstraints) == 0 {
		return nil
	}
	live := newRows(changes)
	if err := r.loadParents(tr.checkPaths.paths, live, ""); err != nil {
		return err
	}
	for _, cc := range tr.commitConstraints {
		for _, rw := range live {
			env := compiler.Env{Row: rw.vals, Verb: "commit"}
			ok, err := cc.Holds(env)
			if err != nil {
				return r.rowError(tr, err, rw)
			}
			if ok {
				continue
			}
			msg, err := cc.Message(env)
			if err != nil {
				return r.rowError(tr, err, rw)
			}
			if msg == "" {
				msg = fmt.Sprintf("commit constraint %q of %s is not met", cc.Rule.Name, catalog.ShortName(tr.t.QualifiedName()))
			}
			r.tracef("commit constraint %s fails on %s: %s", cc.Rule.Name, describeKey(tr, rw), msg)
			e := pgerr.New(pgerr.CheckViolation, "%s", msg)
			e.Constraint, e.Schema, e.Table = cc.Rule.Name, tr.t.Schema, tr.t.Name
			e.Detail = fmt.Sprintf("Failing row of %s: %s, checked at commit.", catalog.ShortName(tr.t.QualifiedName()), describeKey(tr, rw))
			return r.fail(e)
		}
		r.tracef("commit constraint %s holds on %d row(s)", cc.Rule.Name, len(live))
	}
	return nil
}
