package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/lib/pq"
)

// Every client in the matrix runs the same session through the proxy and
// reports each step as a JSON value, so that Go, Python and Node clients are
// held to one set of expectations. The values are chosen to catch a relay
// that corrupts data: an exact numeric whose float form differs, a NULL, a
// multi-byte UTF-8 string, and SQLSTATEs that are only right if the error
// and the transaction state behind it came from the server unchanged.
const (
	cmCreate   = "CREATE TABLE item (id int PRIMARY KEY, price numeric, note text)"
	cmInsert   = "INSERT INTO item VALUES ($1, $2, $3)"
	cmByID     = "SELECT note FROM item WHERE id = $1"
	cmUnicode  = "ünïcødé ✓"
	cmBigPrice = "12345678.901"
)

var cmWant = map[string]any{
	"select":          []any{[]any{1, "19.99", "first"}, []any{2, "0.10", nil}},
	"rolled_back":     0,       // rows with the id inserted, then rolled back
	"committed":       1,       // rows with the id inserted, then committed
	"error":           "23505", // duplicate key, outside a transaction
	"after_error":     1,       // SELECT 1 right after it
	"tx_error":        "42P01", // missing table inside BEGIN
	"tx_aborted":      "25P02", // the next statement in that transaction
	"after_rollback":  1,       // SELECT 1 after ROLLBACK
	"prepared_insert": 1,       // rows the prepared INSERT reported
	"prepared":        []any{"first", "committed", cmUnicode},
	"server_side":     2, // the client's statements in pg_prepared_statements
}

// cmFinalRows is the item table the session must leave, read directly.
var cmFinalRows = "1|19.99|first 2|0.10|NULL 4|4.5|committed 5|" + cmBigPrice + "|" + cmUnicode

// Only clients that expose the ReadyForQuery status report it: "T" after
// BEGIN, "E" after the failed statement, "I" after ROLLBACK.
const cmTxStatus = "TEI"

type cmClient struct {
	name  string
	run   func(t *testing.T, url string) cmSteps
	extra map[string]any // expectations beyond cmWant
}

var cmClients = []cmClient{
	{"psql", cmPsql, nil},
	{"pgx", cmPgx, map[string]any{"tx_status": cmTxStatus}},
	{"lib/pq", cmLibpq, nil},
	{"psycopg2", func(t *testing.T, url string) cmSteps {
		return cmScript(t, "psycopg2", "matrix", url)
	}, map[string]any{"tx_status": cmTxStatus}},
	{"node-postgres", func(t *testing.T, url string) cmSteps {
		return cmScript(t, "node-postgres", "matrix", url)
	}, map[string]any{"tx_status": cmTxStatus}},
}

// TestClients runs the client matrix through a plain and a TLS-terminating
// proxy, each client against a fresh database, then pgbench's TPC-B-like
// script in all three protocol modes.
func TestClients(t *testing.T) {
	cert := cmSelfSigned(t)
	transports := []struct {
		name    string
		sslmode string
		opts    []proxyOption
	}{
		{"plain", "disable", nil},
		{"tls", "require", []proxyOption{withTLS(cert.config)}},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			p := startProxy(t, shared, tr.opts...)
			for _, c := range cmClients {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					db := shared.newDB(t)
					got := c.run(t, cmSSLMode(p.url("", "", db), tr.sslmode))
					want := map[string]any{"ssl": tr.sslmode == "require"}
					for k, v := range cmWant {
						want[k] = v
					}
					for k, v := range c.extra {
						want[k] = v
					}
					got.check(t, want)
					direct := connect(t, shared.url("", "", db))
					rows := scalar(t, direct, "SELECT string_agg(concat_ws('|', id, price, coalesce(note, 'NULL')), ' ' ORDER BY id) FROM item")
					if rows != cmFinalRows {
						t.Errorf("item in the database:\n got %s\nwant %s", rows, cmFinalRows)
					}
					cmNoBackendsLeft(t, direct)
				})
			}
			t.Run("pgbench", func(t *testing.T) {
				t.Parallel()
				cmPgbench(t, p, tr.sslmode)
			})
		})
	}
}

// cmPgbench initialises pgbench's tables through the proxy (COPY included)
// and runs the TPC-B-like script in each protocol mode.
func cmPgbench(t *testing.T, p *testProxy, sslmode string) {
	db := shared.newDB(t)
	url := cmSSLMode(p.url("", "", db), sslmode)
	if out, err := cmCommand(t, nil, "pgbench", "-i", "-s", "1", "-q", url).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	direct := connect(t, shared.url("", "", db))
	if n := scalar(t, direct, "SELECT count(*) FROM pgbench_accounts"); n != "100000" {
		t.Fatalf("pgbench -i loaded %s accounts, want 100000", n)
	}
	processed := regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)/(\d+)$`)
	failed := regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	const perMode = 4 * 200
	for i, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			out, err := cmCommand(t, nil, "pgbench", "-n", "-t", "200", "-c", "4", "-j", "2", "-M", mode, url).CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
			}
			want := strconv.Itoa(perMode)
			if m := processed.FindSubmatch(out); m == nil || string(m[1]) != want || string(m[2]) != want {
				t.Errorf("pgbench -M %s did not process %s/%s transactions:\n%s", mode, want, want, out)
			}
			if m := failed.FindSubmatch(out); m == nil || string(m[1]) != "0" {
				t.Errorf("pgbench -M %s reports failed transactions (or no count):\n%s", mode, out)
			}
			if n := scalar(t, direct, "SELECT count(*) FROM pgbench_history"); n != strconv.Itoa((i+1)*perMode) {
				t.Errorf("pgbench_history has %s rows after %d runs of %d", n, i+1, perMode)
			}
			// Each transaction adds one delta to an account, a teller, a
			// branch and the history; the sums only agree if every
			// statement of every transaction took effect exactly once.
			balanced := scalar(t, direct, `SELECT (SELECT sum(abalance) FROM pgbench_accounts) = h.s
				AND (SELECT sum(tbalance) FROM pgbench_tellers) = h.s
				AND (SELECT sum(bbalance) FROM pgbench_branches) = h.s
				FROM (SELECT sum(delta) AS s FROM pgbench_history) h`)
			if balanced != "t" {
				t.Errorf("balances and history disagree after pgbench -M %s", mode)
			}
			cmNoBackendsLeft(t, direct)
		})
	}
}

// cmSteps holds what a client reported, each value as canonical JSON.
type cmSteps map[string]string

func (s cmSteps) set(step string, v any) { s[step] = cmJSON(v) }

func (s cmSteps) check(t *testing.T, want map[string]any) {
	t.Helper()
	for step, w := range want {
		got, ok := s[step]
		switch {
		case !ok:
			t.Errorf("step %s: not reported, want %s", step, cmJSON(w))
		case got != cmJSON(w):
			t.Errorf("step %s = %s, want %s", step, got, cmJSON(w))
		}
	}
}

// cmJSON encodes v after a round trip through a generic value, so that 1 and
// 1.0, or "ü" and "\u00fc", compare equal whoever produced them.
func cmJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		panic(err)
	}
	b, _ = json.Marshal(generic)
	return string(b)
}

// cmSSLMode replaces the sslmode of a proxy URL.
func cmSSLMode(url, mode string) string {
	return strings.Replace(url, "sslmode=disable", "sslmode="+mode, 1)
}

// cmNoBackendsLeft fails unless every upstream session of the database,
// other than c's own, ends soon after its client has gone: the proxy must
// not keep server connections alive behind departed clients.
func cmNoBackendsLeft(t *testing.T, c *pgconn.PgConn) {
	t.Helper()
	// Autovacuum workers show up with the database's name too, and so
	// does the engine's catalog connection.
	const q = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'pgrules catalog'`
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := scalar(t, c, q)
		if n == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s upstream sessions still open after their clients finished", n)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmSQLState is the SQLSTATE of a pgx or lib/pq error, "" for none.
func cmSQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return string(pqErr.Code)
	}
	if err != nil {
		return "no SQLSTATE: " + err.Error()
	}
	return ""
}

// cmCommand prepares a client program with an environment free of the
// machine's PG* settings, which would otherwise change sslmode, channel
// binding or the password the client uses.
func cmCommand(t *testing.T, env []string, prog string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, prog, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PGCLIENTENCODING=UTF8", "PGCONNECT_TIMEOUT=10")
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// cmScripts are the client programs under tests/clients.
var cmScripts = map[string][]string{
	"psycopg2":      {"/usr/bin/python3", "clients/python/client.py"},
	"node-postgres": {"node", "clients/node/client.js"},
}

// cmScript runs a client script in a mode with PGRULES_URL set and returns
// the steps it printed; it fails the test if the script fails.
func cmScript(t *testing.T, client, mode, url string, env ...string) cmSteps {
	t.Helper()
	steps, err := cmTryScript(t, client, mode, url, env...)
	if err != nil {
		t.Fatal(err)
	}
	return steps
}

func cmTryScript(t *testing.T, client, mode, url string, env ...string) (cmSteps, error) {
	t.Helper()
	prog := cmScripts[client]
	if client == "node-postgres" {
		if _, err := os.Stat("clients/node/node_modules/pg"); err != nil {
			t.Fatalf("node-postgres is not installed (run scripts/deps.sh test): %v", err)
		}
	}
	cmd := cmCommand(t, append([]string{"PGRULES_URL=" + url}, env...), prog[0], prog[1], mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", client, mode, err, out, stderr.Bytes())
	}
	steps := cmSteps{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var line struct {
			Step  string
			Value any
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Step == "" {
			return nil, fmt.Errorf("%s %s printed %q, not a step", client, mode, sc.Text())
		}
		steps.set(line.Step, line.Value)
	}
	return steps, nil
}

// cmPsqlScript is the matrix session for psql. "\echo @step" opens a step;
// the lines psql prints until the next one are its value. SQLSTATE and
// ROW_COUNT are psql's own variables, set from each result.
const cmPsqlScript = `
` + cmCreate + `;
INSERT INTO item VALUES (1, 19.99, 'first'), (2, 0.10, NULL);
\echo @select
SELECT id, price, note FROM item ORDER BY id;
BEGIN;
INSERT INTO item VALUES (3, 3, 'rolled back');
ROLLBACK;
\echo @rolled_back
SELECT count(*) FROM item WHERE id = 3;
BEGIN;
INSERT INTO item VALUES (4, 4.5, 'committed');
COMMIT;
\echo @committed
SELECT count(*) FROM item WHERE id = 4;
INSERT INTO item VALUES (1, 0, NULL);
\echo @error :SQLSTATE
\echo @after_error
SELECT 1;
BEGIN;
SELECT * FROM no_such_table;
\echo @tx_error :SQLSTATE
SELECT 1;
\echo @tx_aborted :SQLSTATE
ROLLBACK;
\echo @after_rollback
SELECT 1;
PREPARE ins(int, numeric, text) AS ` + cmInsert + `;
EXECUTE ins(5, ` + cmBigPrice + `, '` + cmUnicode + `');
\echo @prepared_insert :ROW_COUNT
PREPARE by_id(int) AS ` + cmByID + `;
\echo @prepared
EXECUTE by_id(1);
EXECUTE by_id(4);
EXECUTE by_id(5);
\echo @server_side
SELECT count(*) FROM pg_prepared_statements WHERE name IN ('ins', 'by_id');
\echo @conninfo
\conninfo
`

func cmPsql(t *testing.T, url string) cmSteps {
	f := filepath.Join(t.TempDir(), "matrix.sql")
	if err := os.WriteFile(f, []byte(cmPsqlScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := cmCommand(t, nil, "psql", "-X", "-q", "-A", "-t", "-P", "null=NULL", "-v", "VERBOSITY=verbose", "-d", url, "-f", f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("psql: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	// The two errors must be the server's, as psql prints them.
	for _, want := range []string{
		`ERROR:  23505: duplicate key value violates unique constraint "item_pkey"`,
		`ERROR:  42P01: relation "no_such_table" does not exist`,
		`ERROR:  25P02: current transaction is aborted`,
	} {
		if !bytes.Contains(stderr.Bytes(), []byte(want)) {
			t.Errorf("psql printed no %q; stderr:\n%s", want, stderr.Bytes())
		}
	}

	raw := map[string][]string{}
	var cur string
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if name, ok := strings.CutPrefix(line, "@"); ok {
			name, value, _ := strings.Cut(name, " ")
			cur = name
			raw[cur] = nil
			if value != "" {
				raw[cur] = append(raw[cur], value)
			}
			continue
		}
		if cur != "" && line != "" {
			raw[cur] = append(raw[cur], line)
		}
	}
	number := func(step string) any {
		if len(raw[step]) != 1 {
			return raw[step]
		}
		n, err := strconv.Atoi(raw[step][0])
		if err != nil {
			return raw[step][0]
		}
		return n
	}
	text := func(step string) any {
		if len(raw[step]) != 1 {
			return raw[step]
		}
		return raw[step][0]
	}
	st := cmSteps{}
	var rows []any
	for _, line := range raw["select"] {
		f := strings.Split(line, "|")
		row := []any{}
		for i, v := range f {
			switch n, err := strconv.Atoi(v); {
			case v == "NULL":
				row = append(row, nil)
			case i == 0 && err == nil:
				row = append(row, n)
			default:
				row = append(row, v)
			}
		}
		rows = append(rows, row)
	}
	st.set("select", rows)
	for _, step := range []string{"rolled_back", "committed", "after_error", "after_rollback", "prepared_insert", "server_side"} {
		st.set(step, number(step))
	}
	for _, step := range []string{"error", "tx_error", "tx_aborted"} {
		st.set(step, text(step))
	}
	st.set("prepared", raw["prepared"])
	st.set("ssl", strings.Contains(strings.Join(raw["conninfo"], "\n"), "SSL connection"))
	return st
}

func cmPgx(t *testing.T, url string) cmSteps {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	st := cmSteps{}
	exec := func(q pgx.Tx, sql string, args ...any) pgconn.CommandTag {
		t.Helper()
		var tag pgconn.CommandTag
		var err error
		if q != nil {
			tag, err = q.Exec(ctx, sql, args...)
		} else {
			tag, err = conn.Exec(ctx, sql, args...)
		}
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return tag
	}
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		return tx
	}

	exec(nil, cmCreate)
	exec(nil, "INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)", 1, "19.99", "first")
	rows, err := conn.Query(ctx, "SELECT id, price, note FROM item ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var got []any
	for rows.Next() {
		var id int32
		var price pgtype.Numeric // decoded from numeric's binary form
		var note *string
		if err := rows.Scan(&id, &price, &note); err != nil {
			t.Fatal(err)
		}
		text, _ := price.Value()
		got = append(got, []any{id, text, note})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st.set("select", got)

	tx := begin()
	exec(tx, "INSERT INTO item VALUES (3, 3, 'rolled back')")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	st.set("rolled_back", count("SELECT count(*) FROM item WHERE id = $1", 3))
	tx = begin()
	exec(tx, "INSERT INTO item VALUES (4, 4.5, 'committed')")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st.set("committed", count("SELECT count(*) FROM item WHERE id = $1", 4))

	_, err = conn.Exec(ctx, "INSERT INTO item VALUES (1, 0, NULL)")
	st.set("error", cmSQLState(err))
	st.set("after_error", count("SELECT 1"))

	tx = begin()
	status := string(conn.PgConn().TxStatus())
	_, err = tx.Exec(ctx, "SELECT * FROM no_such_table")
	st.set("tx_error", cmSQLState(err))
	status += string(conn.PgConn().TxStatus())
	_, err = tx.Exec(ctx, "SELECT 1")
	st.set("tx_aborted", cmSQLState(err))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	status += string(conn.PgConn().TxStatus())
	st.set("tx_status", status)
	st.set("after_rollback", count("SELECT 1"))

	if _, err := conn.Prepare(ctx, "ins", cmInsert); err != nil {
		t.Fatal(err)
	}
	st.set("prepared_insert", exec(nil, "ins", 5, cmBigPrice, cmUnicode).RowsAffected())
	if _, err := conn.Prepare(ctx, "by_id", cmByID); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, id := range []int{1, 4, 5} {
		var note string
		if err := conn.QueryRow(ctx, "by_id", id).Scan(&note); err != nil {
			t.Fatalf("by_id(%d): %v", id, err)
		}
		notes = append(notes, note)
	}
	st.set("prepared", notes)
	st.set("server_side", count("SELECT count(*) FROM pg_prepared_statements WHERE name IN ('ins', 'by_id')"))
	_, isTLS := conn.PgConn().Conn().(*tls.Conn)
	st.set("ssl", isTLS)
	return st
}

func cmLibpq(t *testing.T, url string) cmSteps {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connector, err := pq.NewConnector(url)
	if err != nil {
		t.Fatal(err)
	}
	sniff := &cmTLSSniffer{}
	connector.Dialer(sniff)
	db := sql.OpenDB(connector)
	defer db.Close()
	// One session for the whole run: prepared statements and transaction
	// state belong to a connection, not to the pool.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	st := cmSteps{}
	type execer interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	}
	exec := func(e execer, q string, args ...any) sql.Result {
		t.Helper()
		res, err := e.ExecContext(ctx, q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return res
	}
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := conn.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	begin := func() *sql.Tx {
		t.Helper()
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		return tx
	}

	exec(conn, cmCreate)
	exec(conn, "INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)", 1, "19.99", "first")
	rows, err := conn.QueryContext(ctx, "SELECT id, price, note FROM item ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var got []any
	for rows.Next() {
		var id int
		var price string
		var note sql.NullString
		if err := rows.Scan(&id, &price, &note); err != nil {
			t.Fatal(err)
		}
		var n any
		if note.Valid {
			n = note.String
		}
		got = append(got, []any{id, price, n})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	st.set("select", got)

	tx := begin()
	exec(tx, "INSERT INTO item VALUES (3, 3, 'rolled back')")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	st.set("rolled_back", count("SELECT count(*) FROM item WHERE id = $1", 3))
	tx = begin()
	exec(tx, "INSERT INTO item VALUES (4, 4.5, 'committed')")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	st.set("committed", count("SELECT count(*) FROM item WHERE id = $1", 4))

	_, err = conn.ExecContext(ctx, "INSERT INTO item VALUES (1, 0, NULL)")
	st.set("error", cmSQLState(err))
	st.set("after_error", count("SELECT 1"))

	tx = begin()
	_, err = tx.ExecContext(ctx, "SELECT * FROM no_such_table")
	st.set("tx_error", cmSQLState(err))
	_, err = tx.ExecContext(ctx, "SELECT 1")
	st.set("tx_aborted", cmSQLState(err))
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	st.set("after_rollback", count("SELECT 1"))

	ins, err := conn.PrepareContext(ctx, cmInsert)
	if err != nil {
		t.Fatal(err)
	}
	defer ins.Close()
	res, err := ins.ExecContext(ctx, 5, cmBigPrice, cmUnicode)
	if err != nil {
		t.Fatalf("prepared insert: %v", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		t.Fatal(err)
	}
	st.set("prepared_insert", n)
	byID, err := conn.PrepareContext(ctx, cmByID)
	if err != nil {
		t.Fatal(err)
	}
	defer byID.Close()
	var notes []string
	for _, id := range []int{1, 4, 5} {
		var note string
		if err := byID.QueryRowContext(ctx, id).Scan(&note); err != nil {
			t.Fatalf("by_id(%d): %v", id, err)
		}
		notes = append(notes, note)
	}
	st.set("prepared", notes)
	// lib/pq names its statements itself; they are found by their text.
	st.set("server_side", count("SELECT count(*) FROM pg_prepared_statements WHERE statement IN ('"+cmInsert+"', '"+cmByID+"')"))
	st.set("ssl", sniff.sawTLS())
	return st
}

// cmTLSSniffer is a lib/pq dialer that watches what the driver writes:
// lib/pq layers TLS over the connection it dials and never shows it, but a
// TLS handshake record (type 22, version 3.x) on the wire is unmistakable,
// as no frontend message starts with those bytes.
type cmTLSSniffer struct {
	mu  sync.Mutex
	tls bool
}

func (d *cmTLSSniffer) Dial(network, address string) (net.Conn, error) {
	return d.DialTimeout(network, address, 10*time.Second)
}

func (d *cmTLSSniffer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	return &cmSniffConn{Conn: c, d: d}, nil
}

func (d *cmTLSSniffer) sawTLS() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tls
}

type cmSniffConn struct {
	net.Conn
	d *cmTLSSniffer
}

func (c *cmSniffConn) Write(b []byte) (int, error) {
	if len(b) >= 2 && b[0] == 22 && b[1] == 3 {
		c.d.mu.Lock()
		c.d.tls = true
		c.d.mu.Unlock()
	}
	return c.Conn.Write(b)
}
