package rules

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/sqlparse"
)

// The fuzz target below runs its seeds (f.Add and testdata/fuzz/<name>/)
// as ordinary tests on every `go test`; `make fuzz-targets` (or
// go test -fuzz=FuzzStatementPath ./rules/) searches for new failures.
// Keep any input it reports under testdata/fuzz/<name>/.

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
	snap := ruletest.CreditSnapshot(ruletest.CreditRules()...)
	set := newRunSet(compiler.Compile(snap))
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
			if part.writeErr != nil && len(pgerr.Code(part.writeErr)) != 5 {
				t.Fatalf("analysing %q: %v (%T), not a *pgerr.Error", st.SQL, part.writeErr, part.writeErr)
			}
		}
	})
}
