package rules

import (
	"testing"

	"github.com/pgrules/pgrules/catalog"
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
		if got := string(FormatValue(coerce(tc.col, tc.in))); got != tc.want {
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
		if got := string(FormatValue(coerce(integer, tc.in))); got != tc.want {
			t.Errorf("%v into integer: %s, want %s", tc.in, got, tc.want)
		}
	}
}
