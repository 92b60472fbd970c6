package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/shopspring/decimal"
)

// texts is a row's column texts from strings, "NULL" for NULL.
func texts(vals ...string) [][]byte {
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v != "NULL" {
			out[i] = []byte(v)
		}
	}
	return out
}

// TestTextArray: the engine's arrays of text read back as written, quotes,
// backslashes, commas, braces, empty strings and NULLs included.
func TestTextArray(t *testing.T) {
	for _, tc := range []struct {
		vals [][]byte
		want string
	}{
		{nil, `{}`},
		{texts("a"), `{"a"}`},
		{texts("a", "NULL", ""), `{"a",NULL,""}`},
		{texts(`say "hi"`, `C:\dir`, "a,b", "{x}", "NULL "), `{"say \"hi\"","C:\\dir","a,b","{x}","NULL "}`},
		{[][]byte{[]byte("NULL")}, `{"NULL"}`}, // the text NULL, quoted, is not NULL
	} {
		got := string(textArray(tc.vals))
		if got != tc.want {
			t.Errorf("textArray(%q) = %s, want %s", tc.vals, got, tc.want)
		}
		back, err := parseTextArray([]byte(got))
		if err != nil || !slices.EqualFunc(back, tc.vals, bytes2Equal) || len(back) != len(tc.vals) {
			t.Errorf("parseTextArray(%s) = %q, %v; want %q", got, back, err, tc.vals)
		}
	}
	if got := string(textArrayOf([]string{"a", `b"`})); got != `{"a","b\""}` {
		t.Errorf("textArrayOf: %s", got)
	}
}

// TestParseTextArray: arrays as PostgreSQL prints them (elements unquoted
// when they need no quotes) and what is not an array.
func TestParseTextArray(t *testing.T) {
	for in, want := range map[string][][]byte{
		`{}`:                   nil,
		`{a,b}`:                texts("a", "b"),
		`{NULL,"NULL",x}`:      {nil, []byte("NULL"), []byte("x")},
		`{"a b",c}`:            texts("a b", "c"),
		`{"\\",""}`:            texts(`\`, ""),
		`{1.50,-2,NaN}`:        texts("1.50", "-2", "NaN"),
		`{"x\"y",z}`:           texts(`x"y`, "z"),
		`{"2026-01-01 10:00"}`: texts("2026-01-01 10:00"),
	} {
		got, err := parseTextArray([]byte(in))
		if err != nil || len(got) != len(want) || !slices.EqualFunc(got, want, bytes2Equal) {
			t.Errorf("%s = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{``, `{`, `a,b`, `{"a}`, `{"a"b}`, `{"a" ,b}`, `[a]`} {
		if got, err := parseTextArray([]byte(in)); err == nil {
			t.Errorf("%q parses as %q", in, got)
		}
	}
}

// TestKeys: a row's key text, NULL when any key column is, joined so that
// two different keys never meet ("a","b\x00c" is not "a\x00b","c" only
// because texts hold no NUL, which PostgreSQL's text cannot).
func TestKeys(t *testing.T) {
	r := &row{text: texts("1", "NULL", "ab", "")}
	for _, tc := range []struct {
		idx  []int
		want string
	}{
		{[]int{0}, "1"}, {[]int{0, 2}, "1\x00ab"}, {[]int{2, 0}, "ab\x001"}, {[]int{1}, ""}, {[]int{0, 1}, ""},
		{[]int{3}, ""}, {[]int{0, 3}, "1\x00"}, {nil, ""},
	} {
		if got := keyOf(r, tc.idx); got != tc.want {
			t.Errorf("keyOf %v = %q, want %q", tc.idx, got, tc.want)
		}
	}
	if keyOf(r, []int{0, 2}) == keyOf(&row{text: texts("1a", "b")}, []int{0, 1}) {
		t.Error("two keys meet")
	}
	for _, tc := range []struct {
		vals [][]byte
		want string
	}{
		{texts("1"), "1"}, {texts("1", "2"), "1\x002"}, {texts("1", "NULL"), "1\x00"}, {nil, ""},
	} {
		if got := string(joinKey(tc.vals)); got != tc.want {
			t.Errorf("joinKey(%q) = %q, want %q", tc.vals, got, tc.want)
		}
	}
}

func TestResultFormatsFor(t *testing.T) {
	for _, tc := range []struct {
		client   []int16
		k, extra int
		want     []int16
	}{
		{nil, 2, 1, []int16{0, 0, 0}},
		{[]int16{1}, 2, 2, []int16{1, 1, 0, 0}},
		{[]int16{1, 0, 1}, 3, 1, []int16{1, 0, 1, 0}},
		{[]int16{0, 1}, 3, 0, []int16{0, 1, 0}},
		{[]int16{1}, 0, 2, []int16{0, 0}},
	} {
		if got := resultFormatsFor(tc.client, tc.k, tc.extra); !slices.Equal(got, tc.want) {
			t.Errorf("resultFormatsFor(%v, %d, %d) = %v, want %v", tc.client, tc.k, tc.extra, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v    verb
		n    int
		want string
	}{{verbInsert, 3, "INSERT 0 3"}, {verbUpdate, 0, "UPDATE 0"}, {verbDelete, 12, "DELETE 12"}} {
		if got := tagOf(tc.v, tc.n); got != tc.want {
			t.Errorf("tagOf: %s, want %s", got, tc.want)
		}
	}
}

// ordersRow is a row of the test schema's orders: id, customer_id,
// amount_total, paid, notes, weight, raw.
func ordersRow(snap *catalog.Snapshot, vals ...string) *row {
	return newRow(snap.Tables["public.orders"], []byte("(0,1)"), texts(vals...))
}

// TestMergeChanges: two adjustments of one write in one parent table make
// one change per row, from the row before the first to the row after the
// last.
func TestMergeChanges(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	orders := snap.Tables["public.orders"]
	v := func(id, amount string) *row { return ordersRow(snap, id, "1", amount, "f", "NULL", "NULL", "NULL") }
	first := []*change{
		{verb: verbUpdate, old: v("1", "1.00"), new: v("1", "2.00")},
		{verb: verbUpdate, old: v("2", "1.00"), new: v("2", "3.00")},
	}
	later := []*change{
		{verb: verbUpdate, old: v("2", "3.00"), new: v("2", "4.00")},
		{verb: verbUpdate, old: v("3", "0.00"), new: v("3", "5.00")},
	}
	describe := func(chs []*change) string {
		var s []string
		for _, ch := range chs {
			s = append(s, fmt.Sprintf("%s:%s→%s", ch.new.text[0], ch.old.text[2], ch.new.text[2]))
		}
		return strings.Join(s, " ")
	}
	if got, want := describe(mergeChanges(orders, first, later)), "1:1.00→2.00 2:1.00→4.00 3:0.00→5.00"; got != want {
		t.Errorf("merged: %s, want %s", got, want)
	}
	if got := describe(first); got != "1:1.00→2.00 2:1.00→3.00" {
		t.Errorf("merging changed its input: %s", got)
	}
	noKey := catalog.NewTable("public", "orders", orders.Columns, nil)
	if got, want := describe(mergeChanges(noKey, first, later)), "1:1.00→2.00 2:1.00→3.00 2:3.00→4.00 3:0.00→5.00"; got != want {
		t.Errorf("without a primary key: %s, want %s", got, want)
	}
}

// TestRowHelpers: a row's values from its text (what does not read as its
// kind stays text), set's coercion, changed columns, and the key a message
// names.
func TestRowHelpers(t *testing.T) {
	snap := ruletest.CreditSnapshot()
	tr := &tableRules{t: snap.Tables["public.orders"], index: indexOf(snap.Tables["public.orders"])}
	r := ordersRow(snap, "1", "NULL", "12.50", "t", "x", "oops", "NaN")
	if r.vals["customer_id"] != nil || !sameValue(r.vals["amount_total"], dec("12.5")) || r.vals["paid"] != true || r.vals["weight"] != "oops" || r.vals["raw"] != nan {
		t.Errorf("vals: %#v", r.vals)
	}
	c := r.clone(tr.t)
	c.set(tr.t, 2, dec("1.005"))
	c.set(tr.t, 1, dec("7.5"))
	if string(c.text[2]) != "1.01" || string(c.text[1]) != "8" || c.vals["customer_id"] != 8 || string(r.text[2]) != "12.50" || !sameValue(r.vals["amount_total"], dec("12.50")) {
		t.Errorf("set: %q %#v; original %q", c.text, c.vals, r.text)
	}
	if got := changedColumns(tr, []*change{{old: r, new: c}, {new: r}}); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("changedColumns: %v", got)
	}
	if got := describeKey(tr, c); got != "id=1" {
		t.Errorf("describeKey: %s", got)
	}
	noKey := &tableRules{t: catalog.NewTable("public", "x", tr.t.Columns, nil), index: tr.index}
	if got := describeKey(noKey, c); got != "ctid=(0,1)" {
		t.Errorf("describeKey without a key: %s", got)
	}
	if !bytes2Equal(nil, nil) || bytes2Equal(nil, []byte{}) || bytes2Equal([]byte("a"), []byte("b")) || !bytes2Equal([]byte("a"), []byte("a")) {
		t.Error("bytes2Equal")
	}
}

// TestDeltas: what a write's rows add to their parents' sums and counts
// (LogicBank's adjustment): arriving and qualifying rows add, leaving ones
// subtract, a moved row moves its contribution, NULL keys belong to no
// parent, and parents with nothing to add are left out.
func TestDeltas(t *testing.T) {
	snap := ruletest.CreditSnapshot(ruletest.CreditRules()...)
	set := newRunSet(compiler.Compile(snap))
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	tr := set.table("public.orders")
	a := tr.up[0] // customer.balance and customer.unpaid_order_count
	o := func(cust, amount, paid string) *row {
		return ordersRow(snap, "1", cust, amount, paid, "NULL", "NULL", "NULL")
	}
	for _, tc := range []struct {
		name    string
		changes []*change
		want    string
	}{
		{"insert", []*change{{verb: verbInsert, new: o("10", "5.00", "f")}}, "10: 5.00 1"},
		{"two inserts", []*change{{verb: verbInsert, new: o("10", "5.00", "f")}, {verb: verbInsert, new: o("10", "7.50", "f")}}, "10: 12.50 2"},
		{"insert paid", []*change{{verb: verbInsert, new: o("10", "5.00", "t")}}, ""},
		{"insert NULL paid", []*change{{verb: verbInsert, new: o("10", "5.00", "NULL")}}, ""},
		{"insert without a parent", []*change{{verb: verbInsert, new: o("NULL", "5.00", "f")}}, ""},
		{"insert NULL amount", []*change{{verb: verbInsert, new: o("10", "NULL", "f")}}, "10: 0 1"},
		{"insert NaN", []*change{{verb: verbInsert, new: o("10", "NaN", "f")}}, "10: NaN 1"},
		{"delete", []*change{{verb: verbDelete, old: o("10", "5.00", "f")}}, "10: -5.00 -1"},
		{"amount changes", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("10", "7.25", "f")}}, "10: 2.25 0"},
		{"paid", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("10", "5.00", "t")}}, "10: -5.00 -1"},
		{"moved", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("11", "6.00", "f")}}, "10: -5.00 -1, 11: 6.00 1"},
		{"moved to no parent", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("NULL", "5.00", "f")}}, "10: -5.00 -1"},
		{"unchanged", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("10", "5.00", "f")}}, ""},
		{"swap", []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("11", "5.00", "f")}, {verb: verbUpdate, old: o("11", "5.00", "f"), new: o("10", "5.00", "f")}}, ""},
	} {
		ds, err := (&runner{}).deltas(tr, a, tc.changes)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var got []string
		for _, d := range ds {
			got = append(got, fmt.Sprintf("%s: %s %s", d.key[0], compiler.FormatValue(d.add[0]), compiler.FormatValue(d.add[1])))
		}
		if g := strings.Join(got, ", "); g != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, g, tc.want)
		}
	}
	// A parent being deleted gets no adjustment.
	ds, _ := (&runner{deleting: map[string]map[string]bool{"public.customer": {"10": true}}}).deltas(tr, a,
		[]*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("11", "6.00", "f")}})
	if len(ds) != 1 || string(ds[0].key[0]) != "11" {
		t.Errorf("a deleted parent adjusted: %v", ds)
	}
	ds, _ = (&runner{}).deltas(tr, a, []*change{{verb: verbUpdate, old: o("10", "5.00", "f"), new: o("11", "6.00", "f")}})
	params := adjustParams(a, ds)
	if got := fmt.Sprintf("%s", params); got != `[{"10","11"} {"-5.00","6.00"} {"-1","1"}]` {
		t.Errorf("adjustParams: %s", got)
	}
	if got := fmt.Sprintf("%s", additiveParams(a, ds[1])); got != `[11 6.00 1]` {
		t.Errorf("additiveParams: %s", got)
	}
}

// TestMinMaxDeltas: the values arriving at and leaving a parent's min or
// max; a row whose value and parent stay is neither.
func TestMinMaxDeltas(t *testing.T) {
	snap := ruletest.CreditSnapshot(&catalog.Rule{Name: "orders.weight", Table: "public.orders", Kind: catalog.Max, Column: "weight", SourceTable: "public.lineitem", SourceColumn: "amount", Filter: "row.quantity > 0"})
	set := newRunSet(compiler.Compile(snap))
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	tr := set.table("public.lineitem")
	a := tr.up[0]
	// id, order_id, product_id, quantity, unit_price, amount, note
	li := func(order, qty, amount string) *row {
		return newRow(snap.Tables["public.lineitem"], nil, texts("1", order, "1", qty, "1.00", amount, "NULL"))
	}
	for _, tc := range []struct {
		name    string
		changes []*change
		want    string
	}{
		{"insert", []*change{{new: li("1", "1", "3.00")}, {new: li("1", "1", "9.00")}, {new: li("1", "1", "4.00")}}, "1: +9.00 -NULL"},
		{"insert filtered out", []*change{{new: li("1", "0", "3.00")}}, ""},
		{"insert NULL", []*change{{new: li("1", "1", "NULL")}}, ""},
		{"delete", []*change{{old: li("1", "1", "3.00")}, {old: li("1", "1", "2.00")}}, "1: +NULL -3.00"},
		{"change", []*change{{old: li("1", "1", "3.00"), new: li("1", "1", "4.00")}}, "1: +4.00 -3.00"},
		{"unchanged", []*change{{old: li("1", "1", "3.00"), new: li("1", "1", "3.0")}}, ""},
		{"moved", []*change{{old: li("1", "1", "3.00"), new: li("2", "1", "3.00")}}, "1: +NULL -3.00, 2: +3.00 -NULL"},
		{"stops qualifying", []*change{{old: li("1", "1", "3.00"), new: li("1", "0", "3.00")}}, "1: +NULL -3.00"},
	} {
		ds, err := (&runner{}).deltas(tr, a, tc.changes)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var got []string
		for _, d := range ds {
			got = append(got, fmt.Sprintf("%s: +%s -%s", d.key[0], nullText(compiler.FormatValue(d.arrive[0])), nullText(compiler.FormatValue(d.leave[0]))))
		}
		if g := strings.Join(got, ", "); g != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, g, tc.want)
		}
	}
	for _, tc := range []struct {
		k    catalog.RuleKind
		a, b any
		want string
	}{
		{catalog.Min, nil, dec("2"), "2"}, {catalog.Min, dec("1"), dec("2"), "1"}, {catalog.Min, dec("3"), 2, "2"},
		{catalog.Max, dec("1"), dec("2"), "2"}, {catalog.Max, 3, dec("2"), "3"}, {catalog.Max, posInf, dec("2"), "Infinity"},
		{catalog.Max, nan, posInf, "NaN"}, {catalog.Min, "x", 1, "x"},
	} {
		if got := string(compiler.FormatValue(extreme(tc.k, tc.a, tc.b))); got != tc.want {
			t.Errorf("%s(%v, %v) = %s, want %s", tc.k, tc.a, tc.b, got, tc.want)
		}
	}
	sum := &compiler.Rule{Rule: &catalog.Rule{Kind: catalog.Sum}}
	count := &compiler.Rule{Rule: &catalog.Rule{Kind: catalog.Count}}
	for _, tc := range []struct {
		c    *compiler.Rule
		v    any
		want string
	}{{sum, nil, "0"}, {sum, 3, "3"}, {sum, 0.5, "0.5"}, {sum, dec("1.50"), "1.50"}, {sum, negInf, "-Infinity"}, {count, dec("9"), "1"}, {count, nil, "1"}} {
		got := addend(tc.c, tc.v)
		if string(compiler.FormatValue(got)) != tc.want || compiler.TypeName(got) != "decimal" {
			t.Errorf("addend %s %v = %#v, want %s", tc.c.Rule.Kind, tc.v, got, tc.want)
		}
	}
	if !isZero(decimal.Zero) || !isZero(dec("0.00")) || isZero(dec("0.01")) || isZero(0) || isZero(nan) {
		t.Error("isZero")
	}
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// nan, posInf and negInf are numeric's special values, as the engine reads
// them from PostgreSQL.
var nan, posInf, negInf = numeric("NaN"), numeric("Infinity"), numeric("-Infinity")

func numeric(text string) any {
	v, err := compiler.ParseValue(catalog.KindDecimal, []byte(text))
	if err != nil {
		panic(err)
	}
	return v
}
