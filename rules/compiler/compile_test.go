package compiler

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/shopspring/decimal"
)

func TestCompileCheckCredit(t *testing.T) {
	set := Compile(ruletest.CreditSnapshot(ruletest.CreditRules()...))
	if errs := set.Errors(); len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	var order []string
	for _, r := range set.Downstream(map[string]bool{"lineitem.unit_price": true}) {
		order = append(order, r.Name)
	}
	if want := []string{"lineitem.unit_price", "lineitem.amount", "orders.amount_total", "customer.balance"}; !slices.Equal(order, want) {
		t.Fatalf("downstream of the copy: %v, want %v", order, want)
	}
	for table, want := range map[string]bool{"public.lineitem": true, "public.product": true, "public.orders": true, "public.customer": true} {
		if set.Involves(table) != want {
			t.Errorf("Involves(%s) = %v", table, !want)
		}
	}
	if fk := set.Relationship("customer.balance"); fk == nil || fk.Name != "orders_customer_id_fkey" {
		t.Errorf("relationship of customer.balance: %v", fk)
	}
}

func TestReads(t *testing.T) {
	for _, tc := range []struct {
		rule *catalog.Rule
		want []string
	}{
		{&catalog.Rule{Name: "f", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * row.unit_price"},
			[]string{"lineitem.quantity", "lineitem.unit_price"}},
		{&catalog.Rule{Name: "f", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.order.customer.credit_limit - old.amount"},
			[]string{"lineitem.order_id", "orders.customer_id", "customer.credit_limit"}},
		{&catalog.Rule{Name: "s", Table: "public.customer", Kind: catalog.Sum, Column: "balance", SourceTable: "public.orders", SourceColumn: "amount_total", Filter: "not row.paid and row.notes != 'x'"},
			[]string{"orders.customer_id", "orders.amount_total", "orders.paid", "orders.notes"}},
		{&catalog.Rule{Name: "c", Table: "public.customer", Kind: catalog.Constraint, Expression: "row.balance >= 0", Message: "{row.name} owes {row.credit_limit}"},
			[]string{"customer.balance", "customer.name", "customer.credit_limit"}},
		{&catalog.Rule{Name: "p", Table: "public.lineitem", Kind: catalog.Copy, Column: "unit_price", SourceTable: "public.product", SourceColumn: "price"},
			[]string{"product.price", "lineitem.product_id"}},
	} {
		t.Run(tc.rule.Expression+tc.rule.Filter, func(t *testing.T) {
			set := Compile(ruletest.CreditSnapshot(tc.rule))
			if errs := set.Errors(); len(errs) > 0 {
				t.Fatal(errs)
			}
			var got []string
			for _, r := range set.Rule(tc.rule.Name).Reads {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("reads %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFormulaOrderAndCycles(t *testing.T) {
	f := func(name, col, expr string) *catalog.Rule {
		return &catalog.Rule{Name: name, Table: "public.lineitem", Kind: catalog.Formula, Column: col, Expression: expr}
	}
	// Defined out of order: the one that reads runs after the one it reads.
	set := Compile(ruletest.CreditSnapshot(f("amount", "amount", "row.quantity * row.unit_price"), f("price", "unit_price", "row.quantity * 2")))
	if got := set.Explain("public.lineitem"); len(got) != 2 || got[0].Rule != "price" || got[1].Rule != "amount" ||
		!slices.Equal(got[1].DependsOn, []string{"price"}) || !slices.Equal(got[0].UsedBy, []string{"amount"}) {
		t.Fatalf("explain: %+v", got)
	}
	// A formula reading its own target accumulates (rules-api.md §8): it
	// reads the value before the change, and is no cycle; one reading it
	// through another formula is.
	set = Compile(ruletest.CreditSnapshot(f("a", "amount", "row.amount + row.quantity"), f("b", "unit_price", "row.amount * 2")))
	if errs := set.Errors(); len(errs) > 0 || !set.Rule("a").Accumulates || set.Rule("b").Accumulates {
		t.Fatalf("an accumulating formula: %v, accumulates %v %v", errs, set.Rule("a").Accumulates, set.Rule("b").Accumulates)
	}
	for name, rules := range map[string][]*catalog.Rule{
		"self through another": {f("a", "amount", "row.amount + row.unit_price"), f("b", "unit_price", "row.amount")},
		"2-cycle":              {f("a", "amount", "row.unit_price"), f("b", "unit_price", "row.amount")},
		"3-cycle":              {f("a", "amount", "row.unit_price"), f("b", "unit_price", "row.quantity"), f("c", "quantity", "row.amount")},
	} {
		t.Run(name, func(t *testing.T) {
			set := Compile(ruletest.CreditSnapshot(rules...))
			for _, r := range rules {
				e := set.RuleError(r.Name)
				if e == nil || e.Code != pgerr.InvalidObjectDefinition || !strings.Contains(e.Message, "cycle") {
					t.Fatalf("rule %s: %v, want a cycle error", r.Name, e)
				}
				for _, other := range rules {
					if !strings.Contains(e.Message, other.Name) {
						t.Errorf("%q does not name %s", e.Message, other.Name)
					}
				}
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule *catalog.Rule
		code string
		says []string
	}{
		{"unknown column", &catalog.Rule{Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity *\n  row.unit_prise"}, pgerr.UndefinedColumn, []string{"unit_prise", "2:7"}},
		{"unknown name", &catalog.Rule{Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "quantity"}, pgerr.UndefinedColumn, []string{"quantity", "1:1"}},
		{"unknown parent", &catalog.Rule{Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.customer.balance"}, pgerr.UndefinedColumn, []string{"customer", "order, product"}},
		{"syntax", &catalog.Rule{Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * (1"}, pgerr.InvalidObjectDefinition, []string{"syntax", "1:"}},
		{"text plus number", &catalog.Rule{Table: "public.customer", Kind: catalog.Constraint, Expression: "row.name + 1 > 0", Message: "m"}, pgerr.DatatypeMismatch, []string{"text", "1:10"}},
		{"condition not boolean", &catalog.Rule{Table: "public.customer", Kind: catalog.Constraint, Expression: "row.balance", Message: "m"}, pgerr.DatatypeMismatch, []string{"boolean"}},
		{"formula type", &catalog.Rule{Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity > 1"}, pgerr.DatatypeMismatch, []string{"boolean", "amount"}},
		{"sum of text", &catalog.Rule{Table: "public.customer", Kind: catalog.Sum, Column: "balance", SourceTable: "public.orders", SourceColumn: "notes"}, pgerr.DatatypeMismatch, []string{"notes"}},
		{"count into text", &catalog.Rule{Table: "public.orders", Kind: catalog.Count, Column: "notes", SourceTable: "public.lineitem"}, pgerr.DatatypeMismatch, []string{"count"}},
		{"no relationship", &catalog.Rule{Table: "public.product", Kind: catalog.Sum, Column: "price", SourceTable: "public.orders", SourceColumn: "amount_total"}, pgerr.InvalidObjectDefinition, []string{"no foreign key"}},
		{"bad via", &catalog.Rule{Table: "public.orders", Kind: catalog.Sum, Column: "amount_total", SourceTable: "public.lineitem", SourceColumn: "amount", Via: "nope"}, pgerr.InvalidObjectDefinition, []string{"nope", "lineitem_order_id_fkey"}},
		{"unknown target", &catalog.Rule{Table: "public.orders", Kind: catalog.Formula, Column: "nope", Expression: "1"}, pgerr.UndefinedColumn, []string{"nope"}},
		{"message template", &catalog.Rule{Table: "public.customer", Kind: catalog.Constraint, Expression: "true", Message: "{row.nope}"}, pgerr.UndefinedColumn, []string{"message", "nope"}},
		{"set in a row event", &catalog.Rule{Table: "public.orders", Kind: catalog.Event, Timing: "row", Expression: `set("notes", "x")`}, pgerr.InvalidObjectDefinition, []string{"set", "early"}},
		{"post in a commit event", &catalog.Rule{Table: "public.orders", Kind: catalog.Event, Timing: "commit", Expression: `post("http://x", row.id)`}, pgerr.InvalidObjectDefinition, []string{"post"}},
		{"unknown function", &catalog.Rule{Table: "public.orders", Kind: catalog.Event, Timing: "row", Expression: `launch()`}, pgerr.UndefinedFunction, []string{"launch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.Name = "r_" + strings.ReplaceAll(tc.name, " ", "_")
			e := Compile(ruletest.CreditSnapshot(tc.rule)).RuleError(tc.rule.Name)
			if e == nil {
				t.Fatal("compiled")
			}
			if e.Code != tc.code || !strings.Contains(e.Message, tc.rule.Name) {
				t.Fatalf("%s %q, want %s naming the rule", e.Code, e.Message, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Message+" "+e.Hint, s) {
					t.Errorf("%q does not say %q", e.Message, s)
				}
			}
		})
	}
	t.Run("ambiguous relationship", func(t *testing.T) {
		snap := ruletest.CreditSnapshot(&catalog.Rule{Name: "r", Table: "public.customer", Kind: catalog.Sum, Column: "balance", SourceTable: "public.orders", SourceColumn: "amount_total"})
		second := &catalog.ForeignKey{Name: "billed_to", Child: "public.orders", Parent: "public.customer", Columns: []string{"id"}, ParentColumns: []string{"id"}, Accessor: "billed_to"}
		snap.Tables["public.orders"].Parents = append(snap.Tables["public.orders"].Parents, second)
		e := Compile(snap).RuleError("r")
		if e == nil || !strings.Contains(e.Message, "orders_customer_id_fkey") || !strings.Contains(e.Message, "billed_to") {
			t.Fatalf("%v, want both candidates listed", e)
		}
		snap.Rules[0].Via = "billed_to"
		if e := Compile(snap).RuleError("r"); e != nil {
			t.Fatalf("with via: %v", e)
		}
	})
	t.Run("derived twice", func(t *testing.T) {
		set := Compile(ruletest.CreditSnapshot(
			&catalog.Rule{Name: "a", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "1"},
			&catalog.Rule{Name: "b", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "2"}))
		if e := set.RuleError("b"); e == nil || !strings.Contains(e.Message, `"a"`) {
			t.Fatalf("%v", e)
		}
		if got := set.Broken("public.lineitem"); len(got) != 1 {
			t.Fatalf("broken: %v", got)
		}
	})
}

// TestDerivationTargetTypes: a sum, min, max or copy is refused when its
// target cannot hold the value without loss (rules-api.md §8).
func TestDerivationTargetTypes(t *testing.T) {
	agg := func(k catalog.RuleKind, target, col string) *catalog.Rule {
		return &catalog.Rule{Table: "public.customer", Kind: k, Column: target, SourceTable: "public.orders", SourceColumn: col}
	}
	cp := func(target, col string) *catalog.Rule {
		return &catalog.Rule{Table: "public.lineitem", Kind: catalog.Copy, Column: target, SourceTable: "public.product", SourceColumn: col}
	}
	for _, tc := range []struct {
		name string
		rule *catalog.Rule
		says []string // nil: compiles
	}{
		{"sum of numeric into text", agg(catalog.Sum, "name", "amount_total"), []string{"numeric(14,2)", "(text)"}},
		{"min of numeric into text", agg(catalog.Min, "name", "amount_total"), []string{"min", "numeric(14,2)", "(text)"}},
		{"max of an integer into text", agg(catalog.Max, "name", "customer_id"), []string{"max", "integer", "(text)"}},
		{"sum of numeric into an integer", agg(catalog.Sum, "unpaid_order_count", "amount_total"), []string{"numeric(14,2)", "integer"}},
		{"max of numeric into an integer", agg(catalog.Max, "unpaid_order_count", "amount_total"), []string{"numeric(14,2)", "integer"}},
		{"copy of numeric into an integer", cp("quantity", "price"), []string{"numeric(14,2)", "integer"}},
		{"copy of numeric into text", cp("note", "price"), []string{"numeric(14,2)", "text"}},
		{"copy of text into numeric", cp("unit_price", "name"), []string{"text", "numeric(14,2)"}},
		{"sum of numeric(14,4) into numeric(14,2)", agg(catalog.Sum, "balance", "weight"), []string{"numeric(14,4)", "numeric(14,2)", "without loss"}},
		{"sum of unconstrained numeric into numeric(14,2)", agg(catalog.Sum, "balance", "raw"), []string{"(numeric)", "numeric(14,2)"}},
		{"sum of integers into numeric(14,-2)", agg(catalog.Sum, "hundreds", "customer_id"), []string{"integer", "numeric(14,-2)"}},
		{"max of numeric(14,4) into numeric(14,2)", agg(catalog.Max, "balance", "weight"), nil},
		{"copy of numeric(14,4) into numeric(14,2)", cp("unit_price", "weight"), nil},
		{"sum of integers into numeric", agg(catalog.Sum, "balance", "customer_id"), nil},
		{"sum of numeric(14,2) into numeric(14,4)", agg(catalog.Sum, "weight_total", "amount_total"), nil},
		{"sum of numeric(14,2) into unconstrained numeric", agg(catalog.Sum, "raw_total", "amount_total"), nil},
		{"sum of unconstrained numeric into unconstrained numeric", agg(catalog.Sum, "raw_total", "raw"), nil},
		{"max of integers into an integer", agg(catalog.Max, "unpaid_order_count", "customer_id"), nil},
		{"min of text into text", agg(catalog.Min, "name", "notes"), nil},
		{"copy of numeric into numeric", cp("unit_price", "price"), nil},
		{"copy of an integer into numeric", cp("unit_price", "id"), nil},
		{"copy of text into text", cp("note", "name"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.Name = "r"
			e := Compile(ruletest.CreditSnapshot(tc.rule)).RuleError("r")
			if tc.says == nil {
				if e != nil {
					t.Fatal(e)
				}
				return
			}
			if e == nil || e.Code != pgerr.DatatypeMismatch || !strings.Contains(e.Message, `"r"`) {
				t.Fatalf("%v, want 42804 naming the rule", e)
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Message, s) {
					t.Errorf("%q does not say %q", e.Message, s)
				}
			}
		})
	}
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// TestArithmetic: decimals stay exact, integers and floats mix with them,
// nil propagates, division by zero is 22012.
func TestArithmetic(t *testing.T) {
	row := map[string]any{"id": 1, "quantity": 3, "unit_price": dec("0.10"), "amount": nil, "order_id": 1, "product_id": 1}
	for _, tc := range []struct {
		expr string
		want any
		code string
	}{
		{"0.1 + 0.2 == 0.3", true, ""},
		{"row.unit_price + 0.2 == 0.3", true, ""},
		{"row.quantity * row.unit_price", dec("0.3"), ""},
		{"row.quantity * row.unit_price == 0.3", true, ""},
		{"row.quantity + 1", 4, ""},
		{"row.quantity / 2", dec("1.5"), ""},
		{"1 / 3", dec("0.33333333333333333333"), ""},
		{"row.unit_price > 0.09 and row.unit_price < 1", true, ""},
		{"row.quantity == 3.0", true, ""},
		{"row.unit_price * 2.5", dec("0.25"), ""},
		{"row.amount + 1", nil, ""},
		{"row.amount == nil", true, ""},
		{"row.amount != nil", false, ""},
		{"row.amount > 0", false, ""},
		{"-row.unit_price", dec("-0.10"), ""},
		{"not (row.amount > 0)", true, ""},
		{"not row.order.paid", nil, ""}, // a NULL parent: NOT NULL is NULL
		{"not (row.amount == nil)", false, ""},
		{"!(row.quantity == 3)", false, ""},
		{"row.quantity % 2", 1, ""},
		{"row.unit_price / 0", nil, pgerr.DivisionByZero},
		{"row.quantity / (row.quantity - 3)", nil, pgerr.DivisionByZero},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			r := &catalog.Rule{Name: "x", Table: "public.lineitem", Kind: catalog.Constraint, Expression: tc.expr, Message: "m"}
			set := Compile(ruletest.CreditSnapshot(r))
			c := set.Rule("x")
			if e := set.RuleError("x"); e != nil {
				// Non-boolean results are checked as formulas instead.
				r.Kind, r.Column = catalog.Formula, "note"
				set = Compile(ruletest.CreditSnapshot(r))
				if e := set.RuleError("x"); e != nil {
					t.Fatal(e)
				}
				c = set.Rule("x")
			}
			got, err := c.Eval(Env{Row: row, Verb: "insert"})
			if tc.code != "" {
				if pgerr.Code(err) != tc.code || !strings.Contains(err.Error(), `"x"`) {
					t.Fatalf("error %v, want %s naming the rule", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := tc.want.(decimal.Decimal); ok {
				if g, ok := got.(decimal.Decimal); !ok || !g.Equal(d) {
					t.Fatalf("got %v (%T), want %s", got, got, d)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("got %v (%T), want %v", got, got, tc.want)
			}
		})
	}
}

func TestSumOfAThousandDimes(t *testing.T) {
	total := any(0)
	for range 1000 {
		var err error
		if total, err = Add(total, dec("0.10")); err != nil {
			t.Fatal(err)
		}
	}
	if !total.(decimal.Decimal).Equal(dec("100.00")) {
		t.Fatalf("1000 × 0.10 = %v", total)
	}
}

func TestMessage(t *testing.T) {
	set := Compile(ruletest.CreditSnapshot(ruletest.CreditRules()...))
	msg, err := set.Rule("credit_limit").Message(Env{Row: map[string]any{"balance": dec("510.00"), "credit_limit": dec("500.00")}})
	if err != nil || msg != "balance 510.00 exceeds credit limit 500.00" {
		t.Fatalf("%q, %v", msg, err)
	}
	ok, err := set.Rule("credit_limit").Holds(Env{Row: map[string]any{"balance": dec("510.00"), "credit_limit": dec("500.00")}})
	if err != nil || ok {
		t.Fatalf("holds = %v, %v", ok, err)
	}
	counts, err := set.Rule("customer.balance").Counts(map[string]any{"paid": true})
	if err != nil || counts {
		t.Fatalf("a paid order counts: %v %v", counts, err)
	}
}

func TestValues(t *testing.T) {
	for _, tc := range []struct {
		kind catalog.Kind
		text string
	}{
		{catalog.KindInt, "42"}, {catalog.KindDecimal, "81.00"}, {catalog.KindDecimal, "-0.000001"},
		{catalog.KindFloat, "0.5"}, {catalog.KindText, "héllo"}, {catalog.KindBool, "t"}, {catalog.KindBool, "f"},
		{catalog.KindTime, "2026-11-22 10:00:00+00:00"},
	} {
		v, err := ParseValue(tc.kind, []byte(tc.text))
		if err != nil {
			t.Fatalf("%s %q: %v", tc.kind, tc.text, err)
		}
		if got := string(FormatValue(v)); got != tc.text {
			t.Errorf("%s %q → %v → %q", tc.kind, tc.text, v, got)
		}
	}
	if v, _ := ParseValue(catalog.KindDecimal, nil); v != nil || FormatValue(nil) != nil {
		t.Error("NULL does not round-trip")
	}
}

func BenchmarkCompile1000Rules(b *testing.B) {
	snap := manyRules(1000)
	b.ResetTimer()
	for b.Loop() {
		Compile(snap)
	}
}

// manyRules is a snapshot with n formulas and constraints on one table.
func manyRules(n int) *catalog.Snapshot {
	var rules []*catalog.Rule
	for i := range n {
		rules = append(rules, &catalog.Rule{Name: fmt.Sprintf("c%d", i), Table: "public.lineitem", Kind: catalog.Constraint,
			Expression: fmt.Sprintf("row.quantity * row.unit_price <= %d.50 or row.order.customer.credit_limit > 0", i), Message: "m {row.id}"})
	}
	return ruletest.CreditSnapshot(rules...)
}

func BenchmarkEvalFormula(b *testing.B) {
	c := Compile(ruletest.CreditSnapshot(ruletest.CreditRules()...)).Rule("lineitem.amount")
	env := Env{Row: map[string]any{"quantity": 3, "unit_price": dec("25.50")}, Verb: "insert"}
	b.ReportAllocs()
	for b.Loop() {
		c.Eval(env)
	}
}

func BenchmarkEvalConstraint(b *testing.B) {
	c := Compile(ruletest.CreditSnapshot(ruletest.CreditRules()...)).Rule("credit_limit")
	env := Env{Row: map[string]any{"balance": dec("81.00"), "credit_limit": dec("1000.00")}, Verb: "update"}
	b.ReportAllocs()
	for b.Loop() {
		c.Holds(env)
	}
}

// TestNumericSpecials: numeric's NaN and infinities compute and compare as
// PostgreSQL's numeric does (SELECT 'NaN'::numeric * 0 is NaN,
// 'Infinity'::numeric - 'Infinity' is NaN, 1 / 'Infinity'::numeric is 0,
// 'NaN'::numeric = 'NaN' is true and NaN sorts after Infinity).
func TestNumericSpecials(t *testing.T) {
	for _, tc := range []struct {
		op   func(a, b any) (any, error)
		a, b any
		want string // FormatValue of the result, or the error's SQLSTATE
	}{
		{Add, nan, 1, "NaN"},
		{opMul, nan, 0, "NaN"},
		{Sub, dec("2.5"), nan, "NaN"},
		{Add, posInf, dec("-1e100"), "Infinity"},
		{Sub, posInf, posInf, "NaN"},
		{Add, negInf, negInf, "-Infinity"},
		{opMul, posInf, -2, "-Infinity"},
		{opMul, negInf, dec("0"), "NaN"},
		{opDiv, 1, posInf, "0"},
		{opDiv, posInf, -3, "-Infinity"},
		{opDiv, posInf, negInf, "NaN"},
		{opDiv, nan, 0, "NaN"},
		{opDiv, posInf, 0, pgerr.DivisionByZero},
		{opMod, 7, posInf, "7"},
		{opMod, posInf, 7, "NaN"},
		{Equal, nan, nan, "t"},
		{Equal, nan, posInf, "f"},
		{opGt, nan, posInf, "t"},
		{opLt, negInf, dec("-1e100"), "t"},
		{opGt, posInf, 1, "t"},
		{opLt, 1, nan, "t"},
		{opGe, dec("1"), nan, "f"},
	} {
		got, err := tc.op(tc.a, tc.b)
		out := string(FormatValue(got))
		if err != nil {
			out = pgerr.Code(err)
		}
		if out != tc.want {
			t.Errorf("%v, %v: %s, want %s", tc.a, tc.b, out, tc.want)
		}
	}
	if got, err := opNeg(negInf); err != nil || got != posInf {
		t.Errorf("-(-Infinity): %v %v", got, err)
	}
	for text, want := range map[string]any{"NaN": nan, "Infinity": posInf, "-Infinity": negInf} {
		if v, err := ParseValue(catalog.KindDecimal, []byte(text)); err != nil || v != want || string(FormatValue(v)) != text {
			t.Errorf("%s reads as %v (%v)", text, v, err)
		}
	}
}
