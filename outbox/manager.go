package outbox

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// discoverTimeout bounds the look at one database during Discover.
const discoverTimeout = 10 * time.Second

// ManagerConfig is what a Manager needs: Config, for any database.
type ManagerConfig struct {
	Connect func(ctx context.Context, database string) (*pgx.Conn, error)
	// ConnectRun is Config.ConnectRun; nil: Connect.
	ConnectRun func(ctx context.Context, database string) (*pgx.Conn, error)
	// RunSQL is Config.RunSQL; nil lets the dispatchers run sql entries.
	RunSQL func(ctx context.Context, database string, conn *pgconn.PgConn, e Entry) error
	// Settings apply to every dispatcher, and Logger gets the database's
	// name. They share the default Client.
	Settings
}

// A Manager runs one Dispatcher per database, for a proxy that serves
// several. Its methods are safe to call from many goroutines.
type Manager struct {
	cfg    ManagerConfig
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	ds     map[string]*Dispatcher // guarded by mu
	closed bool                   // guarded by mu
}

// NewManager returns a Manager with no dispatchers yet.
func NewManager(cfg ManagerConfig) *Manager {
	cfg.Settings = cfg.Settings.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{cfg: cfg, ctx: ctx, cancel: cancel, ds: make(map[string]*Dispatcher)}
}

// Ensure starts a dispatcher for database unless one runs.
func (m *Manager) Ensure(database string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.ds[database] != nil {
		return
	}
	cfg := Config{
		Connect:  func(ctx context.Context) (*pgx.Conn, error) { return m.cfg.Connect(ctx, database) },
		Settings: m.cfg.Settings,
	}
	cfg.Logger = cfg.Logger.With().Str("database", database).Logger()
	if connect := m.cfg.ConnectRun; connect != nil {
		cfg.ConnectRun = func(ctx context.Context) (*pgx.Conn, error) { return connect(ctx, database) }
	}
	if run := m.cfg.RunSQL; run != nil {
		cfg.RunSQL = func(ctx context.Context, conn *pgconn.PgConn, e Entry) error { return run(ctx, database, conn, e) }
	}
	d := New(cfg)
	d.Start(m.ctx)
	m.ds[database] = d
	cfg.Logger.Debug().Msg("outbox dispatcher started")
}

// Discover ensures a dispatcher for every database of the server that has
// the pgrules outbox, listing them on a connection to database. A
// database that cannot be looked at is logged and skipped.
func (m *Manager) Discover(ctx context.Context, database string) error {
	conn, err := m.cfg.Connect(ctx, database)
	if err != nil {
		return err
	}
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
	var names []string
	if err == nil {
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	conn.Close(context.Background())
	if err != nil {
		return err
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if m.running(name) {
			continue
		}
		has, err := m.hasOutbox(ctx, name)
		if err != nil {
			m.cfg.Logger.Info().Err(err).Str("database", name).Msg("could not look for the pgrules outbox")
			continue
		}
		if has {
			m.Ensure(name)
		}
	}
	return nil
}

func (m *Manager) running(database string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ds[database] != nil
}

func (m *Manager) hasOutbox(ctx context.Context, database string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	conn, err := m.cfg.Connect(ctx, database)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	var has bool
	err = conn.QueryRow(ctx, "SELECT to_regclass('pgrules.outbox') IS NOT NULL").Scan(&has)
	return has, err
}

// Close stops every dispatcher and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	ds := m.ds
	m.ds = nil
	m.mu.Unlock()
	m.cancel()
	for _, d := range ds {
		d.Close()
	}
}
