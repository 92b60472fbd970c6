package tests

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/lib/pq"
)

// Every client in the matrix does the same session — DDL, DML, SELECT,
// a rolled-back and a committed transaction, an error, a prepared
// statement — through the proxy; the database then must hold exactly ids
// 1, 2 and 4.
func TestClients(t *testing.T) {
	clients := []struct {
		name string
		run  func(t *testing.T, url string)
	}{
		{"psql", runPsqlClient},
		{"pgx", runPgxClient},
		{"lib/pq", runLibpqClient},
		{"psycopg2", func(t *testing.T, url string) {
			checkSteps(t, runScript(t, url, false, "/usr/bin/python3", "clients/python/client.py"), map[string]string{
				"select":   `[[1,"19.99","first"],[2,"0.10",null]]`,
				"ids":      `[1,2,4]`,
				"prepared": `"first"`, "prepared_again": `"committed"`,
				"error": `"23505"`, "after_error": `1`, "ssl": `false`,
			})
		}},
		{"node-postgres", func(t *testing.T, url string) {
			checkSteps(t, runScript(t, url, false, "node", "clients/node/client.js"), map[string]string{
				"select":   `[{"id":1,"price":"19.99","note":"first"},{"id":2,"price":"0.10","note":null}]`,
				"ids":      `[1,2,4]`,
				"prepared": `"first"`, "prepared_again": `"committed"`,
				"error": `"23505"`, "after_error": `1`, "ssl": `false`,
			})
		}},
	}
	p := startProxy(t, shared)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			db := shared.newDB(t)
			c.run(t, p.url("", "", db))
			direct := connect(t, shared.url("", "", db))
			if got := mustQuery(t, direct, "SELECT array_agg(id ORDER BY id) FROM item"); got != "{1,2,4}" {
				t.Fatalf("rows in the database: %s, want {1,2,4}", got)
			}
		})
	}
}

// runScript runs a client program with PGRULES_URL set and returns its
// stdout.
func runScript(t *testing.T, url string, tls bool, prog string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), "PGRULES_URL="+url)
	if tls {
		cmd.Env = append(cmd.Env, "PGRULES_TLS=1")
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s%s", prog, args, err, out, stderr.String())
	}
	return out
}

// checkSteps compares the JSON lines {"step": ..., "value": ...} a client
// script printed with the expected values.
func checkSteps(t *testing.T, out []byte, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var line struct {
			Step  string
			Value json.RawMessage
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("bad line %q: %v", sc.Text(), err)
		}
		var compact bytes.Buffer
		json.Compact(&compact, line.Value)
		got[line.Step] = compact.String()
	}
	for step, w := range want {
		if got[step] != w {
			t.Errorf("%s = %s, want %s", step, got[step], w)
		}
	}
}

func runPsqlClient(t *testing.T, url string) {
	script := `
CREATE TABLE item (id int PRIMARY KEY, price numeric(10,2), note text);
INSERT INTO item VALUES (1, 19.99, 'first'), (2, 0.10, NULL);
SELECT id, price, coalesce(note, '<null>') FROM item ORDER BY id;
BEGIN; INSERT INTO item VALUES (3, 1, 'rolled back'); ROLLBACK;
BEGIN; INSERT INTO item VALUES (4, 1, 'committed'); COMMIT;
INSERT INTO item VALUES (1, 0, NULL);
SELECT 'after error';
PREPARE by_id(int) AS SELECT note FROM item WHERE id = $1;
EXECUTE by_id(1);
EXECUTE by_id(4);
`
	out := psql(t, url, script)
	for _, want := range []string{
		"1|19.99|first", "2|0.10|<null>", "23505", "after error", "committed", "first",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
}

// psql runs a script with psql in unaligned, tuples-only mode, errors
// printed verbosely (with their SQLSTATE), and returns what it printed.
func psql(t *testing.T, url, script string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "script.sql")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-d", url, "-f", f).CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	return string(out)
}

func runPgxClient(t *testing.T, url string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExec("CREATE TABLE item (id int PRIMARY KEY, price numeric(10,2), note text)")
	mustExec("INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)", 1, "19.99", "first")
	var price string
	var note *string
	if err := conn.QueryRow(ctx, "SELECT price::text, note FROM item WHERE id = 2").Scan(&price, &note); err != nil {
		t.Fatal(err)
	}
	if price != "0.10" || note != nil {
		t.Fatalf("row 2 = %s, %v", price, note)
	}
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, "INSERT INTO item VALUES (3, 1, 'rolled back')")
	tx.Rollback(ctx)
	tx, _ = conn.Begin(ctx)
	tx.Exec(ctx, "INSERT INTO item VALUES (4, 1, 'committed')")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "INSERT INTO item VALUES (1, 0, NULL)")
	if sqlState(err) != "23505" {
		t.Fatalf("duplicate key: %v", err)
	}
	if _, err := conn.Prepare(ctx, "by_id", "SELECT note FROM item WHERE id = $1"); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int]string{1: "first", 4: "committed"} {
		var got string
		if err := conn.QueryRow(ctx, "by_id", id).Scan(&got); err != nil || got != want {
			t.Fatalf("prepared(%d) = %q, %v", id, got, err)
		}
	}
}

func runLibpqClient(t *testing.T, url string) {
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec("CREATE TABLE item (id int PRIMARY KEY, price numeric(10,2), note text)")
	mustExec("INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)", 1, "19.99", "first")
	var price string
	var note sql.NullString
	if err := db.QueryRow("SELECT price, note FROM item WHERE id = 1").Scan(&price, &note); err != nil {
		t.Fatal(err)
	}
	if price != "19.99" || note.String != "first" {
		t.Fatalf("row 1 = %s, %v", price, note)
	}
	tx, _ := db.Begin()
	tx.Exec("INSERT INTO item VALUES (3, 1, 'rolled back')")
	tx.Rollback()
	tx, _ = db.Begin()
	tx.Exec("INSERT INTO item VALUES (4, 1, 'committed')")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec("INSERT INTO item VALUES (1, 0, NULL)")
	if !strings.Contains(fmt.Sprint(err), "23505") && !strings.Contains(fmt.Sprint(err), "duplicate key") {
		t.Fatalf("duplicate key: %v", err)
	}
	stmt, err := db.Prepare("SELECT note FROM item WHERE id = $1")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	for id, want := range map[int]string{1: "first", 4: "committed"} {
		var got string
		if err := stmt.QueryRow(id).Scan(&got); err != nil || got != want {
			t.Fatalf("prepared(%d) = %q, %v", id, got, err)
		}
	}
}

// TestPgbench runs pgbench's TPC-B-like script through the proxy in each
// protocol mode; every transaction must succeed and leave its history row.
func TestPgbench(t *testing.T) {
	p := startProxy(t, shared)
	db := shared.newDB(t)
	url := p.url("", "", db)
	if out, err := exec.Command("pgbench", "-i", "-s", "1", "-q", url).CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	processed := regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)
	direct := connect(t, shared.url("", "", db))
	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			before := mustQuery(t, direct, "SELECT count(*) FROM pgbench_history")
			out, err := exec.Command("pgbench", "-n", "-t", "100", "-c", "4", "-j", "2", "-M", mode, url).CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench: %v\n%s", err, out)
			}
			m := processed.FindStringSubmatch(string(out))
			if m == nil || m[1] != "400" || m[2] != "400" {
				t.Fatalf("pgbench did not process 400/400:\n%s", out)
			}
			after := mustQuery(t, direct, "SELECT count(*) FROM pgbench_history")
			var b, a int
			fmt.Sscan(before, &b)
			fmt.Sscan(after, &a)
			if a-b != 400 {
				t.Fatalf("history grew by %d, want 400", a-b)
			}
		})
	}
}
