package compiler

import (
	"strings"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
)

// The fuzz target below runs its seeds (f.Add and testdata/fuzz/<name>/)
// as ordinary tests on every `go test`; `make fuzz-targets` (or
// go test -fuzz=FuzzCompileExpression ./rules/compiler/) searches for new
// failures. Keep any input it reports under testdata/fuzz/<name>/.

// FuzzCompileExpression: any expression, as a formula, a constraint (with
// a message), an aggregate's filter or an event's action on the
// check-credit schema, either compiles or is refused with a *pgerr.Error;
// what compiles evaluates on a row, with NULLs or without, to a value or
// a *pgerr.Error, without panicking.
func FuzzCompileExpression(f *testing.F) {
	for _, s := range []string{
		"row.quantity * row.unit_price",
		"row.balance <= row.credit_limit",
		"not row.paid",
		"row.order.customer.credit_limit - row.amount",
		"row.quantity / (row.quantity - 3)",
		`row.note ?? "none"`,
		`set("note", "x")`,
		`sql("UPDATE orders SET notes = 'x' WHERE id = $1", row.order_id)`,
		`post("http://example.com/hook", {"id": row.id})`,
		"1..1000000000",
		"map(1..10, # * 2)",
		`upper(row.note) + "x"`,
		"row.unit_price > 0.09 and row.unit_price < 1 ? 1 : 2",
		"verb == 'update' && old.quantity != row.quantity",
		"-row.unit_price % 0",
	} {
		for kind := range uint8(4) {
			f.Add(s, kind)
		}
	}
	full := map[string]any{"id": 1, "order_id": 1, "product_id": 2, "quantity": 3, "unit_price": dec("0.10"), "amount": dec("0.30"), "note": "n",
		"order": map[string]any{"id": 1, "customer_id": 1, "amount_total": dec("0.30"), "paid": false, "notes": nil,
			"customer": map[string]any{"id": 1, "name": "Alice", "balance": dec("0.30"), "credit_limit": dec("1000"), "unpaid_order_count": 1}},
		"product": map[string]any{"id": 2, "name": "widget", "price": dec("0.10")}}
	nulls := map[string]any{"id": 1, "order_id": nil, "product_id": nil, "quantity": nil, "unit_price": nil, "amount": nil, "note": nil, "order": nil, "product": nil}
	f.Fuzz(func(t *testing.T, expression string, kind uint8) {
		r := &catalog.Rule{Name: "x", Table: "public.lineitem"}
		switch kind % 4 {
		case 0:
			r.Kind, r.Column, r.Expression = catalog.Formula, "note", expression
		case 1:
			r.Kind, r.Expression, r.Message = catalog.Constraint, expression, "{"+expression+"} is wrong"
		case 2:
			r.Table, r.Kind, r.Column, r.SourceTable, r.Filter = "public.orders", catalog.Count, "amount_total", "public.lineitem", expression
		case 3:
			r.Kind, r.Timing, r.Expression = catalog.Event, "row", expression
		}
		set := Compile(ruletest.CreditSnapshot(r))
		if err := set.RuleError("x"); err != nil {
			if len(pgerr.Code(err)) != 5 {
				t.Fatalf("compile: %v, not a *pgerr.Error", err)
			}
			return
		}
		c := set.Rule("x")
		for _, row := range []map[string]any{full, nulls} {
			env := Env{Row: row, Old: row, Verb: "update"}
			var err error
			switch kind % 4 {
			case 1:
				if _, err = c.Holds(env); err == nil {
					_, err = c.Message(env)
				}
			case 2:
				_, err = c.Counts(row)
			default:
				_, err = c.Eval(env)
			}
			if err != nil && len(pgerr.Code(err)) != 5 {
				t.Fatalf("evaluating: %v (%T), not a *pgerr.Error", err, err)
			}
		}
	})
}

// TestDeepExpressionsAreRefused: expressions nested beyond what the
// expression parser survives are refused with 54001, not parsed.
func TestDeepExpressionsAreRefused(t *testing.T) {
	for name, src := range map[string]string{
		"minus":    strings.Repeat("-", 1_000_000) + "1",
		"not":      strings.Repeat("not ", 300_000) + "true",
		"brackets": strings.Repeat("(", 1_000_000) + "1" + strings.Repeat(")", 1_000_000),
		"arrays":   strings.Repeat("[", 600) + "1" + strings.Repeat("]", 600),
		"chain":    strings.Repeat("row.quantity + ", 20_001) + "1",
	} {
		t.Run(name, func(t *testing.T) {
			r := &catalog.Rule{Name: "x", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: src}
			err := Compile(ruletest.CreditSnapshot(r)).RuleError("x")
			if err == nil || err.Code != pgerr.StatementTooComplex || err.Hint == "" {
				t.Fatalf("compile: %v, want 54001 with a hint", err)
			}
		})
	}
	// Within the limits, strings and comments do not count.
	src := "(row.quantity * row.unit_price) // " + strings.Repeat("(-", 30000) + "\n + " + `"` + strings.Repeat("((", 30000) + `" ?? 0`
	r := &catalog.Rule{Name: "x", Table: "public.lineitem", Kind: catalog.Constraint, Expression: src + " != nil", Message: "m"}
	if err := Compile(ruletest.CreditSnapshot(r)).RuleError("x"); err != nil && err.Code == pgerr.StatementTooComplex {
		t.Fatalf("compile: %v", err)
	}
}
