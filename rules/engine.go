package rules

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/catalog/watch"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
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
	watcher *watch.Watcher
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
	set    *runSet
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
		db.watcher = watch.New(watch.Config{
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
		c.set = newRunSet(compiler.Compile(c.snap))
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
	if _, err := conn.Simple(ctx, "BEGIN; SET LOCAL ROLE "+sqltext.Ident(role)); err != nil {
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
	tree     *sqlparse.Tree
	write    *writeStmt
	cte      *sqlparse.ModifyingWith // a statement whose WITH writes a table with rules
	writeErr error
}
