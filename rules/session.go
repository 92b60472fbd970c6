package rules

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
	"github.com/rs/zerolog"
)

// session is one client session's view of the rules. Used by the
// session's frontend goroutine only.
type session struct {
	e    *Engine
	name string
	db   *database
	log  zerolog.Logger
	// computed remembers, per transaction, which derivations have had
	// their existing rows computed, and from which definition.
	computed map[string]string

	// path is where the session's unqualified names resolve, nil until
	// it has been read; pathWatch is set once the session has sent a text
	// that may change it (path.go).
	path      *sessionPath
	pathWatch bool
	// trace is pgrules.trace as the session last set it; traceSet is true
	// once the session has touched the setting, from then on read again
	// before each write (a ROLLBACK may undo a SET).
	trace, traceSet bool
	// lastExchange is the connection's round trips at the end of the
	// engine's last statement (exchangesFrom).
	lastExchange uint64
	// hdr is the guard header of the rules the statement in progress runs
	// with, which run puts before the engine's statements.
	hdr string
	// prepared maps the engine's statements to the names they are
	// prepared under in this session; named counts the names given.
	prepared    map[preparedKey]string
	named       int64
	preparedFor *compiled // the catalog the statements were prepared for
	preparedHdr string    // the guard header they were prepared with
	// paramTypes caches the server's parameter types of client statements.
	paramTypes map[string][]uint32
	// typeNames caches format_type of result columns (CTEs).
	typeNames map[[2]uint32]string
	// tx is what the engine remembers of the open transaction.
	tx txState
	// failures are the outbox entries of failure events, held until the
	// failed transaction has ended (rules-api.md §4: their effects come
	// after the rollback).
	failures []outboxEntry
	user     string
}

// Close implements stmt.Session. The connection is gone, and with it the
// transaction: the failure events' entries can go.
func (s *session) Close() {
	s.flushFailures(context.Background())
	s.e.release(s.name, s.db)
}

// watchesTxEnd reports whether the end of the transaction needs the
// engine: it defined rules, or failure events wait for its rollback.
func (s *session) watchesTxEnd() bool { return s.tx.defined || len(s.failures) > 0 }

// flushFailures records the failure events' entries in the outbox, on the
// engine's own connection, once their transaction has ended.
func (s *session) flushFailures(ctx context.Context) {
	if len(s.failures) == 0 {
		return
	}
	entries := s.failures
	s.failures = nil
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.db.record(ctx, entries, s.user); err != nil {
		s.log.Error().Err(err).Int("entries", len(entries)).Msg("the outbox entries of failure events could not be recorded")
	}
}

// Intercepts implements stmt.Session. It runs for every statement a client
// sends, so what can be decided from the text alone is decided without
// allocating or caching: only statements that call into the pgrules schema
// or can write a table while the database has rules are parsed.
func (s *session) Intercepts(sql string) bool {
	if strings.HasPrefix(sql, headerPrefix) {
		return true // refused by Exec: only the engine presents a header
	}
	if s.watchesTxEnd() && (isTxKeyword(sqlparse.LeadingKeyword(sql)) || holdsTxControl(sql)) {
		return true
	}
	c := s.current(context.Background())
	if c.err == nil && len(c.snap.Rules) > 0 {
		s.watchPath(sql)
	}
	if !sqlparse.ContainsFold(sql, "pgrules.") && (!sqlparse.MayWrite(sql) || c.err == nil && len(c.snap.Rules) == 0) {
		if c.err != nil || len(c.snap.Rules) == 0 || !isTxKeyword(sqlparse.LeadingKeyword(sql)) && !holdsTxControl(sql) {
			return false
		}
	}
	return s.wants(c, s.plan(c, sql))
}

// wants reports whether a plan goes to the engine: it writes a table with
// rules, or may while the session's path is not known.
func (s *session) wants(c *compiled, p *plan) bool {
	return p.intercept || !s.pathSure() && c.mayWriteRuled(p)
}

func (s *session) plan(c *compiled, sql string) *plan {
	if p, ok := c.plans.load(sql); ok {
		return p
	}
	sql = strings.Clone(sql) // the proxy's text is only lent to Intercepts
	p := c.derive(sql)
	if p == nil {
		p = c.classify(sql)
	}
	c.plans.store(sql, p)
	if len(p.parts) == 1 && p.parts[0].SQL != sql {
		// The statement as Split gives it (without its semicolon and
		// spaces) is the same statement.
		c.plans.store(p.parts[0].SQL, p)
	}
	return p
}

// classify decides, without parsing when it can, whether a statement text
// needs the engine.
func (c *compiled) classify(sql string) *plan {
	p := &plan{src: sql}
	hasRules := c.err == nil && c.set != nil && len(c.snap.Rules) > 0
	commitWork := hasRules && c.set.hasCommitWork()
	switch {
	case sqlparse.ContainsFold(sql, "pgrules.trace"):
		p.intercept, p.trace = true, true
	case sqlparse.ContainsFold(sql, "pgrules."):
		p.intercept, p.define = true, true
	case hasRules && (isTxKeyword(sqlparse.LeadingKeyword(sql)) || holdsTxControl(sql)):
	case !sqlparse.MayWrite(sql):
		return p
	}
	p.parts, p.parseErr = sqlparse.Parse(sql)
	if tooComplex(p.parseErr) {
		// Refused by Exec: what the statement writes is not known, and
		// the server might run it.
		p.intercept = true
		return p
	}
	if p.parseErr != nil {
		return p // the server will report the syntax error
	}
	for i := range p.parts {
		st := &p.parts[i]
		if c.writesRuledTable(*st) {
			p.intercept = true
			if len(p.parts) == 1 {
				p.tree = st.Tree
			}
		}
		st.Tree = nil // cached plans keep no trees they will not use
		// A COMMIT or a savepoint the engine follows, alone or among the
		// statements of a Query (which Split then hands it one by one).
		if hasRules && st.TxControl && followedTx(st.SQL, commitWork) {
			p.intercept, p.txControl = true, len(p.parts) == 1
		}
	}
	return p
}

// writesRuledTable reports whether a statement writes a table that rules
// read or derive, or whose rules are broken or could not be loaded.
func (c *compiled) writesRuledTable(st sqlparse.Statement) bool {
	if len(st.Writes) == 0 {
		return false
	}
	if c.err != nil {
		return true
	}
	return slices.ContainsFunc(st.Writes, c.writesRuled)
}

// writesRuled reports whether w writes a table that rules read or derive.
func (c *compiled) writesRuled(w sqlparse.Write) bool {
	t := c.lookup(w)
	return t != nil && (c.set.Involves(t.QualifiedName()) || w.Verb == sqlparse.Truncate && c.set.Guards(t.QualifiedName()))
}

func (c *compiled) lookup(w sqlparse.Write) *catalog.Table {
	if w.Schema != "" {
		return c.snap.Lookup(w.Schema + "." + w.Table)
	}
	return c.snap.Lookup(w.Table)
}

// Split implements stmt.Session.
func (s *session) Split(sql string) ([]stmt.Part, error) {
	c := s.current(context.Background())
	p := s.plan(c, sql)
	stmts, err := p.parts, p.parseErr
	if stmts == nil && err == nil {
		// Intercepted for the session's state (a transaction that defined
		// rules), not for its text: the plan did not parse it.
		stmts, err = sqlparse.Parse(sql)
	}
	if tooComplex(err) {
		// Exec refuses it.
		return []stmt.Part{{SQL: sql, Engine: true}}, nil
	}
	if err != nil {
		return nil, err
	}
	parts := make([]stmt.Part, len(stmts))
	defined := false
	for i, st := range stmts {
		p := s.plan(c, st.SQL)
		// After a definition every statement goes to Exec, which decides
		// with the rules the transaction then sees.
		engine := defined || s.wants(c, p) || st.TxControl && s.watchesTxEnd()
		defined = defined || p.define
		parts[i] = stmt.Part{SQL: st.SQL, TxControl: st.TxControl, Tx: st.Tx, Engine: engine, CopyIn: engine && copyFrom(p)}
	}
	return parts, nil
}

// Commit implements stmt.Session: the commit constraints of an
// autocommit statement's transaction, which the proxy commits next.
func (s *session) Commit(ctx context.Context, conn stmt.Conn) ([]stmt.Statement, error) {
	s.syncTx(conn)
	c := s.current(ctx)
	if c.err != nil || c.set == nil {
		return nil, nil
	}
	start := s.exchangesFrom(conn)
	s.hdr = c.header()
	pre, err := s.commitWork(ctx, conn, c)
	if err == nil {
		s.traceCommit(conn, start, 1) // the proxy's COMMIT, which carries pre, follows
	}
	return pre, err
}

// Ended implements stmt.Session: a transaction that defined rules has its
// catalog reloaded before the client hears it committed; one that failed
// lets its failure events' entries go.
func (s *session) Ended(ctx context.Context, committed bool) {
	if s.tx.defined && committed {
		s.refresh(ctx)
	}
	s.tx.defined, s.tx.rules = false, nil
	s.flushFailures(ctx)
}

// Exec implements stmt.Session.
func (s *session) Exec(ctx context.Context, conn stmt.Conn, st stmt.Statement) (res *stmt.Result, err error) {
	base := s.db.current(ctx)
	s.syncTx(conn)
	if s.preparedFor != base {
		// Statements prepared against another catalog may no longer
		// match their tables (a column added changes what * gives):
		// they are prepared again, under new names.
		s.prepared, s.preparedFor = nil, base
	}
	c := s.current(ctx)
	defer func() {
		// A bug of the engine fails the statement, not the proxy.
		if p := recover(); p != nil {
			ref := pgerr.Reference()
			ev := s.log.Error().Interface("panic", p).Str("ref", ref).Str("command", sqlparse.LeadingKeyword(st.SQL))
			if s.e.cfg.LogStatements {
				ev = ev.Str("sql", st.SQL)
			}
			ev.Msg("the rules engine failed")
			res, err = nil, failTx(ctx, conn, pgerr.Withheld(pgerr.InternalError, ref, "pgrules failed running the rules of this statement"))
		}
	}()
	if strings.HasPrefix(st.SQL, headerPrefix) {
		return nil, failTx(ctx, conn, forgedHeader())
	}
	s.hdr = c.header()
	if s.watchesTxEnd() && isTxKeyword(sqlparse.LeadingKeyword(st.SQL)) {
		return s.endTx(ctx, conn, c, st)
	}
	p := s.plan(c, st.SQL)
	if tooComplex(p.parseErr) {
		return nil, failTx(ctx, conn, asPgError(p.parseErr))
	}
	switch {
	case p.trace:
		return s.setTrace(ctx, conn, st)
	case p.define:
		return s.define(ctx, conn, c, st)
	case p.txControl:
		return s.txControl(ctx, conn, c, st)
	}
	c, reread, err := s.withPath(ctx, conn, c)
	if err != nil {
		return nil, err
	}
	if reread {
		if p = s.plan(c, st.SQL); !p.intercept {
			// Its names reach tables without rules in this session.
			return conn.Exec(ctx, st)
		}
	}
	if !s.wants(c, p) {
		// A statement after a definition in the same Query, which the
		// rules it defined do not concern.
		return conn.Exec(ctx, st)
	}
	if err := s.refuseBroken(ctx, conn, c, p); err != nil {
		return nil, err
	}
	if e := settingsError(conn, c); e != nil {
		return nil, failTx(ctx, conn, e)
	}
	if e := keyMissing(c); e != nil {
		return nil, failTx(ctx, conn, e)
	}
	s.hdr = c.header()
	res, err = s.runWrite(ctx, conn, c, p, st)
	s.afterStale(ctx, err)
	return res, err
}

// settingsError refuses a write in a session whose settings would make the
// engine misread it: pg_query reads strings as standard_conforming_strings
// on does, and the engine sends the client's expressions back as it read
// them (with it off, a backslash in a string would mean something else to
// each); the times the rules read come as the session's DateStyle writes
// them, of which only ISO's are read exactly.
func settingsError(conn stmt.Conn, c *compiled) *pgerr.Error {
	if conn.Parameter("standard_conforming_strings") == "off" {
		return pgerr.New(pgerr.FeatureNotSupported, "pgrules runs the rules of a write only with standard_conforming_strings on, and this session has it off; SET standard_conforming_strings = on")
	}
	return dateStyleError(conn, c)
}

// dateStyleError is settingsError's DateStyle half, which holds at COMMIT
// too: the commit constraints read the rows again.
func dateStyleError(conn stmt.Conn, c *compiled) *pgerr.Error {
	if ds := conn.Parameter("DateStyle"); c.set != nil && c.set.ReadsTime() && ds != "" && !strings.HasPrefix(ds, "ISO") {
		return pgerr.New(pgerr.FeatureNotSupported, "pgrules runs rules that read dates and times only with DateStyle ISO, and this session has DateStyle %s; SET DateStyle = ISO (the order of the fields, DMY or MDY, may stay)", ds)
	}
	return nil
}

// unloaded is the error of a write refused because the rules could not be
// loaded. Why they could not (a connection error naming the proxy's role
// and the server, a permission) is the administrator's to read, in the log;
// the client learns what it can do. pgrules' own word on its schema (not
// installed, older than this pgrules) is shown: it names no secret.
func (s *session) unloaded(cause error) *pgerr.Error {
	ref := pgerr.Reference()
	s.log.Error().Err(cause).Str("ref", ref).Msg("the rules of this database could not be loaded: writes to its tables are refused")
	e := pgerr.Withheld(pgerr.ObjectNotInPrereqState, ref, "the rules of this database could not be loaded, so writes to tables are refused")
	var own *pgerr.Error
	if errors.As(cause, &own) && own.Code == pgerr.ObjectNotInPrereqState {
		e.Detail = own.Message
	}
	return e
}

// refuseBroken fails a write on a table whose rules are broken, or in a
// database whose rules could not be loaded: rules are never skipped.
func (s *session) refuseBroken(ctx context.Context, conn stmt.Conn, c *compiled, p *plan) error {
	if c.err != nil {
		return failTx(ctx, conn, s.unloaded(c.err))
	}
	for _, st := range p.parts {
		for _, w := range st.Writes {
			t := c.lookup(w)
			if t == nil {
				continue
			}
			if broken := c.set.Broken(t.QualifiedName()); len(broken) > 0 {
				e := pgerr.New(pgerr.ObjectNotInPrereqState, "writes to %s are refused until its rules are fixed: %s", t.QualifiedName(), broken[0].Message)
				e.Schema, e.Table = t.Schema, t.Name
				return failTx(ctx, conn, e)
			}
			if w.Verb == sqlparse.Truncate && c.set.Guards(t.QualifiedName()) ||
				w.Verb != sqlparse.Insert && w.Verb != sqlparse.Update && w.Verb != sqlparse.Delete && c.set.Involves(t.QualifiedName()) {
				return failTx(ctx, conn, refusedVerb(t, w.Verb))
			}
			if e := c.set.BeforeTriggerError(t, string(w.Verb)); e != nil {
				return failTx(ctx, conn, e)
			}
		}
	}
	return nil
}

// refusedVerb is the error for MERGE, TRUNCATE, and COPY FROM other than
// a simple Query's, on a table with rules, which the engine does not run:
// each would change rows without their rules.
func refusedVerb(t *catalog.Table, v sqlparse.Verb) *pgerr.Error {
	var e *pgerr.Error
	switch v {
	case sqlparse.CopyFrom:
		e = compiler.WriteNotSupported(t, "COPY FROM runs its rules only when sent as a simple Query")
		e.Hint = "Send the COPY as a simple Query, on its own or among other statements, as psql's \\copy and the COPY functions of pgx, JDBC, psycopg and node-postgres do; or load the rows with INSERT."
	case sqlparse.Truncate:
		e = compiler.WriteNotSupported(t, "TRUNCATE does not run rules")
		e.Hint = "Use DELETE, which runs the rules; after a TRUNCATE behind the proxy's back, SELECT * FROM pgrules.rebuild() puts the derived columns right."
	default:
		e = compiler.WriteNotSupported(t, "%s is not supported", v)
		e.Hint = "Write it as INSERT ... ON CONFLICT, UPDATE and DELETE statements."
	}
	return e
}

// failTx puts the client's transaction in the failed state, as the error
// would have had it come from the server, and returns the error.
func failTx(ctx context.Context, conn stmt.Conn, e *pgerr.Error) error {
	conn.Query(ctx, "SELECT pgrules.raise($1, $2)", e.Code, e.Message)
	return e
}

// endTx runs the statement that ends (or may end) a transaction that
// defined rules or has failure events waiting. Rules: this proxy's catalog
// must have them before the client hears the commit, so that no write
// that follows on any session of the proxy runs without them. Failure
// events: their entries go to the outbox once the transaction is over,
// or the failed statement rolled back to a savepoint.
func (s *session) endTx(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	var res *stmt.Result
	var err error
	if p := s.plan(c, st.SQL); p.txControl {
		res, err = s.txControl(ctx, conn, c, st)
	} else {
		res, err = conn.Exec(ctx, st)
	}
	switch {
	case conn.TxStatus() == stmt.TxIdle && s.tx.defined:
		s.tx.defined, s.tx.rules = false, nil
		s.refresh(ctx)
	case conn.TxStatus() == stmt.TxActive && s.tx.rules != nil && strings.EqualFold(sqlparse.LeadingKeyword(st.SQL), "ROLLBACK"):
		// ROLLBACK TO SAVEPOINT may have undone a definition.
		if txRules, lerr := s.loadTx(ctx, conn); lerr == nil {
			s.tx.rules = txRules
		} else {
			s.log.Warn().Err(lerr).Msg("the rules could not be read again after ROLLBACK TO SAVEPOINT")
		}
	}
	if conn.TxStatus() != stmt.TxFailed {
		s.flushFailures(ctx)
	}
	return res, err
}

// refresh waits, for a bounded time, until the catalog holds what was
// committed.
func (s *session) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.db.watcher.Refresh(ctx); err != nil {
		s.log.Warn().Err(err).Msg("the catalog did not reload after a rule change")
	}
}

// loadTx loads and compiles the rules as the client's transaction sees
// them, guard versions included, and makes them the header of the
// engine's statements that follow. The client's role may not read the
// guard key: it is the proxy's own snapshot's.
func (s *session) loadTx(ctx context.Context, conn stmt.Conn) (*compiled, error) {
	snap, err := catalog.Load(ctx, conn)
	if err != nil {
		return nil, err
	}
	if base := s.db.current(ctx); base.snap != nil {
		snap.GuardKey = base.snap.GuardKey
	}
	c := &compiled{snap: snap, set: newRunSet(compiler.Compile(snap))}
	s.hdr = c.header()
	return c, nil
}

// firstError is the first compile error of a rule this transaction wrote.
// Rules broken before it are not its fault: they refuse writes to their
// tables instead.
func (s *session) firstError(snap *catalog.Snapshot, set *compiler.Set) *pgerr.Error {
	for _, r := range snap.Rules {
		if !r.ChangedInTx {
			continue
		}
		if e := set.RuleError(r.Name); e != nil {
			return e
		}
	}
	return nil
}

// tooComplex reports whether err refuses a statement nested too deeply
// to parse.
func tooComplex(err error) bool {
	return pgerr.Code(err) == pgerr.StatementTooComplex
}

func asPgError(err error) *pgerr.Error {
	var e *pgerr.Error
	if !errors.As(err, &e) {
		e = pgerr.New(pgerr.InternalError, "%s", err)
	}
	return e
}
