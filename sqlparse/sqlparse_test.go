package sqlparse

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		writes [][]Write
		tx     []bool
		ddl    []bool
	}{
		{"SELECT 1", [][]Write{nil}, []bool{false}, []bool{false}},
		{"insert into sales.orders values (1)", [][]Write{{{"sales", "orders", Insert}}}, nil, nil},
		{"UPDATE t SET a = 1 FROM u WHERE t.id = u.id", [][]Write{{{"", "t", Update}}}, nil, nil},
		{"DELETE FROM t USING u WHERE t.id = u.id RETURNING *", [][]Write{{{"", "t", Delete}}}, nil, nil},
		{"WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d", [][]Write{{{"", "b", Insert}, {"", "a", Delete}}}, nil, nil},
		{"WITH u AS (UPDATE a SET x = 1 RETURNING *) SELECT * FROM u", [][]Write{{{"", "a", Update}}}, nil, nil},
		{"COPY t FROM STDIN", [][]Write{{{"", "t", CopyFrom}}}, nil, nil},
		{"COPY t TO STDOUT", [][]Write{nil}, nil, nil},
		{"TRUNCATE a, s.b", [][]Write{{{"", "a", Truncate}, {"s", "b", Truncate}}}, nil, nil},
		{"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", [][]Write{{{"", "t", Merge}}}, nil, nil},
		{"EXPLAIN ANALYZE DELETE FROM t", [][]Write{{{"", "t", Delete}}}, nil, nil},
		{"EXPLAIN DELETE FROM t", [][]Write{nil}, nil, nil},
		{"INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v", [][]Write{{{"", "t", Insert}}}, nil, nil},
		{"BEGIN; insert into t values (';'); COMMIT", [][]Write{nil, {{"", "t", Insert}}, nil}, []bool{true, false, true}, nil},
		{"CREATE TABLE x (a int); ALTER TABLE x ADD b int", [][]Write{nil, nil}, nil, []bool{true, true}},
	} {
		t.Run(tc.sql, func(t *testing.T) {
			got, err := Parse(tc.sql)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.writes) {
				t.Fatalf("%d statements, want %d", len(got), len(tc.writes))
			}
			for i, st := range got {
				if !reflect.DeepEqual(st.Writes, tc.writes[i]) {
					t.Errorf("statement %d writes %v, want %v", i, st.Writes, tc.writes[i])
				}
				if tc.tx != nil && st.TxControl != tc.tx[i] {
					t.Errorf("statement %d TxControl = %v", i, st.TxControl)
				}
				if tc.ddl != nil && st.DDL != tc.ddl[i] {
					t.Errorf("statement %d DDL = %v", i, st.DDL)
				}
			}
		})
	}
	if got, _ := Parse("BEGIN; insert into t values (';'); COMMIT"); got[1].SQL != "insert into t values (';')" {
		t.Errorf("statement text %q", got[1].SQL)
	}
	if _, err := Parse("SELEC 1"); err == nil {
		t.Error("syntax error not reported")
	}
}

func TestLeadingKeyword(t *testing.T) {
	for in, want := range map[string]string{
		"select 1": "select",
		"  -- note\n/* a /* nested */ */ ((with x": "with",
		"-- only a comment":                        "",
		"":                                         "",
		"\tcopy t from stdin":                      "copy",
	} {
		if got := LeadingKeyword(in); got != want {
			t.Errorf("LeadingKeyword(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMayWriteAndContainsFold(t *testing.T) {
	for sql, want := range map[string]bool{
		"select 1": false, " Insert into t": true, "/* x */ with a as (select 1) select": true, "show all": false, "": false,
		"select 1;": false, "select 1; ": false, "select 1;;\n": false, "select 1; -- done": true, "select 1; /* c */ ; select 2": true,
		"select 1; insert into t values (1)": true, "begin; update t set v = 1; commit": true, "select ';x'": true,
	} {
		if MayWrite(sql) != want {
			t.Errorf("MayWrite(%q) = %v", sql, !want)
		}
	}
	for s, want := range map[string]bool{"SELECT PGRULES.sum(1)": true, "select pgrules.x": true, "select pgrule.x": false, "pgrules": false} {
		if ContainsFold(s, "pgrules.") != want {
			t.Errorf("ContainsFold(%q) = %v", s, !want)
		}
	}
}
