package ruletest

import "github.com/pgrules/pgrules/catalog"

// CreditSnapshot is the check-credit schema, built by hand, with rules:
// every rule enabled and numbered in the order given.
func CreditSnapshot(rules ...*catalog.Rule) *catalog.Snapshot {
	col := func(name string, k catalog.Kind, typ string) *catalog.Column {
		return &catalog.Column{Name: name, Kind: k, Type: typ}
	}
	num := func(name string) *catalog.Column {
		c := col(name, catalog.KindDecimal, "numeric(14,2)")
		c.Scale, c.HasScale = 2, true
		return c
	}
	scaled := func(name, typ string, scale int32) *catalog.Column {
		c := col(name, catalog.KindDecimal, typ)
		c.Scale, c.HasScale = scale, true
		return c
	}
	id := func(name string) *catalog.Column { return col(name, catalog.KindInt, "integer") }
	tables := []*catalog.Table{
		catalog.NewTable("public", "customer", []*catalog.Column{id("id"), col("name", catalog.KindText, "text"), num("balance"), num("credit_limit"), id("unpaid_order_count"),
			scaled("weight_total", "numeric(14,4)", 4), col("raw_total", catalog.KindDecimal, "numeric"), scaled("hundreds", "numeric(14,-2)", -2)}, []string{"id"}),
		catalog.NewTable("public", "product", []*catalog.Column{id("id"), col("name", catalog.KindText, "text"), num("price"), scaled("weight", "numeric(14,4)", 4)}, []string{"id"}),
		catalog.NewTable("public", "orders", []*catalog.Column{id("id"), id("customer_id"), num("amount_total"), col("paid", catalog.KindBool, "boolean"), col("notes", catalog.KindText, "text"),
			scaled("weight", "numeric(14,4)", 4), col("raw", catalog.KindDecimal, "numeric")}, []string{"id"}),
		catalog.NewTable("public", "lineitem", []*catalog.Column{id("id"), id("order_id"), id("product_id"), id("quantity"), num("unit_price"), num("amount"), col("note", catalog.KindText, "text")}, []string{"id"}),
	}
	fk := func(name, child, col, parent, acc string) *catalog.ForeignKey {
		return &catalog.ForeignKey{Name: name, Child: "public." + child, Parent: "public." + parent, Columns: []string{col}, ParentColumns: []string{"id"}, Accessor: acc}
	}
	fks := []*catalog.ForeignKey{
		fk("orders_customer_id_fkey", "orders", "customer_id", "customer", "customer"),
		fk("lineitem_order_id_fkey", "lineitem", "order_id", "orders", "order"),
		fk("lineitem_product_id_fkey", "lineitem", "product_id", "product", "product"),
	}
	for i, r := range rules {
		r.Seq, r.Enabled = int64(i+1), true
	}
	return catalog.NewSnapshot("test", tables, fks, rules)
}

// CreditRules are the check-credit rules, as rules.sql defines them.
func CreditRules() []*catalog.Rule {
	return []*catalog.Rule{
		{Name: "lineitem.unit_price", Table: "public.lineitem", Kind: catalog.Copy, Column: "unit_price", SourceTable: "public.product", SourceColumn: "price"},
		{Name: "lineitem.amount", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * row.unit_price"},
		{Name: "orders.amount_total", Table: "public.orders", Kind: catalog.Sum, Column: "amount_total", SourceTable: "public.lineitem", SourceColumn: "amount"},
		{Name: "customer.balance", Table: "public.customer", Kind: catalog.Sum, Column: "balance", SourceTable: "public.orders", SourceColumn: "amount_total", Filter: "not row.paid"},
		{Name: "customer.unpaid_order_count", Table: "public.customer", Kind: catalog.Count, Column: "unpaid_order_count", SourceTable: "public.orders", Filter: "not row.paid"},
		{Name: "credit_limit", Table: "public.customer", Kind: catalog.Constraint, Expression: "row.balance <= row.credit_limit", Message: "balance {row.balance} exceeds credit limit {row.credit_limit}"},
	}
}
