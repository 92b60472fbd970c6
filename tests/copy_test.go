package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// COPY ... FROM into a table with rules runs its rules, as INSERT does:
// the rows arrive through a staging table and are inserted set at a time
// (rules/copy.go). Each test checks the derived values, the parents' sums,
// the credit constraint, that pgrules.verify() finds nothing, and that a
// failed COPY leaves nothing behind.

// copyState is every line's derived values and each order's and
// customer's sums.
const copyState = `SELECT (SELECT string_agg(concat_ws(':', order_id, product_id, quantity, unit_price, amount), ' ' ORDER BY id) FROM lineitem)
	|| ' | ' || (SELECT string_agg(id || ':' || amount_total, ' ' ORDER BY id) FROM orders)
	|| ' | ' || (SELECT string_agg(id || ':' || balance, ' ' ORDER BY id) FROM customer)`

// copyCreditDB is the check-credit database with its rules through a
// proxy, and an order for each customer (1 for Alice, limit 1000; 2 for
// Bob, limit 500).
func copyCreditDB(t *testing.T) (c, admin *pgconn.PgConn, p *testProxy, db string) {
	t.Helper()
	db, p, admin = creditDB(t)
	c = connect(t, p.url("", "", db))
	defineCreditRules(t, c)
	scalar(t, c, "INSERT INTO orders (customer_id) VALUES (1), (2)")
	return c, admin, p, db
}

func noDrift(t *testing.T, c *pgconn.PgConn) {
	t.Helper()
	if got := scalar(t, c, "SELECT count(*) FROM pgrules.verify()"); got != "0" {
		t.Fatalf("pgrules.verify() found %s differences", got)
	}
}

func TestCopyFrom(t *testing.T) {
	c, admin, p, db := copyCreditDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Text format, the columns named: the rest are derived.
	tag, err := c.CopyFrom(ctx, strings.NewReader("1\t1\t3\n1\t2\t2\n2\t1\t1\n"), "COPY lineitem (order_id, product_id, quantity) FROM STDIN")
	if err != nil {
		t.Fatal(err)
	}
	if tag.String() != "COPY 3" {
		t.Fatalf("tag %q, want COPY 3", tag)
	}
	want := "1:1:3:10.00:30.00 1:2:2:25.50:51.00 2:1:1:10.00:10.00 | 1:81.00 2:10.00 | 1:81.00 2:10.00"
	if got := scalar(t, admin, copyState); got != want {
		t.Fatalf("after COPY:\n got %s\nwant %s", got, want)
	}
	noDrift(t, c)

	// CSV with a header and a WHERE clause: the server reads the data as
	// it would for the table, and only the rows kept are inserted.
	tag, err = c.CopyFrom(ctx, strings.NewReader("order_id,product_id,quantity\n2,2,1\n2,1,0\n"),
		"COPY lineitem (order_id, product_id, quantity) FROM STDIN WITH (FORMAT csv, HEADER true) WHERE quantity > 0")
	if err != nil || tag.String() != "COPY 1" {
		t.Fatalf("CSV with WHERE: %q, %v", tag, err)
	}
	want = "1:1:3:10.00:30.00 1:2:2:25.50:51.00 2:1:1:10.00:10.00 2:2:1:25.50:25.50 | 1:81.00 2:35.50 | 1:81.00 2:35.50"
	if got := scalar(t, admin, copyState); got != want {
		t.Fatalf("after the CSV COPY:\n got %s\nwant %s", got, want)
	}

	// Over Bob's credit limit: the constraint's error, and none of the
	// COPY's rows stored; the session goes on, and so does the next COPY
	// (its staging table is gone with the failed transaction).
	_, err = c.CopyFrom(ctx, strings.NewReader("2\t1\t1\n2\t2\t20\n"), "COPY lineitem (order_id, product_id, quantity) FROM STDIN")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" {
		t.Fatalf("over the credit limit: %v, want 23514", err)
	}
	if got := scalar(t, admin, copyState); got != want {
		t.Fatalf("a refused COPY changed the data:\n got %s\nwant %s", got, want)
	}
	// Bad data: the server's error for it, nothing stored.
	_, err = c.CopyFrom(ctx, strings.NewReader("2\t1\t1\n2\t1\tmany\n"), "COPY lineitem (order_id, product_id, quantity) FROM STDIN")
	if !errors.As(err, &pe) || pe.Code != "22P02" {
		t.Fatalf("bad data: %v, want 22P02", err)
	}
	// The client gives up midway (CopyFail).
	_, err = c.CopyFrom(ctx, &failingReader{data: "2\t1\t1\n"}, "COPY lineitem (order_id, product_id, quantity) FROM STDIN")
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("CopyFail: %v, want 57014", err)
	}
	if got := scalar(t, admin, copyState); got != want {
		t.Fatalf("failed COPYs changed the data:\n got %s\nwant %s", got, want)
	}
	if got := scalar(t, c, "SELECT 1"); got != "1" {
		t.Fatalf("the session after failed COPYs: %s", got)
	}

	// In a transaction block: two COPYs, then a rollback; then a commit.
	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		scalar(t, c, "BEGIN")
		for range 2 {
			if tag, err := c.CopyFrom(ctx, strings.NewReader("1\t1\t1\n"), "COPY lineitem (order_id, product_id, quantity) FROM STDIN"); err != nil || tag.String() != "COPY 1" {
				t.Fatalf("COPY in a transaction block: %q, %v", tag, err)
			}
		}
		scalar(t, c, end)
	}
	want = "1:1:3:10.00:30.00 1:2:2:25.50:51.00 2:1:1:10.00:10.00 2:2:1:25.50:25.50 1:1:1:10.00:10.00 1:1:1:10.00:10.00 | 1:101.00 2:35.50 | 1:101.00 2:35.50"
	if got := scalar(t, admin, copyState); got != want {
		t.Fatalf("after the transaction blocks:\n got %s\nwant %s", got, want)
	}
	noDrift(t, c)

	// pgx's CopyFrom, in the binary format, as Go programs load rows.
	px, err := pgx.Connect(ctx, p.url("", "", db))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close(ctx)
	n, err := px.CopyFrom(ctx, pgx.Identifier{"lineitem"}, []string{"order_id", "product_id", "quantity"},
		pgx.CopyFromRows([][]any{{int32(2), int32(2), int32(2)}, {int32(1), int32(1), int32(4)}}))
	if err != nil || n != 2 {
		t.Fatalf("pgx CopyFrom: %d, %v", n, err)
	}
	if got := scalar(t, admin, "SELECT string_agg(id || ':' || balance, ' ' ORDER BY id) FROM customer"); got != "1:141.00 2:86.50" {
		t.Fatalf("balances after pgx CopyFrom: %s", got)
	}
	noDrift(t, c)

	// psql's \copy from a file.
	file := filepath.Join(t.TempDir(), "lines.csv")
	if err := os.WriteFile(file, []byte("2,1,1\n2,1,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", p.url("", "", db),
		"-c", `\copy lineitem (order_id, product_id, quantity) from '`+file+`' with (format csv)`).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "COPY 2") {
		t.Fatalf("psql \\copy: %v\n%s", err, out)
	}
	if got := scalar(t, admin, "SELECT balance FROM customer WHERE id = 2"); got != "116.50" {
		t.Fatalf("Bob's balance after \\copy: %s", got)
	}
	noDrift(t, c)
}

// TestCopyFromForms: COPY without a column list (every column but the
// generated ones), in a Query with other statements, from a program on the
// server; and COPY in the extended protocol, which is refused.
func TestCopyFromForms(t *testing.T) {
	c, admin, _, _ := copyCreditDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// All columns: the given unit_price and amount are derived again.
	if _, err := c.CopyFrom(ctx, strings.NewReader("100\t1\t1\t2\t0.01\t0.02\n"), "COPY lineitem FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, admin, "SELECT unit_price || ':' || amount FROM lineitem WHERE id = 100"); got != "10.00:20.00" {
		t.Fatalf("COPY of every column: %s", got)
	}
	// A COPY from a program the server runs, among other statements of
	// one Query: all in one implicit transaction, which the constraint
	// fails as a whole.
	e := pgError(t, c, "INSERT INTO orders (customer_id) VALUES (2); COPY lineitem (order_id, product_id, quantity) FROM PROGRAM 'printf ''2,1,30\\n2,1,30\\n''' WITH (FORMAT csv)")
	if e == nil || e.Code != "23514" {
		t.Fatalf("COPY FROM PROGRAM over the limit: %v, want 23514", e)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM orders"); got != "2" {
		t.Fatalf("the failed Query left %s orders, want 2", got)
	}
	if e := pgError(t, c, "INSERT INTO orders (customer_id) VALUES (2); COPY lineitem (order_id, product_id, quantity) FROM PROGRAM 'printf ''2,1,3\\n2,1,4\\n''' WITH (FORMAT csv)"); e != nil {
		t.Fatal(e)
	}
	if got := scalar(t, admin, "SELECT balance FROM customer WHERE id = 2"); got != "70.00" {
		t.Fatalf("Bob's balance after COPY FROM PROGRAM: %s", got)
	}
	noDrift(t, c)
	// The extended protocol cannot carry the data through the engine.
	_, err := c.ExecParams(ctx, "COPY lineitem (order_id, product_id, quantity) FROM STDIN", nil, nil, nil, nil).Close()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Message, "simple Query") {
		t.Fatalf("COPY in the extended protocol: %v, want 0A000", err)
	}
	if got := scalar(t, c, "SELECT count(*) FROM lineitem"); got != "3" {
		t.Fatalf("lines after the refused COPY: %s", got)
	}
}

// failingReader gives its data, then fails, as a client that gives up in
// the middle of a COPY.
type failingReader struct{ data string }

func (r *failingReader) Read(b []byte) (int, error) {
	if r.data == "" {
		return 0, errors.New("the client gave up")
	}
	n := copy(b, r.data)
	r.data = r.data[n:]
	return n, nil
}
