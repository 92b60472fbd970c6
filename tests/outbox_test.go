package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/outbox"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/rules"
	"github.com/pgrules/pgrules/stmtconn"
)

// The outbox end to end: after_commit events through the proxy, delivered
// by the proxy's dispatchers to a real HTTP server — after the commit and
// never after a rollback, retried, dead and re-queued, in order per key
// under concurrent clients, shared by two proxies, and picked up after a
// proxy stops mid-delivery.

// fastOutbox are delivery settings for tests: short waits everywhere.
var fastOutbox = outbox.Settings{
	// The tests' receivers listen on loopback, which post() reaches only
	// when allowed.
	Destinations: allowDestinations("127.0.0.1"),
	Timeout:      500 * time.Millisecond,
	MaxAttempts:  3,
	Backoff:      50 * time.Millisecond,
	MaxBackoff:   200 * time.Millisecond,
	Poll:         100 * time.Millisecond,
}

// withOutbox gives the proxy the engine and an outbox dispatcher for each
// database it serves, wired as `pgrules serve` wires them.
// m, when set, receives the dispatchers' manager.
func withOutbox(t testing.TB, s *server, settings outbox.Settings, out **outbox.Manager) proxyOption {
	return withOutboxRunAs(t, s, settings, out, nil)
}

// withOutboxRunAs is withOutbox whose dispatchers run entries on
// connections that connectRun opens (nil: as the proxy's own role).
func withOutboxRunAs(t testing.TB, s *server, settings outbox.Settings, out **outbox.Manager,
	connectRun func(ctx context.Context, database string) (*pgx.Conn, error)) proxyOption {
	return func(p *proxy.Config) {
		var m *outbox.Manager
		cfg := engineConfig(s, installSchema, p.Logger)
		cfg.Serving = func(database string) { m.Ensure(database) }
		e := rules.NewEngine(cfg)
		settings.Logger = p.Logger
		m = outbox.NewManager(outbox.ManagerConfig{
			Connect:    cfg.Connect,
			ConnectRun: connectRun,
			RunSQL: func(ctx context.Context, database string, conn *pgconn.PgConn, en outbox.Entry) error {
				return e.RunTx(ctx, database, stmtconn.New(conn, nil), en.Role, en.Target, en.Args)
			},
			Settings: settings,
		})
		t.Cleanup(m.Close)
		if out != nil {
			*out = m
		}
		p.Rules = e
	}
}

// hook is an HTTP server that records what it is posted; fail, when set,
// answers a request with a status other than 200.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	fail   func(body string, n int) int // n: the requests with this body so far
	seen   map[string]int
}

func newHook(t *testing.T) *hook {
	h := &hook{seen: make(map[string]int)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		h.mu.Lock()
		h.seen[body]++
		n, fail := h.seen[body], h.fail
		h.mu.Unlock()
		if fail != nil {
			if code := fail(body, n); code != http.StatusOK {
				w.WriteHeader(code)
				return
			}
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

// delivered returns the bodies delivered so far.
func (h *hook) delivered() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.bodies...)
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// managed are a proxy's outbox settings, and where its manager goes.
type managed struct {
	settings outbox.Settings
	m        **outbox.Manager
}

func withManager(s outbox.Settings, m **outbox.Manager) managed { return managed{s, m} }

// outboxDB is shopDB behind a proxy with dispatchers (fastOutbox unless
// given), with the events given; "HOOK" in them stands for the hook's URL.
func outboxDB(t *testing.T, h *hook, events ...any) (c, admin *pgconn.PgConn, db string) {
	t.Helper()
	db = shared.newDB(t)
	admin = connect(t, shared.url("", "", db))
	scalar(t, admin, shopSchema)
	opt := managed{settings: fastOutbox}
	var defs []string
	for _, e := range events {
		switch e := e.(type) {
		case managed:
			opt = e
		case string:
			defs = append(defs, e)
		}
	}
	p := startProxy(t, shared, withOutbox(t, shared, opt.settings, opt.m))
	c = connect(t, p.url("", "", db))
	for _, r := range append(append([]string(nil), shopRules...), defs...) {
		if e := pgError(t, c, strings.ReplaceAll(r, "HOOK", h.URL)); e != nil {
			t.Fatalf("%s: %v", r, e)
		}
	}
	return c, admin, db
}

// TestOutboxDelivery: after the commit a post, a notification and a write
// in a new transaction, whose own rule runs; nothing after a rollback.
func TestOutboxDelivery(t *testing.T) {
	h := newHook(t)
	c, admin, db := outboxDB(t, h,
		`SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/orders", {id: row.id, amount: row.amount}); notify("paid", string(row.id)); insert("audit", {order_id: row.id, verb: verb, timing: "after_commit", new_amount: row.amount})', name => 'announce')`,
	)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	listener, notes := listen(t, db, "paid")
	scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 12.50)")
	waitFor(t, "the post", func() bool { return len(h.delivered()) == 1 })
	if got := h.delivered()[0]; got != `{"amount":12.50,"id":1}` {
		t.Fatalf("posted %s", got)
	}
	if err := listener.WaitForNotification(ctx); err != nil {
		t.Fatal(err)
	}
	if n := <-notes; n.Channel != "paid" || n.Payload != "1" {
		t.Fatalf("notification %+v", n)
	}
	waitFor(t, "the audit row", func() bool { return scalar(t, admin, "SELECT count(*) FROM audit") == "1" })
	if got := scalar(t, admin, "SELECT concat_ws(' ', order_id, timing, new_amount, delta) FROM audit"); got != "1 after_commit 12.50 12.50" {
		t.Fatalf("audit row (its formula gives the delta): %s", got)
	}
	waitFor(t, "every entry done", func() bool {
		return scalar(t, admin, "SELECT string_agg(kind || ' ' || state, ', ' ORDER BY id) FROM pgrules.outbox") == "post done, notify done, sql done"
	})

	scalar(t, c, "BEGIN")
	scalar(t, c, "UPDATE orders SET amount = 20 WHERE id = 1")
	scalar(t, c, "ROLLBACK")
	time.Sleep(300 * time.Millisecond) // three polls of the dispatcher
	if got := len(h.delivered()); got != 1 {
		t.Fatalf("%d posts after a rolled back transaction", got)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM pgrules.outbox"); got != "3" {
		t.Fatalf("entries after a rollback: %s", got)
	}
}

// TestOutboxRetries: a post that fails with 500 or times out is retried
// until it succeeds; one that always fails is dead after the attempt
// limit, with its last error, and pgrules.retry re-queues it.
func TestOutboxRetries(t *testing.T) {
	h := newHook(t)
	var broken sync.Map // bodies that fail until deleted
	h.fail = func(body string, n int) int {
		switch {
		case strings.Contains(body, `"id":1`) && n <= 2:
			return http.StatusInternalServerError
		case strings.Contains(body, `"id":2`) && n == 1:
			time.Sleep(fastOutbox.Timeout + 200*time.Millisecond) // past the timeout
		}
		if _, ok := broken.Load(body); ok {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	c, admin, _ := outboxDB(t, h, `SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/o", {id: row.id})', verbs => '{insert}', name => 'announce')`)
	broken.Store(`{"id":3}`, true)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1), (2, 1), (3, 1)")
	waitFor(t, "orders 1 and 2 delivered", func() bool { return len(h.delivered()) == 2 })
	const states = "SELECT string_agg(concat_ws(' ', payload, state, attempts), ', ' ORDER BY id) FROM pgrules.outbox"
	waitFor(t, "order 3 dead", func() bool {
		return scalar(t, admin, states) == `{"id":1} done 3, {"id":2} done 2, {"id":3} dead 3`
	})
	if got := scalar(t, admin, "SELECT last_error FROM pgrules.outbox WHERE state = 'dead'"); !strings.Contains(got, "503") {
		t.Fatalf("last error of the dead entry: %q", got)
	}
	broken.Delete(`{"id":3}`)
	if got := scalar(t, c, "SELECT pgrules.retry(id) FROM pgrules.outbox WHERE state = 'dead'"); got != "t" {
		t.Fatalf("retry: %s", got)
	}
	waitFor(t, "order 3 delivered after the retry", func() bool {
		return scalar(t, admin, "SELECT state FROM pgrules.outbox WHERE payload = '{\"id\":3}'") == "done"
	})
	if e := pgError(t, c, "SELECT pgrules.retry(12345)"); e == nil || e.Code != "P0002" {
		t.Fatalf("retry of no entry: %+v", e)
	}
}

// TestOutboxOrderPerKey: 8 clients update 4 orders concurrently, and the
// server fails one post in five; each order's posts still arrive in the
// order its transactions committed.
func TestOutboxOrderPerKey(t *testing.T) {
	h := newHook(t)
	h.fail = func(body string, n int) int {
		if n == 1 && len(body)%5 == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	c, admin, db := outboxDB(t, h, `SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/o", {id: row.id, n: row.amount})', verbs => '{update}', name => 'announce')`)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1), (2, 1), (3, 2), (4, 2)")
	scalar(t, admin, unguarded("UPDATE customer SET credit_limit = 1000000"))
	p := startProxy(t, shared, withOutbox(t, shared, fastOutbox, nil))
	const clients, updates = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, p.url("", "", db))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for j := range updates {
				sql := fmt.Sprintf("UPDATE orders SET amount = amount + 1 WHERE id = %d", 1+(i+j)%4)
				if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "every post", func() bool { return len(h.delivered()) == clients*updates })
	last := map[float64]float64{}
	for _, b := range h.delivered() {
		var m struct{ ID, N float64 }
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			t.Fatal(err)
		}
		if m.N <= last[m.ID] {
			t.Fatalf("order %v: post of amount %v after %v", m.ID, m.N, last[m.ID])
		}
		last[m.ID] = m.N
	}
	// The receiver has a post before its dispatcher marks the entry done.
	waitFor(t, "every entry done", func() bool {
		return scalar(t, admin, "SELECT count(*) FILTER (WHERE state = 'done') = count(*) AND count(*) = "+fmt.Sprint(clients*updates)+" FROM pgrules.outbox") == "t"
	})
}

// TestOutboxTwoProxies: two proxies share the outbox; when nothing fails
// each entry is delivered exactly once.
func TestOutboxTwoProxies(t *testing.T) {
	h := newHook(t)
	c, admin, db := outboxDB(t, h, `SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/o", {id: row.id})', verbs => '{insert}', name => 'announce')`)
	other := connect(t, startProxy(t, shared, withOutbox(t, shared, fastOutbox, nil)).url("", "", db))
	for i := range 200 {
		conn := c
		if i%2 == 1 {
			conn = other
		}
		scalar(t, conn, fmt.Sprintf("INSERT INTO orders (id, customer_id) VALUES (%d, 1)", i+1))
	}
	waitFor(t, "every post", func() bool { return len(h.delivered()) >= 200 })
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	for _, b := range h.delivered() {
		seen[b]++
	}
	if len(seen) != 200 || len(h.delivered()) != 200 {
		t.Fatalf("%d posts of %d entries", len(h.delivered()), len(seen))
	}
	waitFor(t, "every entry done", func() bool {
		return scalar(t, admin, "SELECT count(*) FROM pgrules.outbox WHERE state = 'done'") == "200"
	})
	if got := scalar(t, admin, "SELECT count(*) FROM pgrules.outbox WHERE attempts <> 1"); got != "0" {
		t.Fatalf("entries not done at the first attempt: %s", got)
	}
}

// TestOutboxProxyStopped: a proxy that goes away while its dispatcher
// waits on a post (its connection dropped, as when its process is killed)
// leaves the entry pending; another proxy delivers it.
func TestOutboxProxyStopped(t *testing.T) {
	h := newHook(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h.fail = func(body string, n int) int {
		if n == 1 {
			started <- struct{}{}
			<-release // the first attempt hangs until its proxy is gone
		}
		return http.StatusOK
	}
	slow := fastOutbox
	slow.Timeout = time.Minute
	var first *outbox.Manager
	c, admin, db := outboxDB(t, h, withManager(slow, &first), `SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/o", {id: row.id})', name => 'announce')`)
	scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	<-started
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	scalar(t, admin, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%FOR UPDATE SKIP LOCKED%'")
	close(release)
	first.Close()
	if got := scalar(t, admin, "SELECT state FROM pgrules.outbox"); got != "pending" {
		t.Fatalf("the entry of the stopped proxy is %s", got)
	}
	second := startProxy(t, shared, withOutbox(t, shared, fastOutbox, nil))
	connect(t, second.url("", "", db)) // a session makes it serve the database
	waitFor(t, "the entry delivered", func() bool {
		return scalar(t, admin, "SELECT state FROM pgrules.outbox") == "done"
	})
	if got := h.delivered(); len(got) != 2 || got[1] != `{"id":1}` {
		t.Fatalf("posts: %v (the stopped proxy's, then the other's)", got)
	}
}
