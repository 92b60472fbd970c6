package compiler

import (
	"slices"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
)

// TestSetAccessors: what the engine reads of a Set: the snapshot, every
// rule in definition order (disabled and broken ones included), the
// derivations in the order they run, and whether a rule reads a time.
func TestSetAccessors(t *testing.T) {
	rules := []*catalog.Rule{
		{Name: "orders.amount_total", Table: "public.orders", Kind: catalog.Sum, Column: "amount_total", SourceTable: "public.lineitem", SourceColumn: "amount"},
		{Name: "lineitem.amount", Table: "public.lineitem", Kind: catalog.Formula, Column: "amount", Expression: "row.quantity * row.unit_price"},
		{Name: "off", Table: "public.lineitem", Kind: catalog.Formula, Column: "note", Expression: "'x'"},
		{Name: "broken", Table: "public.lineitem", Kind: catalog.Formula, Column: "nope", Expression: "1"},
	}
	snap := ruletest.CreditSnapshot(rules...)
	rules[2].Enabled = false
	set := Compile(snap)
	if set.Snapshot() != snap {
		t.Error("Snapshot is not the snapshot compiled")
	}
	var names []string
	for _, c := range set.Rules() {
		names = append(names, c.Rule.Name)
	}
	if want := []string{"orders.amount_total", "lineitem.amount", "off", "broken"}; !slices.Equal(names, want) {
		t.Errorf("Rules: %v, want %v", names, want)
	}
	names = names[:0]
	for _, c := range set.Derivations() {
		names = append(names, c.Rule.Name)
	}
	if want := []string{"lineitem.amount", "orders.amount_total"}; !slices.Equal(names, want) {
		t.Errorf("Derivations: %v, want %v", names, want)
	}
	if set.ReadsTime() {
		t.Error("no rule reads a time")
	}
	if set.RuleError("broken") == nil || set.RuleError("off") != nil {
		t.Errorf("RuleError: broken %v, off %v", set.RuleError("broken"), set.RuleError("off"))
	}

	late := &catalog.Rule{Name: "late", Table: "public.shipment", Kind: catalog.Constraint, Expression: "row.placed != nil", Message: "m", Enabled: true}
	shipment := catalog.NewTable("public", "shipment", []*catalog.Column{{Name: "placed", Kind: catalog.KindTime, Type: "timestamp with time zone"}}, nil)
	if set := Compile(catalog.NewSnapshot("test", []*catalog.Table{shipment}, nil, []*catalog.Rule{late})); set.RuleError("late") != nil || !set.ReadsTime() {
		t.Errorf("a rule reading a time: %v, ReadsTime %v", set.RuleError("late"), set.ReadsTime())
	}
}

// TestInvolvesAndGuards: a write goes through the engine for the tables
// with rules, those a rule reads, and those whose deletes cascade to them;
// a TRUNCATE is refused also through a foreign key that does not cascade.
func TestInvolvesAndGuards(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		onDelete                      byte
		involves, guards, notInvolves []string
	}{
		{"no action", 'a', []string{"public.lineitem", "public.orders", "public.product"}, []string{"public.customer"}, []string{"public.customer"}},
		{"cascade", 'c', []string{"public.lineitem", "public.orders", "public.customer"}, nil, nil},
		{"set null", 'n', []string{"public.customer"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := ruletest.CreditSnapshot(
				&catalog.Rule{Name: "orders.amount_total", Table: "public.orders", Kind: catalog.Sum, Column: "amount_total", SourceTable: "public.lineitem", SourceColumn: "amount"},
				&catalog.Rule{Name: "lineitem.unit_price", Table: "public.lineitem", Kind: catalog.Copy, Column: "unit_price", SourceTable: "public.product", SourceColumn: "price"})
			for _, fk := range snap.Tables["public.orders"].Parents {
				fk.OnDelete = tc.onDelete
			}
			set := Compile(snap)
			for _, name := range tc.involves {
				if !set.Involves(name) || !set.Guards(name) {
					t.Errorf("%s: Involves %v, Guards %v", name, set.Involves(name), set.Guards(name))
				}
			}
			for _, name := range tc.guards {
				if !set.Guards(name) {
					t.Errorf("%s: not guarded", name)
				}
			}
			for _, name := range tc.notInvolves {
				if set.Involves(name) {
					t.Errorf("%s: involved", name)
				}
			}
			if set.Involves("public.nope") || set.Guards("public.nope") {
				t.Error("a table that does not exist is involved")
			}
		})
	}
}

// TestBeforeTriggerError: a BEFORE ROW trigger that could change a row
// after the rules computed it refuses the write with 0A000: on a parent
// the engine updates, or a table's own delete whose dependent rows the
// engine deletes first. A table's own insert or update trigger is the
// engine's to follow, and a copy's parent is not updated by the rules.
func TestBeforeTriggerError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		triggers map[string]string // "table verb" → trigger
		cascade  bool
		table    string
		verb     string
		refused  bool
	}{
		{"parent's update trigger", map[string]string{"public.orders UPDATE": "t"}, false, "public.lineitem", "INSERT", true},
		{"grandparent's update trigger", map[string]string{"public.customer UPDATE": "t"}, false, "public.lineitem", "DELETE", true},
		{"own insert trigger", map[string]string{"public.lineitem INSERT": "t"}, false, "public.lineitem", "INSERT", false},
		{"own update trigger", map[string]string{"public.lineitem UPDATE": "t"}, false, "public.lineitem", "UPDATE", false},
		{"a copy's parent", map[string]string{"public.product UPDATE": "t"}, false, "public.lineitem", "INSERT", false},
		{"own delete trigger, no cascade", map[string]string{"public.orders DELETE": "t"}, false, "public.orders", "DELETE", false},
		{"own delete trigger, cascading", map[string]string{"public.orders DELETE": "t"}, true, "public.orders", "DELETE", true},
		{"a cascaded child's trigger", map[string]string{"public.lineitem DELETE": "t"}, true, "public.orders", "DELETE", true},
		{"no trigger", nil, true, "public.orders", "DELETE", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := ruletest.CreditSnapshot(ruletest.CreditRules()...)
			for key, name := range tc.triggers {
				var table, verb string
				for i := range key {
					if key[i] == ' ' {
						table, verb = key[:i], key[i+1:]
					}
				}
				tab := snap.Tables[table]
				if tab.BeforeRow == nil {
					tab.BeforeRow = map[string]string{}
				}
				tab.BeforeRow[verb] = name
			}
			if tc.cascade {
				for _, fk := range snap.Tables["public.lineitem"].Parents {
					fk.OnDelete = 'c'
				}
			}
			set := Compile(snap)
			tab := snap.Tables[tc.table]
			e := set.BeforeTriggerError(tab, tc.verb)
			if (e != nil) != tc.refused || e != nil && (e.Code != pgerr.FeatureNotSupported || e.Hint == "") {
				t.Fatalf("BeforeTriggerError: %v, refused %v", e, tc.refused)
			}
			if e != nil {
				// Each caller gets its own copy to change.
				e.Message = "changed"
				if set.BeforeTriggerError(tab, tc.verb).Message == "changed" {
					t.Error("the Set's error was changed through a caller's")
				}
			}
			if got := set.CascadesTo(snap.Tables["public.orders"]); got != tc.cascade {
				t.Errorf("CascadesTo(orders) = %v, want %v", got, tc.cascade)
			}
		})
	}
}

// TestWriteNotSupported: the refusal of a form of write names the table
// (schema and table fields set), says why, and hints at what pgrules runs.
func TestWriteNotSupported(t *testing.T) {
	for _, tc := range []struct {
		schema, name, want string
	}{
		{"public", "orders", `this write on table orders, which has rules: MERGE is "not" run`},
		{"shop", "orders", `this write on table shop.orders, which has rules: MERGE is "not" run`},
	} {
		e := WriteNotSupported(&catalog.Table{Schema: tc.schema, Name: tc.name}, "MERGE is %q run", "not")
		if e.Code != pgerr.FeatureNotSupported || e.Message != tc.want || e.Schema != tc.schema || e.Table != tc.name || e.Hint == "" {
			t.Errorf("%+v", e)
		}
	}
}
