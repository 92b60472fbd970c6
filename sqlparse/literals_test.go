package sqlparse

import (
	"reflect"
	"testing"
)

func TestShape(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		key    string // "" when Shape reports false
		values []string
	}{
		{"SELECT 1", "SELECT \x00i", []string{"1"}},
		{"INSERT INTO t (a, b, c) VALUES (5, 'x', true);", "INSERT INTO t (a, b, c) VALUES (\x00i, \x00s, \x00b);", []string{"5", "x", "true"}},
		{"update t set a = 2147483648, b = 9223372036854775808, c = 1.50, d = .5e3 where id = 2147483647",
			"update t set a = \x00l, b = \x00n, c = \x00n, d = \x00n where id = \x00i", []string{"2147483648", "9223372036854775808", "1.50", ".5e3", "2147483647"}},
		{"UPDATE t SET name = 'O''Brien', ok = FALSE", "UPDATE t SET name = \x00s, ok = \x00b", []string{"O'Brien", "false"}},
		{`UPDATE "t1" SET "a 1" = $1, x2 = 3 WHERE "say ""7""" = 4`, `UPDATE "t1" SET "a 1" = $1, x2 = ` + "\x00i" + ` WHERE "say ""7""" = ` + "\x00i", []string{"3", "4"}},
		{"INSERT INTO t VALUES (1) -- 2 'x\n/* 3 /* 4 */ 5 */", "INSERT INTO t VALUES (\x00i) -- 2 'x\n/* 3 /* 4 */ 5 */", []string{"1"}},
		{"SELECT a$1, truex FROM t", "SELECT a$1, truex FROM t", nil},
		{"INSERT INTO t VALUES (-5)", "INSERT INTO t VALUES (-\x00i)", []string{"5"}},
		{"SELECT 'a' ||\n'b'", "SELECT \x00s ||\n\x00s", []string{"a", "b"}},
		{"SELECT 'a'\n'b'", "", nil},
		{"SELECT E'a\\n'", "", nil},
		{"SELECT x'1F', b'01', n'x'", "", nil},
		{"SELECT U&'d\\0061t'", "", nil},
		{"SELECT $$x$$", "", nil},
		{"SELECT 0x1F", "", nil},
		{"SELECT 1_000", "", nil},
		{"SELECT 5abc", "", nil},
		{"SELECT 'unterminated", "", nil},
	} {
		t.Run(tc.sql, func(t *testing.T) {
			key, lits, ok := Shape(tc.sql)
			if ok != (tc.key != "") {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if key != tc.key {
				t.Fatalf("key %q, want %q", key, tc.key)
			}
			var values []string
			for _, l := range lits {
				values = append(values, l.Value)
			}
			if !reflect.DeepEqual(values, tc.values) {
				t.Fatalf("values %q, want %q", values, tc.values)
			}
		})
	}
}

// TestShapeOffsets checks each constant's offset against the text: it is
// where the constant is written.
func TestShapeOffsets(t *testing.T) {
	sql := "UPDATE t SET a = 12, b = 'it''s', c = TRUE WHERE id = 3.5"
	_, lits, ok := Shape(sql)
	if !ok {
		t.Fatal("not read")
	}
	want := []string{"12", "'it''s'", "TRUE", "3.5"}
	if len(lits) != len(want) {
		t.Fatalf("%d constants", len(lits))
	}
	for i, l := range lits {
		if got := sql[l.Offset : l.Offset+len(want[i])]; got != want[i] {
			t.Errorf("constant %d at %d reads %q, want %q", i, l.Offset, got, want[i])
		}
	}
}
