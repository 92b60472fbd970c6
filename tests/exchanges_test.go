package tests

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestExchanges holds the common write forms to the exchanges with the
// server the trace reports for them. The count is the proxy's, of every
// write to the server that awaits an answer while the statement runs, so
// the client's own messages sent in front of the engine's statement count
// too: in a transaction block, each statement of the order transaction
// costs the same in the simple protocol, with unnamed statements and with
// prepared ones, and its BEGIN and the client's Parse, Bind and Describe
// cost nothing of their own, once the session has seen the statement.
func TestExchanges(t *testing.T) {
	c, notices := creditTraced(t)
	ctx := context.Background()
	scalar(t, c, "SET pgrules.trace = on")
	trips := regexp.MustCompile(`^(\d+) round trip\(s\) to the server$`)
	// counted is what the trace reported for the statements run by do.
	counted := func(do func()) string {
		t.Helper()
		*notices = nil
		do()
		var out []string
		for _, n := range *notices {
			if m := trips.FindStringSubmatch(n); m != nil {
				out = append(out, m[1])
			}
		}
		return strings.Join(out, " ")
	}
	steps := []struct{ sql, params string }{
		{"INSERT INTO orders (id, customer_id) VALUES (%d, 1)", ""},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (%d, 1, 2)", ""},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (%d, 2, 1)", ""},
		{"UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = %d AND product_id = 1", ""},
		{"UPDATE orders SET paid = true WHERE id = %d", ""},
	}
	const want = "1 1 1 1 1"
	forms := []struct {
		name string
		run  func(order int)
	}{
		{"simple", func(order int) {
			for _, st := range steps {
				scalar(t, c, fmt.Sprintf(st.sql, order))
			}
		}},
		{"extended", func(order int) {
			for _, st := range steps {
				sql := strings.Replace(st.sql, "%d", "$1", 1)
				if rr := c.ExecParams(ctx, sql, [][]byte{[]byte(fmt.Sprint(order))}, nil, nil, nil).Read(); rr.Err != nil {
					t.Fatalf("%s: %v", sql, rr.Err)
				}
			}
		}},
		{"prepared", func(order int) {
			for i, st := range steps {
				name := fmt.Sprintf("s%d_%d", order, i)
				if _, err := c.Prepare(ctx, name, strings.Replace(st.sql, "%d", "$1", 1), nil); err != nil {
					t.Fatal(err)
				}
			}
			// Executed once prepared: Bind, Execute and Sync alone.
			for i := range steps {
				name := fmt.Sprintf("s%d_%d", order, i)
				if rr := c.ExecPrepared(ctx, name, [][]byte{[]byte(fmt.Sprint(order))}, nil, nil).Read(); rr.Err != nil {
					t.Fatalf("%s: %v", name, rr.Err)
				}
			}
		}},
	}
	for i, f := range forms {
		// The first order of a form also reads the session's search_path
		// and the types of the client's parameters, once.
		for round, order := range []int{100 + 2*i, 101 + 2*i} {
			scalar(t, c, "BEGIN")
			got := counted(func() { f.run(order) })
			scalar(t, c, "COMMIT")
			if round == 1 && got != want {
				t.Errorf("%s, in a transaction block: the trace reports %q round trips, want %q", f.name, got, want)
			}
		}
	}
	// An autocommit write: its BEGIN rides with the engine's statement,
	// and the COMMIT the proxy sends after it is reported at commit.
	for round := range 2 {
		got := counted(func() {
			if rr := c.ExecParams(ctx, "UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = $1", [][]byte{[]byte("100")}, nil, nil, nil).Read(); rr.Err != nil {
				t.Fatal(rr.Err)
			}
		})
		commit := slices.Contains(*notices, "1 round trip(s) to the server at commit")
		if round == 1 && (got != "1" || !commit) {
			t.Errorf("autocommit: the trace reports %q round trips, and at commit: %v; want 1 and 1:\n%s", got, commit, strings.Join(*notices, "\n"))
		}
	}
}
