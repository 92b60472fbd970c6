package rules

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/rules/compiler"
)

// compileRun compiles the check-credit schema with rules and works out
// what the engine runs from it.
func compileRun(rules ...*catalog.Rule) *runSet {
	return newRunSet(compiler.Compile(ruletest.CreditSnapshot(rules...)))
}

// TestOneTripSQL: the derivations a write computes in its own statement,
// exactly as the engine would, and when an update recomputes each.
func TestOneTripSQL(t *testing.T) {
	set := compileRun(
		&catalog.Rule{Name: "lineitem.unit_price", Table: "public.lineitem", Kind: catalog.Copy, Column: "unit_price", SourceTable: "public.product", SourceColumn: "price"},
		&catalog.Rule{Name: "lineitem.q", Table: "public.lineitem", Kind: catalog.Formula, Column: "quantity", Expression: "-row.product_id + 2"},
		&catalog.Rule{Name: "lineitem.amount", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * row.unit_price - (row.order.customer.credit_limit ?? 0) + 1.5"},
	)
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	o := set.table("public.lineitem").oneTrip
	if o == nil || !o.inserts || !o.updates || !o.deletes {
		t.Fatalf("one trip: %+v", o)
	}
	wantExprs := []string{
		// A copy, cast to the column's type as coerce rounds it.
		`CAST((SELECT p."price" FROM "public"."product" p WHERE pgrules_l0."product_id" = p."id") AS numeric(14,2))`,
		// Integers compute as numeric, and the result is rounded back.
		`CAST(((-CAST(pgrules_l1."product_id" AS numeric)) + CAST(2 AS numeric)) AS integer)`,
		// A parent read two levels up, locked as the engine locks it.
		`CAST((((CAST(pgrules_l2."quantity" AS numeric) * CAST(pgrules_l2."unit_price" AS numeric)) - coalesce(CAST((SELECT p2."credit_limit" FROM "public"."orders" p1, "public"."customer" p2 WHERE pgrules_l2."order_id" = p1."id" AND p1."customer_id" = p2."id" FOR SHARE) AS numeric), CAST(0 AS numeric))) + 1.5::numeric) AS numeric(14,2))`,
	}
	wantConds := []string{
		`false OR pgrules_l0."product_id" IS DISTINCT FROM pgrules_l0.pgrules_o3`,
		`false OR pgrules_l1."product_id" IS DISTINCT FROM pgrules_l1.pgrules_o3`,
		`false OR pgrules_l2."quantity" IS DISTINCT FROM pgrules_l2.pgrules_o4 OR pgrules_l2."unit_price" IS DISTINCT FROM pgrules_l2.pgrules_o5 OR pgrules_l2."order_id" IS DISTINCT FROM pgrules_l2.pgrules_o2`,
	}
	if !slices.Equal(o.exprs, wantExprs) {
		t.Errorf("exprs:\n got %q\nwant %q", o.exprs, wantExprs)
	}
	if !slices.Equal(o.conds, wantConds) {
		t.Errorf("conds:\n got %q\nwant %q", o.conds, wantConds)
	}
}

// TestExactSQLRefuses: a formula whose SQL could give another value than
// the engine's evaluation (division's scale, a comparison's NULL, text, a
// float literal's type, an accumulating formula) keeps the write out of
// one trip, so the engine computes it.
func TestExactSQLRefuses(t *testing.T) {
	for _, tc := range []struct{ column, expr string }{
		{"amount", "row.quantity / 2"},
		{"amount", "row.quantity > 1 ? 1 : 2"},
		{"amount", "row.quantity % 2"},
		{"amount", "len(row.note)"},
		{"amount", "row.amount + 1"}, // accumulates
		{"amount", "row.product?.price"},
		{"note", "row.note + 'x'"},
		{"amount", "-len(row.note)"},
		{"amount", "row.quantity * len(row.note)"},
		{"amount", "len(row.note) * row.quantity"},
		{"amount", "row.order.paid ? 1 : 0"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			set := compileRun(&catalog.Rule{Name: "f", Table: "public.lineitem", Kind: catalog.Formula, Column: tc.column, Expression: tc.expr})
			if errs := set.Errors(); len(errs) > 0 {
				t.Fatalf("does not compile: %v", errs)
			}
			if o := set.table("public.lineitem").oneTrip; o != nil {
				t.Fatalf("in one trip as %q", o.exprs)
			}
		})
	}
	// The same formula with a translatable expression is in one trip:
	// the refusals above are the expression's.
	set := compileRun(&catalog.Rule{Name: "f", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * 2"})
	if set.table("public.lineitem").oneTrip == nil {
		t.Fatal("row.quantity * 2 is not in one trip")
	}
}

// TestAdjustmentSQL: the statements that adjust parents' sums and counts
// (additive: one parent, many, and the follow of a write) and their min
// and max (recomputed from the children when the extreme leaves), golden.
func TestAdjustmentSQL(t *testing.T) {
	set := compileRun(
		&catalog.Rule{Name: "orders.weight", Table: "public.orders", Kind: catalog.Max, Column: "weight", SourceTable: "public.lineitem", SourceColumn: "amount", Filter: "row.quantity > 0"},
		&catalog.Rule{Name: "orders.raw", Table: "public.orders", Kind: catalog.Min, Column: "raw", SourceTable: "public.lineitem", SourceColumn: "unit_price"},
		&catalog.Rule{Name: "customer.balance", Table: "public.customer", Kind: catalog.Sum, Column: "balance", SourceTable: "public.orders", SourceColumn: "amount_total", Filter: "not row.paid"},
		&catalog.Rule{Name: "customer.unpaid_order_count", Table: "public.customer", Kind: catalog.Count, Column: "unpaid_order_count", SourceTable: "public.orders"},
	)
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	minMax := set.table("public.lineitem").up[0]
	sums := set.table("public.orders").up[0]
	lock := `WITH l AS MATERIALIZED (SELECT p.ctid AS pgrules_ctid, p.* FROM "public"."orders" p WHERE (p."id") IN (SELECT CAST(k1 AS integer) FROM pgrules._unnest($1::text[]) AS k(k1)) ORDER BY p."id" FOR NO KEY UPDATE OF p)` + "\n"
	held := `WITH l AS MATERIALIZED (SELECT p.ctid AS pgrules_ctid, p.* FROM "public"."orders" p WHERE (p."id") IN (SELECT CAST(k1 AS integer) FROM pgrules._unnest($1::text[]) AS k(k1)) ORDER BY p."id")` + "\n"
	minMaxUpdate := `UPDATE "public"."orders" AS p SET "weight" = CASE WHEN d.r3 IS NOT NULL AND p."weight" IS NOT NULL AND CAST(d.r3 AS numeric(14,2)) >= p."weight" THEN (SELECT max(c."amount") FROM "public"."lineitem" c WHERE c."order_id" = p."id" AND coalesce((c."quantity" > 0), false)) ELSE greatest(p."weight", CAST(d.a2 AS numeric(14,2))) END, "raw" = CASE WHEN d.r5 IS NOT NULL AND p."raw" IS NOT NULL AND CAST(d.r5 AS numeric(14,2)) <= p."raw" THEN (SELECT min(c."unit_price") FROM "public"."lineitem" c WHERE c."order_id" = p."id") ELSE least(p."raw", CAST(d.a4 AS numeric(14,2))) END FROM l, ROWS FROM (pgrules._unnest($1::text[]), pgrules._unnest($2::text[]), pgrules._unnest($3::text[]), pgrules._unnest($4::text[]), pgrules._unnest($5::text[])) AS d(k1, a2, r3, a4, r5) WHERE p."id" = l."id" AND l."id" = CAST(d.k1 AS integer) RETURNING l.*, p.ctid, p.*`
	customer := strings.ReplaceAll
	sumsUpdate := `UPDATE "public"."customer" AS p SET "balance" = coalesce(p."balance", 0) + CAST(d.a2 AS numeric), "unpaid_order_count" = coalesce(p."unpaid_order_count", 0) + CAST(d.a3 AS numeric) FROM l, ROWS FROM (pgrules._unnest($1::text[]), pgrules._unnest($2::text[]), pgrules._unnest($3::text[])) AS d(k1, a2, a3) WHERE p."id" = l."id" AND l."id" = CAST(d.k1 AS integer) RETURNING l.*, p.ctid, p.*`
	for _, tc := range []struct{ name, got, want string }{
		{"min/max", minMax.sql, lock + minMaxUpdate},
		{"min/max held", minMax.held, held + minMaxUpdate},
		{"min/max one", minMax.one, ""},
		{"min/max follow", minMax.follow, ""},
		{"sum/count", sums.sql, customer(lock, `"orders"`, `"customer"`) + sumsUpdate},
		{"sum/count held", sums.held, customer(held, `"orders"`, `"customer"`) + sumsUpdate},
		{"sum/count one", sums.one, `UPDATE "public"."customer" AS p SET "balance" = coalesce(p."balance", 0) + CAST($2 AS numeric), "unpaid_order_count" = coalesce(p."unpaid_order_count", 0) + CAST($3 AS numeric) WHERE p."id" = CAST($1 AS integer) RETURNING p.ctid, p.*`},
		{"sum/count many", sums.many, `UPDATE "public"."customer" AS p SET "balance" = coalesce(p."balance", 0) + CAST(d.a1 AS numeric), "unpaid_order_count" = coalesce(p."unpaid_order_count", 0) + CAST(d.a2 AS numeric) FROM ROWS FROM (pgrules._unnest($1::text[]), pgrules._unnest($2::text[]), pgrules._unnest($3::text[])) AS d(k1, a1, a2) WHERE p."id" = CAST(d.k1 AS integer) RETURNING p.ctid, p.*`},
		{"sum/count follow", sums.follow, `UPDATE "public"."customer" AS p SET "balance" = coalesce(p."balance", 0) + d.a1, "unpaid_order_count" = coalesce(p."unpaid_order_count", 0) + d.a2 FROM (SELECT k1, sum(x.a1) AS a1, sum(x.a2) AS a2 FROM (` + "\n" +
			`  SELECT CAST(c."customer_id" AS integer), CAST(CASE WHEN coalesce((NOT c."paid"), false) THEN coalesce(c."amount_total", 0) ELSE 0 END AS numeric), CAST(1 AS numeric) FROM "public"."orders" c WHERE (c."id") IN (SELECT CAST(w.k1 AS integer) FROM pgrules._unnest($1::text[]) AS w(k1))` + "\n" +
			`  UNION ALL SELECT CAST(o.k1 AS integer), -CAST(o.a1 AS numeric), -CAST(o.a2 AS numeric) FROM ROWS FROM (pgrules._unnest($2::text[]), pgrules._unnest($3::text[]), pgrules._unnest($4::text[])) AS o(k1, a1, a2)) x(k1, a1, a2)` + "\n" +
			` GROUP BY k1 HAVING sum(x.a1) <> 0 OR sum(x.a2) <> 0) d WHERE p."id" = d.k1 RETURNING d.a1, d.a2, p.ctid, p.*`},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
	}
	if minMax.err != nil || sums.err != nil || minMax.additive || !sums.additive {
		t.Errorf("errors %v %v, additive %v %v", minMax.err, sums.err, minMax.additive, sums.additive)
	}
}

// TestSelectByKey: the query of rows by keys, with scalar parameters for
// one key and text arrays (NULL elements included) for many.
func TestSelectByKey(t *testing.T) {
	tab := ruletest.CreditSnapshot().Tables["public.lineitem"]
	for _, tc := range []struct {
		cols   []string
		keys   [][][]byte
		lock   string
		want   string
		params []string
	}{
		{[]string{"order_id"}, [][][]byte{{[]byte("7")}}, "FOR SHARE",
			`SELECT p.ctid, p.* FROM "public"."lineitem" p WHERE p."order_id" = CAST($1 AS integer) FOR SHARE OF p`, []string{"7"}},
		{[]string{"order_id", "product_id"}, [][][]byte{{[]byte("7")}, {[]byte("1")}}, "",
			`SELECT p.ctid, p.* FROM "public"."lineitem" p WHERE p."order_id" = CAST($1 AS integer) AND p."product_id" = CAST($2 AS integer)`, []string{"7", "1"}},
		{[]string{"order_id", "product_id"}, [][][]byte{{[]byte("7"), []byte("8")}, {[]byte("1"), nil}}, "FOR UPDATE",
			`SELECT p.ctid, p.* FROM "public"."lineitem" p WHERE (p."order_id", p."product_id") IN (SELECT CAST(k1 AS integer), CAST(k2 AS integer) FROM ROWS FROM (pgrules._unnest($1::text[]), pgrules._unnest($2::text[])) AS k(k1, k2)) ORDER BY p."order_id", p."product_id" FOR UPDATE OF p`,
			[]string{`{"7","8"}`, `{"1",NULL}`}},
		{[]string{"id"}, [][][]byte{{[]byte("7"), []byte("8")}}, "",
			`SELECT p.ctid, p.* FROM "public"."lineitem" p WHERE (p."id") IN (SELECT CAST(k1 AS integer) FROM pgrules._unnest($1::text[]) AS k(k1))`, []string{`{"7","8"}`}},
	} {
		sql, params := selectByKey(tab, tc.cols, tc.keys, tc.lock)
		var ps []string
		for _, p := range params {
			ps = append(ps, string(p))
		}
		if sql != tc.want || !slices.Equal(ps, tc.params) {
			t.Errorf("%v %q:\n got %s %q\nwant %s %q", tc.cols, tc.keys, sql, ps, tc.want, tc.params)
		}
	}
}

// TestEngineSQLHelpers: a qualified name from the catalog quoted part by
// part, and the planner-friendly unnest of key arrays.
func TestEngineSQLHelpers(t *testing.T) {
	if got := quoteIdentQualified("my schema.T"); got != `"my schema"."T"` {
		t.Errorf("quoteIdentQualified: %s", got)
	}
	if got := unnestFrom("$1"); got != "pgrules._unnest($1)" {
		t.Errorf("unnestFrom one: %s", got)
	}
	if got := unnestFrom("$1", "$2"); got != "ROWS FROM (pgrules._unnest($1), pgrules._unnest($2))" {
		t.Errorf("unnestFrom two: %s", got)
	}
}
