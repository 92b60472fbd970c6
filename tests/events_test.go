package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Events through the proxy (rules-api.md §4): every timing and action,
// vetoes and their combination, vetoes in transactions and at commit,
// savepoints forgetting pending commit work, events writing rows whose own
// rules run, once per row, the depth limit, and the outbox entries of
// after_commit and failure events. Delivery is the dispatcher's, tested in
// outbox_test.go.

const shopSchema = `
CREATE SEQUENCE po_seq;
CREATE TABLE customer (
  id int PRIMARY KEY,
  balance numeric(12,2) NOT NULL DEFAULT 0,
  credit_limit numeric(12,2) NOT NULL DEFAULT 1000,
  order_count int NOT NULL DEFAULT 0
);
CREATE TABLE orders (
  id int PRIMARY KEY,
  customer_id int REFERENCES customer(id),
  code text,
  amount numeric(12,2) NOT NULL DEFAULT 0,
  note text
);
CREATE TABLE line (id serial PRIMARY KEY, order_id int REFERENCES orders(id) ON DELETE CASCADE, qty int);
CREATE TABLE audit (
  id serial PRIMARY KEY,
  order_id int,
  verb text,
  timing text,
  old_amount numeric(12,2),
  new_amount numeric(12,2),
  delta numeric(12,2)
);
INSERT INTO customer (id) VALUES (1), (2);`

var shopRules = []string{
	`SELECT pgrules.sum('customer.balance', 'orders.amount')`,
	`SELECT pgrules.count('customer.order_count', 'orders')`,
	`SELECT pgrules.constraint('customer', 'row.balance <= row.credit_limit', 'customer {row.id} balance {row.balance} exceeds {row.credit_limit}', name => 'credit')`,
	// The audit table's own rule: a row written by an event gets it.
	`SELECT pgrules.formula('audit.delta', '(row.new_amount ?? 0) - (row.old_amount ?? 0)')`,
}

// shopDB is a database with shopSchema, shopRules and the events given,
// behind a proxy.
func shopDB(t *testing.T, events ...string) (c, admin *pgconn.PgConn, p *testProxy, db string) {
	t.Helper()
	return rulesDB(t, shopSchema, append(append([]string(nil), shopRules...), events...))
}

// protocols run a statement with the simple or the extended protocol.
var protocols = []struct {
	name string
	exec func(ctx context.Context, c *pgconn.PgConn, sql string) error
}{
	{"simple", func(ctx context.Context, c *pgconn.PgConn, sql string) error {
		_, err := c.Exec(ctx, sql).ReadAll()
		return err
	}},
	{"extended", func(ctx context.Context, c *pgconn.PgConn, sql string) error {
		_, err := c.ExecParams(ctx, sql, nil, nil, nil, nil).Close()
		return err
	}},
}

// evExec runs sql with a protocol and returns the server's error.
func evExec(t testing.TB, exec func(context.Context, *pgconn.PgConn, string) error, c *pgconn.PgConn, sql string) *pgconn.PgError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := exec(ctx, c, sql)
	if err == nil {
		return nil
	}
	pe, ok := err.(*pgconn.PgError)
	if !ok {
		t.Fatalf("%s: %v (not a server error)", sql, err)
	}
	return pe
}

// runner returns, for a protocol, a function that runs sql and returns
// the server's error, and one that fails the test on it.
func runner(t *testing.T, exec func(context.Context, *pgconn.PgConn, string) error, c *pgconn.PgConn) (func(string) *pgconn.PgError, func(string)) {
	ex := func(sql string) *pgconn.PgError { return evExec(t, exec, c, sql) }
	return ex, func(sql string) {
		t.Helper()
		if e := ex(sql); e != nil {
			t.Fatalf("%s: %v", sql, e)
		}
	}
}

// listen opens a connection to db that LISTENs on channel; its
// notifications arrive on the channel returned once WaitForNotification
// has read them.
func listen(t *testing.T, db, channel string) (*pgconn.PgConn, chan *pgconn.Notification) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	notes := make(chan *pgconn.Notification, 8)
	cfg, err := pgconn.ParseConfig(shared.url("", "", db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { notes <- n }
	l, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	scalar(t, l, "LISTEN "+channel)
	return l, notes
}

// TestEventTimings: early sets and vetoes, pre_insert computes a key from
// a sequence, row writes an audit row whose own formula runs — in both
// protocols.
func TestEventTimings(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c, admin, _, _ := shopDB(t,
				`SELECT pgrules.event('orders', 'early', 'row.amount < 0 ? reject("amount " + string(row.amount) + " is negative", "22003") : (row.note == nil ? set("note", "n/a") : nil)', name => 'check_amount')`,
				`SELECT pgrules.event('orders', 'pre_insert', 'set("code", "PO-" + string(sql("select nextval(''po_seq'') as n")[0].n))', name => 'po_code')`,
				`SELECT pgrules.event('orders', 'row', 'insert("audit", {order_id: row.id, verb: verb, timing: "row", old_amount: old.amount, new_amount: verb == "delete" ? nil : row.amount})', name => 'audit_orders')`,
			)
			ex, _ := runner(t, proto.exec, c)
			if e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 100), (2, 1, 50)"); e != nil {
				t.Fatal(e)
			}
			if got := scalar(t, admin, "SELECT string_agg(id || ' ' || code || ' ' || note, ', ' ORDER BY id) FROM orders"); got != "1 PO-1 n/a, 2 PO-2 n/a" {
				t.Errorf("orders: %s", got)
			}
			if got := scalar(t, admin, "SELECT balance || ' ' || order_count FROM customer WHERE id = 1"); got != "150.00 2" {
				t.Errorf("customer: %s", got)
			}
			if e := ex("UPDATE orders SET amount = 70 WHERE id = 2"); e != nil {
				t.Fatal(e)
			}
			if e := ex("DELETE FROM orders WHERE id = 1"); e != nil {
				t.Fatal(e)
			}
			const audits = "SELECT string_agg(concat_ws(' ', order_id, verb, old_amount, new_amount, delta), ', ' ORDER BY id) FROM audit"
			if got := scalar(t, admin, audits); got != "1 insert 100.00 100.00, 2 insert 50.00 50.00, 2 update 50.00 70.00 20.00, 1 delete 100.00 -100.00" {
				t.Errorf("audit rows: %s", got)
			}
			e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (3, 1, -5)")
			if e == nil || e.Code != "22003" || e.Message != "amount -5 is negative" || e.TableName != "orders" {
				t.Fatalf("veto: %+v", e)
			}
			if got := scalar(t, admin, "SELECT count(*) FROM orders WHERE id = 3"); got != "0" {
				t.Errorf("a vetoed row was written")
			}
			if got := scalar(t, admin, "SELECT balance FROM customer WHERE id = 1"); got != "70.00" {
				t.Errorf("balance after the veto: %s", got)
			}
			// The session goes on.
			if e := ex("INSERT INTO orders (id, customer_id, amount, note) VALUES (3, 2, 5, 'mine')"); e != nil {
				t.Fatal(e)
			}
			if got := scalar(t, admin, "SELECT code || ' ' || note FROM orders WHERE id = 3"); got != "PO-3 mine" {
				t.Errorf("order 3: %s", got)
			}
		})
	}
}

// TestEventVetoes: the vetoes of one statement's rows fail it once, with
// the first message and SQLSTATE and every distinct message as a JSON
// array in the detail; inside BEGIN the transaction is then failed.
func TestEventVetoes(t *testing.T) {
	c, admin, _, _ := shopDB(t,
		`SELECT pgrules.event('orders', 'row', 'row.amount > 100 ? "order " + string(row.id) + " is too big" : (row.amount > 50 ? reject("order is large", "P0003") : nil)', verbs => '{update}', name => 'size')`,
	)
	scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 10), (2, 1, 20), (3, 1, 30), (4, 2, 40)")
	e := pgError(t, c, "UPDATE orders SET amount = amount * 10 + 1 WHERE customer_id = 1")
	if e == nil || e.Code != "P0001" || e.Message != "order 1 is too big" {
		t.Fatalf("combined veto: %+v", e)
	}
	var msgs []string
	if err := json.Unmarshal([]byte(e.Detail), &msgs); err != nil || strings.Join(msgs, "|") != "order 1 is too big|order 2 is too big|order 3 is too big" {
		t.Fatalf("detail %q: %v", e.Detail, err)
	}
	e = pgError(t, c, "UPDATE orders SET amount = 60 WHERE id IN (2, 3)")
	if e == nil || e.Code != "P0003" || e.Detail != `["order is large"]` {
		t.Fatalf("reject with a SQLSTATE: %+v", e)
	}
	if got := scalar(t, admin, "SELECT string_agg(amount::text, ' ' ORDER BY id) FROM orders"); got != "10.00 20.00 30.00 40.00" {
		t.Fatalf("vetoed updates were written: %s", got)
	}
	// Inside a transaction: the veto fails it, as any error would.
	scalar(t, c, "BEGIN")
	scalar(t, c, "UPDATE orders SET amount = 11 WHERE id = 1")
	if e := pgError(t, c, "UPDATE orders SET amount = 500 WHERE id = 4"); e == nil || e.Code != "P0001" {
		t.Fatalf("veto in a transaction: %+v", e)
	}
	if e := pgError(t, c, "SELECT 1"); e == nil || e.Code != "25P02" {
		t.Fatalf("after the veto: %+v, want 25P02", e)
	}
	scalar(t, c, "ROLLBACK")
	if got := scalar(t, admin, "SELECT amount FROM orders WHERE id = 1"); got != "10.00" {
		t.Fatalf("the failed transaction left %s", got)
	}
}

// TestEventOncePerRow: a customer adjusted by two orders of one statement
// has its row event once, seeing the state before the statement and the
// state after it.
func TestEventOncePerRow(t *testing.T) {
	c, admin, _, _ := shopDB(t,
		`SELECT pgrules.event('customer', 'row', 'insert("audit", {order_id: row.id, verb: verb, timing: "row", old_amount: old.balance, new_amount: row.balance})', name => 'audit_customer')`,
	)
	if e := pgError(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5)"); e != nil {
		t.Fatal(e)
	}
	if got := scalar(t, admin, "SELECT string_agg(concat_ws(' ', order_id, verb, old_amount, new_amount, delta), ', ' ORDER BY order_id) FROM audit"); got != "1 update 0.00 30.00 30.00, 2 update 0.00 5.00 5.00" {
		t.Fatalf("audit: %s", got)
	}
}

// TestEventDepthLimit: an event whose writes never settle stops with an
// error, and nothing is written.
func TestEventDepthLimit(t *testing.T) {
	c, admin, _, _ := shopDB(t,
		`SELECT pgrules.event('line', 'row', 'insert("line", {order_id: row.order_id, qty: row.qty + 1})', verbs => '{insert}', name => 'breed')`,
	)
	scalar(t, admin, unguarded("INSERT INTO orders (id, customer_id) VALUES (1, 1)"))
	e := pgError(t, c, "INSERT INTO line (order_id, qty) VALUES (1, 1)")
	if e == nil || e.Code != "54000" || !strings.Contains(e.Message, "breed") {
		t.Fatalf("endless events: %+v", e)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM line"); got != "0" {
		t.Fatalf("lines: %s", got)
	}
	if e := pgError(t, c, "SELECT 1"); e != nil {
		t.Fatalf("the session after the error: %v", e)
	}
}

// TestCommitEvents: a commit event sees each touched row once, at its
// final state and the state before the transaction; it may write rows
// (their rules run) and veto the commit, which rolls the transaction back.
// A savepoint's rollback forgets the rows touched since, and with them
// their commit and after_commit events.
func TestCommitEvents(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c, admin, _, _ := shopDB(t,
				`SELECT pgrules.event('orders', 'commit', 'sql("select count(*) as n from line where order_id = $1", row.id)[0].n == 0 ? reject("order " + string(row.id) + " has no lines", "23514") : insert("audit", {order_id: row.id, verb: verb, timing: "commit", old_amount: old.amount, new_amount: row.amount})', verbs => '{insert,update}', name => 'has_lines')`,
				`SELECT pgrules.event('orders', 'after_commit', 'notify("orders", string(row.id)); post("http://127.0.0.1:1/hook", {id: row.id, amount: row.amount, old: old?.amount})', name => 'announce')`,
			)
			ex, run := runner(t, proto.exec, c)
			run("BEGIN")
			run("INSERT INTO orders (id, customer_id, amount) VALUES (9, 2, 1)")
			run("INSERT INTO line (order_id) VALUES (9)")
			run("COMMIT")
			scalar(t, admin, unguarded("DELETE FROM pgrules.outbox; DELETE FROM audit"))
			run("BEGIN")
			run("INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 10)")
			run("INSERT INTO line (order_id, qty) VALUES (1, 1)")
			run("UPDATE orders SET amount = 15 WHERE id = 1")
			run("UPDATE orders SET amount = 3 WHERE id = 9")
			run("COMMIT")
			if got := scalar(t, admin, "SELECT string_agg(concat_ws(' ', order_id, verb, timing, old_amount, new_amount, delta), ', ' ORDER BY order_id) FROM audit"); got != "1 insert commit 15.00 15.00, 9 update commit 1.00 3.00 2.00" {
				t.Fatalf("commit audit: %s", got)
			}
			const entries = "SELECT coalesce(string_agg(concat_ws(' ', key, kind, target, payload), ', ' ORDER BY id), '') FROM pgrules.outbox"
			if got := scalar(t, admin, entries); got != `public.orders:1 notify orders 1, public.orders:1 post http://127.0.0.1:1/hook {"amount":15.00,"id":1,"old":null}, public.orders:9 notify orders 9, public.orders:9 post http://127.0.0.1:1/hook {"amount":3.00,"id":9,"old":1.00}` {
				t.Fatalf("outbox: %s", got)
			}
			scalar(t, admin, unguarded("DELETE FROM pgrules.outbox; DELETE FROM audit"))

			// The veto at COMMIT: the error, and the whole transaction undone.
			run("BEGIN")
			run("INSERT INTO orders (id, customer_id, amount) VALUES (2, 1, 10)")
			if e := ex("COMMIT"); e == nil || e.Code != "23514" || e.Message != "order 2 has no lines" {
				t.Fatalf("commit veto: %+v", e)
			}
			if got := scalar(t, admin, "SELECT (SELECT count(*) FROM orders WHERE id = 2) || ' ' || (SELECT count(*) FROM pgrules.outbox) || ' ' || (SELECT balance FROM customer WHERE id = 1)"); got != "0 0 15.00" {
				t.Fatalf("after the commit veto: %s", got)
			}
			// Autocommit: the same veto ends the statement.
			if e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (2, 1, 10)"); e == nil || e.Code != "23514" {
				t.Fatalf("autocommit commit veto: %+v", e)
			}

			// Rows touched after a savepoint that is rolled back have no commit
			// events and record nothing.
			run("BEGIN")
			run("SAVEPOINT a")
			run("INSERT INTO orders (id, customer_id, amount) VALUES (3, 1, 10)")
			run("ROLLBACK TO SAVEPOINT a")
			run("COMMIT")
			if got := scalar(t, admin, "SELECT (SELECT count(*) FROM audit) || ' ' || (SELECT count(*) FROM pgrules.outbox)"); got != "0 0" {
				t.Fatalf("after the savepoint's rollback: %s", got)
			}
			// A rolled back transaction records nothing either.
			run("BEGIN")
			run("UPDATE orders SET amount = 4 WHERE id = 9")
			run("ROLLBACK")
			if got := scalar(t, admin, "SELECT count(*) FROM pgrules.outbox"); got != "0" {
				t.Fatalf("outbox after a rollback: %s", got)
			}
		})
	}
}

// TestFailureEvents: a failure event sees the error, replaces its message
// and SQLSTATE, and its post goes to the outbox once the failed
// transaction is over — never before the rollback.
func TestFailureEvents(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c, admin, _, _ := shopDB(t,
				`SELECT pgrules.event('orders', 'failure', 'post("http://127.0.0.1:1/failed", {id: row?.id, code: error.code, rule: error.rule}); error.rule == "credit" ? reject("order " + string(row.id) + " refused: over the credit limit", "P0009") : nil', name => 'on_failure')`,
			)
			ex, run := runner(t, proto.exec, c)
			e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 5000)")
			if e == nil || e.Code != "P0009" || e.Message != "order 1 refused: over the credit limit" || e.ConstraintName != "credit" {
				t.Fatalf("replaced error: %+v", e)
			}
			const entries = "SELECT coalesce(string_agg(concat_ws(' ', timing, key, kind, payload), ', ' ORDER BY id), '') FROM pgrules.outbox"
			if got := scalar(t, admin, entries); got != `failure public.orders:1 post {"code":"23514","id":1,"rule":"credit"}` {
				t.Fatalf("outbox after the autocommit failure: %s", got)
			}
			scalar(t, admin, "DELETE FROM pgrules.outbox")

			// In a transaction the entry waits for the rollback; an error the
			// event does not replace reaches the client as it is.
			run("BEGIN")
			e = ex("INSERT INTO orders (id, customer_id, amount) VALUES (2, 99, 1)")
			if e == nil || e.Code != "23503" {
				t.Fatalf("foreign key error: %+v", e)
			}
			if got := scalar(t, admin, entries); got != "" {
				t.Fatalf("an entry before the rollback: %s", got)
			}
			run("ROLLBACK")
			if got := scalar(t, admin, entries); got != `failure public.orders:2 post {"code":"23503","id":2,"rule":null}` {
				t.Fatalf("outbox after the rollback: %s", got)
			}
		})
	}
}

// TestEventActions: update(), delete() and notify() in the transaction,
// in both protocols. The update goes through the engine, so the
// customer's constraint runs on it; the delete's rows are gone before the
// order's; the notification comes with the commit, and not after a
// rollback.
func TestEventActions(t *testing.T) {
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c, admin, _, db := shopDB(t,
				`SELECT pgrules.event('orders', 'row', 'update("customer", {id: row.customer_id}, {credit_limit: row.amount * 2}); notify("orders_in", string(row.id))', verbs => '{insert}', name => 'raise_limit')`,
				`SELECT pgrules.event('orders', 'early', 'delete("line", {order_id: row.id})', verbs => '{delete}', name => 'drop_lines')`,
			)
			ex, _ := runner(t, proto.exec, c)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			listener, notes := listen(t, db, "orders_in")

			if e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 700)"); e != nil {
				t.Fatal(e)
			}
			if got := scalar(t, admin, "SELECT balance || ' ' || credit_limit FROM customer WHERE id = 1"); got != "700.00 1400.00" {
				t.Fatalf("customer after update(): %s", got)
			}
			if err := listener.WaitForNotification(ctx); err != nil {
				t.Fatal(err)
			}
			if n := <-notes; n.Channel != "orders_in" || n.Payload != "1" {
				t.Fatalf("notification %+v", n)
			}
			// The event's update sets a limit below the balance: the
			// customer's constraint refuses it, and the statement fails.
			scalar(t, admin, unguarded("INSERT INTO orders (id, customer_id, amount) VALUES (5, 2, 0); UPDATE customer SET balance = 100 WHERE id = 2"))
			e := ex("INSERT INTO orders (id, customer_id, amount) VALUES (2, 2, 10)")
			if e == nil || e.Code != "23514" || e.ConstraintName != "credit" {
				t.Fatalf("update() past the customer's constraint: %+v", e)
			}
			if got := scalar(t, admin, "SELECT count(*) FROM orders WHERE id = 2"); got != "0" {
				t.Fatalf("the refused order was written")
			}
			select {
			case n := <-notes:
				t.Fatalf("a notification of a failed statement: %+v", n)
			case <-time.After(100 * time.Millisecond):
			}

			scalar(t, admin, "INSERT INTO line (order_id, qty) VALUES (1, 1), (1, 2)")
			if e := ex("DELETE FROM orders WHERE id = 1"); e != nil {
				t.Fatal(e)
			}
			if got := scalar(t, admin, "SELECT (SELECT count(*) FROM line) || ' ' || (SELECT balance FROM customer WHERE id = 1)"); got != "0 0.00" {
				t.Fatalf("after the delete: %s", got)
			}
		})
	}
}

// TestOutboxNeedsNoGrant: a role that may write the tables, and holds no
// privilege on the outbox, commits a write whose after_commit event
// records an entry, in autocommit and at COMMIT: the engine records it, as
// that role (rules-api.md §11).
func TestOutboxNeedsNoGrant(t *testing.T) {
	_, admin, p, db := shopDB(t, `SELECT pgrules.event('orders', 'after_commit', 'post("http://127.0.0.1:1/o", {id: row.id})', name => 'announce')`)
	role := db + "_writer"
	scalar(t, admin, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN; GRANT USAGE ON SCHEMA pgrules TO %[1]s;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %[1]s; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %[1]s`, role))
	t.Cleanup(func() { scalar(t, admin, fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role)) })
	u := connect(t, p.url(role, "", db))
	if e := pgError(t, u, "INSERT INTO \"pgrules\".outbox (rule, timing, key, kind, target) VALUES ('announce', 'after_commit', 'k', 'post', 'http://127.0.0.1:1/x')"); e == nil || e.Code != "42501" {
		t.Fatalf("a direct insert into the outbox: %+v, want 42501", e)
	}
	scalar(t, u, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	scalar(t, u, "BEGIN")
	scalar(t, u, "INSERT INTO orders (id, customer_id) VALUES (2, 1)")
	scalar(t, u, "COMMIT")
	if got := scalar(t, admin, "SELECT string_agg(role || ' ' || payload, ', ' ORDER BY id) FROM pgrules.outbox"); got != role+` {"id":1}, `+role+` {"id":2}` {
		t.Fatalf("outbox: %s", got)
	}
}
