package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/internal/demo"
)

// Queries and batches that hold transaction control, run through pgrules
// with the check-credit rules and, on a database of their own, directly
// against PostgreSQL with the same logic as PL/pgSQL triggers (a commit
// constraint as a deferred constraint trigger). PostgreSQL runs the
// statements of a Query, and those of a batch up to its Sync, as one
// implicit transaction that a COMMIT or ROLLBACK among them ends and the
// next statement begins again; an error rolls back the one it is in. Each
// script must give the same results, command tags, errors, warnings and
// rows on both.

// The commit constraint: an order must be paid or hold something.
const (
	txbCommitRule = `SELECT pgrules.commit_constraint('orders', 'row.paid || row.amount_total > 0', 'order {row.id} is empty', name => 'not_empty')`
	txbEventRule  = `SELECT pgrules.event('orders', 'after_commit', 'notify("orders", string(row.id))', name => 'announce')`
	txbTrigger    = `
CREATE FUNCTION orders_not_empty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM orders WHERE id = NEW.id AND NOT paid AND amount_total <= 0) THEN
    RAISE EXCEPTION 'order % is empty', NEW.id USING ERRCODE = '23514';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER not_empty AFTER INSERT OR UPDATE ON orders DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION orders_not_empty();`
	txbState = `SELECT
	  (SELECT coalesce(string_agg(concat_ws(':', id, customer_id, amount_total, paid), ' ' ORDER BY id), '') FROM orders) || ' | ' ||
	  (SELECT coalesce(string_agg(concat_ws(':', id, order_id, quantity, unit_price, amount), ' ' ORDER BY id), '') FROM lineitem) || ' | ' ||
	  (SELECT string_agg(concat_ws(':', id, balance, unpaid_order_count), ' ' ORDER BY id) FROM customer)`
)

// txbSeed is the state every pair of databases starts from: Bob (credit
// 500) has order 1, Alice order 2, each with a line of one widget.
var txbSeed = []string{
	"BEGIN",
	"INSERT INTO orders (customer_id) VALUES (2), (1)",
	"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 1), (2, 1, 1)",
	"COMMIT",
}

// txbSide is one of the two databases, with a connection that records the
// notices it gets.
type txbSide struct {
	name    string
	url     string
	c       *pgconn.PgConn
	notices []string
}

func (s *txbSide) connect(t *testing.T, url string) {
	t.Helper()
	s.url = url
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		s.notices = append(s.notices, n.Severity+" "+n.Code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.c, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.c.Close(context.Background()) })
}

// txbSides are the check-credit databases: through pgrules with the rules,
// and directly with the triggers. admin reaches the pgrules one directly.
func txbSides(t *testing.T, setup ...string) (rules, triggers *txbSide, admin *pgconn.PgConn) {
	t.Helper()
	rules, triggers, admin, _ = txbSidesAt(t, setup...)
	return rules, triggers, admin
}

// txbSidesAt is txbSides with where a raw client reaches each side: the
// address and the database. setup runs on both databases first.
func txbSidesAt(t *testing.T, setup ...string) (rules, triggers *txbSide, admin *pgconn.PgConn, at [2][2]string) {
	t.Helper()
	db, p, admin := creditDB(t)
	for _, sql := range setup {
		scalar(t, admin, sql)
	}
	defineCreditRules(t, connect(t, p.url("", "", db)))
	rules = &txbSide{name: "pgrules"}
	rules.connect(t, p.url("", "", db))
	for _, r := range []string{txbCommitRule, txbEventRule} {
		if e := pgError(t, rules.c, r); e != nil {
			t.Fatalf("%s: %v", r, e)
		}
	}
	tdb := shared.newDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := demo.Exec(ctx, shared.url("", "", tdb), append([]string{demo.Schema, demo.Data, demo.Triggers, txbTrigger}, setup...)...); err != nil {
		t.Fatal(err)
	}
	triggers = &txbSide{name: "triggers"}
	triggers.connect(t, shared.url("", "", tdb))
	for _, side := range []*txbSide{rules, triggers} {
		for _, sql := range txbSeed {
			if e := pgError(t, side.c, sql); e != nil {
				t.Fatalf("%s: seed %s: %v", side.name, sql, e)
			}
		}
	}
	at = [2][2]string{{p.Addr, db}, {ftDirectAddr(t), tdb}}
	return rules, triggers, admin, at
}

// txbScript is a Query, or the statements of a batch sent with one Sync.
type txbScript struct {
	sql   string
	batch []string
}

// run runs a script and returns what the client saw and the rows after it.
func (s *txbSide) run(t *testing.T, sc txbScript) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.notices = nil
	var results []*pgconn.Result
	var err error
	if sc.batch == nil {
		results, err = s.c.Exec(ctx, sc.sql).ReadAll()
	} else {
		b := &pgconn.Batch{}
		for _, sql := range sc.batch {
			b.ExecParams(sql, nil, nil, nil, nil)
		}
		results, err = s.c.ExecBatch(ctx, b).ReadAll()
	}
	var out strings.Builder
	for _, r := range results {
		fmt.Fprintf(&out, "%s", r.CommandTag)
		for _, row := range r.Rows {
			for _, v := range row {
				fmt.Fprintf(&out, " %s", v)
			}
		}
		if r.Err != nil {
			fmt.Fprintf(&out, " error %s", sqlStateOf(r.Err))
		}
		out.WriteString("; ")
	}
	if err != nil {
		fmt.Fprintf(&out, "error %s; ", sqlStateOf(err))
	}
	fmt.Fprintf(&out, "notices %v; status %c\n", s.notices, s.c.TxStatus())
	if s.c.TxStatus() == 'E' {
		return out.String()
	}
	out.WriteString(scalar(t, s.c, txbState))
	if s.c.TxStatus() == 'T' {
		// The state is read in the open transaction; other scripts
		// end it.
		out.WriteString(" (in transaction)")
	}
	return out.String()
}

// txbCompare runs the scripts on both sides, in order, and fails on the
// first difference.
func txbCompare(t *testing.T, rules, triggers *txbSide, scripts []txbScript, after func(i int)) {
	t.Helper()
	for i, sc := range scripts {
		got, want := rules.run(t, sc), triggers.run(t, sc)
		name := sc.sql
		if sc.batch != nil {
			name = fmt.Sprintf("batch %q", sc.batch)
		}
		if got != want {
			t.Fatalf("%s\npgrules:  %s\ntriggers: %s", name, got, want)
		}
		t.Logf("%s\n  %s", name, got)
		if after != nil {
			after(i)
		}
	}
}

// TestTxControlInQuery: simple Queries holding BEGIN, COMMIT, ROLLBACK and
// SAVEPOINT among writes with rules.
func TestTxControlInQuery(t *testing.T) {
	rules, triggers, admin := txbSides(t)
	scripts := []txbScript{
		// The INSERT after COMMIT is an implicit transaction of its own:
		// Bob's credit refuses it, and nothing of it stays.
		{sql: "COMMIT; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"},
		// The COMMIT of an implicit transaction checks the commit
		// constraint (with PostgreSQL's warning first).
		{sql: "INSERT INTO orders (customer_id) VALUES (1); COMMIT"},
		{sql: "INSERT INTO orders (customer_id) VALUES (1); COMMIT;"},
		// A COMMIT ends the explicit transaction; the INSERT after it
		// goes with the failing SELECT.
		{sql: "BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 1); COMMIT; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 2); SELECT 1/0"},
		// The commit of an implicit transaction records its after_commit
		// events.
		{sql: "UPDATE orders SET paid = true WHERE id = 2; COMMIT"},
		{sql: "UPDATE orders SET paid = false WHERE id = 2; COMMIT; SELECT 1"},
		// A BEGIN takes the statements before it into its transaction.
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 5); BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 6)"},
		{sql: "ROLLBACK"},
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 5); BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 6); COMMIT"},
		// ROLLBACK of an implicit transaction, then a new one.
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 7); ROLLBACK; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 8)"},
		// Savepoints need a transaction block.
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 9); SAVEPOINT a; SELECT 1"},
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 9); RELEASE a"},
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 9); ROLLBACK TO a"},
		{sql: "BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 10); SAVEPOINT a; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100); ROLLBACK TO a; COMMIT"},
		{sql: "ROLLBACK"},
		{sql: "BEGIN; SAVEPOINT a; INSERT INTO orders (customer_id) VALUES (2); ROLLBACK TO a; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 2); RELEASE a; COMMIT"},
		// A COMMIT after an order with its line passes the constraint.
		{sql: "INSERT INTO orders (customer_id) VALUES (1); INSERT INTO lineitem (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), 2, 2); COMMIT; SELECT 2"},
		{sql: "INSERT INTO orders (customer_id) VALUES (2); COMMIT AND CHAIN; SELECT 3"},
		{sql: "INSERT INTO orders (customer_id, paid) VALUES (2, true); ROLLBACK AND CHAIN"},
		{sql: "SELECT 4; COMMIT; INSERT INTO orders (customer_id) VALUES (2); ROLLBACK; COMMIT"},
	}
	outbox := "SELECT count(*) FROM pgrules.outbox WHERE kind = 'notify'"
	before := scalar(t, admin, outbox)
	txbCompare(t, rules, triggers, scripts, func(i int) {
		if strings.HasPrefix(scripts[i].sql, "UPDATE orders SET paid = true") {
			if got := scalar(t, admin, outbox); got == before {
				t.Fatalf("%s recorded no after_commit entry", scripts[i].sql)
			}
		}
	})
}

// TestTxControlInBatch: extended-protocol batches holding transaction
// control among writes with rules.
func TestTxControlInBatch(t *testing.T) {
	rules, triggers, _ := txbSides(t)
	const line = "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, %d)"
	l := func(q int) string { return fmt.Sprintf(line, q) }
	scripts := []txbScript{
		{batch: []string{"SELECT 1", "COMMIT", "INSERT INTO orders (customer_id) VALUES (1)"}},
		{batch: []string{"INSERT INTO orders (customer_id) VALUES (1)", "COMMIT"}},
		{batch: []string{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"}},
		{batch: []string{l(1), "COMMIT", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"}},
		{batch: []string{l(2), "BEGIN", l(3)}},
		{batch: []string{"ROLLBACK"}},
		{batch: []string{l(4), "BEGIN", l(5), "COMMIT", l(6), "SELECT 1/0"}},
		{batch: []string{l(7), "ROLLBACK", l(8)}},
		{batch: []string{l(9), "SAVEPOINT a", l(10)}},
		{batch: []string{"UPDATE orders SET paid = true WHERE id = 2", "COMMIT", "UPDATE orders SET paid = false WHERE id = 2"}},
		{batch: []string{"BEGIN", l(11), "SAVEPOINT a", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)", "ROLLBACK TO a", "COMMIT"}},
		{batch: []string{"ROLLBACK"}},
		{batch: []string{"INSERT INTO orders (customer_id) VALUES (2)", "COMMIT AND CHAIN", "SELECT 3"}},
		// A statement relayed before the COMMIT or ROLLBACK: the write
		// after it is in a new implicit transaction, which the error
		// rolls back.
		{batch: []string{"SELECT 1", "COMMIT", l(12), "SELECT 1/0"}},
		{batch: []string{"SELECT 1", "ROLLBACK", l(13), "SELECT 1/0"}},
	}
	txbCompare(t, rules, triggers, scripts, nil)
}

// TestPositionalInsert: an INSERT naming no columns fills the table's first
// columns, as many as its VALUES or SELECT give; a column list must match
// them.
func TestPositionalInsert(t *testing.T) {
	rules, triggers, _ := txbSides(t)
	txbCompare(t, rules, triggers, []txbScript{
		{sql: "INSERT INTO orders VALUES (50, 1)"},
		{sql: "BEGIN; INSERT INTO orders VALUES (50, 1); INSERT INTO lineitem SELECT 200, 50, 1, 3; COMMIT"},
		{sql: "INSERT INTO lineitem VALUES (201, 50, 2)"},
		{sql: "INSERT INTO lineitem VALUES (201, 50, 2, 1), (202, 50, 2)"},
		{sql: "INSERT INTO lineitem (id, order_id) VALUES (203)"},
		{sql: "INSERT INTO lineitem (id, order_id) SELECT 203"},
		{sql: "INSERT INTO orders VALUES (51, 1, 0, true, 'x', 9)"},
		{sql: "INSERT INTO orders VALUES (51, 2, 0, true) RETURNING *"},
		{sql: "INSERT INTO lineitem SELECT 204, 51, 2, 1 UNION ALL SELECT 205, 51, 1, 2 RETURNING id, amount"},
		{batch: []string{"INSERT INTO lineitem VALUES (206, 51, 3, 4)", "INSERT INTO lineitem SELECT 207, 51, 3, 1"}},
	}, nil)
}

// txbRaw sends msgs on a raw connection and renders what comes back (up to
// the answer to a Query sent after them), and the rows afterwards.
func txbRaw(t *testing.T, addr, db string, msgs []pgproto3.FrontendMessage) string {
	t.Helper()
	c := ftDial(t, addr)
	c.login(db)
	const end = "txb end"
	c.send(append(msgs, &pgproto3.Query{String: "SELECT '" + end + "'"})...)
	var out strings.Builder
	for ending := false; ; {
		switch m := c.recv().(type) {
		case *pgproto3.ReadyForQuery:
			fmt.Fprintf(&out, "Z%c; ", m.TxStatus)
			if ending {
				c.send(&pgproto3.Query{String: txbState})
				r := c.readResult()
				return strings.ReplaceAll(out.String(), "*pgproto3.", "") + "\n" + strings.Join(r.rows, "")
			}
		case *pgproto3.DataRow:
			ending = ending || string(m.Values[0]) == end
			fmt.Fprintf(&out, "D %q; ", m.Values)
		case *pgproto3.CommandComplete:
			fmt.Fprintf(&out, "C %s; ", m.CommandTag)
		case *pgproto3.ErrorResponse:
			fmt.Fprintf(&out, "E %s; ", m.Code)
		case *pgproto3.NoticeResponse:
			fmt.Fprintf(&out, "N %s; ", m.Code)
		case *pgproto3.ParameterStatus:
		default:
			fmt.Fprintf(&out, "%T; ", m)
		}
	}
}

// txbCompareRaw runs each script of raw messages on both sides.
func txbCompareRaw(t *testing.T, at [2][2]string, scripts [][]pgproto3.FrontendMessage) {
	t.Helper()
	for i, msgs := range scripts {
		got, want := txbRaw(t, at[0][0], at[0][1], msgs), txbRaw(t, at[1][0], at[1][1], msgs)
		if got != want {
			t.Fatalf("script %d\npgrules:  %s\ntriggers: %s", i, got, want)
		}
		t.Logf("script %d: %s", i, got)
	}
}

// txbExec is a Parse, Bind and Execute of sql on the unnamed statement and
// portal.
func txbExec(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{}, &pgproto3.Execute{}}
}

// TestQueryBeforeSync: a Query that comes after Parse/Bind/Execute of a
// write, before the Sync, runs in the batch's transaction, which it ends;
// after an error in the batch it is ignored, as everything up to the Sync.
func TestQueryBeforeSync(t *testing.T) {
	_, _, _, at := txbSidesAt(t, "CREATE TABLE memo (id int PRIMARY KEY)")
	then := func(first []pgproto3.FrontendMessage, rest ...pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
		return append(append([]pgproto3.FrontendMessage(nil), first...), rest...)
	}
	line := txbExec("INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 3) RETURNING amount")
	tooMuch := txbExec("INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)")
	empty := txbExec("INSERT INTO orders (customer_id) VALUES (1)")
	txbCompareRaw(t, at, [][]pgproto3.FrontendMessage{
		then(line, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Sync{}),
		then(tooMuch, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Sync{}),
		then(empty, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Sync{}),
		then(empty, &pgproto3.Query{String: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), 1, 1)"}, &pgproto3.Sync{}),
		then(line, &pgproto3.Query{String: "COMMIT; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"}, &pgproto3.Sync{}),
		then([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, then(line, &pgproto3.Query{String: "SELECT 2"}, &pgproto3.Sync{}, &pgproto3.Query{String: "ROLLBACK"})...),
		// A statement without rules before the Query goes with it.
		then(txbExec("INSERT INTO memo VALUES (1)"), &pgproto3.Query{String: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"},
			&pgproto3.Sync{}, &pgproto3.Query{String: "SELECT count(*) FROM memo"}),
		then(txbExec("INSERT INTO memo VALUES (2)"), &pgproto3.Query{String: "INSERT INTO orders (customer_id) VALUES (1)"},
			&pgproto3.Sync{}, &pgproto3.Query{String: "SELECT count(*) FROM memo"}),
		// Pipelined behind a BEGIN not yet answered: the batch runs in
		// the client's transaction, which its ROLLBACK undoes.
		then([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, then(txbExec("SELECT 1"), then(line, &pgproto3.Sync{}, &pgproto3.Query{String: "ROLLBACK"})...)...),
	})
}

// TestPortalExecutedInParts: a portal of a write with rules executed with
// a row limit, or again, answers as the server's portal does: the write
// runs once, its RETURNING rows come by the limit with PortalSuspended,
// and a portal without rows left to give cannot be run again. A portal the
// end of its transaction dropped does not exist.
func TestPortalExecutedInParts(t *testing.T) {
	_, _, _, at := txbSidesAt(t)
	const three = "INSERT INTO lineitem (order_id, product_id, quantity) SELECT 2, 1, g FROM generate_series(1, 3) g RETURNING quantity, amount"
	const one = "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 7)"
	type msgs = []pgproto3.FrontendMessage
	exec := func(portal string, n uint32) *pgproto3.Execute { return &pgproto3.Execute{Portal: portal, MaxRows: n} }
	bind := func(portal, sql string) msgs {
		return msgs{&pgproto3.Parse{Query: sql}, &pgproto3.Bind{DestinationPortal: portal}}
	}
	join := func(parts ...msgs) msgs {
		var out msgs
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	sync := msgs{&pgproto3.Sync{}}
	txbCompareRaw(t, at, []msgs{
		join(bind("", three), msgs{exec("", 1), exec("", 1), exec("", 1)}, sync),
		join(bind("", three), msgs{exec("", 2), exec("", 2), exec("", 2)}, sync),
		join(bind("", three), msgs{exec("", 0), exec("", 0)}, sync),
		join(bind("", one), msgs{exec("", 0), exec("", 0)}, sync),
		join(bind("", one), msgs{exec("", 1), exec("", 1)}, sync),
		// A cursor-like fetch in a transaction, a Sync after each.
		join(msgs{&pgproto3.Query{String: "BEGIN"}}, bind("c1", three), msgs{exec("c1", 1)}, sync, msgs{exec("c1", 1)}, sync,
			msgs{exec("c1", 5)}, sync, msgs{exec("c1", 5)}, sync, msgs{&pgproto3.Query{String: "COMMIT"}}),
		// Dropped at the end of the transaction it was bound in.
		join(bind("", one), sync, msgs{exec("", 0)}, sync),
		join(bind("p1", one), sync, msgs{exec("p1", 0)}, sync),
		join(msgs{&pgproto3.Query{String: "BEGIN"}}, bind("p1", one), sync, msgs{&pgproto3.Query{String: "COMMIT"}, exec("p1", 0)}, sync),
		join(msgs{&pgproto3.Query{String: "BEGIN"}}, bind("p1", one), sync, msgs{exec("p1", 0)}, sync, msgs{&pgproto3.Query{String: "ROLLBACK"}}),
	})
}

// TestDefaultsInSearchPath: a column's default and type mean what they
// meant when the table was made, whatever the writing session's
// search_path: a sequence, a function and a type of the same names in
// another schema are not the table's.
func TestDefaultsInSearchPath(t *testing.T) {
	rules, triggers, _ := txbSides(t,
		`CREATE SCHEMA s2; CREATE SCHEMA s3; CREATE SEQUENCE s3.lineitem_id_seq START 1000;
		 CREATE FUNCTION public.note() RETURNS text LANGUAGE sql AS 'SELECT ''public''';
		 CREATE FUNCTION s3.note() RETURNS text LANGUAGE sql AS 'SELECT ''s3''';
		 ALTER TABLE orders ALTER notes SET DEFAULT note();
		 CREATE TYPE public.size AS ENUM ('small', 'large'); CREATE TYPE s3.size AS ENUM ('large', 'small');
		 ALTER TABLE orders ADD size size DEFAULT 'large'`)
	// The triggers name their tables as the rules do, in public.
	for _, f := range []string{"lineitem_before", "lineitem_after", "orders_after", "customer_check", "orders_not_empty"} {
		scalar(t, triggers.c, "ALTER FUNCTION "+f+"() SET search_path = public")
	}
	const line = "INSERT INTO public.lineitem (order_id, product_id, quantity) VALUES (2, 1, 1) RETURNING id, amount"
	const order = "INSERT INTO public.orders (customer_id, paid) VALUES (1, true) RETURNING id, notes, size, size < 'small'"
	txbCompare(t, rules, triggers, []txbScript{
		{sql: "SET search_path = s3, public; " + line + "; " + order + "; RESET search_path"},
		{sql: "SET search_path = s2; " + line + "; " + order + "; RESET search_path"},
		{sql: "SET search_path = s3, public"},
		{batch: []string{line, order}},
		{sql: "RESET search_path"},
	}, nil)
}

// TestBeforeRowTriggers: a BEFORE ROW trigger that would fire on a row
// the engine writes for a write — on a table the engine updates for it, on
// the rows its delete cascades to, or on its own table when the engine
// deletes the rows a delete cascades to first — is refused with 0A000 and
// the write writes nothing. A table's own trigger that skips every row
// leaves the rules nothing to do. Other triggers change nothing.
func TestBeforeRowTriggers(t *testing.T) {
	const triggers = `
CREATE FUNCTION twice() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.quantity := NEW.quantity * 2; RETURN NEW; END$$;
CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER twice BEFORE INSERT ON lineitem FOR EACH ROW EXECUTE FUNCTION twice();
CREATE TRIGGER skip BEFORE UPDATE OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION skip();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON product FOR EACH ROW EXECUTE FUNCTION noop();
CREATE TRIGGER off BEFORE UPDATE ON product FOR EACH ROW EXECUTE FUNCTION skip();
ALTER TABLE product DISABLE TRIGGER off;
CREATE TRIGGER stmt BEFORE UPDATE ON customer FOR EACH STATEMENT EXECUTE FUNCTION noop();
CREATE TABLE note (id int PRIMARY KEY, customer_id int REFERENCES customer ON DELETE CASCADE, n int);
CREATE TRIGGER keep BEFORE DELETE ON note FOR EACH ROW EXECUTE FUNCTION skip();
CREATE TABLE folder (id int PRIMARY KEY);
CREATE TABLE doc (id int PRIMARY KEY, folder_id int REFERENCES folder ON DELETE CASCADE, n int);
CREATE TRIGGER hold BEFORE DELETE ON folder FOR EACH ROW EXECUTE FUNCTION skip();
INSERT INTO folder VALUES (1);
CREATE TABLE node (id int PRIMARY KEY, up int REFERENCES node, n int NOT NULL DEFAULT 0, size int NOT NULL DEFAULT 0);
CREATE TRIGGER tidy BEFORE UPDATE ON node FOR EACH ROW EXECUTE FUNCTION noop();`
	rules := append(strings.Split(strings.TrimSpace(demo.Rules), ";\n"),
		"SELECT pgrules.constraint('note', 'row.n > 0', 'n must be positive')",
		"SELECT pgrules.constraint('doc', 'row.n > 0', 'n must be positive')",
		"SELECT pgrules.sum('node.size', 'node.n')")
	c, admin, _, _ := rulesDB(t, demo.Schema+demo.Data+triggers, rules)
	if e := pgError(t, c, "INSERT INTO orders (id, customer_id) VALUES (1, 1)"); e != nil {
		t.Fatalf("an order (no trigger fires): %v", e)
	}
	for sql, want := range map[string]string{
		// The order's total follows a line.
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 1)": `"skip" on orders`,
		// The engine deletes the notes of a customer first.
		"DELETE FROM customer WHERE id = 2": `"keep" on note`,
		// ... and the documents of a folder, which the trigger keeps.
		"DELETE FROM folder": `"hold" on folder may skip a row whose dependent rows`,
		// The engine updates a node's parent node.
		"INSERT INTO node (id, n) VALUES (1, 1)": `"tidy" on node may change or skip an update pgrules makes to the parents`,
	} {
		for _, proto := range protocols {
			if e := evExec(t, proto.exec, c, sql); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, want) {
				t.Fatalf("%s (%s): %v, want 0A000 naming %s", sql, proto.name, e, want)
			}
		}
	}
	for sql, tag := range map[string]string{"UPDATE orders SET paid = true": "UPDATE 0", "DELETE FROM orders": "DELETE 0"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := c.ExecParams(ctx, sql, nil, nil, nil, nil).Close()
		cancel()
		if err != nil || got.String() != tag {
			t.Fatalf("%s (its own trigger skips every row): %s %v, want %s", sql, got, err, tag)
		}
	}
	if e := pgError(t, c, "UPDATE product SET price = 11 WHERE id = 1"); e != nil {
		t.Fatalf("a product (a disabled BEFORE and an AFTER trigger): %v", e)
	}
	if got := scalar(t, admin, txbState); got != "1:1:0.00:f |  | 1:0.00:1 2:0.00:0" {
		t.Fatalf("rows: %s", got)
	}
}

// TestBeforeRowStored: a table's own BEFORE ROW trigger changes or skips
// rows, and the rules see each row as stored, like PL/pgSQL triggers whose
// derivations fire after it (a_user sorts before lineitem_before): the
// derivations recomputed from a doubled, clamped or re-pointed row, the
// parents adjusted by what was stored, and a skipped row given no logic,
// with PostgreSQL's command tags and RETURNING rows. A trigger that
// changes the row again when pgrules writes its derivations is refused.
func TestBeforeRowStored(t *testing.T) {
	const user = `
CREATE FUNCTION a_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.quantity >= 10 THEN RETURN NULL; END IF;
    RETURN OLD;
  END IF;
  IF NEW.quantity = 0 THEN RETURN NULL; END IF;
  IF TG_OP = 'INSERT' THEN
    NEW.quantity := NEW.quantity * 2;
    IF NEW.product_id = 3 THEN NEW.product_id := 2; END IF;
  ELSIF NEW.quantity BETWEEN 7 AND 9 THEN
    NEW.quantity := NEW.quantity + 1;
  END IF;
  IF TG_OP = 'UPDATE' AND NEW.product_id = 3 THEN NEW.product_id := OLD.product_id; END IF;
  IF NEW.quantity > 40 THEN NEW.quantity := 40; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER a_user BEFORE INSERT OR UPDATE OR DELETE ON lineitem FOR EACH ROW EXECUTE FUNCTION a_user();`
	rules, triggers, _ := txbSides(t, user)
	// The rows the trigger skips would break it.
	if e := pgError(t, rules.c, "SELECT pgrules.constraint('lineitem', 'row.quantity > 0', 'quantity must be positive', name => 'positive')"); e != nil {
		t.Fatal(e)
	}
	txbCompare(t, rules, triggers, []txbScript{
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 3) RETURNING id, quantity, amount"},
		{sql: "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 0), (2, 3, 5), (1, 1, 30) RETURNING id, product_id, quantity, unit_price, amount"},
		{sql: "UPDATE lineitem SET quantity = 0 WHERE id = 1 RETURNING id"},
		// The trigger puts the product back: the line keeps the price it
		// copied, not the product's new one.
		{sql: "UPDATE product SET price = 12 WHERE id = 1"},
		{sql: "UPDATE lineitem SET product_id = 3, quantity = 3 WHERE id = 1 RETURNING product_id, unit_price, amount"},
		{sql: "UPDATE lineitem SET quantity = quantity + 100 WHERE id = 2 RETURNING id, quantity, amount"},
		{sql: "UPDATE lineitem SET quantity = CASE WHEN id = 3 THEN 0 ELSE quantity + 1 END WHERE order_id = 2 RETURNING id, quantity, amount"},
		{sql: "DELETE FROM lineitem WHERE order_id = 2 RETURNING id"},
		{batch: []string{
			"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 2) RETURNING quantity, amount",
			"UPDATE lineitem SET quantity = 0 WHERE order_id = 1",
			"DELETE FROM lineitem WHERE order_id = 1 AND quantity < 10",
		}},
		// The only line of a new order is skipped: the commit constraint
		// finds the order empty.
		{sql: "BEGIN; INSERT INTO orders (customer_id) VALUES (1); INSERT INTO lineitem (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), 1, 0); COMMIT"},
		{sql: "BEGIN; INSERT INTO orders (customer_id) VALUES (1); INSERT INTO lineitem (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), 1, 0), (currval('orders_id_seq'), 1, 1); COMMIT"},
	}, nil)
	// pgx: prepared, parameters and results in binary, the RETURNING
	// list evaluated again over the row written again.
	var got [2]string
	for i, side := range []*txbSide{rules, triggers} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		conn, err := pgx.Connect(ctx, side.url)
		if err != nil {
			t.Fatal(err)
		}
		var q int32
		var amount float64
		err = conn.QueryRow(ctx, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES ($1, $2, $3) RETURNING quantity, amount", 2, 1, 2).Scan(&q, &amount)
		conn.Close(ctx)
		cancel()
		got[i] = fmt.Sprintf("%d %v %v | %s", q, amount, err, scalar(t, side.c, txbState))
	}
	if got[0] != got[1] {
		t.Fatalf("pgx insert\npgrules:  %s\ntriggers: %s", got[0], got[1])
	}
	want := scalar(t, rules.c, txbState)
	if e := pgError(t, rules.c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, -1)"); e == nil || e.Code != "23514" {
		t.Fatalf("a row stored with -2: %v, want 23514", e)
	}
	if e := pgError(t, rules.c, "INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (2, 2, 1, 1) ON CONFLICT (id) DO UPDATE SET quantity = 1"); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, `"a_user"`) {
		t.Fatalf("an upsert: %v, want 0A000", e)
	}
	if e := pgError(t, rules.c, "UPDATE lineitem SET quantity = 3 FROM orders o WHERE o.id = lineitem.order_id AND lineitem.id = 1 RETURNING o.paid, lineitem.amount"); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, "RETURNING list that names the FROM list") {
		t.Fatalf("RETURNING from the FROM list: %v, want 0A000", e)
	}
	for _, proto := range protocols {
		if e := evExec(t, proto.exec, rules.c, "UPDATE lineitem SET quantity = 7 WHERE id = 2"); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, `"a_user"`) {
			t.Fatalf("a trigger that changes the row again (%s): %v, want 0A000", proto.name, e)
		}
	}
	if got := scalar(t, rules.c, txbState); got != want {
		t.Fatalf("after the refused update: %s, want %s", got, want)
	}
}

// TestTxControlInPgxBatch: a pgx batch with its statements prepared (pgx's
// default mode) holding a COMMIT among writes with rules.
func TestTxControlInPgxBatch(t *testing.T) {
	rules, triggers, _ := txbSides(t)
	run := func(side *txbSide, sqls ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, side.url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		b := &pgx.Batch{}
		for _, sql := range sqls {
			b.Queue(sql)
		}
		var out strings.Builder
		br := conn.SendBatch(ctx, b)
		for range sqls {
			tag, err := br.Exec()
			fmt.Fprintf(&out, "%s %s; ", tag, sqlStateOf(err))
		}
		fmt.Fprintf(&out, "close %s; ", sqlStateOf(br.Close()))
		return out.String() + scalar(t, side.c, txbState)
	}
	for _, sqls := range [][]string{
		{"SELECT 1", "COMMIT", "INSERT INTO orders (customer_id) VALUES (1)"},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 1)", "COMMIT", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100)"},
		{"INSERT INTO orders (customer_id) VALUES (1)", "ROLLBACK", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 1, 2)"},
	} {
		if got, want := run(rules, sqls...), run(triggers, sqls...); got != want {
			t.Fatalf("%q\npgrules:  %s\ntriggers: %s", sqls, got, want)
		}
	}
}

// TestBeforeRowDerivedColumns: a BEFORE INSERT trigger that writes the
// derived columns themselves (a sum's target, a formula's) and what a
// formula reads, on a table without a primary key (its rows written again
// by ctid): the rules put back what they derive, from the row as stored,
// and the client's RETURNING expressions give the row as it ends up; a row
// event sees each row once, as stored. A row a BEFORE DELETE trigger keeps
// gets no event and leaves its parent's sum as it was.
func TestBeforeRowDerivedColumns(t *testing.T) {
	const schema = `
CREATE TABLE parent (id int PRIMARY KEY, name text, total int NOT NULL DEFAULT 0);
CREATE TABLE item (parent_id int REFERENCES parent, qty int, price int, amount int);
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.total := 7; NEW.name := upper(NEW.name); RETURN NEW; END$$;
CREATE TRIGGER stamp BEFORE INSERT ON parent FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN
  NEW.qty := NEW.qty + 1;
  IF NEW.qty = 42 THEN INSERT INTO parent (id) VALUES (42); END IF;
  NEW.amount := -1;
  RETURN NEW;
END$$;
CREATE TRIGGER bump BEFORE INSERT ON item FOR EACH ROW EXECUTE FUNCTION bump();
CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN IF OLD.qty > 4 THEN RETURN NULL; END IF; RETURN OLD; END$$;
CREATE TRIGGER keep BEFORE DELETE ON item FOR EACH ROW EXECUTE FUNCTION keep();
CREATE TABLE audit (verb text, qty int, amount int);
CREATE FUNCTION hide() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN IF NEW.price = 99 THEN RETURN NULL; END IF; RETURN NEW; END$$;
CREATE TRIGGER hide BEFORE UPDATE ON item FOR EACH ROW EXECUTE FUNCTION hide();`
	c, _, _, _ := rulesDB(t, schema, []string{
		"SELECT pgrules.formula('item.amount', 'row.qty * row.price')",
		"SELECT pgrules.sum('parent.total', 'item.amount')",
		`SELECT pgrules.event('item', 'row', 'insert("audit", verb == "delete" ? {verb: verb, qty: old.qty, amount: old.amount} : {verb: verb, qty: row.qty, amount: row.amount})')`,
	})
	if got := scalar(t, c, "INSERT INTO parent (id, name) VALUES (1, 'a') RETURNING name || ':' || total"); got != "A:0" {
		t.Fatalf("parent returned %q, want A:0", got)
	}
	if got := scalar(t, c, "INSERT INTO item VALUES (1, 2, 10), (1, 4, 10) RETURNING qty * 1000 + amount"); got != "3030" {
		t.Fatalf("item returned %q, want 3030", got)
	}
	const state = "SELECT (SELECT string_agg(qty || ':' || amount, ' ' ORDER BY qty) FROM item) || ' | ' || (SELECT name || ':' || total FROM parent)"
	if got := scalar(t, c, state); got != "3:30 5:50 | A:80" {
		t.Fatalf("rows: %s, want 3:30 5:50 | A:80", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if tag, err := c.Exec(ctx, "DELETE FROM item").ReadAll(); err != nil || tag[0].CommandTag.String() != "DELETE 1" {
		t.Fatalf("delete: %v %v, want DELETE 1", tag, err)
	}
	const audit = "SELECT string_agg(concat_ws(':', verb, qty, amount), ' ' ORDER BY verb, qty) FROM audit"
	if got, want := scalar(t, c, state)+" | "+scalar(t, c, audit), "5:50 | A:50 | delete:3:30 insert:3:30 insert:5:50"; got != want {
		t.Fatalf("after the delete: %s, want %s", got, want)
	}
	// The update writing the amount of a new row is skipped: refused, and
	// nothing of the statement stays.
	if e := pgError(t, c, "INSERT INTO item VALUES (1, 1, 99)"); e == nil || e.Code != "0A000" || !strings.Contains(e.Message, `"hide" on item skipped a row again`) {
		t.Fatalf("a trigger skipping the derived columns' update: %v, want 0A000", e)
	}
	// A trigger inserting into a table with rules is refused by its guard.
	if e := pgError(t, c, "INSERT INTO item VALUES (1, 41, 1)"); e == nil || e.Code != "55000" {
		t.Fatalf("a trigger writing parent: %v, want 55000", e)
	}
	if tag, err := c.Exec(ctx, "UPDATE item SET price = 99").ReadAll(); err != nil || tag[0].CommandTag.String() != "UPDATE 0" {
		t.Fatalf("update: %v %v, want UPDATE 0", tag, err)
	}
	if got, want := scalar(t, c, state)+" | "+scalar(t, c, audit), "5:50 | A:50 | delete:3:30 insert:3:30 insert:5:50"; got != want {
		t.Fatalf("after the refused insert: %s, want %s", got, want)
	}
}
