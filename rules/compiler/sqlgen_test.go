package compiler

import (
	"errors"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
)

// TestTranslate: the SQL of rule expressions over the rows of a table
// (set-based derivations and verification), golden.
func TestTranslate(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	for _, tc := range []struct{ expr, want string }{
		{"row.quantity * row.unit_price", `(t."quantity" * t."unit_price")`},
		{"row.order.customer.credit_limit - row.amount", `((SELECT p2."credit_limit" FROM "public"."orders" p1, "public"."customer" p2 WHERE t."order_id" = p1."id" AND p1."customer_id" = p2."id" FOR SHARE) - t."amount")`},
		{"row.amount / 2", `(t."amount"::numeric / 2)`},
		{"not row.order.paid and row.note != 'it'", `((NOT (SELECT p1."paid" FROM "public"."orders" p1 WHERE t."order_id" = p1."id" FOR SHARE)) AND (t."note" IS DISTINCT FROM 'it'))`},
		{`row.note + "it's"`, `(t."note" || 'it''s')`},
		{`"x\\y" + row.note`, `(E'x\\y' || t."note")`},
		{"row.amount ?? 0", `coalesce(t."amount", 0)`},
		{"row.quantity > 1 ? 1.50 : nil", `(CASE WHEN (t."quantity" > 1) THEN 1.5::numeric ELSE NULL END)`},
		{"-row.amount", `(-t."amount")`},
		{"+row.amount", `t."amount"`},
		{"!true || false", `((NOT TRUE) OR FALSE)`},
		{"row.quantity % 3 == 0", `((t."quantity" % 3) IS NOT DISTINCT FROM 0)`},
		{"row.quantity <= 2 && row.quantity >= 1 and row.quantity < 9", `(((t."quantity" <= 2) AND (t."quantity" >= 1)) AND (t."quantity" < 9))`},
		// Text joins with ||, whichever side the text is on: SQL has no
		// text + text.
		{"row.note + row.note", `(t."note" || t."note")`},
		{"row.order.notes + (row.note ?? '-')", `((SELECT p1."notes" FROM "public"."orders" p1 WHERE t."order_id" = p1."id" FOR SHARE) || coalesce(t."note", '-'))`},
		{"(row.quantity > 1 ? row.note : row.note) + row.note", `((CASE WHEN (t."quantity" > 1) THEN t."note" ELSE t."note" END) || t."note")`},
		{"row.quantity + row.order_id + row.unit_price", `((t."quantity" + t."order_id") + t."unit_price")`},
		{"row.product?.price", `(SELECT p1."price" FROM "public"."product" p1 WHERE t."product_id" = p1."id" FOR SHARE)`},
	} {
		g := &Translator{Snap: snap, Table: snap.Tables["public.lineitem"], Alias: "t", Rule: "r", Lock: "FOR SHARE"}
		got, err := g.Translate(tc.expr)
		if err != nil || got != tc.want {
			t.Errorf("%s:\n got %s (%v)\nwant %s", tc.expr, got, err, tc.want)
		}
	}
	// Without a lock, a parent's column is a plain subquery.
	g := &Translator{Snap: snap, Table: snap.Tables["public.lineitem"], Alias: "c", Rule: "r"}
	if got, _ := g.Translate("row.product.price"); got != `(SELECT p1."price" FROM "public"."product" p1 WHERE c."product_id" = p1."id")` {
		t.Errorf("unlocked parent read: %s", got)
	}
}

// TestTranslateRefuses: what SQL cannot compute is refused with 0A000
// naming the construct, and a name the table does not have with 42703;
// never a translation of something else.
func TestTranslateRefuses(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	for _, tc := range []struct{ expr, code, says string }{
		{"row.quantity ** 2", pgerr.FeatureNotSupported, "operator **"},
		{"row.note matches 'a'", pgerr.FeatureNotSupported, "operator matches"},
		{"len(row.note)", pgerr.FeatureNotSupported, "BuiltinNode"},
		{"row.note[0]", pgerr.FeatureNotSupported, "an index or method"},
		{"old.amount", pgerr.FeatureNotSupported, "a name other than row"},
		{"row.order", pgerr.UndefinedColumn, `no column "order"`},
		{"[1, 2]", pgerr.FeatureNotSupported, "ArrayNode"},
		{"row.quantity > 1 ? len(row.note) : 0", pgerr.FeatureNotSupported, "BuiltinNode"},
		{"-len(row.note)", pgerr.FeatureNotSupported, "BuiltinNode"},
		{"1 + len(row.note)", pgerr.FeatureNotSupported, "BuiltinNode"},
		{"row.nope", pgerr.UndefinedColumn, `no column "nope"`},
		{"row.order.nope", pgerr.UndefinedColumn, `no column "nope"`},
		{"row.customer.id", pgerr.UndefinedColumn, `no parent "customer"`},
		{"row.quantity *", pgerr.InvalidObjectDefinition, `rule "r"`},
	} {
		g := &Translator{Snap: snap, Table: snap.Tables["public.lineitem"], Alias: "t", Rule: "r"}
		got, err := g.Translate(tc.expr)
		var e *pgerr.Error
		if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Message, tc.says) {
			t.Errorf("%s: %q, %v; want %s saying %q", tc.expr, got, err, tc.code, tc.says)
		}
	}
}

// TestExact: the SQL of the expressions whose SQL gives the engine's value
// exactly (numbers, +, -, *, unary minus, ??), computed in numeric; every
// other expression is refused, for the engine to compute.
func TestExact(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	for _, tc := range []struct{ expr, want string }{
		{"row.quantity * row.unit_price", `(CAST(t."quantity" AS numeric) * CAST(t."unit_price" AS numeric))`},
		{"-row.quantity + 2", `((-CAST(t."quantity" AS numeric)) + CAST(2 AS numeric))`},
		{"+row.quantity", `(+CAST(t."quantity" AS numeric))`},
		{"row.amount ?? 1.5", `coalesce(CAST(t."amount" AS numeric), 1.5::numeric)`},
		{"nil ?? row.quantity", `coalesce(NULL, CAST(t."quantity" AS numeric))`},
		{"row.order.customer.balance - row.amount", `(CAST((SELECT p2."balance" FROM "public"."orders" p1, "public"."customer" p2 WHERE t."order_id" = p1."id" AND p1."customer_id" = p2."id" FOR SHARE) AS numeric) - CAST(t."amount" AS numeric))`},
		{"row.quantity / 2", ""},
		{"row.quantity % 2", ""},
		{"row.quantity > 1 ? 1 : 2", ""},
		{"!row.order.paid", ""},
		{"row.note", ""},
		{"row.order.paid", ""},
		{"row.product?.price", ""},
		{"'a'", ""},
		{"row.quantity *", ""},
	} {
		g := &Translator{Snap: snap, Table: snap.Tables["public.lineitem"], Alias: "t", Rule: "r", Lock: "FOR SHARE"}
		got, ok := g.Exact(tc.expr)
		if ok != (tc.want != "") || got != tc.want && ok {
			t.Errorf("%s:\n got %s (%v)\nwant %s", tc.expr, got, ok, tc.want)
		}
	}
}
