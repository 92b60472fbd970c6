package tests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/demo"
)

// The check-credit acceptance scenarios (../shared/scenarios/check-credit).
// Each runs on two targets: directly on PostgreSQL with the logic as
// PL/pgSQL triggers (triggers.sql), the second oracle the scenarios name,
// and through pgrules with rules.sql, which must pass the same checks and
// end in the same state.

type creditTarget struct {
	name string
	// open prepares a fresh database with the schema, the data and the
	// logic, and returns the URLs clients run the scenario through (the
	// first for a scenario of one client).
	open func(t *testing.T) []string
	// rules is set for the targets through pgrules.
	rules bool
	// concurrentOnly marks a target only the concurrent scenario uses.
	concurrentOnly bool
}

var creditTargets = []creditTarget{
	{name: "triggers", open: func(t *testing.T) []string {
		db := shared.newDB(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The triggers update parents in the order rows come, so they
		// deadlock under concurrent writers; a short deadlock_timeout
		// keeps the retries quick.
		lock := fmt.Sprintf("ALTER DATABASE %q SET deadlock_timeout = '20ms'", db)
		if err := demo.Exec(ctx, shared.url("", "", db), demo.Schema, demo.Data, demo.Triggers, lock); err != nil {
			t.Fatal(err)
		}
		return []string{shared.url("", "", db)}
	}},
	{name: "pgrules", rules: true, open: func(t *testing.T) []string { return pgrulesTarget(t, 1) }},
	{name: "pgrules-two-proxies", rules: true, concurrentOnly: true, open: func(t *testing.T) []string { return pgrulesTarget(t, 2) }},
}

// pgrulesTarget is the check-credit database with its rules, behind n
// proxies, each with its own engine.
func pgrulesTarget(t *testing.T, n int) []string {
	db, p, admin := creditDB(t)
	// As for the triggers: transactions of several statements can still
	// deadlock one another, and the retries should be quick.
	scalar(t, admin, fmt.Sprintf("ALTER DATABASE %q SET deadlock_timeout = '20ms'", db))
	urls := []string{p.url("", "", db)}
	defineCreditRules(t, connect(t, urls[0]))
	for range n - 1 {
		urls = append(urls, startProxy(t, shared).url("", "", db))
	}
	return urls
}

// scenario1 is the state most scenarios start from: an order for Alice
// with a line of 3 widgets and one of 2 gadgets.
var scenario1 = []string{
	"INSERT INTO orders (id, customer_id) VALUES (1, 1)",
	"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 1, 3)",
	"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (2, 1, 2, 2)",
}

// Queries that show the scenarios' derived values.
const (
	qLines     = "SELECT coalesce(string_agg(unit_price || '/' || amount, ' ' ORDER BY id), '') FROM lineitem"
	qOrders    = "SELECT coalesce(string_agg(id || ':' || amount_total, ' ' ORDER BY id), '') FROM orders"
	qCustomers = "SELECT string_agg(name || ':' || balance || '/' || unpaid_order_count, ' ' ORDER BY id) FROM customer"
	// qDrift counts derived values that differ from their definition
	// recomputed with SQL aggregates.
	qDrift = `SELECT
		(SELECT count(*) FROM lineitem l JOIN product p ON p.id = l.product_id WHERE l.amount IS DISTINCT FROM l.quantity * l.unit_price)
	  + (SELECT count(*) FROM orders o WHERE o.amount_total <> coalesce((SELECT sum(amount) FROM lineitem l WHERE l.order_id = o.id), 0))
	  + (SELECT count(*) FROM customer c WHERE c.balance <> coalesce((SELECT sum(amount_total) FROM orders o WHERE o.customer_id = c.id AND NOT o.paid), 0)
	       OR c.unpaid_order_count <> (SELECT count(*) FROM orders o WHERE o.customer_id = c.id AND NOT o.paid))`
)

type creditScenario struct {
	name  string
	steps []string          // run one by one, each as its own Query
	fail  string            // the step that must fail with 23514 (its text), if any
	want  map[string]string // query → result afterwards
}

var creditScenarios = []creditScenario{
	{name: "1 order with two lines", steps: scenario1, want: map[string]string{
		qLines: "10.00/30.00 25.50/51.00", qOrders: "1:81.00", qCustomers: "Alice:81.00/1 Bob:0.00/0"}},
	{name: "2 quantity changed", steps: append(scenario1[:3:3], "UPDATE lineitem SET quantity = 5 WHERE product_id = 1"), want: map[string]string{
		qLines: "10.00/50.00 25.50/51.00", qOrders: "1:101.00", qCustomers: "Alice:101.00/1 Bob:0.00/0"}},
	{name: "3 paid", steps: append(scenario1[:3:3], "UPDATE orders SET paid = true WHERE id = 1"), want: map[string]string{
		qOrders: "1:81.00", qCustomers: "Alice:0.00/0 Bob:0.00/0"}},
	{name: "4 unpaid again", steps: append(scenario1[:3:3], "UPDATE orders SET paid = true WHERE id = 1", "UPDATE orders SET paid = false"), want: map[string]string{
		qCustomers: "Alice:81.00/1 Bob:0.00/0"}},
	{name: "5 order reassigned", steps: append(scenario1[:3:3], "UPDATE orders SET customer_id = 2 WHERE id = 1"), want: map[string]string{
		qCustomers: "Alice:0.00/0 Bob:81.00/1"}},
	{name: "6 price change not propagated", steps: append(scenario1[:3:3], "UPDATE product SET price = 99 WHERE id = 1"), want: map[string]string{
		qLines: "10.00/30.00 25.50/51.00", qOrders: "1:81.00", qCustomers: "Alice:81.00/1 Bob:0.00/0"}},
	{name: "7 line deleted", steps: append(scenario1[:3:3], "DELETE FROM lineitem WHERE product_id = 2"), want: map[string]string{
		qOrders: "1:30.00", qCustomers: "Alice:30.00/1 Bob:0.00/0"}},
	{name: "8 lines then order deleted", steps: append(scenario1[:3:3], "DELETE FROM lineitem WHERE order_id = 1", "DELETE FROM orders WHERE id = 1"), want: map[string]string{
		qOrders: "", qCustomers: "Alice:0.00/0 Bob:0.00/0"}},
	{name: "9 credit limit in autocommit",
		steps: []string{"INSERT INTO orders (id, customer_id) VALUES (2, 2)", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 2, 20)", "SELECT 1"},
		fail:  "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 2, 20)",
		want:  map[string]string{qLines: "", qOrders: "2:0.00", qCustomers: "Alice:0.00/0 Bob:0.00/1"}},
	{name: "11 one update across orders and customers",
		steps: []string{
			"INSERT INTO orders (id, customer_id) VALUES (1, 1), (2, 1), (3, 2)",
			"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, 1), (1, 2, 2), (2, 3, 5), (3, 1, 4), (3, 3, 10)",
			"UPDATE orders SET paid = true WHERE id = 2",
			"UPDATE lineitem SET quantity = quantity + 1",
		},
		want: map[string]string{qOrders: "1:96.50 2:0.60 3:51.10", qCustomers: "Alice:96.50/1 Bob:51.10/1"}},
	{name: "12 a thousand dimes",
		steps: []string{"INSERT INTO orders (id, customer_id) VALUES (1, 1)", "INSERT INTO lineitem (order_id, product_id, quantity) SELECT 1, 3, 1 FROM generate_series(1, 1000)"},
		want:  map[string]string{qOrders: "1:100.00", qCustomers: "Alice:100.00/1 Bob:0.00/0"}},
	{name: "14 RETURNING carries the derived values",
		steps: []string{"INSERT INTO orders (id, customer_id) VALUES (1, 1)", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3) RETURNING unit_price || '/' || amount"},
		want:  map[string]string{qLines: "25.50/76.50"}},
}

// creditProtocols run a scenario's steps: psql's simple protocol, the
// extended protocol with unnamed statements, and named prepared statements
// (scenario 15).
var creditProtocols = []struct {
	name string
	exec func(ctx context.Context, c *pgconn.PgConn, prepared map[string]string, sql string) ([][][]byte, error)
}{
	{"simple", func(ctx context.Context, c *pgconn.PgConn, _ map[string]string, sql string) ([][][]byte, error) {
		res, err := c.Exec(ctx, sql).ReadAll()
		if err != nil || len(res) == 0 {
			return nil, err
		}
		return res[len(res)-1].Rows, nil
	}},
	{"extended", func(ctx context.Context, c *pgconn.PgConn, _ map[string]string, sql string) ([][][]byte, error) {
		res := c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
		return res.Rows, res.Err
	}},
	{"prepared", func(ctx context.Context, c *pgconn.PgConn, prepared map[string]string, sql string) ([][][]byte, error) {
		name, ok := prepared[sql]
		if !ok {
			name = fmt.Sprintf("s%d", len(prepared)+1)
			if _, err := c.Prepare(ctx, name, sql, nil); err != nil {
				return nil, err
			}
			prepared[sql] = name
		}
		res := c.ExecPrepared(ctx, name, nil, nil, nil).Read()
		return res.Rows, res.Err
	}},
}

// qState is the whole state of a scenario's tables.
const qState = `SELECT concat_ws(' | ',
	(SELECT string_agg(concat_ws(',', id, name, balance, credit_limit, unpaid_order_count), ';' ORDER BY id) FROM customer),
	(SELECT string_agg(concat_ws(',', id, customer_id, amount_total, paid, notes), ';' ORDER BY id) FROM orders),
	(SELECT string_agg(concat_ws(',', id, order_id, product_id, quantity, unit_price, amount), ';' ORDER BY id) FROM lineitem),
	(SELECT string_agg(concat_ws(',', id, name, price), ';' ORDER BY id) FROM product))`

// TestCreditScenarios runs scenarios 1–12 and 14 on every target in every
// protocol, and checks that pgrules ends each in the same state as the
// triggers.
func TestCreditScenarios(t *testing.T) {
	states := make(map[string]string) // scenario/protocol → the triggers' end state
	for _, target := range creditTargets {
		if target.concurrentOnly {
			continue
		}
		for _, proto := range creditProtocols {
			for _, sc := range creditScenarios {
				t.Run(target.name+"/"+proto.name+"/"+sc.name, func(t *testing.T) {
					c := connect(t, target.open(t)[0])
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					prepared := make(map[string]string)
					for _, step := range sc.steps {
						rows, err := proto.exec(ctx, c, prepared, step)
						if step == sc.fail {
							pe, ok := err.(*pgconn.PgError)
							if !ok || pe.Code != "23514" || !strings.Contains(pe.Message, "510.00") || !strings.Contains(pe.Message, "500.00") {
								t.Fatalf("%s: %v, want 23514 naming 510.00 and 500.00", step, err)
							}
							if target.rules && pe.ConstraintName != "credit_limit" {
								t.Fatalf("%s: constraint %q, want credit_limit", step, pe.ConstraintName)
							}
							continue
						}
						if err != nil {
							t.Fatalf("%s: %v", step, err)
						}
						if strings.Contains(step, "RETURNING") && (len(rows) != 1 || string(rows[0][0]) != sc.want[qLines]) {
							t.Fatalf("RETURNING gave %q", rows)
						}
					}
					for q, want := range sc.want {
						if got := scalar(t, c, q); got != want {
							t.Errorf("%s\n got %q\nwant %q", q, got, want)
						}
					}
					if drift := scalar(t, c, qDrift); drift != "0" {
						t.Errorf("%s derived values drift from their definitions", drift)
					}
					state := scalar(t, c, qState)
					key := proto.name + "/" + sc.name
					if !target.rules {
						states[key] = state
					} else if want, ok := states[key]; ok && state != want {
						t.Errorf("the state differs from the triggers'\n got %s\nwant %s", state, want)
					}
				})
			}
		}
	}
}

// TestCreditScenarioInTransaction is scenario 10: inside BEGIN, the
// failing insert leaves the transaction failed until ROLLBACK.
func TestCreditScenarioInTransaction(t *testing.T) {
	for _, target := range creditTargets {
		if target.concurrentOnly {
			continue
		}
		t.Run(target.name, func(t *testing.T) {
			c := connect(t, target.open(t)[0])
			scalar(t, c, "BEGIN")
			scalar(t, c, "INSERT INTO orders (id, customer_id) VALUES (2, 2)")
			if e := pgError(t, c, "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (2, 2, 20)"); e == nil || e.Code != "23514" {
				t.Fatalf("over the limit: %v", e)
			}
			if e := pgError(t, c, "SELECT 1"); e == nil || e.Code != "25P02" || c.TxStatus() != 'E' {
				t.Fatalf("after the failure: %v, status %c", e, c.TxStatus())
			}
			scalar(t, c, "ROLLBACK")
			if got := scalar(t, c, qCustomers); got != "Alice:0.00/0 Bob:0.00/0" {
				t.Fatalf("after ROLLBACK: %s", got)
			}
		})
	}
}

// TestCreditConcurrent is scenario 13: 8 clients run random transactions
// (new orders with lines, quantity changes, payments, reassignments,
// deletions); afterwards every derived value equals its definition, by the
// scenario's own SQL and by pgrules.verify(). With two proxies in front of
// one database the clients alternate between them.
//
// Transactions of several statements can deadlock one another through the
// order their statements come in, whatever runs the logic; they are
// retried and counted. pgrules locks the rows of each table in key order,
// which makes deadlocks among transactions of one statement rare (they
// are counted too; PostgreSQL can still deadlock two of them when one
// follows the update chain of a parent row another has updated).
func TestCreditConcurrent(t *testing.T) {
	// The scenario asks for 8 × 500; 8 × 60 (480 transactions of one to
	// three random steps) keeps make test quick.
	const clients, perClient = 8, 60
	for _, target := range creditTargets {
		for _, maxSteps := range []int{3, 1} {
			t.Run(fmt.Sprintf("%s/%d_steps", target.name, maxSteps), func(t *testing.T) {
				urls := target.open(t)
				admin := connect(t, urls[0])
				var wg sync.WaitGroup
				errs := make(chan error, clients)
				var deadlocks atomic.Int64
				for i := range clients {
					wg.Add(1)
					go func(seed int64) {
						defer wg.Done()
						errs <- creditWorkload(urls[int(seed)%len(urls)], seed, perClient, maxSteps, &deadlocks)
					}(int64(i))
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				if drift := scalar(t, admin, qDrift); drift != "0" {
					t.Fatalf("%s derived values drift after the concurrent run", drift)
				}
				if target.rules {
					if n := scalar(t, admin, "SELECT count(*) FROM pgrules.verify()"); n != "0" {
						t.Fatalf("pgrules.verify() reports %s drifting rows", n)
					}
				}
				t.Logf("%s, up to %d statements a transaction: %d deadlocks retried", target.name, maxSteps, deadlocks.Load())
			})
		}
	}
}

// creditWorkload runs n random transactions; a transaction refused by the
// credit limit (23514) rolls back and counts as done, a deadlock is retried.
func creditWorkload(url string, seed int64, n, maxSteps int, deadlocks *atomic.Int64) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rnd := rand.New(rand.NewPCG(uint64(seed), 13))
	steps := []string{
		"WITH o AS (INSERT INTO orders (customer_id) VALUES (1 + (random() < 0.5)::int) RETURNING id) INSERT INTO lineitem (order_id, product_id, quantity) SELECT o.id, 1 + (random() * 2)::int, 1 + (random() * 3)::int FROM o, generate_series(1, 2)",
		"UPDATE lineitem SET quantity = 1 + (random() * 4)::int WHERE id = (SELECT id FROM lineitem ORDER BY random() LIMIT 1)",
		"UPDATE orders SET paid = NOT paid WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)",
		"UPDATE orders SET customer_id = 3 - customer_id WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)",
		"DELETE FROM lineitem WHERE id = (SELECT id FROM lineitem ORDER BY random() LIMIT 1)",
		"UPDATE orders SET paid = true WHERE NOT paid AND id IN (SELECT id FROM orders WHERE NOT paid ORDER BY random() LIMIT 3)",
	}
	for done := 0; done < n; {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		for range 1 + rnd.IntN(maxSteps) {
			if _, err = tx.Exec(ctx, steps[rnd.IntN(len(steps))]); err != nil {
				break
			}
		}
		if err == nil {
			err = tx.Commit(ctx)
		} else {
			tx.Rollback(ctx)
		}
		var pe *pgconn.PgError
		switch {
		case err == nil, errors.As(err, &pe) && pe.Code == "23514":
			done++
		case errors.As(err, &pe) && pe.Code == "40P01":
			deadlocks.Add(1)
		default:
			return err
		}
	}
	return nil
}
