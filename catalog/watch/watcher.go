package watch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
	"github.com/rs/zerolog"
)

// Config is what a Watcher needs.
type Config struct {
	// Connect opens the watcher's own connection to the database.
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Setup, if set, runs on every new connection before the first load
	// (the proxy installs or upgrades the pgrules schema there).
	Setup  func(ctx context.Context, conn *pgx.Conn) error
	Logger zerolog.Logger
}

// Watcher keeps the current Snapshot of one database. Its goroutine owns
// the connection: it LISTENs on channel "pgrules", to which every change of
// a rule is notified at commit (by any proxy, or by hand), reloads after
// each burst of notifications and after Reload, and reconnects with backoff
// when the connection is lost, keeping the last good snapshot meanwhile.
type Watcher struct {
	cfg    Config
	snap   atomic.Pointer[catalog.Snapshot]
	reload chan struct{} // capacity 1: requests coalesce

	mu      sync.Mutex
	lastErr error         // of the last load, while no snapshot exists
	first   chan struct{} // closed after the first load attempt
	once    sync.Once
	// Refresh waits for a load that began after it asked: asked counts
	// the requests, served (under mu) is the highest request a finished
	// load began after, and servedCh is closed and replaced at each load.
	asked    atomic.Uint64
	served   uint64
	servedCh chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a watcher; Start runs it.
func New(cfg Config) *Watcher {
	return &Watcher{cfg: cfg, reload: make(chan struct{}, 1), first: make(chan struct{}), done: make(chan struct{}), servedCh: make(chan struct{})}
}

// Start runs the watcher until Close or until ctx ends.
func (w *Watcher) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		w.run(ctx)
	}()
}

// Close stops the watcher and waits for its goroutine.
func (w *Watcher) Close() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
}

// Reload asks for a new snapshot, e.g. after DDL went through the proxy.
func (w *Watcher) Reload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

// Refresh reloads the snapshot and waits (within ctx) until a load that
// began after the call has finished, so that a rule committed before it
// is in the snapshot when it returns.
func (w *Watcher) Refresh(ctx context.Context) error {
	n := w.asked.Add(1)
	w.Reload()
	for {
		w.mu.Lock()
		done, ch := w.served >= n, w.servedCh
		w.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Snapshot returns the current snapshot, waiting (within ctx) for the
// first load. Until one succeeded it returns the load's error.
func (w *Watcher) Snapshot(ctx context.Context) (*catalog.Snapshot, error) {
	if s := w.snap.Load(); s != nil {
		return s, nil
	}
	select {
	case <-w.first:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s := w.snap.Load(); s != nil {
		return s, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return nil, w.lastErr
}

func (w *Watcher) loaded(s *catalog.Snapshot, err error) {
	if err == nil {
		w.snap.Store(s)
	} else {
		w.mu.Lock()
		w.lastErr = err
		w.mu.Unlock()
	}
	w.once.Do(func() { close(w.first) })
}

func (w *Watcher) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		ev := w.cfg.Logger.Warn()
		if errors.Is(err, catalog.ErrNoSchema) {
			ev = w.cfg.Logger.Debug() // no rules here; look again later
		}
		ev.Err(err).Dur("retry_in", backoff).Msg("catalog watcher: no snapshot")
		w.loaded(nil, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session is one connection's life: set up, listen, load, then reload on
// every notification or request until the connection fails.
func (w *Watcher) session(ctx context.Context) error {
	conn, err := w.cfg.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// A role that may not install the schema can still serve a database
	// whose schema someone else installed, or one without rules at all.
	if w.cfg.Setup != nil {
		if err := w.cfg.Setup(ctx, conn); err != nil {
			w.cfg.Logger.Warn().Err(err).Msg("could not install or upgrade the pgrules schema")
		}
	}
	if _, err := conn.Exec(ctx, "LISTEN pgrules"); err != nil {
		return err
	}
	for {
		began := w.asked.Load()
		s, err := catalog.Load(ctx, PgxQuerier(conn))
		w.loaded(s, err)
		w.mu.Lock()
		w.served = max(w.served, began)
		close(w.servedCh)
		w.servedCh = make(chan struct{})
		w.mu.Unlock()
		if err != nil {
			return err
		}
		if err := w.wait(ctx, conn); err != nil {
			return err
		}
	}
}

// wait returns when a reload is due: a notification arrived (and any that
// follow within a few milliseconds, so a rules script is one reload) or
// Reload was called.
func (w *Watcher) wait(ctx context.Context, conn *pgx.Conn) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	requested := make(chan struct{})
	go func() {
		select {
		case <-w.reload:
			close(requested)
			cancel()
		case <-wctx.Done():
		}
	}()
	if _, err := conn.WaitForNotification(wctx); err != nil {
		select {
		case <-requested:
			return nil
		default:
		}
		return err
	}
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Millisecond)
		_, err := conn.WaitForNotification(dctx)
		dcancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A timeout leaves the connection usable: the burst is over.
			if errors.Is(err, context.DeadlineExceeded) || !conn.PgConn().IsClosed() {
				return nil
			}
			return err
		}
	}
}
