package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/internal/tempdb"
	pgsql "github.com/pgrules/pgrules/sql"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// appName marks the dispatchers' connections, so that tests can find them
// in pg_stat_activity.
const appName = "outbox-test"

// fast are settings that make the tests' retries quick.
var fast = Settings{Destinations: loopbackOK, Timeout: 2 * time.Second, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Poll: 100 * time.Millisecond}

// newDB returns a fresh database with the pgrules schema and a connection
// to it.
func newDB(t testing.TB) (string, *pgx.Conn) {
	t.Helper()
	url := pgtest.DB(t)
	conn := connect(t, url)
	if _, _, err := pgsql.Install(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	return url, conn
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func connector(url string) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			return nil, err
		}
		cfg.RuntimeParams["application_name"] = appName
		return pgx.ConnectConfig(ctx, cfg)
	}
}

// start runs a dispatcher on url until the test ends.
func start(t testing.TB, url string, s Settings) *Dispatcher {
	t.Helper()
	d := New(Config{Connect: connector(url), Settings: s})
	d.Start(context.Background())
	t.Cleanup(d.Close)
	return d
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// insert records an entry of the after_commit event ev, defined first if
// need be, as the engine does, and returns its id.
func insert(t testing.TB, conn *pgx.Conn, key, kind, target string, payload *string, args []*string, role string) int64 {
	t.Helper()
	defineEv(t, conn)
	var id int64
	err := conn.QueryRow(context.Background(), `WITH e AS (
  INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, args, role, rule_digest)
  VALUES ('ev', 'after_commit', $1, $2, $3, $4, $5, coalesce(nullif($6, '')::name, current_user), pgrules._rule_digest('ev', 'after_commit')) RETURNING id)
SELECT e.id FROM e, pg_notify('pgrules_outbox', '')`, key, kind, target, payload, args, role).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// defineEv defines the after_commit event ev that the tests' entries name
// (the dispatcher runs only entries whose rule is as it was recorded).
func defineEv(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	exec(t, conn, `INSERT INTO pgrules.rule (name, table_schema, table_name, kind, expression, timing, verbs)
  VALUES ('ev', 'public', 'none', 'event', 'nil', 'after_commit', '{insert}') ON CONFLICT (name) DO NOTHING`)
}

func post(t testing.TB, conn *pgx.Conn, key, url, payload string) int64 {
	t.Helper()
	return insert(t, conn, key, "post", url, &payload, nil, "")
}

type row struct {
	state, lastError string
	attempts         int
	delivered        bool
}

func entry(t testing.TB, conn *pgx.Conn, id int64) row {
	t.Helper()
	var r row
	err := conn.QueryRow(context.Background(),
		"SELECT state, coalesce(last_error, ''), attempts, delivered_at IS NOT NULL FROM pgrules.outbox WHERE id = $1", id).
		Scan(&r.state, &r.lastError, &r.attempts, &r.delivered)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// eventually fails the test unless cond holds within timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitState(t testing.TB, conn *pgx.Conn, id int64, state string) row {
	t.Helper()
	var r row
	eventually(t, 10*time.Second, fmt.Sprintf("entry %d to be %s", id, state), func() bool {
		r = entry(t, conn, id)
		return r.state == state
	})
	return r
}

// hit is one request the receiver got.
type hit struct {
	id     int64 // from the Idempotency-Key
	path   string
	body   string
	header http.Header
	at     time.Time
	status int
}

// receiver is an HTTP server that records what it gets. respond chooses
// the status of each request, given how many of that entry came before.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	hits    []hit         // when answered
	arrived map[int64]int // requests per entry, when they arrive
	respond func(r *http.Request, prior int) int
}

func newReceiver(t testing.TB, respond func(r *http.Request, prior int) int) *receiver {
	rc := &receiver{respond: respond, arrived: make(map[int64]int)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		id, _ := strconv.ParseInt(key[strings.LastIndexByte(key, '-')+1:], 10, 64)
		rc.mu.Lock()
		prior := rc.arrived[id]
		rc.arrived[id]++
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.respond != nil {
			status = rc.respond(r, prior)
		}
		rc.mu.Lock()
		rc.hits = append(rc.hits, hit{id: id, path: r.URL.Path, body: string(body), header: r.Header.Clone(), at: time.Now(), status: status})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) got() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.hits)
}

func (rc *receiver) arrivals(id int64) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.arrived[id]
}

func (rc *receiver) of(id int64) []hit {
	var hs []hit
	for _, h := range rc.got() {
		if h.id == id {
			hs = append(hs, h)
		}
	}
	return hs
}

func ptr(s string) *string { return &s }

func database(t testing.TB, conn *pgx.Conn) string {
	t.Helper()
	var db string
	if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestPost(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc := newReceiver(t, nil)
	start(t, url, fast)
	db := database(t, conn)

	tests := []struct {
		name    string
		payload *string
		body    string
	}{
		{"json body", ptr(`{"order": 7, "total": "12.50"}`), `{"order": 7, "total": "12.50"}`},
		{"null payload", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := insert(t, conn, "public.orders:"+tt.name, "post", rc.URL+"/hook", tt.payload, nil, "")
			r := waitState(t, conn, id, "done")
			if r.attempts != 1 || !r.delivered || r.lastError != "" {
				t.Errorf("entry = %+v, want done once", r)
			}
			hs := rc.of(id)
			if len(hs) != 1 {
				t.Fatalf("%d requests, want 1", len(hs))
			}
			h := hs[0]
			if h.path != "/hook" || h.body != tt.body {
				t.Errorf("request to %s with body %q, want /hook with %q", h.path, h.body, tt.body)
			}
			for k, want := range map[string]string{
				"Content-Type":    "application/json",
				"Idempotency-Key": fmt.Sprintf("%s-%d", db, id),
				"Pgrules-Rule":    "ev",
			} {
				if got := h.header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestNotify(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	listener := connect(t, url)
	exec(t, listener, "LISTEN order_events")
	start(t, url, fast)

	first := insert(t, conn, "public.orders:1", "notify", "order_events", ptr(`{"id": 1}`), nil, "")
	second := insert(t, conn, "public.orders:1", "notify", "order_events", nil, nil, "")
	var got []string
	for len(got) < 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := listener.WaitForNotification(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, n.Payload)
	}
	if !slices.Equal(got, []string{`{"id": 1}`, ""}) {
		t.Fatalf("payloads = %q, want the entries', in order", got)
	}
	waitState(t, conn, first, "done")
	waitState(t, conn, second, "done")
}

func TestSQL(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	db := database(t, conn)
	writer, reader := db+"_writer", db+"_reader"
	exec(t, conn, "CREATE TABLE audit (who name, v text, n int)")
	exec(t, conn, fmt.Sprintf("CREATE ROLE %q; CREATE ROLE %q; GRANT INSERT ON audit TO %q", writer, reader, writer))
	t.Cleanup(func() { // roles belong to the cluster
		conn.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %q; DROP ROLE %q; DROP ROLE %q", writer, writer, reader))
	})
	s := fast
	s.MaxAttempts = 1
	start(t, url, s)

	const ins = "INSERT INTO audit VALUES (current_user, $1, $2::int)"
	// One key, so that they go in order: the failures do not leave the
	// connection in a failed transaction for the last one.
	tests := []struct {
		role, query string
		args        []*string
		state, err  string
	}{
		{reader, ins, []*string{ptr("r"), nil}, "dead", "permission denied for table audit (SQLSTATE 42501)"},
		{writer, "INSERT INTO nosuch VALUES ($1)", []*string{ptr("x")}, "dead", "(SQLSTATE 42P01)"},
		{writer, ins, []*string{ptr("w"), nil}, "done", ""},
		{writer, ins, []*string{ptr("w2"), ptr("2")}, "done", ""},
	}
	ids := make([]int64, len(tests))
	for i, tt := range tests {
		ids[i] = insert(t, conn, "public.audit:1", "sql", tt.query, nil, tt.args, tt.role)
	}
	for i, tt := range tests {
		r := waitState(t, conn, ids[i], tt.state)
		if !strings.Contains(r.lastError, tt.err) {
			t.Errorf("entry %d: last_error %q, want it to contain %q", i, r.lastError, tt.err)
		}
	}
	rows, _ := conn.Query(context.Background(), "SELECT who || ' ' || v || ' ' || coalesce(n::text, 'NULL') FROM audit ORDER BY v")
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{writer + " w NULL", writer + " w2 2"}; !slices.Equal(got, want) {
		t.Fatalf("audit = %q, want %q", got, want)
	}
}

// TestSQLCannotChangeRole: an sql entry runs with its role's rights, and
// nothing in it may change the role, though the dispatcher's own role is
// a superuser; an entry whose rule changed runs nothing.
func TestSQLCannotChangeRole(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	db := database(t, conn)
	writer := db + "_writer"
	exec(t, conn, fmt.Sprintf("CREATE ROLE %q; CREATE TABLE seen (who name)", writer))
	t.Cleanup(func() { conn.Exec(context.Background(), fmt.Sprintf("DROP ROLE %q", writer)) })
	s := fast
	s.MaxAttempts = 1
	start(t, url, s)
	var ids []int64
	for _, q := range []string{
		"DO $d$BEGIN RESET ROLE; INSERT INTO seen VALUES (current_user); END$d$",
		"SELECT set_config('role', 'none', false)",
		"DO $d$BEGIN SET SESSION AUTHORIZATION DEFAULT; INSERT INTO seen VALUES (current_user); END$d$",
	} {
		ids = append(ids, insert(t, conn, "public.t:1", "sql", q, nil, nil, writer))
	}
	for _, id := range ids {
		if r := waitState(t, conn, id, "dead"); !strings.Contains(r.lastError, "within security-definer function") {
			t.Errorf("entry %d: last_error %q, want the role change refused", id, r.lastError)
		}
	}
	// Recorded and its rule changed before any dispatcher sees it.
	exec(t, conn, "BEGIN")
	id := insert(t, conn, "public.t:2", "sql", "INSERT INTO seen VALUES ('changed')", nil, nil, "")
	exec(t, conn, "UPDATE pgrules.rule SET expression = 'false' WHERE name = 'ev'")
	exec(t, conn, "COMMIT")
	if r := waitState(t, conn, id, "dead"); !strings.Contains(r.lastError, `rule "ev" was dropped or changed`) || r.attempts != 1 {
		t.Errorf("entry of a changed rule: %+v", r)
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM seen").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows written by the refused entries (%v)", n, err)
	}
}

// TestSessionReset: an entry finds nothing of what the one before it, of
// another role, left in the session: a temporary table of the same name
// as the table it writes, a search_path, an advisory lock.
func TestSessionReset(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	db := database(t, conn)
	first, second := db+"_first", db+"_second"
	exec(t, conn, fmt.Sprintf(`CREATE ROLE %[1]q; CREATE ROLE %[2]q; CREATE SCHEMA trap; GRANT ALL ON SCHEMA trap TO %[1]q;
		CREATE TABLE seen (who name); GRANT INSERT ON seen TO %[2]q`, first, second))
	t.Cleanup(func() {
		conn.Exec(context.Background(), fmt.Sprintf("DROP SCHEMA trap CASCADE; DROP OWNED BY %[1]q; DROP ROLE %[1]q; DROP OWNED BY %[2]q; DROP ROLE %[2]q", first, second))
	})
	start(t, url, fast)
	ids := []int64{
		insert(t, conn, "public.t:1", "sql", `DO $d$BEGIN
			CREATE TEMP TABLE seen (who name); GRANT ALL ON seen TO PUBLIC;
			CREATE TABLE trap.seen (who name); GRANT ALL ON trap.seen TO PUBLIC;
			SET search_path = trap, public; PERFORM pg_advisory_lock(42); END$d$`, nil, nil, first),
		insert(t, conn, "public.t:1", "sql", "INSERT INTO seen VALUES (current_user)", nil, nil, second),
	}
	for _, id := range ids {
		waitState(t, conn, id, "done")
	}
	var who string
	if err := conn.QueryRow(context.Background(), "SELECT string_agg(who, ' ') FROM public.seen").Scan(&who); err != nil || who != second {
		t.Fatalf("public.seen: %q (%v), want the second entry's row", who, err)
	}
	var locked bool
	if err := conn.QueryRow(context.Background(), "SELECT pg_try_advisory_lock(42)").Scan(&locked); err != nil || !locked {
		t.Fatalf("the first entry's advisory lock is still held (%v)", err)
	}
}

func TestRunSQL(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	exec(t, conn, "CREATE TABLE audit (who text, v text)")
	seen := make(chan Entry, 2)
	s := fast
	s.MaxAttempts = 1
	d := New(Config{
		Connect: connector(url),
		RunSQL: func(ctx context.Context, c *pgconn.PgConn, e Entry) error {
			if c.TxStatus() != 'I' {
				return fmt.Errorf("RunSQL got a connection in state %c", c.TxStatus())
			}
			seen <- e
			if e.Target == "leave open" {
				_, err := c.Exec(ctx, "BEGIN").ReadAll()
				return err
			}
			_, err := c.ExecParams(ctx, "INSERT INTO audit VALUES ('hook', $1)", [][]byte{[]byte(*e.Args[0])}, nil, nil, nil).Close()
			return err
		},
		Settings: s,
	})
	d.Start(context.Background())
	defer d.Close()
	open := insert(t, conn, "public.audit:9", "sql", "leave open", nil, nil, "")
	id := insert(t, conn, "public.audit:9", "sql", "SELECT $1", nil, []*string{ptr("v1"), nil}, "")
	if r := waitState(t, conn, open, "dead"); r.lastError != "the transaction was left open; rolled back" {
		t.Errorf("entry that left its transaction open: %+v", r)
	}
	waitState(t, conn, id, "done")
	<-seen
	e := <-seen
	if e.ID != id || e.Rule != "ev" || e.Timing != "after_commit" || e.Key != "public.audit:9" || e.Kind != "sql" ||
		e.Target != "SELECT $1" || len(e.Args) != 2 || *e.Args[0] != "v1" || e.Args[1] != nil || e.Role == "" || e.Attempts != 0 {
		t.Fatalf("RunSQL got %+v", e)
	}
	var who string
	if err := conn.QueryRow(context.Background(), "SELECT who FROM audit WHERE v = 'v1'").Scan(&who); err != nil || who != "hook" {
		t.Fatalf("audit row: %q, %v", who, err)
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc := newReceiver(t, func(r *http.Request, prior int) int {
		switch {
		case r.URL.Path == "/fail-twice" && prior < 2:
			return http.StatusInternalServerError
		case r.URL.Path == "/slow-once" && prior == 0:
			time.Sleep(600 * time.Millisecond)
		}
		return http.StatusOK
	})
	s := fast
	s.Timeout = 200 * time.Millisecond
	start(t, url, s)

	tests := []struct {
		path     string
		attempts int
		err      string
	}{
		{"/fail-twice", 3, "POST " + rc.URL + "/fail-twice: 500 Internal Server Error"},
		{"/slow-once", 2, "POST " + rc.URL + "/slow-once: no response within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			id := post(t, conn, "public.t:"+tt.path, rc.URL+tt.path, "{}")
			r := waitState(t, conn, id, "done")
			if r.attempts != tt.attempts || r.lastError != tt.err {
				t.Errorf("entry = %+v, want %d attempts and last error %q", r, tt.attempts, tt.err)
			}
			if n := rc.arrivals(id); n != tt.attempts {
				t.Errorf("%d requests, want %d", n, tt.attempts)
			}
		})
	}
}

func TestDeadAndRetry(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	var mu sync.Mutex
	broken := true
	rc := newReceiver(t, func(r *http.Request, prior int) int {
		mu.Lock()
		defer mu.Unlock()
		if broken && r.URL.Path == "/bad" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	s := fast
	s.MaxAttempts = 3
	s.Backoff, s.MaxBackoff = 100*time.Millisecond, time.Second
	start(t, url, s)

	bad := post(t, conn, "public.t:1", rc.URL+"/bad", "{}")
	next := post(t, conn, "public.t:1", rc.URL+"/next", "{}")
	r := waitState(t, conn, bad, "dead")
	if r.attempts != 3 || r.lastError != "POST "+rc.URL+"/bad: 500 Internal Server Error" || r.delivered {
		t.Fatalf("dead entry = %+v", r)
	}
	// A dead entry does not hold back the later ones of its key.
	waitState(t, conn, next, "done")
	hs := rc.of(bad)
	if len(hs) != 3 {
		t.Fatalf("%d attempts at the server, want 3", len(hs))
	}
	// The waits double: about 100ms, then 200ms, give or take 20%.
	if gap1, gap2 := hs[1].at.Sub(hs[0].at), hs[2].at.Sub(hs[1].at); gap1 < 75*time.Millisecond || gap2 < 150*time.Millisecond {
		t.Errorf("attempts %v and %v apart, want the backoff", gap1, gap2)
	}
	if n := rc.of(next); len(n) != 1 || n[0].at.Before(hs[2].at) {
		t.Errorf("the next entry went before the dead one gave up: %+v", n)
	}

	mu.Lock()
	broken = false
	mu.Unlock()
	exec(t, conn, "SELECT pgrules.retry($1)", bad)
	r = waitState(t, conn, bad, "done")
	if r.attempts != 1 || !r.delivered {
		t.Fatalf("retried entry = %+v", r)
	}
	if len(rc.of(bad)) != 4 {
		t.Fatalf("retried entry not posted again")
	}
}

// TestOrder runs two dispatchers over many keys while entries keep coming
// and a tenth of the requests fail: each key's entries are acknowledged
// in id order, each once.
func TestOrder(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc := newReceiver(t, func(r *http.Request, prior int) int {
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
		if rand.IntN(10) == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	s := fast
	s.Batch, s.Workers, s.MaxAttempts = 16, 8, 1000
	s.Backoff, s.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	start(t, url, s)
	start(t, url, s)

	const keys, perKey = 40, 6
	want := make(map[string][]int64)
	var order []string
	for k := range keys {
		for range perKey {
			order = append(order, fmt.Sprintf("public.t:%d", k))
		}
	}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for i, key := range order {
		want[key] = append(want[key], post(t, conn, key, rc.URL, fmt.Sprintf(`{"key": %q}`, key)))
		if i%40 == 39 {
			time.Sleep(20 * time.Millisecond) // let the dispatchers get going meanwhile
		}
	}
	var pending int
	eventually(t, 20*time.Second, "all entries done", func() bool {
		conn.QueryRow(context.Background(), "SELECT count(*) FROM pgrules.outbox WHERE state <> 'done'").Scan(&pending)
		return pending == 0
	})
	got := make(map[string][]int64)
	for _, h := range rc.got() {
		var body struct{ Key string }
		if err := json.Unmarshal([]byte(h.body), &body); err != nil {
			t.Fatal(err)
		}
		if h.status == http.StatusOK {
			got[body.Key] = append(got[body.Key], h.id)
		}
	}
	for key, ids := range want {
		if !slices.Equal(got[key], ids) {
			t.Errorf("key %s acknowledged %v, want %v", key, got[key], ids)
		}
	}
}

// TestBacklogInBackoff: a key whose first entry waits for its backoff,
// with more entries behind it than a batch holds, does not hold back
// other keys.
func TestBacklogInBackoff(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc := newReceiver(t, func(r *http.Request, prior int) int {
		if r.URL.Path == "/bad" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	s := fast
	s.Batch, s.Backoff, s.MaxBackoff = 4, time.Minute, time.Minute
	start(t, url, s)
	bad := post(t, conn, "public.a:1", rc.URL+"/bad", "{}")
	eventually(t, 5*time.Second, "the first attempt", func() bool { return entry(t, conn, bad).attempts == 1 })
	var behind []int64
	for range 3 * s.Batch {
		behind = append(behind, post(t, conn, "public.a:1", rc.URL, "{}"))
	}
	other := post(t, conn, "public.b:1", rc.URL, "{}")
	waitState(t, conn, other, "done")
	for _, id := range behind {
		if r := entry(t, conn, id); r.state != "pending" || r.attempts != 0 {
			t.Fatalf("entry %d behind the failing one: %+v", id, r)
		}
	}
}

func TestTwoDispatchersDeliverOnce(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc := newReceiver(t, nil)
	s := fast
	s.Batch = 64
	start(t, url, s)
	start(t, url, s)
	const n = 2000
	defineEv(t, conn)
	exec(t, conn, `INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, rule_digest)
SELECT 'ev', 'after_commit', 'public.t:' || (i % 500), 'post', $1, '{}', pgrules._rule_digest('ev', 'after_commit') FROM generate_series(1, $2) i`, rc.URL, n)
	exec(t, conn, "SELECT pg_notify('pgrules_outbox', '')")
	eventually(t, 20*time.Second, "all entries delivered", func() bool { return len(rc.got()) >= n })
	time.Sleep(50 * time.Millisecond) // room for a duplicate to show
	count := make(map[int64]int)
	for _, h := range rc.got() {
		count[h.id]++
	}
	if len(count) != n {
		t.Errorf("%d distinct entries delivered, want %d", len(count), n)
	}
	for id, c := range count {
		if c != 1 {
			t.Errorf("entry %d delivered %d times", id, c)
		}
	}
	// A post reaches the receiver before its dispatcher marks the entry done.
	eventually(t, 20*time.Second, "all entries done", func() bool {
		var pending int
		conn.QueryRow(context.Background(), "SELECT count(*) FROM pgrules.outbox WHERE state <> 'done'").Scan(&pending)
		return pending == 0
	})
	var again int
	conn.QueryRow(context.Background(), "SELECT count(*) FROM pgrules.outbox WHERE attempts <> 1").Scan(&again)
	if again != 0 {
		t.Errorf("%d entries took more than one attempt", again)
	}
}

// blocker is a receiver whose first request waits until released.
func blocker(t *testing.T) (rc *receiver, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	rc = newReceiver(t, func(r *http.Request, prior int) int {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-release
		}
		return http.StatusOK
	})
	return rc, entered, release
}

func TestCloseMidDelivery(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc, entered, release := blocker(t)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	d := New(Config{Connect: connector(url), Settings: fast})
	d.Start(context.Background())
	id := post(t, conn, "public.t:1", rc.URL, "{}")
	<-entered
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for the receiver")
	}
	if r := entry(t, conn, id); r.state != "pending" || r.attempts != 0 {
		t.Fatalf("after Close mid-delivery: %+v, want pending, not attempted", r)
	}
	close(release)

	start(t, url, fast)
	r := waitState(t, conn, id, "done")
	if r.attempts != 1 {
		t.Errorf("entry = %+v", r)
	}
	if n := rc.arrivals(id); n != 2 {
		t.Errorf("%d requests, want 2 (at least once)", n)
	}
}

// terminate ends the dispatchers' connections to conn's database.
func terminate(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1`, appName).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSurvivesTermination(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	rc, entered, release := blocker(t)
	start(t, url, fast)

	// Killed mid-delivery: the round rolls back and the entry goes again.
	id := post(t, conn, "public.t:1", rc.URL, "{}")
	<-entered
	if n := terminate(t, conn); n != 1 {
		t.Fatalf("terminated %d connections, want 1", n)
	}
	close(release)
	r := waitState(t, conn, id, "done")
	if n := rc.arrivals(id); n != 2 || r.attempts != 1 {
		t.Fatalf("%d requests, entry %+v; want 2 requests and one recorded attempt", n, r)
	}

	// Killed while idle, with the second connection open.
	exec(t, conn, "CREATE TABLE log (v text)")
	sqlID := insert(t, conn, "public.log:1", "sql", "INSERT INTO log VALUES ($1)", nil, []*string{ptr("a")}, "")
	waitState(t, conn, sqlID, "done")
	if n := terminate(t, conn); n != 2 {
		t.Fatalf("terminated %d connections, want 2", n)
	}
	ids := []int64{
		post(t, conn, "public.t:2", rc.URL, "{}"),
		insert(t, conn, "public.log:1", "sql", "INSERT INTO log VALUES ($1)", nil, []*string{ptr("b")}, ""),
	}
	for _, id := range ids {
		waitState(t, conn, id, "done")
	}
}

func TestSchemaInstalledLater(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	conn := connect(t, url)
	rc := newReceiver(t, nil)
	start(t, url, fast)

	backend := func() (pids []int) {
		rows, _ := conn.Query(context.Background(), "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1", appName)
		pids, _ = pgx.CollectRows(rows, pgx.RowTo[int])
		return pids
	}
	var first []int
	eventually(t, 5*time.Second, "the dispatcher to connect", func() bool { first = backend(); return len(first) == 1 })
	time.Sleep(5 * fast.Poll)
	if now := backend(); !slices.Equal(now, first) {
		t.Fatalf("backends %v then %v: the dispatcher reconnects instead of waiting", first, now)
	}
	if _, _, err := pgsql.Install(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	id := post(t, conn, "public.t:1", rc.URL, "{}")
	waitState(t, conn, id, "done")
}

func TestBackoff(t *testing.T) {
	s := Settings{Backoff: time.Second, MaxBackoff: 10 * time.Second}.withDefaults()
	for attempts, base := range []time.Duration{0, 1, 2, 4, 8, 10, 10, 10} {
		if attempts == 0 {
			continue
		}
		base *= time.Second
		for range 20 {
			if d := s.backoff(attempts); d < base*8/10 || d > base*12/10 {
				t.Fatalf("backoff(%d) = %v, want %v ± 20%%", attempts, d, base)
			}
		}
	}
	if d := s.backoff(1000); d > 12*time.Second {
		t.Fatalf("backoff(1000) = %v", d)
	}
}

// TestPostgresRestart stops a server of its own: the entry recorded
// before survives, and the dispatcher, started while the server is down,
// connects when it is back and delivers it.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	cluster, err := tempdb.Start(tempdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Destroy()
	url := cluster.URL(tempdb.SuperUser, "postgres")
	rc := newReceiver(t, nil)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pgsql.Install(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	id := post(t, conn, "public.t:1", rc.URL, "{}")
	conn.Close(context.Background())

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	d := New(Config{Connect: connector(url), Settings: fast})
	d.Start(context.Background())
	defer d.Close()
	time.Sleep(500 * time.Millisecond) // a few failed attempts to connect
	if n := rc.arrivals(id); n != 0 {
		t.Fatalf("delivered while the server was down")
	}
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitState(t, conn, id, "done")
	if n := rc.arrivals(id); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestRedirectIsFailure(t *testing.T) {
	t.Parallel()
	url, conn := newDB(t)
	var followed atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/from" {
			http.Redirect(w, r, "/to", http.StatusFound)
			return
		}
		followed.Store(true)
	}))
	defer srv.Close()
	s := fast
	s.MaxAttempts = 1
	start(t, url, s)
	id := post(t, conn, "public.t:1", srv.URL+"/from", "{}")
	if r := waitState(t, conn, id, "dead"); r.lastError != "POST "+srv.URL+"/from: 302 Found" || followed.Load() {
		t.Fatalf("entry %+v, redirect followed: %v", r, followed.Load())
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"POST x: 500 Internal Server Error", "POST x: 500 Internal Server Error"},
		{"bad \xff byte and \x00 nul", "bad \uFFFD byte and  nul"},
		{strings.Repeat("é", maxErrorText), strings.Repeat("é", maxErrorText/2)},
	}
	for _, tt := range tests {
		if got := errorText(errors.New(tt.in)); got != tt.want {
			t.Errorf("errorText(%.40q) = %.40q, want %.40q", tt.in, got, tt.want)
		}
	}
}
