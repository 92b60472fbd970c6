package rules

import (
	"fmt"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
)

// TestBackfillSQL: the statements that compute a new derivation for the
// rows a table has already, one per kind of rule, golden.
func TestBackfillSQL(t *testing.T) {
	rules := append(ruletest.CreditRules(),
		&catalog.Rule{Name: "orders.weight", Table: "public.orders", Kind: catalog.Max, Column: "weight", SourceTable: "public.lineitem", SourceColumn: "amount", Filter: "row.quantity > 0"},
		&catalog.Rule{Name: "orders.raw", Table: "public.orders", Kind: catalog.Min, Column: "raw", SourceTable: "public.lineitem", SourceColumn: "unit_price"},
		&catalog.Rule{Name: "lineitem.note", Table: "public.lineitem", Kind: catalog.Formula, Column: "note", Expression: "row.order.customer.name + ': ' + row.note"},
		&catalog.Rule{Name: "product.weight", Table: "public.product", Kind: catalog.Formula, Column: "weight", Expression: "len(row.name)"},
	)
	snap := ruletest.CreditSnapshot(rules...)
	set := compiler.Compile(snap)
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	want := map[string]string{
		// A copy fills only the rows without a value: those are history.
		"lineitem.unit_price": `UPDATE "public"."lineitem" t SET "unit_price" = (SELECT p."price" FROM "public"."product" p WHERE t."product_id" = p."id") WHERE t."unit_price" IS NULL`,
		"lineitem.amount":     `UPDATE "public"."lineitem" t SET "amount" = (t."quantity" * t."unit_price")`,
		"orders.amount_total": `UPDATE "public"."orders" t SET "amount_total" = (SELECT coalesce(sum(c."amount"), 0) FROM "public"."lineitem" c WHERE c."order_id" = t."id")`,
		// A filter's NULL counts the row out, as the engine's does.
		"customer.balance":            `UPDATE "public"."customer" t SET "balance" = (SELECT coalesce(sum(c."amount_total"), 0) FROM "public"."orders" c WHERE c."customer_id" = t."id" AND coalesce((NOT c."paid"), false))`,
		"customer.unpaid_order_count": `UPDATE "public"."customer" t SET "unpaid_order_count" = (SELECT count(*) FROM "public"."orders" c WHERE c."customer_id" = t."id" AND coalesce((NOT c."paid"), false))`,
		"orders.weight":               `UPDATE "public"."orders" t SET "weight" = (SELECT max(c."amount") FROM "public"."lineitem" c WHERE c."order_id" = t."id" AND coalesce((c."quantity" > 0), false))`,
		"orders.raw":                  `UPDATE "public"."orders" t SET "raw" = (SELECT min(c."unit_price") FROM "public"."lineitem" c WHERE c."order_id" = t."id")`,
		"lineitem.note":               `UPDATE "public"."lineitem" t SET "note" = (((SELECT p2."name" FROM "public"."orders" p1, "public"."customer" p2 WHERE t."order_id" = p1."id" AND p1."customer_id" = p2."id") || ': ') || t."note")`,
	}
	for _, r := range rules {
		got, err := backfillSQL(snap, set, r)
		switch r.Name {
		case "credit_limit":
			// A constraint derives nothing.
			if pgerr.Code(err) != pgerr.InvalidObjectDefinition || got != "" {
				t.Errorf("%s: %q, %v", r.Name, got, err)
			}
		case "product.weight":
			// Refused, rather than computed as something else.
			if pgerr.Code(err) != pgerr.FeatureNotSupported || got != "" {
				t.Errorf("%s: %q, %v; want 0A000", r.Name, got, err)
			}
		default:
			if err != nil || got != want[r.Name] {
				t.Errorf("%s:\n got %s (%v)\nwant %s", r.Name, got, err, want[r.Name])
			}
		}
	}
	if _, err := backfillSQL(snap, set, &catalog.Rule{Name: "x", Table: "public.nope", Kind: catalog.Formula, Column: "c", Expression: "1"}); pgerr.Code(err) != pgerr.UndefinedTable {
		t.Errorf("no table: %v", err)
	}
	if a, b := fingerprint(rules[0]), fingerprint(rules[1]); a == b || a != fingerprint(ruletest.CreditRules()[0]) {
		t.Errorf("fingerprints %q %q", a, b)
	}
}

// TestChildrenSQL: the rows of a child reached from its grandparents'
// keys, locked in key order; and the distinct keys of rows.
func TestChildrenSQL(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	lineitem := snap.Tables["public.lineitem"]
	path := []*catalog.ForeignKey{lineitem.Parents[0], snap.Tables["public.orders"].Parents[0]}
	sql, params := childrenSQL(snap, lineitem, path, [][][]byte{texts("10", "11")})
	if want := `SELECT c.ctid, c.* FROM "public"."lineitem" c JOIN "public"."orders" p1 ON c."order_id" = p1."id" WHERE (p1."customer_id") IN (SELECT CAST(k1 AS integer) FROM pgrules._unnest($1::text[]) AS k(k1)) ORDER BY c."id" FOR NO KEY UPDATE OF c`; sql != want {
		t.Errorf("two levels:\n got %s\nwant %s", sql, want)
	}
	if got := fmt.Sprintf("%s", params); got != `[{"10","11"}]` {
		t.Errorf("params: %s", got)
	}
	sql, _ = childrenSQL(snap, lineitem, path[:1], [][][]byte{texts("1")})
	if want := `SELECT c.ctid, c.* FROM "public"."lineitem" c WHERE (c."order_id") IN (SELECT CAST(k1 AS integer) FROM pgrules._unnest($1::text[]) AS k(k1)) ORDER BY c."id" FOR NO KEY UPDATE OF c`; sql != want {
		t.Errorf("one level:\n got %s\nwant %s", sql, want)
	}
	rows := []*row{{text: texts("1", "a")}, {text: texts("2", "NULL")}, {text: texts("1", "a")}, {text: texts("3", "b")}}
	if got := fmt.Sprintf("%q", distinctKeys(rows, []int{0, 1})); got != `[["1" "3"] ["a" "b"]]` {
		t.Errorf("distinctKeys: %s", got)
	}
	if got := distinctKeys(rows[1:2], []int{1}); got != nil {
		t.Errorf("distinctKeys of NULLs: %q", got)
	}
}
