package sqlparse

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/pgerr"
)

var (
	subselectXY   = &Subselect{SQL: "SELECT x, y FROM v WHERE v.id = m.id", Width: 2}
	subselectStar = &Subselect{SQL: "SELECT * FROM v", Width: -1}
)

// modifyTableTests are statements the engine runs, in their odd but valid
// spellings, with what ModifyTable makes of them.
var modifyTableTests = []struct {
	sql  string
	want ModifyTable
}{
	{`INSERT INTO "Sales"."Order Lines" AS l ("Qty", note) VALUES (1, 'a'), ($1, DEFAULT), (-2.5, NULL) RETURNING l.*, "Qty" * 2 AS twice`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Schema: "Sales", Name: "Order Lines", Alias: "l"},
			Columns: []TargetColumn{{Name: "Qty"}, {Name: "note"}},
			Values:  [][]Value{{{Literal: 1}, {Literal: 2}}, {{SQL: "$1"}, {Default: true}}, {{Literal: 3}, {SQL: "NULL"}}},
			Width:   2,
			Returning: []ResTarget{{SQL: "l.*", Star: true, Qualifier: "l"},
				{SQL: `"Qty" * 2 AS twice`, ColumnRefs: []ColumnRef{{Head: "Qty"}}}},
			// NULL is no literal: the statement varies with it.
			Literals: []Literal{{61, "1"}, {64, "a"}, {86, "-2.5"}}}},
	{`insert into T values (true, 3000000000), ($2, $1)`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"},
			Values: [][]Value{{{Literal: 1}, {Literal: 2}}, {{SQL: "$2"}, {SQL: "$1"}}}, Width: 2,
			Literals: []Literal{{22, "true"}, {28, "3000000000"}}, LiteralsOnly: true}},
	{`INSERT INTO s.t DEFAULT VALUES`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Schema: "s", Name: "t"}, DefaultValues: true}},
	{`INSERT INTO t OVERRIDING SYSTEM VALUE SELECT * FROM u`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, Overriding: "OVERRIDING SYSTEM VALUE", Select: "SELECT * FROM u", Width: -1}},
	{`INSERT INTO t (a) VALUES (1) ORDER BY 1`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, Columns: []TargetColumn{{Name: "a"}}, Select: "VALUES (1) ORDER BY 1", Width: 1}},
	{`INSERT INTO t VALUES (1), (2, 3) ON CONFLICT DO NOTHING`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"},
			Values: [][]Value{{{Literal: 1}}, {{Literal: 2}, {Literal: 3}}}, Width: 1, UnequalValues: true,
			OnConflict: &OnConflict{SQL: "ON CONFLICT DO NOTHING"},
			Literals:   []Literal{{22, "1"}, {27, "2"}, {30, "3"}}, LiteralsOnly: true}},
	{`INSERT INTO t (a) SELECT 1 ON CONFLICT (a) WHERE a > 0 DO NOTHING`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, Columns: []TargetColumn{{Name: "a"}}, Select: "SELECT 1", Width: 1,
			OnConflict: &OnConflict{SQL: "ON CONFLICT (a) WHERE a > 0 DO NOTHING"}}},
	{`INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT ON CONSTRAINT "T_pkey" DO UPDATE SET b = excluded.b + 1, (c, d) = (DEFAULT, 3) WHERE t.b < 10`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, Columns: []TargetColumn{{Name: "a"}, {Name: "b"}},
			Values: [][]Value{{{Literal: 1}, {Literal: 2}}}, Width: 2,
			OnConflict: &OnConflict{DoUpdate: true, Infer: &InferClause{Constraint: "T_pkey"},
				Set: []Assignment{{TargetColumn: TargetColumn{Name: "b"}, Value: "excluded.b + 1"},
					{TargetColumn: TargetColumn{Name: "c"}, Default: true, Colno: 1, Ncolumns: 2},
					{TargetColumn: TargetColumn{Name: "d"}, Value: "3", Colno: 2, Ncolumns: 2}},
				Where: "t.b < 10"},
			Literals: []Literal{{29, "1"}, {32, "2"}}, LiteralsOnly: true}},
	{`INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a, b COLLATE "C", lower(c)) WHERE a > 0 DO UPDATE SET b = DEFAULT, a[1] = 0`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, Columns: []TargetColumn{{Name: "a"}, {Name: "b"}},
			Values: [][]Value{{{SQL: "$1"}, {SQL: "$2"}}}, Width: 2,
			OnConflict: &OnConflict{DoUpdate: true, Infer: &InferClause{Columns: []string{"a", "", ""}, Where: "a > 0"},
				Set: []Assignment{{TargetColumn: TargetColumn{Name: "b"}, Default: true}, {TargetColumn: TargetColumn{Name: "a", Indirection: true}, Value: "0"}}},
			LiteralsOnly: true}},
	{`WITH n AS (SELECT 1 AS a) INSERT INTO t (a) VALUES (1)`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, With: "WITH n AS (SELECT 1 AS a) ", Columns: []TargetColumn{{Name: "a"}},
			Values: [][]Value{{{Literal: 1}}}, Width: 1, Literals: []Literal{{52, "1"}}}},
	{`WITH n AS (SELECT 1 AS a) INSERT INTO t (a) SELECT a FROM n`,
		ModifyTable{Operation: Insert, Relation: RangeVar{Name: "t"}, With: "WITH n AS (SELECT 1 AS a) ", Columns: []TargetColumn{{Name: "a"}},
			Select: "SELECT a FROM n", Width: 1}},
	{`UPDATE "My Table" m SET a = u.a, (b, c) = (SELECT x, y FROM v WHERE v.id = m.id) FROM s.u u WHERE u.id = m.id RETURNING m.a, u.*, (SELECT max(z) FROM w WHERE w.k = k) AS k`,
		ModifyTable{Operation: Update, Relation: RangeVar{Name: "My Table", Alias: "m"},
			Set: []Assignment{{TargetColumn: TargetColumn{Name: "a"}, Value: "u.a"},
				{TargetColumn: TargetColumn{Name: "b"}, Colno: 1, Ncolumns: 2, Subselect: subselectXY},
				{TargetColumn: TargetColumn{Name: "c"}, Colno: 2, Ncolumns: 2, Subselect: subselectXY}},
			From: `"My Table" m, s.u u WHERE u.id = m.id`, Joined: true,
			Returning: []ResTarget{{SQL: "m.a", ColumnRefs: []ColumnRef{{Head: "m", Qualified: true}}},
				{SQL: "u.*", Star: true, Qualifier: "u"},
				{SQL: "(SELECT max(z) FROM w WHERE w.k = k) AS k", ColumnRefs: []ColumnRef{{Head: "z", InSubselect: true}, {Head: "w", Qualified: true, InSubselect: true}, {Head: "k", InSubselect: true}}}}}},
	{`UPDATE t SET a = 1, b = 'x', c = c + 2.5 WHERE id = 3000000000 AND flag = true AND n = -7 RETURNING *`,
		ModifyTable{Operation: Update, Relation: RangeVar{Name: "t"},
			Set: []Assignment{{TargetColumn: TargetColumn{Name: "a"}, Value: "$2000000001"},
				{TargetColumn: TargetColumn{Name: "b"}, Value: "$2000000002"},
				{TargetColumn: TargetColumn{Name: "c"}, Value: "c + $2000000003::numeric"}},
			From:      "t WHERE id = $2000000004::bigint AND flag = $2000000005::boolean AND n = $2000000006::int",
			Returning: []ResTarget{{SQL: "*", Star: true}},
			Literals:  []Literal{{17, "1"}, {24, "x"}, {37, "2.5"}, {52, "3000000000"}, {74, "true"}, {87, "-7"}}, LiteralsOnly: true}},
	{`UPDATE t SET (a, b) = (SELECT * FROM v), c = 1`,
		ModifyTable{Operation: Update, Relation: RangeVar{Name: "t"},
			Set: []Assignment{{TargetColumn: TargetColumn{Name: "a"}, Colno: 1, Ncolumns: 2, Subselect: subselectStar},
				{TargetColumn: TargetColumn{Name: "b"}, Colno: 2, Ncolumns: 2, Subselect: subselectStar},
				{TargetColumn: TargetColumn{Name: "c"}, Value: "1"}},
			From: "t"}},
	{`UPDATE t SET (a, b) = ROW(1), c = $1 WHERE name = 'x'`,
		ModifyTable{Operation: Update, Relation: RangeVar{Name: "t"},
			Set: []Assignment{{TargetColumn: TargetColumn{Name: "a"}, Value: "1", Colno: 1, Ncolumns: 2},
				{TargetColumn: TargetColumn{Name: "b"}, Colno: 2, Ncolumns: 2, OtherSource: true},
				{TargetColumn: TargetColumn{Name: "c"}, Value: "$1"}},
			From: "t WHERE name = 'x'"}},
	{`UPDATE t SET a[1] = 2 WHERE CURRENT OF cur`,
		ModifyTable{Operation: Update, Relation: RangeVar{Name: "t"}, CurrentOf: true}},
	{`DELETE FROM ONLY s.t AS x USING u WHERE u.id = x.id AND u.n = $2 RETURNING x.id, u.n`,
		ModifyTable{Operation: Delete, Relation: RangeVar{Schema: "s", Name: "t", Alias: "x"},
			From: "ONLY s.t x, u WHERE u.id = x.id AND u.n = $2", Joined: true,
			Returning: []ResTarget{{SQL: "x.id", ColumnRefs: []ColumnRef{{Head: "x", Qualified: true}}}, {SQL: "u.n", ColumnRefs: []ColumnRef{{Head: "u", Qualified: true}}}}}},
	{`DELETE FROM t WHERE id = 5 AND ok = false`,
		ModifyTable{Operation: Delete, Relation: RangeVar{Name: "t"},
			From:     "t WHERE id = $2000000001::int AND ok = $2000000002::boolean",
			Literals: []Literal{{25, "5"}, {36, "false"}}, LiteralsOnly: true}},
	{`WITH x AS (SELECT 1) DELETE FROM t WHERE id = 2`,
		ModifyTable{Operation: Delete, Relation: RangeVar{Name: "t"}, With: "WITH x AS (SELECT 1) ", From: "t WHERE id = 2"}},
}

// TestModifyTable: a statement's text in, what it writes out, for the
// forms the engine runs and their odd but valid spellings.
func TestModifyTable(t *testing.T) {
	for _, tc := range modifyTableTests {
		t.Run(tc.sql, func(t *testing.T) {
			tree, err := ParseStatement(tc.sql)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tree.ModifyTable()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", *got, tc.want)
			}
			again, err := tree.ModifyTable()
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("a second analysis of the tree gives %+v, %v", again, err)
			}
		})
	}
}

// TestLiteralParams: the numbers and booleans of an UPDATE or a DELETE,
// and an UPDATE's whole SET values, become parameters with the types
// PostgreSQL gives them; a statement with other constants keeps them all.
func TestLiteralParams(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		texts []string // nil: left as it is
		want  []string // in the deparsed SET values and FROM
	}{
		{"UPDATE t SET a = NULL WHERE x::numeric(10,2) = 1", []string{"1"}, []string{"NULL", "::numeric(10, 2)", "$2000000001::int"}},
		{"UPDATE t SET a = 1 WHERE name = 'x'", nil, nil},
		{"UPDATE t SET a = B'101' WHERE id = 1", nil, nil},
		// A disqualifying constant or sub-select before others that could
		// be parameters: the statement still keeps all of its constants.
		{"UPDATE t SET a = B'101', b = 'x' WHERE id = 1", nil, nil},
		{"UPDATE t SET a = X'F0', b = 2 WHERE id = 1", nil, nil},
		{"UPDATE t SET a = (SELECT y FROM u ORDER BY 1 DESC LIMIT 1), b = 5 WHERE id = 1", nil, nil},
		{"UPDATE t SET a = 1 WHERE name = 'x' AND id = 2", nil, nil},
		{"UPDATE t SET a = 1 WHERE id IN (SELECT 1)", nil, nil},
		{"UPDATE t SET a = (SELECT 1)", nil, nil},
		{"UPDATE t SET (a, b) = (1, 2)", nil, nil},
		{"UPDATE t SET a = u.a FROM u WHERE u.id = 1", nil, nil},
		{"DELETE FROM t WHERE name = 'x'", nil, nil},
		{"DELETE FROM t USING u WHERE u.id = t.id AND u.n = 1", nil, nil},
	} {
		tree, err := ParseStatement(tc.sql)
		if err != nil {
			t.Fatal(err)
		}
		m, err := tree.ModifyTable()
		if err != nil {
			t.Fatal(err)
		}
		if m.LiteralsOnly != (tc.texts != nil) || len(m.Literals) != len(tc.texts) {
			t.Fatalf("%s: %v, %v", tc.sql, m.Literals, m.LiteralsOnly)
		}
		for i, l := range m.Literals {
			if l.Value != tc.texts[i] {
				t.Fatalf("%s: %v, want %q", tc.sql, m.Literals, tc.texts)
			}
		}
		out := m.From
		for _, a := range m.Set {
			out += " " + a.Value
		}
		if tc.texts == nil && strings.Contains(out, "$2000000") {
			t.Fatalf("%s was changed: %s", tc.sql, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: %s lacks %q", tc.sql, out, w)
			}
		}
	}
}

// TestModifyTableErrors: what is not an INSERT, UPDATE or DELETE, and
// what cannot be deparsed, get their SQLSTATEs.
func TestModifyTableErrors(t *testing.T) {
	for sql, code := range map[string]string{
		"SELECT 1": pgerr.FeatureNotSupported,
		"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE": pgerr.FeatureNotSupported,
		"INSERT INTO t VALUES ($0)":                                    pgerr.UndefinedParameter,
		"UPDATE t SET a = 1 WHERE b = $0":                              pgerr.UndefinedParameter,
	} {
		tree, err := ParseStatement(sql)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tree.ModifyTable(); pgerr.Code(err) != code {
			t.Errorf("%s: %v, want SQLSTATE %s", sql, err, code)
		}
	}
}
