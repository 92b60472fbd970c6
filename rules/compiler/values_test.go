package compiler

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/shopspring/decimal"
)

// result is what a test compares: FormatValue of a value, "NULL" for nil,
// or the SQLSTATE of an error.
func result(v any, err error) string {
	var e *pgerr.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "error: " + err.Error()
	}
	if v == nil {
		return "NULL"
	}
	return string(FormatValue(v))
}

// TestOperators: each operator of a rule expression on every pair of
// kinds it meets, compared by the text it writes back, so that a decimal
// computed through a float64 (0.30000000000000004) or losing its scale
// fails.
func TestOperators(t *testing.T) {
	ops := map[string]func(a, b any) (any, error){
		"+": Add, "-": Sub, "*": opMul, "/": opDiv, "%": opMod,
		"==": Equal, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe,
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		a    any
		op   string
		b    any
		want string
	}{
		// Integers stay integers, except division, which is exact.
		{7, "+", 2, "9"}, {7, "-", 9, "-2"}, {7, "*", -3, "-21"}, {7, "/", 2, "3.5"}, {8, "/", 2, "4"},
		{7, "%", 3, "1"}, {-7, "%", 3, "-1"}, {7, "%", 0, pgerr.DivisionByZero}, {7, "/", 0, pgerr.DivisionByZero},
		// Decimals keep their scale, as numeric does.
		{dec("0.10"), "+", dec("0.20"), "0.30"}, {dec("1.10"), "-", dec("0.1"), "1.00"},
		{dec("1.10"), "*", dec("0.5"), "0.550"}, {dec("100.00"), "*", 3, "300.00"},
		{dec("1.00"), "/", 4, "0.25"}, {dec("10"), "/", dec("4"), "2.5"},
		{2, "/", 3, "0.66666666666666666667"}, {dec("-2"), "/", 3, "-0.66666666666666666667"},
		{dec("5.5"), "%", 2, "1.5"}, {dec("5.5"), "%", dec("0.0"), pgerr.DivisionByZero},
		{dec("1"), "/", dec("0.00"), pgerr.DivisionByZero},
		{dec("12345678901234567890.12"), "+", dec("0.01"), "12345678901234567890.13"},
		{dec("99999999999999999999"), "*", dec("99999999999999999999"), "9999999999999999999800000000000000000001"},
		// A float meeting a decimal is the decimal it reads as.
		{0.1, "+", dec("0.2"), "0.3"}, {dec("0.2"), "-", 0.1, "0.1"}, {1.1, "*", dec("3"), "3.3"},
		// Floats stay floats.
		{0.5, "+", 1, "1.5"}, {1, "/", 4.0, "0.25"}, {1.0, "/", 0.0, pgerr.DivisionByZero}, {0.5, "*", 0.5, "0.25"},
		{2.5, "-", 1, "1.5"},
		// Text concatenates, and nothing else combines with it.
		{"ab", "+", "cd", "abcd"}, {"ab", "+", 1, pgerr.DataException}, {"ab", "-", "a", pgerr.DataException},
		{"ab", "*", 2, pgerr.DataException}, {"ab", "/", 2, pgerr.DataException}, {"ab", "%", 2, pgerr.DataException},
		{0.5, "%", 2, pgerr.DataException}, {true, "<", 1, pgerr.DataException},
		// NULL in arithmetic is NULL; in ordering false; equal only to NULL.
		{nil, "+", 1, "NULL"}, {1, "-", nil, "NULL"}, {nil, "*", dec("2"), "NULL"}, {1, "/", nil, "NULL"}, {nil, "%", 2, "NULL"},
		{nil, "==", nil, "t"}, {nil, "==", 0, "f"}, {0, "!=", nil, "t"}, {nil, "!=", nil, "f"},
		{nil, "<", 1, "f"}, {1, ">=", nil, "f"},
		// Comparisons across kinds of numbers compare the values.
		{1, "==", dec("1.00"), "t"}, {dec("0.3"), "==", 0.3, "t"}, {2, "<", 2.5, "t"}, {3, "<=", 3, "t"},
		{dec("2.50"), ">", dec("2.5"), "f"}, {dec("2.50"), ">=", dec("2.5"), "t"}, {1, "!=", 2, "t"},
		{0.1, "<", 0.2, "t"}, {0.2, ">", 0.1, "t"}, {1.5, "==", 1.5, "t"},
		// Text, times and booleans order among themselves.
		{"a", "<", "b", "t"}, {"b", "<=", "a", "f"}, {"a", "==", "a", "t"},
		{at, "<", at.Add(time.Second), "t"}, {at, "==", at.In(time.FixedZone("x", 3600)), "t"},
		{false, "<", true, "t"}, {true, ">", false, "t"}, {true, "==", true, "t"}, {true, "<=", false, "f"},
		// Values that do not order are equal only when identical.
		{"1", "==", 1, "f"}, {[]any{1.0}, "==", []any{1.0}, "t"}, {map[string]any{"a": 1.0}, "!=", map[string]any{"a": 2.0}, "t"},
		{"1", "<", 1, pgerr.DataException}, {at, ">", "x", pgerr.DataException},
	} {
		got := result(ops[tc.op](tc.a, tc.b))
		if got != tc.want {
			t.Errorf("%v %s %v = %s, want %s", tc.a, tc.op, tc.b, got, tc.want)
		}
	}
}

// TestOperatorResultKinds: what kind each combination gives, since a
// decimal that became a float or an integer that became a decimal would
// write back the same text in many cases.
func TestOperatorResultKinds(t *testing.T) {
	for _, tc := range []struct {
		got  any
		want string
	}{
		{must(Add(1, 2)), "integer"}, {must(opMul(1, 2)), "integer"}, {must(Sub(1, 2)), "integer"},
		{must(opDiv(4, 2)), "decimal"}, {must(opMod(4, 3)), "integer"},
		{must(Add(1, dec("2"))), "decimal"}, {must(Add(0.5, dec("2"))), "decimal"}, {must(Add(0.5, 2)), "float"},
		{must(opDiv(0.5, 2)), "float"}, {must(opMod(dec("4"), 3)), "decimal"}, {must(opNeg(dec("1"))), "decimal"},
		{must(Add(posInf, 1)), "decimal"},
	} {
		if n := TypeName(tc.got); n != tc.want {
			t.Errorf("%v is %s, want %s", tc.got, n, tc.want)
		}
	}
	for v, want := range map[any]string{nil: "nil", "x": "text", true: "boolean", time.Time{}: "time", int8(1): "int8", nan: "decimal"} {
		if n := TypeName(v); n != want {
			t.Errorf("TypeName(%v) = %s, want %s", v, n, want)
		}
	}
}

func must(v any, err error) any {
	if err != nil {
		panic(err)
	}
	return v
}

func TestUnaryOperators(t *testing.T) {
	for _, tc := range []struct {
		op   func(any) (any, error)
		in   any
		want string
	}{
		{opNeg, 3, "-3"}, {opNeg, dec("0.10"), "-0.10"}, {opNeg, 2.5, "-2.5"}, {opNeg, nil, "NULL"},
		{opNeg, nan, "NaN"}, {opNeg, posInf, "-Infinity"}, {opNeg, negInf, "Infinity"},
		{opNeg, "x", pgerr.DataException}, {opNeg, true, pgerr.DataException},
		{opNot, true, "f"}, {opNot, false, "t"}, {opNot, nil, "NULL"}, {opNot, 1, pgerr.DataException},
	} {
		if got := result(tc.op(tc.in)); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestSpecialArithmetic completes TestNumericSpecials with each branch of
// specialArith, as PostgreSQL 15 computes them (SELECT 'Infinity'::numeric
// % 2 is NaN, 2 % 'Infinity'::numeric is 2, 0 * 'Infinity'::numeric is
// NaN, 'Infinity'::numeric / 'Infinity'::numeric is NaN).
func TestSpecialArithmetic(t *testing.T) {
	for _, tc := range []struct {
		op   string
		a, b any
		want string
	}{
		{"+", 1, posInf, "Infinity"}, {"+", dec("1"), negInf, "-Infinity"}, {"+", posInf, negInf, "NaN"},
		{"+", posInf, posInf, "Infinity"}, {"+", nan, posInf, "NaN"}, {"+", 1, nan, "NaN"},
		{"-", 1, posInf, "-Infinity"}, {"-", negInf, posInf, "-Infinity"}, {"-", posInf, negInf, "Infinity"},
		{"-", negInf, negInf, "NaN"}, {"-", 1, nan, "NaN"}, {"-", posInf, 1e300, "Infinity"},
		{"*", posInf, posInf, "Infinity"}, {"*", negInf, posInf, "-Infinity"}, {"*", negInf, -1, "Infinity"},
		{"*", 0, posInf, "NaN"}, {"*", dec("-0.5"), negInf, "Infinity"}, {"*", nan, posInf, "NaN"},
		{"/", dec("-5"), posInf, "0"}, {"/", negInf, 2, "-Infinity"}, {"/", negInf, -2, "Infinity"},
		{"/", posInf, posInf, "NaN"}, {"/", 1, negInf, "0"}, {"/", nan, posInf, "NaN"},
		{"/", negInf, dec("0.0"), pgerr.DivisionByZero}, {"/", 1, nan, "NaN"},
		{"%", posInf, 2, "NaN"}, {"%", dec("2.5"), negInf, "2.5"}, {"%", posInf, 0, pgerr.DivisionByZero},
		{"%", nan, 0, "NaN"}, {"%", 1, nan, "NaN"},
		{"^", posInf, 1, pgerr.DataException},
	} {
		if got := result(specialArith(tc.op, tc.a, tc.b)); got != tc.want {
			t.Errorf("%v %s %v = %s, want %s", tc.a, tc.op, tc.b, got, tc.want)
		}
	}
	// A special meets a number only: with text it is a type error.
	if got := result(Add(posInf, "x")); got != pgerr.DataException {
		t.Errorf("Infinity + 'x' = %s", got)
	}
	if _, ok := Compare(nan, "x"); ok {
		t.Error("NaN compares with text")
	}
}

// TestSpecialOrder: numeric's order is -Infinity < numbers < Infinity <
// NaN, and each special equals itself.
func TestSpecialOrder(t *testing.T) {
	order := []any{negInf, dec("-1e30"), -1, 0, 0.5, dec("1e30"), posInf, nan}
	for i, a := range order {
		for j, b := range order {
			c, ok := Compare(a, b)
			want := cmpOrdered(i, j)
			if !ok || c != want {
				t.Errorf("Compare(%v, %v) = %d %v, want %d", a, b, c, ok, want)
			}
		}
	}
}

// TestParseValue: each kind's text as PostgreSQL writes it, and what does
// not read (a caller keeps that as text).
func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		kind catalog.Kind
		text string
		want any
	}{
		{catalog.KindInt, "-2147483648", -2147483648},
		{catalog.KindInt, "9223372036854775807", 9223372036854775807},
		{catalog.KindDecimal, "0.000000000000000000000000000001", dec("1e-30")},
		{catalog.KindDecimal, "123456789012345678901234567890.5", dec("123456789012345678901234567890.5")},
		{catalog.KindDecimal, "NaN", nan},
		{catalog.KindDecimal, "-Infinity", negInf},
		{catalog.KindFloat, "1e-07", 1e-7},
		{catalog.KindFloat, "Infinity", math.Inf(1)},
		{catalog.KindBool, "true", true},
		{catalog.KindBool, "t", true},
		{catalog.KindBool, "f", false},
		{catalog.KindBool, "false", false},
		{catalog.KindText, "NaN", "NaN"},
		{catalog.KindTime, "2026-11-22 10:00:00.5+05:30", time.Date(2026, 11, 22, 10, 0, 0, 5e8, time.FixedZone("", 19800))},
		{catalog.KindTime, "2026-11-22 10:00:00-08", time.Date(2026, 11, 22, 10, 0, 0, 0, time.FixedZone("", -8*3600))},
		{catalog.KindTime, "2026-11-22 10:00:00.123456", time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.UTC)},
		{catalog.KindTime, "2026-11-22", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{catalog.KindJSON, `{"a":[1,"x",null]}`, map[string]any{"a": []any{1.0, "x", nil}}},
	} {
		got, err := ParseValue(tc.kind, []byte(tc.text))
		if err != nil {
			t.Errorf("%s %q: %v", tc.kind, tc.text, err)
			continue
		}
		if eq, _ := Equal(got, tc.want); eq != true {
			t.Errorf("%s %q = %#v, want %#v", tc.kind, tc.text, got, tc.want)
		}
		if TypeName(got) != TypeName(tc.want) {
			t.Errorf("%s %q is a %s, want a %s", tc.kind, tc.text, TypeName(got), TypeName(tc.want))
		}
	}
	for _, tc := range []struct {
		kind catalog.Kind
		text string
	}{
		{catalog.KindInt, "1.5"}, {catalog.KindInt, "99999999999999999999"}, {catalog.KindDecimal, "nan"},
		{catalog.KindDecimal, "1,5"}, {catalog.KindFloat, "x"}, {catalog.KindTime, "infinity"},
		{catalog.KindTime, "22/11/2026"}, {catalog.KindJSON, "{"},
	} {
		if v, err := ParseValue(tc.kind, []byte(tc.text)); err == nil {
			t.Errorf("%s %q reads as %#v", tc.kind, tc.text, v)
		}
	}
}

// TestFormatValue: what the engine writes back for each kind of value;
// a decimal keeps its scale and never takes an exponent.
func TestFormatValue(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{0, "0"}, {-42, "-42"},
		{dec("81.00"), "81.00"}, {dec("1e3"), "1000"}, {dec("1.5e-7"), "0.00000015"}, {dec("-0.0"), "0.0"},
		{decimal.New(5, -3), "0.005"}, {decimal.New(12, 2), "1200"},
		{0.1, "0.1"}, {1e21, "1e+21"}, {-2.5, "-2.5"},
		{posInf, "Infinity"}, {negInf, "-Infinity"}, {nan, "NaN"},
		{true, "t"}, {false, "f"}, {"it's", "it's"},
		{time.Date(2026, 11, 22, 10, 0, 0, 500, time.FixedZone("", -3600*5-1800)), "2026-11-22 10:00:00.0000005-05:30"},
		{map[string]any{"total": dec("10.50"), "n": 2, "at": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "s": nan},
			`{"at":"2026-01-01T00:00:00Z","n":2,"s":"NaN","total":10.50}`},
		{[]any{dec("0.10"), nil, "x", []any{dec("1e-2")}}, `[0.10,null,"x",[0.01]]`},
		{int64(7), "7"},
	} {
		if got := string(FormatValue(tc.in)); got != tc.want {
			t.Errorf("%#v: %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestValuesRoundTrip: text read and written back is the same text, for
// each kind a column may hold, so a column no rule changed is written
// back as it was.
func TestValuesRoundTrip(t *testing.T) {
	for kind, texts := range map[catalog.Kind][]string{
		catalog.KindInt:     {"0", "-1", "9223372036854775807"},
		catalog.KindDecimal: {"0", "0.00", "-12.340", "100", "NaN", "Infinity", "-Infinity", "0.000000000000000000000000001", "98765432109876543210987654321.123456789"},
		catalog.KindFloat:   {"0.1", "-1.5", "1e+21", "1e-07"},
		catalog.KindBool:    {"t", "f"},
		catalog.KindTime:    {"2026-11-22 10:00:00.123456+01:00", "1999-12-31 23:59:59-08:00"},
		catalog.KindText:    {"", "naïve", `a"b\c`},
	} {
		for _, text := range texts {
			v, err := ParseValue(kind, []byte(text))
			if err != nil {
				t.Errorf("%s %q: %v", kind, text, err)
				continue
			}
			if got := string(FormatValue(v)); got != text {
				t.Errorf("%s %q comes back as %q", kind, text, got)
			}
		}
	}
}

// TestIntegerOverflow: integers compute exactly past 64 bits, as the
// one-trip SQL computes them (as numeric, see exactSQL): a result that
// does not fit an int is a decimal, never a wrapped int. The column the
// value is written to decides, as PostgreSQL's assignment does (SELECT
// 9223372036854775808::numeric::bigint fails with 22003).
func TestIntegerOverflow(t *testing.T) {
	const maxInt, minInt = math.MaxInt64, math.MinInt64
	for _, tc := range []struct {
		got  any
		want string
		kind string
	}{
		{must(Add(maxInt, 1)), "9223372036854775808", "decimal"},
		{must(Add(minInt, -1)), "-9223372036854775809", "decimal"},
		{must(Add(maxInt, minInt)), "-1", "integer"},
		{must(Add(maxInt-1, 1)), "9223372036854775807", "integer"},
		{must(Sub(minInt, 1)), "-9223372036854775809", "decimal"},
		{must(Sub(0, minInt)), "9223372036854775808", "decimal"},
		{must(Sub(-1, minInt)), "9223372036854775807", "integer"},
		{must(Sub(maxInt, -1)), "9223372036854775808", "decimal"},
		{must(opMul(4294967296, 4294967296)), "18446744073709551616", "decimal"},
		{must(opMul(-1, minInt)), "9223372036854775808", "decimal"},
		{must(opMul(minInt, -1)), "9223372036854775808", "decimal"},
		{must(opMul(3037000499, 3037000499)), "9223372030926249001", "integer"},
		{must(opMul(-3037000499, 3037000499)), "-9223372030926249001", "integer"},
		{must(opMul(0, minInt)), "0", "integer"},
		{must(opNeg(minInt)), "9223372036854775808", "decimal"},
		{must(opNeg(maxInt)), "-9223372036854775807", "integer"},
	} {
		if got := string(FormatValue(tc.got)); got != tc.want || TypeName(tc.got) != tc.kind {
			t.Errorf("%s (%s), want %s (%s)", got, TypeName(tc.got), tc.want, tc.kind)
		}
	}
}

// TestEngineValueHelpers: the value functions the engine uses besides the
// operators: JSON with exact decimals, the special numerics, decimals of
// ints and floats, and type names for messages.
func TestEngineValueHelpers(t *testing.T) {
	for _, tc := range []struct {
		v    any
		json string
	}{
		{dec("0.30"), `0.30`},
		{map[string]any{"a": dec("1.10"), "b": []any{nan, nil, "x"}}, `{"a":1.10,"b":["NaN",null,"x"]}`},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), `"2026-01-02T03:04:05Z"`},
		{3, `3`},
	} {
		if got, err := EncodeJSON(tc.v); err != nil || string(got) != tc.json {
			t.Errorf("EncodeJSON(%v) = %s, %v; want %s", tc.v, got, err, tc.json)
		}
	}
	for _, tc := range []struct {
		v       any
		special bool
		name    string
	}{
		{nan, true, "decimal"}, {posInf, true, "decimal"}, {negInf, true, "decimal"}, {dec("1"), false, "decimal"},
		{1, false, "integer"}, {1.5, false, "float"}, {"NaN", false, "text"}, {nil, false, "nil"}, {[]int{}, false, "[]int"},
	} {
		if IsSpecial(tc.v) != tc.special || TypeName(tc.v) != tc.name {
			t.Errorf("%v: IsSpecial %v, TypeName %s", tc.v, IsSpecial(tc.v), TypeName(tc.v))
		}
	}
	for _, tc := range []struct {
		v    any
		want string
	}{{3, "3"}, {0.1, "0.1"}, {-2.5e-7, "-0.00000025"}, {dec("1.50"), "1.5"}} {
		if got := ToDecimal(tc.v); got.String() != tc.want {
			t.Errorf("ToDecimal(%v) = %s, want %s", tc.v, got, tc.want)
		}
	}
}
