package rules

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/sqlparse"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz/<name>/)
// as ordinary tests on every `go test`; `make fuzz-targets` (or
// go test -fuzz=FuzzStatementPath ./rules/) searches for new failures.
// Keep any input it reports under testdata/fuzz/<name>/.

// isPgError reports whether err is a *pgerr.Error with a SQLSTATE.
func isPgError(err error) bool {
	var e *pgerr.Error
	return errors.As(err, &e) && len(e.Code) == 5
}

// FuzzStatementPath: whatever a client sends to a database with the
// check-credit rules, planning it (the cheap checks, the parse, the split
// into statements) and analysing the write of an intercepted statement
// (which rewrites and deparses it) never panics or crashes; a text the
// parser refuses is a syntax error (left to the server) or 54001 (refused,
// hence intercepted); an analysis fails only with a *pgerr.Error.
func FuzzStatementPath(f *testing.F) {
	for _, s := range []string{
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3), (4, 5, 6) RETURNING amount",
		"UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = 5 AND product_id = 1",
		"UPDATE orders SET paid = true FROM customer c WHERE c.id = orders.customer_id AND c.name = 'Alice'",
		"DELETE FROM lineitem l USING orders o WHERE o.id = l.order_id AND o.paid RETURNING l.*",
		"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 2, 3) ON CONFLICT (id) DO UPDATE SET quantity = excluded.quantity + 1 WHERE lineitem.note IS NULL",
		"WITH n AS (INSERT INTO orders (customer_id) VALUES (1) RETURNING id) INSERT INTO lineitem (order_id, product_id, quantity) SELECT id, 1, 2 FROM n",
		"INSERT INTO lineitem (order_id, product_id, quantity) SELECT o.id, 1, 1 FROM orders o WHERE NOT o.paid",
		"UPDATE lineitem SET (quantity, note) = (SELECT 2, 'x') WHERE id = $1",
		"MERGE INTO lineitem l USING (SELECT 1 AS id) s ON l.id = s.id WHEN MATCHED THEN UPDATE SET quantity = 100",
		"TRUNCATE lineitem",
		"SELECT pgrules.formula('lineitem.amount', 'row.quantity * row.unit_price')",
		"SET pgrules.trace = on",
		"BEGIN; INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 3); SAVEPOINT a; COMMIT",
		"EXPLAIN ANALYZE UPDATE customer SET credit_limit = 1",
		"SELECT * FROM lineitem",
		"UPDATE lineitem SET quantity = " + strings.Repeat("0+", 2000) + "quantity WHERE id = 1",
	} {
		f.Add(s)
	}
	snap := creditSnapshot(creditRules()...)
	set := Compile(snap)
	f.Fuzz(func(t *testing.T, sql string) {
		c := &compiled{snap: snap, set: set}
		s := &session{}
		p := s.plan(c, sql)
		if p.parseErr != nil {
			var syntax *sqlparse.SyntaxError
			tooDeep := pgerr.Code(p.parseErr) == pgerr.StatementTooComplex
			if !tooDeep && utf8.ValidString(sql) && !errors.As(p.parseErr, &syntax) {
				t.Fatalf("parse: %v (%T), neither a syntax error nor 54001", p.parseErr, p.parseErr)
			}
			if tooDeep && !p.intercept {
				t.Fatal("a text too deep to analyse is not intercepted: it would reach the server unanalysed")
			}
			return
		}
		for _, st := range p.parts {
			part := s.plan(c, st.SQL)
			if part.parseErr != nil {
				t.Fatalf("statement %q of the text does not parse alone: %v", st.SQL, part.parseErr)
			}
			if !part.intercept || part.define || part.trace || part.txControl || len(part.parts) != 1 {
				continue
			}
			part.analyse(c, st.SQL)
			if part.writeErr != nil && !isPgError(part.writeErr) {
				t.Fatalf("analysing %q: %v (%T), not a *pgerr.Error", st.SQL, part.writeErr, part.writeErr)
			}
		}
	})
}

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
		set := Compile(creditSnapshot(r))
		if err := set.RuleError("x"); err != nil {
			if !isPgError(err) {
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
			if err != nil && !isPgError(err) {
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
			err := Compile(creditSnapshot(r)).RuleError("x")
			if err == nil || err.Code != pgerr.StatementTooComplex || err.Hint == "" {
				t.Fatalf("compile: %v, want 54001 with a hint", err)
			}
		})
	}
	// Within the limits, strings and comments do not count.
	src := "(row.quantity * row.unit_price) // " + strings.Repeat("(-", 30000) + "\n + " + `"` + strings.Repeat("((", 30000) + `" ?? 0`
	r := &catalog.Rule{Name: "x", Table: "public.lineitem", Kind: catalog.Constraint, Expression: src + " != nil", Message: "m"}
	if err := Compile(creditSnapshot(r)).RuleError("x"); err != nil && err.Code == pgerr.StatementTooComplex {
		t.Fatalf("compile: %v", err)
	}
}
