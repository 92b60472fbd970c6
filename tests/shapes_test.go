package tests

import (
	"fmt"
	"testing"

	"github.com/pgrules/pgrules/internal/demo"
)

// TestTextsOfOneShape writes with the simple protocol, its values inlined,
// many texts of each shape (the engine analyses a shape once and gives the
// others its analysis with their own constants), and checks the result
// against the same statements run directly on the triggers.
func TestTextsOfOneShape(t *testing.T) {
	limits := "UPDATE customer SET credit_limit = 100000"
	c, admin, _, _ := rulesDB(t, demo.Schema+demo.Data+limits, nil)
	defineCreditRules(t, c)
	oracle := connect(t, shared.url("", "", shared.newDB(t)))
	scalar(t, oracle, demo.Schema+demo.Data+demo.Triggers+";"+limits)

	var script []string
	for i := 1; i <= 12; i++ {
		paid := []string{"true", "FALSE", "True"}[i%3]
		script = append(script,
			fmt.Sprintf("INSERT INTO orders (customer_id, notes) VALUES (%d, 'it''s order %d')", 1+i%2, i),
			fmt.Sprintf("INSERT INTO lineitem (order_id, product_id, quantity) VALUES (%d, %d, %d), (%d, 3, %d);", i, 1+i%2, i, i, 2*i),
			fmt.Sprintf("UPDATE lineitem SET quantity = quantity + %d WHERE order_id = %d AND product_id = %d", i%4, i, 1+i%2),
			fmt.Sprintf("UPDATE orders SET paid = %s WHERE id = %d", paid, i-i%2),
			fmt.Sprintf("UPDATE orders SET notes = 'note ''%d''' WHERE id = %d", i, i),
			fmt.Sprintf("UPDATE lineitem SET quantity = %d WHERE id = %d", i, []int64{2 * int64(i), 3000000000 + int64(i)}[i%2]),
			fmt.Sprintf("DELETE FROM lineitem WHERE order_id = %d AND quantity > %d", i, 2*i-1),
		)
	}
	for _, sql := range script {
		if e := pgError(t, c, sql); e != nil {
			t.Fatalf("%s through pgrules: %v", sql, e)
		}
		if e := pgError(t, oracle, sql); e != nil {
			t.Fatalf("%s with the triggers: %v", sql, e)
		}
	}
	state := `SELECT (SELECT string_agg(concat_ws(':', id, balance, unpaid_order_count), ' ' ORDER BY id) FROM customer)
		|| ' | ' || (SELECT string_agg(concat_ws(':', id, customer_id, amount_total, paid, notes), ' ' ORDER BY id) FROM orders)
		|| ' | ' || (SELECT string_agg(concat_ws(':', id, order_id, product_id, quantity, unit_price, amount), ' ' ORDER BY id) FROM lineitem)`
	if got, want := scalar(t, admin, state), scalar(t, oracle, state); got != want {
		t.Fatalf("through pgrules:\n%s\nwith the triggers:\n%s", got, want)
	}
}

// TestConstantsKept: an UPDATE whose constants cannot all be parameters
// keeps every one of them, whatever constants come after the one that
// stops it: a bit string (B'...' or X'...'), which has no text to pass,
// and a constant in a sub-select, where ORDER BY 1 is a position. Each is
// written as PostgreSQL writes it.
func TestConstantsKept(t *testing.T) {
	c, admin, _, _ := rulesDB(t, demo.Schema+demo.Data+"ALTER TABLE orders ADD flags bit(4); CREATE TABLE src (y int); INSERT INTO src VALUES (10), (30), (20)", nil)
	defineCreditRules(t, c)
	scalar(t, c, "INSERT INTO orders (customer_id) VALUES (1)")
	for _, tc := range []struct{ sql, want string }{
		{"UPDATE orders SET flags = B'1011' WHERE id = 1", "1011 "},
		{"UPDATE orders SET flags = X'A', notes = 'z' WHERE id = 1", "1010 z"},
		{"UPDATE orders SET notes = 'y', flags = B'0110' WHERE id = 1", "0110 y"},
		{"UPDATE orders SET notes = (SELECT y::text FROM src ORDER BY 1 DESC LIMIT 1), paid = false WHERE id = 1", "0110 30"},
	} {
		if e := pgError(t, c, tc.sql); e != nil {
			t.Fatalf("%s: %v", tc.sql, e)
		}
		if got := scalar(t, admin, "SELECT flags::text || ' ' || coalesce(notes, '') FROM orders WHERE id = 1"); got != tc.want {
			t.Fatalf("%s: flags and notes %q, want %q", tc.sql, got, tc.want)
		}
	}
}
