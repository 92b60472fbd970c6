package rules

import (
	"context"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/pgerr"
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
	// locked holds the parent rows (table and key) the engine has locked
	// in this transaction: adjusting one again needs no lock, and taking
	// it again, with another transaction queued on the row, is how
	// PostgreSQL deadlocks a transaction on its own row.
	locked map[string]bool
}

// touchedRow is a row by its primary key; a deleted one is not found
// again at commit, and so not checked.
type touchedRow struct {
	table string
	key   [][]byte
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
	}
}

// hasCommitWork reports whether commits need the engine: some table has
// commit constraints.
func (s *Set) hasCommitWork() bool {
	for _, tr := range s.tables {
		if len(tr.commitConstraints) > 0 {
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
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT, pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return commits
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT, pg_query.TransactionStmtKind_TRANS_STMT_RELEASE,
		pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return true
	}
	return false
}

func txKind(sql string) (pg_query.TransactionStmtKind, string) {
	tree, err := pg_query.Parse(sql)
	if err != nil || len(tree.Stmts) != 1 {
		return 0, ""
	}
	ts := tree.Stmts[0].Stmt.GetTransactionStmt()
	if ts == nil {
		return 0, ""
	}
	return ts.Kind, ts.SavepointName
}

// touch records the rows a statement wrote in tables with commit
// constraints.
func (s *session) touch(tr *tableRules, changes []*change) {
	if len(tr.commitConstraints) == 0 {
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
		s.tx.touched = append(s.tx.touched, touchedRow{table: tr.t.QualifiedName(), key: key})
	}
}

// txControl runs COMMIT, PREPARE TRANSACTION and the savepoint statements
// while the database has commit constraints.
func (s *session) txControl(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	kind, name := txKind(st.SQL)
	if conn.TxStatus() == stmt.TxActive {
		switch kind {
		case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT, pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
			if err := s.commitChecks(ctx, conn, c); err != nil {
				// As when a deferred constraint fails at COMMIT: the
				// error, and the transaction is rolled back.
				if _, rerr := conn.Simple(ctx, "ROLLBACK"); rerr != nil && pgerr.Code(rerr) == "" {
					return nil, rerr
				}
				return nil, err
			}
		}
	}
	res, err := conn.Exec(ctx, st)
	if err != nil {
		return res, err
	}
	switch kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		s.tx.marks = append(s.tx.marks, savepoint{name: name, at: len(s.tx.touched)})
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE, pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		for i := len(s.tx.marks) - 1; i >= 0; i-- {
			if s.tx.marks[i].name != name {
				continue
			}
			if kind == pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO {
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

// commitChecks checks the commit constraints of every row the transaction
// touched and did not delete, as the rows are now. A false one fails the
// commit with 23514.
func (s *session) commitChecks(ctx context.Context, conn stmt.Conn, c *compiled) error {
	if len(s.tx.touched) == 0 {
		return nil
	}
	r := &runner{ctx: ctx, conn: conn, s: s, set: c.set, snap: c.snap}
	// The rows by table, each once, as their last change left them.
	type rows struct {
		tr   *tableRules
		keys [][][]byte
		seen map[string]bool
	}
	var order []*rows
	by := make(map[string]*rows)
	for _, t := range s.tx.touched {
		g := by[t.table]
		if g == nil {
			tr := c.set.table(t.table)
			if tr == nil || len(tr.commitConstraints) == 0 {
				continue
			}
			g = &rows{tr: tr, keys: make([][][]byte, len(t.key)), seen: make(map[string]bool)}
			by[t.table] = g
			order = append(order, g)
		}
		k := string(joinKey(t.key))
		if g.seen[k] {
			continue
		}
		g.seen[k] = true
		for i, v := range t.key {
			g.keys[i] = append(g.keys[i], v)
		}
	}
	var sts []stmt.Statement
	for _, g := range order {
		if len(g.tr.t.PrimaryKey) == 0 {
			return r.fail(pgerr.New(pgerr.FeatureNotSupported, "commit constraints of %s need a primary key to find the rows a transaction touched", shortName(g.tr.t.QualifiedName())))
		}
		sql, params := selectByKey(g.tr.t, g.tr.t.PrimaryKey, g.keys, "")
		sts = append(sts, stmt.Statement{SQL: sql, Params: params})
	}
	results, err := r.batch(sts)
	if err != nil {
		return err
	}
	for i, g := range order {
		var live []*row
		for _, vals := range results[i].Rows {
			live = append(live, newRow(g.tr.t, vals[0], vals[1:]))
		}
		if err := r.loadParents(g.tr.checkPaths.paths, live); err != nil {
			return err
		}
		for _, cc := range g.tr.commitConstraints {
			for _, rw := range live {
				env := Env{Row: rw.vals, Verb: "commit"}
				ok, err := cc.Holds(env)
				if err != nil {
					return r.rowError(g.tr, err, rw)
				}
				if ok {
					continue
				}
				msg, err := cc.Message(env)
				if err != nil {
					return r.rowError(g.tr, err, rw)
				}
				if msg == "" {
					msg = fmt.Sprintf("commit constraint %q of %s is not met", cc.Rule.Name, shortName(g.tr.t.QualifiedName()))
				}
				r.tracef("commit constraint %s fails on %s: %s", cc.Rule.Name, describeKey(g.tr, rw), msg)
				e := pgerr.New(pgerr.CheckViolation, "%s", msg)
				e.Constraint, e.Schema, e.Table = cc.Rule.Name, g.tr.t.Schema, g.tr.t.Name
				e.Detail = fmt.Sprintf("Failing row of %s: %s, checked at commit.", shortName(g.tr.t.QualifiedName()), describeKey(g.tr, rw))
				return e
			}
			r.tracef("commit constraint %s holds on %d row(s)", cc.Rule.Name, len(live))
		}
	}
	return nil
}
