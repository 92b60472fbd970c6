package sqltext

import (
	"testing"

	"github.com/pgrules/pgrules/catalog"
)

// TestIdent: identifiers read back as what they quote, in any case and
// with quotes in them.
func TestIdent(t *testing.T) {
	for in, want := range map[string]string{`a`: `"a"`, `Mixed Case`: `"Mixed Case"`, `a"b`: `"a""b"`, `""`: `""""""`, ``: `""`} {
		if got := Ident(in); got != want {
			t.Errorf("Ident(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestLiteral: literals read back as what they quote whatever
// standard_conforming_strings is (SELECT E'a\\b' is a\b in either
// setting).
func TestLiteral(t *testing.T) {
	for in, want := range map[string]string{`a`: `'a'`, `it's`: `'it''s'`, `a\b`: `E'a\\b'`, `it's\`: `E'it''s\\'`, `\\`: `E'\\\\'`, ``: `''`} {
		if got := Literal(in); got != want {
			t.Errorf("Literal(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestTable(t *testing.T) {
	for _, tc := range []struct{ schema, name, want string }{
		{"public", "orders", `"public"."orders"`},
		{"my schema", "T", `"my schema"."T"`},
		{"s", `a"b`, `"s"."a""b"`},
	} {
		if got := Table(&catalog.Table{Schema: tc.schema, Name: tc.name}); got != tc.want {
			t.Errorf("Table(%s, %s) = %s, want %s", tc.schema, tc.name, got, tc.want)
		}
	}
}

func TestKeyMatch(t *testing.T) {
	for _, tc := range []struct {
		fk   *catalog.ForeignKey
		want string
	}{
		{&catalog.ForeignKey{Columns: []string{"order_id"}, ParentColumns: []string{"id"}}, `c."order_id" = p."id"`},
		{&catalog.ForeignKey{Columns: []string{"a", "b"}, ParentColumns: []string{"x", "y"}}, `c."a" = p."x" AND c."b" = p."y"`},
		{&catalog.ForeignKey{Columns: []string{"Mixed"}, ParentColumns: []string{`q"`}}, `c."Mixed" = p."q"""`},
	} {
		if got := KeyMatch(tc.fk, "c", "p"); got != tc.want {
			t.Errorf("KeyMatch(%v) = %s, want %s", tc.fk.Columns, got, tc.want)
		}
	}
}

// TestValueType: the character and bit string types lose their length,
// arrays of them too; every other type, numeric's precision and scale
// included (its explicit cast rounds as assignment does), stays as it is.
func TestValueType(t *testing.T) {
	for in, want := range map[string]string{
		"character varying(3)":           "character varying",
		"character varying":              "character varying",
		"character(2)":                   "bpchar",
		"bit(8)":                         "bit varying",
		"bit varying(5)":                 "bit varying",
		"character varying(3)[]":         "character varying[]",
		"bit(1)[]":                       "bit varying[]",
		"numeric(14,2)":                  "numeric(14,2)",
		"timestamp(0) without time zone": "timestamp(0) without time zone",
		"text":                           "text",
		"integer[]":                      "integer[]",
		"public.short_code":              "public.short_code",
	} {
		if got := ValueType(&catalog.Column{Type: in}); got != want {
			t.Errorf("ValueType(%s) = %s, want %s", in, got, want)
		}
	}
}
