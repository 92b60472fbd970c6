package rules

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
	"github.com/rs/zerolog"
)

// Engine runs the rules of every database a proxy serves: it implements
// stmt.Rules. Each database gets a catalog watcher on the proxy's own
// connection, started by the first session of that database, and the rules
// compiled from its snapshot, shared by all its sessions.
type Engine struct {
	cfg EngineConfig

	mu  sync.Mutex
	dbs map[string]*database
}

// EngineConfig is what an Engine needs from the program that wires it.
type EngineConfig struct {
	// Connect opens the proxy's own connection to a database.
	Connect func(ctx context.Context, database string) (*pgx.Conn, error)
	// Setup runs on every such connection before the catalog is read:
	// it installs or upgrades the pgrules schema.
	Setup func(ctx context.Context, conn *pgx.Conn) error
	// Serving, when set, is called when the engine starts serving a
	// database (its first session): the outbox dispatcher starts there.
	Serving func(database string)
	// LogStatements lets the texts of clients' statements into the log
	// lines about them; without it they stay out, as they may hold data.
	LogStatements bool
	Logger        zerolog.Logger
}

// CatalogApplicationName is the application_name of the engine's own
// catalog connections, one per database served, so they can be told from
// the clients' in pg_stat_activity.
const CatalogApplicationName = "pgrules catalog"

// idleWatch is how long a database's catalog is still watched after its
// last session ended: clients that connect per transaction must not pay a
// catalog load each time, and a dropped database must not be watched
// forever.
const idleWatch = 30 * time.Second

// NewEngine returns an engine; databases are watched from their first
// session on.
func NewEngine(cfg EngineConfig) *Engine {
	return &Engine{cfg: cfg, dbs: make(map[string]*database)}
}

// Close stops every watcher.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, db := range e.dbs {
		if db.idle != nil {
			db.idle.Stop()
		}
		db.watcher.Close()
		db.closeSide()
		delete(e.dbs, name)
	}
}

// database is one database's rules.
type database struct {
	watcher *catalog.Watcher
	state   atomic.Pointer[compiled]
	mu      sync.Mutex // serializes compiling a new snapshot

	// connect opens the engine's own connections to the database. side is
	// the one for what must not run in a client's transaction (the
	// failure events' outbox entries), opened on first use; sideMu guards
	// it.
	connect func(context.Context) (*pgx.Conn, error)
	sideMu  sync.Mutex
	side    *pgx.Conn

	// Guarded by Engine.mu.
	sessions int
	idle     *time.Timer // closes the watcher once no session is left
}

// compiled is a snapshot with its rules compiled and the statements
// classified against it so far. It is replaced, never changed, when the
// snapshot changes, so the classification cache needs no invalidation.
type compiled struct {
	// src and srcErr are what the watcher returned, the key of this state.
	src    *catalog.Snapshot
	srcErr error
	snap   *catalog.Snapshot
	set    *Set
	err    error // the catalog could not be loaded
	plans  textCache[*plan]
	// shapes are the analysed writes whose texts differ only in their
	// constants, by sqlparse.Shape.
	shapes textCache[*shape]
	// base is the state this one is a view of, through a session's
	// search path (path.go); nil for the state itself, whose views are
	// kept in views.
	base  *compiled
	views views
	// hdr is the guard header of these rules (guard.go), made on first use.
	hdrOnce sync.Once
	hdr     string
}

// textCache maps statement texts to what is known of them (plans, shapes),
// bounded against clients that inline their values into ever-new texts.
// It keeps two generations: when the newer is full it becomes the older
// and the older is dropped, so the texts in use stay cached however many
// others pass. (A cache that simply stopped growing left every later text
// unplanned, to be parsed again at each of the several lookups of one
// statement.)
type textCache[V any] struct {
	mu       sync.Mutex // held to start a generation
	cur, old atomic.Pointer[cacheGen]
}

type cacheGen struct {
	m sync.Map // statement text → V
	n atomic.Int64
}

// maxPlans is the size of a generation of a textCache.
const maxPlans = 10000

// load returns the value of sql, which it does not keep.
func (tc *textCache[V]) load(sql string) (V, bool) {
	if g := tc.cur.Load(); g != nil {
		if v, ok := g.m.Load(sql); ok {
			return v.(V), true
		}
	}
	if g := tc.old.Load(); g != nil {
		if v, ok := g.m.Load(sql); ok {
			// Kept by the newer generation, as its own copy: the text
			// may be lent (see Intercepts).
			tc.store(strings.Clone(sql), v.(V))
			return v.(V), true
		}
	}
	var zero V
	return zero, false
}

// store keeps v as the value of sql, which must not change afterwards.
func (tc *textCache[V]) store(sql string, v V) {
	g := tc.cur.Load()
	if g == nil {
		tc.mu.Lock()
		if g = tc.cur.Load(); g == nil {
			g = new(cacheGen)
			tc.cur.Store(g)
		}
		tc.mu.Unlock()
	}
	if _, loaded := g.m.LoadOrStore(sql, v); loaded || g.n.Add(1) < maxPlans {
		return
	}
	tc.mu.Lock()
	if tc.cur.Load() == g {
		tc.old.Store(g)
		tc.cur.Store(new(cacheGen))
	}
	tc.mu.Unlock()
}

// empty reports whether nothing was ever stored.
func (tc *textCache[V]) empty() bool { return tc.cur.Load() == nil }

func (e *Engine) database(name string) *database {
	e.mu.Lock()
	defer e.mu.Unlock()
	db := e.dbs[name]
	if db != nil && db.idle != nil {
		db.idle.Stop()
		db.idle = nil
	}
	if db == nil {
		db = &database{connect: func(ctx context.Context) (*pgx.Conn, error) { return e.cfg.Connect(ctx, name) }}
		db.watcher = catalog.NewWatcher(catalog.WatcherConfig{
			Connect: db.connect,
			Setup:   e.cfg.Setup,
			Logger:  e.cfg.Logger.With().Str("database", name).Logger(),
		})
		db.watcher.Start(context.Background())
		e.dbs[name] = db
		if e.cfg.Serving != nil {
			e.cfg.Serving(name)
		}
	}
	db.sessions++
	return db
}

// record writes outbox entries in a transaction of their own, as role.
func (db *database) record(ctx context.Context, entries []outboxEntry, role string) error {
	db.sideMu.Lock()
	defer db.sideMu.Unlock()
	if db.side == nil || db.side.IsClosed() {
		conn, err := db.connect(ctx)
		if err != nil {
			return err
		}
		db.side = conn
	}
	// Text parameters as they are: outboxSQL's casts type them.
	_, err := db.side.PgConn().ExecParams(ctx, outboxSQL, outboxParams(entries, role), nil, nil, nil).Close()
	if err != nil && db.side.IsClosed() {
		db.side = nil
	}
	return err
}

// closeSide closes the side connection.
func (db *database) closeSide() {
	db.sideMu.Lock()
	defer db.sideMu.Unlock()
	if db.side != nil {
		db.side.Close(context.Background())
		db.side = nil
	}
}

// release ends a session's use of a database; the last one starts the
// idle timer.
func (e *Engine) release(name string, db *database) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if db.sessions--; db.sessions > 0 {
		return
	}
	db.idle = time.AfterFunc(idleWatch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if db.sessions == 0 && e.dbs[name] == db {
			delete(e.dbs, name)
			go func() {
				db.watcher.Close()
				db.closeSide()
			}()
		}
	})
}

// current returns the compiled state of the watcher's latest snapshot.
func (db *database) current(ctx context.Context) *compiled {
	snap, err := db.watcher.Snapshot(ctx)
	if c := db.state.Load(); c != nil && c.src == snap && c.srcErr == err {
		return c
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if c := db.state.Load(); c != nil && c.src == snap && c.srcErr == err {
		return c
	}
	c := &compiled{src: snap, srcErr: err, snap: snap, err: err}
	if errors.Is(err, catalog.ErrNoSchema) {
		// No pgrules schema, so no rules: everything is relayed, and
		// calls into the schema get the server's own error.
		c.snap, c.err = &catalog.Snapshot{Tables: map[string]*catalog.Table{}}, nil
	}
	if c.err == nil {
		c.set = Compile(c.snap)
	}
	db.state.Store(c)
	return c
}

// Open implements stmt.Rules.
func (e *Engine) Open(ctx context.Context, info stmt.SessionInfo) stmt.Session {
	db := e.database(info.Database)
	db.current(ctx) // waits for the first snapshot, bounded by ctx
	return &session{e: e, name: info.Database, db: db, log: info.Log, user: info.User}
}

// RunTx runs one statement in a transaction of its own on conn, as role,
// with the rules of database: how the outbox delivers the writes and
// sql() of after_commit events, whose rules then run like any client's.
//
// A statement the engine does not take runs in pgrules._sandbox, inside a
// SECURITY DEFINER function of role, where PostgreSQL refuses any change
// of role. One the engine takes runs as the engine's statements under SET
// LOCAL ROLE, which code they call (a trigger, a function of the rule's
// query) could RESET: the transaction then commits only if it ends as
// role (SECURITY.md says what remains).
func (e *Engine) RunTx(ctx context.Context, database string, conn stmt.Conn, role, sql string, args []*string) error {
	db := e.database(database)
	defer e.release(database, db)
	db.current(ctx)
	s := &session{e: e, name: database, db: db, user: role, log: e.cfg.Logger.With().Str("database", database).Str("role", role).Logger()}
	defer s.flushFailures(ctx)
	if _, err := conn.Simple(ctx, "BEGIN; SET LOCAL ROLE "+quoteIdent(role)); err != nil {
		conn.Simple(ctx, "ROLLBACK")
		return err
	}
	st := stmt.Statement{SQL: sql, Params: make([][]byte, len(args))}
	for i, a := range args {
		if a != nil {
			st.Params[i] = []byte(*a)
		}
	}
	var err error
	if s.Intercepts(sql) {
		_, err = s.Exec(ctx, conn, st)
	} else {
		_, err = conn.Exec(ctx, stmt.Statement{SQL: sandboxSQL, Params: [][]byte{[]byte(sql), textArray(st.Params)}})
	}
	if err == nil {
		var pre []stmt.Statement
		if pre, err = s.Commit(ctx, conn); err == nil {
			still := stmt.Statement{SQL: stillAsSQL, Params: [][]byte{[]byte(role)}}
			if _, err = conn.Batch(ctx, append(pre, still, stmt.Statement{SQL: "COMMIT"})); err == nil {
				return nil
			}
		}
	}
	conn.Simple(ctx, "ROLLBACK") // after a failed COMMIT, only a warning
	return err
}

// sandboxSQL runs an outbox entry's statement with its text parameters
// with exactly the rights of current_user (sql/functions.sql).
const sandboxSQL = "SELECT pgrules._sandbox($1, $2::text[])"

// stillAsSQL fails the transaction of an outbox entry unless it ends as
// the entry's role ($1).
const stillAsSQL = "SELECT pgrules._still_as($1)"

// plan is what the engine does with one statement text.
type plan struct {
	intercept bool
	define    bool // calls into the pgrules schema: check definitions after it
	trace     bool // sets or resets pgrules.trace
	// txControl is a savepoint statement, or a COMMIT or PREPARE
	// TRANSACTION while the database has commit constraints: the engine
	// follows them.
	txControl bool
	parts     []sqlparse.Statement
	parseErr  error
	src       string // the text parts were parsed from

	// The analysis of a write, made on first use, from tree when the
	// plan's text is that one statement (then set to nil).
	once     sync.Once
	tree     *pg_query.Node
	write    *writeStmt
	cte      *pg_query.Node // a statement whose WITH writes a table with rules
	writeErr error
}

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
	// trips counts the engine's round trips to the server.
	trips int64
	// hdr is the guard header of the rules the statement in progress runs
	// with, which run puts before the engine's statements.
	hdr string
	// prepared maps the engine's statements to the names they are
	// prepared under in this session; named counts the names given.
	prepared    map[string]string
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
	start := s.trips
	s.hdr = c.header()
	pre, err := s.commitWork(ctx, conn, c)
	if err == nil && (s.trips > start || len(pre) > 0) {
		s.trips++ // the proxy's COMMIT, which carries pre
		s.traceCommit(conn, start)
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
	if ds := conn.Parameter("DateStyle"); c.set != nil && c.set.readsTime && ds != "" && !strings.HasPrefix(ds, "ISO") {
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
			if e := c.set.beforeTriggerError(t, string(w.Verb)); e != nil {
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
		e = notSupported(t, "COPY FROM runs its rules only when sent as a simple Query")
		e.Hint = "Send the COPY as a simple Query, on its own or among other statements, as psql's \\copy and the COPY functions of pgx, JDBC, psycopg and node-postgres do; or load the rows with INSERT."
	case sqlparse.Truncate:
		e = notSupported(t, "TRUNCATE does not run rules")
		e.Hint = "Use DELETE, which runs the rules; after a TRUNCATE behind the proxy's back, SELECT * FROM pgrules.rebuild() puts the derived columns right."
	default:
		e = notSupported(t, "%s is not supported", v)
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

// define runs a statement that calls into the pgrules schema — a rule
// definition, a listing, an explain — inside a savepoint, then compiles the
// rules as the transaction now sees them. A definition that does not
// compile is undone and fails the statement; new derivations get their
// values on the existing rows.
func (s *session) define(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	ownTx := conn.TxStatus() == stmt.TxIdle
	if ownTx {
		if _, err := conn.Simple(ctx, "BEGIN"); err != nil {
			return nil, err
		}
	}
	if ownTx || s.computed == nil {
		s.computed = make(map[string]string)
	}
	res, txRules, err := s.defineIn(ctx, conn, c, st)
	if ownTx {
		end := "COMMIT"
		if err != nil {
			end = "ROLLBACK"
		}
		if _, cerr := conn.Simple(ctx, end); cerr != nil && err == nil {
			return nil, cerr
		}
		if err == nil {
			s.refresh(ctx)
		}
	} else {
		s.tx.defined = true
		if txRules != nil {
			// Every write after the definition in this transaction runs
			// the rules it sees (rules-api.md §7).
			s.tx.rules = txRules
		}
	}
	return res, err
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

// defineIn runs the statement of define in the open transaction, and
// returns the rules as the transaction now sees them.
func (s *session) defineIn(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, *compiled, error) {
	if sqlparse.ContainsFold(st.SQL, "pgrules.explain") && c.set != nil {
		doc, err := json.Marshal(c.set.ExplainAll())
		if err != nil {
			return nil, nil, pgerr.New(pgerr.InternalError, "explain: %w", err)
		}
		if _, err := conn.Query(ctx, "SELECT set_config('pgrules.explain', $1, true)", string(doc)); err != nil {
			return nil, nil, err
		}
	}
	if err := s.maintenance(ctx, conn, st); err != nil {
		return nil, nil, err
	}
	if _, err := conn.Simple(ctx, "SAVEPOINT pgrules_define"); err != nil {
		return nil, nil, err
	}
	res, err := conn.Exec(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	// A role that may not read pgrules.rule cannot have defined rules
	// with the definition functions, which read it; it may still list
	// pgrules.rules, or call explain, verify and rebuild.
	rows, err := conn.Query(ctx, "SELECT has_table_privilege('pgrules.rule', 'SELECT')")
	if err == nil && string(rows[0][0]) != "t" {
		_, err = conn.Simple(ctx, "RELEASE SAVEPOINT pgrules_define")
		return res, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	txRules, err := s.loadTx(ctx, conn)
	if err == nil {
		if perr := s.firstError(txRules.snap, txRules.set); perr != nil {
			err = perr
		} else {
			err = s.computeExisting(ctx, conn, txRules.snap, txRules.set)
		}
	}
	if err != nil {
		conn.Simple(ctx, "ROLLBACK TO SAVEPOINT pgrules_define; RELEASE SAVEPOINT pgrules_define")
		return nil, nil, failTx(ctx, conn, asPgError(err))
	}
	if _, err := conn.Simple(ctx, "RELEASE SAVEPOINT pgrules_define"); err != nil {
		return nil, nil, err
	}
	return res, txRules, nil
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
	c := &compiled{snap: snap, set: Compile(snap)}
	s.hdr = c.header()
	return c, nil
}

// firstError is the first compile error of a rule this transaction wrote.
// Rules broken before it are not its fault: they refuse writes to their
// tables instead.
func (s *session) firstError(snap *catalog.Snapshot, set *Set) *pgerr.Error {
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

// maintenanceCall finds pgrules.verify(...) or pgrules.rebuild(...) and
// its argument: a string literal, a parameter, or nothing (every table).
var maintenanceCall = regexp.MustCompile(`(?i)pgrules\.(verify|rebuild)\s*\(\s*(?:'((?:[^']|'')*)'|\$(\d+)|(null))?\s*\)`)

// maintenance answers pgrules.verify and pgrules.rebuild in the client's
// transaction, before its statement reads the answer: verify's drifting
// rows, rebuild's corrections, handed over in transaction-local settings.
func (s *session) maintenance(ctx context.Context, conn stmt.Conn, st stmt.Statement) error {
	calls := maintenanceCall.FindAllStringSubmatch(st.SQL, -1)
	if len(calls) == 0 {
		if sqlparse.ContainsFold(st.SQL, "pgrules.verify") || sqlparse.ContainsFold(st.SQL, "pgrules.rebuild") {
			return failTx(ctx, conn, pgerr.New(pgerr.FeatureNotSupported, "pgrules.verify and pgrules.rebuild take a table name as a literal or a parameter, or nothing"))
		}
		return nil
	}
	cur, err := s.loadTx(ctx, conn)
	if err != nil {
		return err
	}
	snap, set := cur.snap, cur.set
	for _, call := range calls {
		name := strings.ReplaceAll(call[2], "''", "'")
		if call[3] != "" {
			i, _ := strconv.Atoi(call[3])
			if i < 1 || i > len(st.Params) {
				return failTx(ctx, conn, pgerr.New(pgerr.ProtocolViolation, "pgrules.%s: no parameter $%d", call[1], i))
			}
			name = string(st.Params[i-1])
		}
		table := ""
		if name != "" {
			t := snap.Lookup(name)
			if t == nil {
				return failTx(ctx, conn, pgerr.New(pgerr.UndefinedTable, "pgrules.%s: table %q does not exist", call[1], name))
			}
			table = t.QualifiedName()
		}
		var answer any
		if strings.EqualFold(call[1], "verify") {
			answer, err = Verify(ctx, conn, snap, set, table)
		} else {
			answer, err = Rebuild(ctx, conn, snap, set, table)
		}
		if err != nil {
			// A failure of our own SQL (not the server's) must fail the
			// transaction too; one more error in a failed one is harmless.
			return failTx(ctx, conn, asPgError(err))
		}
		doc, err := json.Marshal(answer)
		if err != nil {
			return pgerr.New(pgerr.InternalError, "%s: %w", call[1], err)
		}
		if string(doc) == "null" {
			doc = []byte("[]")
		}
		if _, err := conn.Query(ctx, "SELECT set_config($1, $2, true)", "pgrules."+strings.ToLower(call[1]), string(doc)); err != nil {
			return err
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
