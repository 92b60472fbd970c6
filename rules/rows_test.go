package rules

import (
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/rules/compiler"
)

// TestCoerce: a rule's value becomes what the column stores, as
// PostgreSQL's assignment casts give it (SELECT 2.345::numeric(14,2) is
// 2.35, -2.345 gives -2.35, 2.5::float8::int is 2).
func TestCoerce(t *testing.T) {
	num := func(typ string, scale int32) *catalog.Column {
		return &catalog.Column{Name: "c", Kind: catalog.KindDecimal, Type: typ, Scale: scale, HasScale: true}
	}
	integer := &catalog.Column{Name: "c", Kind: catalog.KindInt, Type: "integer"}
	plain := &catalog.Column{Name: "c", Kind: catalog.KindDecimal, Type: "numeric"}
	for _, tc := range []struct {
		col  *catalog.Column
		in   any
		want string
	}{
		{num("numeric(14,2)", 2), dec("2.345"), "2.35"},
		{num("numeric(14,2)", 2), dec("-2.345"), "-2.35"},
		{num("numeric(14,2)", 2), dec("2.3449999"), "2.34"},
		{num("numeric(14,2)", 2), dec("3.33333333333333333333"), "3.33"},
		{num("numeric(14,2)", 2), 10, "10.00"},
		{num("numeric(14,2)", 2), 0.125, "0.13"},
		{num("numeric(14,2)", 2), dec("1.5"), "1.50"},
		{num("numeric(14,0)", 0), dec("2.5"), "3"},
		{num("numeric(4,-2)", -2), dec("1250"), "1300"},
		{num("numeric(14,2)", 2), nil, ""},
		{plain, dec("3.33333333333333333333"), "3.33333333333333333333"},
		{plain, 7, "7"},
		{integer, dec("2.5"), "3"},
		{integer, dec("-2.5"), "-3"},
		{integer, 2.5, "2"},
		{integer, 3.5, "4"},
		{integer, 7, "7"},
	} {
		if got := string(compiler.FormatValue(coerce(tc.col, tc.in))); got != tc.want {
			t.Errorf("%v into %s: %s, want %s", tc.in, tc.col.Type, got, tc.want)
		}
	}
}

// TestCoerceOutOfRange: a value too large for an integer column is kept
// as the number it is, for the server to refuse (22003) when it is
// written, never wrapped to a number that fits (2^64 + 5 is not 5).
func TestCoerceOutOfRange(t *testing.T) {
	integer := &catalog.Column{Name: "c", Kind: catalog.KindInt, Type: "integer"}
	for _, tc := range []struct {
		in   any
		want string
	}{
		{dec("18446744073709551621"), "18446744073709551621"},
		{dec("9223372036854775807.4"), "9223372036854775807"},
		{dec("9223372036854775807.5"), "9223372036854775808"},
		{dec("-9223372036854775808.5"), "-9223372036854775809"},
		{dec("-9223372036854775808.4"), "-9223372036854775808"},
		{1e20, "100000000000000000000"},
		{-1e19, "-10000000000000000000"},
		{9.2233720368547e18, "9223372036854700032"},
	} {
		if got := string(compiler.FormatValue(coerce(integer, tc.in))); got != tc.want {
			t.Errorf("%v into integer: %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestCoerceMore: the conversions TestCoerce leaves out: specials, values
// of other kinds, and negative halves (PostgreSQL: SELECT
// (-0.5)::numeric::int is -1, (-0.5)::float8::int is -0, -1.5::float8::int
// is -2, 2.675::numeric(14,2) is 2.68 although 2.675::float8 is below it).
func TestCoerceMore(t *testing.T) {
	num := &catalog.Column{Name: "c", Kind: catalog.KindDecimal, Type: "numeric(14,2)", Scale: 2, HasScale: true}
	num4 := &catalog.Column{Name: "c", Kind: catalog.KindDecimal, Type: "numeric(14,4)", Scale: 4, HasScale: true}
	integer := &catalog.Column{Name: "c", Kind: catalog.KindInt, Type: "integer"}
	text := &catalog.Column{Name: "c", Kind: catalog.KindText, Type: "text"}
	for _, tc := range []struct {
		col  *catalog.Column
		in   any
		want string
	}{
		{integer, dec("-0.5"), "-1"}, {integer, dec("0.49999999999999999999"), "0"}, {integer, -0.5, "0"},
		{integer, -1.5, "-2"}, {integer, dec("1e3"), "1000"}, {integer, nil, "NULL"}, {integer, "x", "x"},
		{num, 2.675, "2.68"}, {num, dec("-0.005"), "-0.01"}, {num, dec("0.004999"), "0.00"}, {num, -3, "-3.00"},
		{num, posInf, "Infinity"}, {num, nan, "NaN"}, {num4, dec("1.23456"), "1.2346"}, {num4, dec("1.2"), "1.2000"},
		{num, "12.345", "12.345"}, {text, dec("1.5"), "1.5"}, {text, 3, "3"},
	} {
		got := "NULL"
		if v := coerce(tc.col, tc.in); v != nil {
			got = string(compiler.FormatValue(v))
		}
		if got != tc.want {
			t.Errorf("%v into %s: %s, want %s", tc.in, tc.col.Type, got, tc.want)
		}
	}
	// An integer column receives an int whatever it was given: a decimal
	// left as one would write the same text but compare as another kind.
	if v := coerce(integer, dec("2.5")); compiler.TypeName(v) != "integer" {
		t.Errorf("a decimal into an integer column is a %s", compiler.TypeName(v))
	}
	if v := coerce(num, 3); compiler.TypeName(v) != "decimal" {
		t.Errorf("an int into a numeric column is a %s", compiler.TypeName(v))
	}
}

// TestSameValue: the engine's test of whether a rule's input changed.
func TestSameValue(t *testing.T) {
	for _, tc := range []struct {
		a, b any
		want bool
	}{
		{dec("1.0"), dec("1.00"), true}, {1, dec("1"), true}, {nil, nil, true}, {nil, 0, false},
		{nan, nan, true}, {nan, posInf, false}, {"a", "b", false}, {"1", 1, false},
		{map[string]any{"a": 1.0}, map[string]any{"a": 1.0}, true},
	} {
		if got := sameValue(tc.a, tc.b); got != tc.want {
			t.Errorf("sameValue(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
}
