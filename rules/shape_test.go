package rules

import (
	"reflect"
	"testing"

	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/rules/compiler"
)

// TestShapes checks that a text of a learnt shape gets, without being
// parsed, the very analysis a parse of it would give.
func TestShapes(t *testing.T) {
	newCompiled := func() *compiled {
		snap := ruletest.CreditSnapshot(ruletest.CreditRules()...)
		return &compiled{snap: snap, set: newRunSet(compiler.Compile(snap))}
	}
	s := &session{}
	for _, tc := range []struct {
		first, second string
		derived       bool
	}{
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3)", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (10, 20, 30)", true},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3), (4, 5, 6)", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (7, 8, 9), (0, 0, 0)", true},
		{"INSERT INTO lineitem (order_id, product_id, quantity, note) VALUES (1, 2, 3, 'a');  ", "INSERT INTO lineitem (order_id, product_id, quantity, note) VALUES (1, 2, 3, 'it''s');  ", true},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3);", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (4, 5, 6)", true},
		{"UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = 5 AND product_id = 1", "UPDATE lineitem SET quantity = quantity + 2 WHERE order_id = 6 AND product_id = 3", true},
		{"UPDATE orders SET paid = true WHERE id = 5", "UPDATE orders SET paid = FALSE WHERE id = 7", true},
		{"UPDATE customer SET name = 'Alice', credit_limit = 10.5 WHERE id = 1", "UPDATE customer SET name = 'O''Brien', credit_limit = 2 WHERE id = 2", false},
		{"UPDATE customer SET name = 'Alice', credit_limit = 10.5 WHERE id = 1", "UPDATE customer SET name = 'O''Brien', credit_limit = 7.25 WHERE id = 2", true},
		{"UPDATE lineitem SET quantity = 5 WHERE id = 1", "UPDATE lineitem SET quantity = 5 WHERE id = 3000000000", false},
		{"DELETE FROM lineitem WHERE order_id = 5 AND quantity > 2", "DELETE FROM lineitem WHERE order_id = 8 AND quantity > 0", true},
		{"DELETE FROM lineitem WHERE note = 'x'", "DELETE FROM lineitem WHERE note = 'y'", false},
		{"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (-1, 2, 3)", "INSERT INTO lineitem (order_id, product_id, quantity) VALUES (-4, 5, 6)", false},
		{"UPDATE customer SET name = 'a' WHERE name = 'b'", "UPDATE customer SET name = 'c' WHERE name = 'd'", false},
		{"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 2, 3) ON CONFLICT (id) DO UPDATE SET quantity = 1",
			"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (2, 1, 2, 3) ON CONFLICT (id) DO UPDATE SET quantity = 2", false},
		{"INSERT INTO lineitem (order_id, product_id, quantity, note) VALUES (1, 2, 3, 'a')", "INSERT INTO lineitem (order_id, product_id, quantity, note) VALUES (1, 2, 3, 'pgrules.trace')", false},
	} {
		t.Run(tc.second, func(t *testing.T) {
			c := newCompiled()
			p := s.plan(c, tc.first)
			p.analyse(c, tc.first)
			if p.writeErr != nil {
				t.Fatal(p.writeErr)
			}
			got := s.plan(c, tc.second)
			if derived := got.src == tc.second && got.tree == nil && got.write != nil; derived != tc.derived {
				t.Fatalf("derived = %v, want %v", derived, tc.derived)
			}
			got.analyse(c, tc.second)
			fresh := newCompiled()
			want := s.plan(fresh, tc.second)
			want.analyse(fresh, tc.second)
			if got.writeErr != nil || want.writeErr != nil {
				t.Fatal(got.writeErr, want.writeErr)
			}
			gw, ww := *got.write, *want.write
			gw.literalAt, ww.literalAt = nil, nil
			if !reflect.DeepEqual(gw, ww) {
				t.Errorf("derived analysis\n%+v\nwant\n%+v", gw, ww)
			}
			if !reflect.DeepEqual(got.parts[0].Writes, want.parts[0].Writes) || got.parts[0].SQL != want.parts[0].SQL || got.intercept != want.intercept {
				t.Errorf("derived plan %+v, want %+v", got.parts, want.parts)
			}
		})
	}
}
