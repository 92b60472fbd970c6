package compiler

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/shopspring/decimal"
)

// Values in expressions: int for integers, decimal.Decimal for numeric
// (exact, never a float64), float64 for real and double precision, string,
// bool, time.Time, decoded JSON, and nil for NULL.
//
// Every arithmetic and comparison operator of a rule expression is
// rewritten into a call of one of the functions below (see expression.go),
// which decide by the operands' run-time types: an integer meeting a decimal
// becomes a decimal, a float meeting a decimal becomes the decimal of its
// shortest representation, so 0.1 + 0.2 == 0.3 holds and money stays
// exact. Arithmetic with nil gives nil, as in SQL; == and != treat nil as
// a value (nil == nil); <, <=, >, >= with nil are false.

// divisionPrecision is the number of decimal places kept by a division
// whose result does not terminate, as many as PostgreSQL's numeric keeps
// for operands of small scale (at least 16 significant digits).
const divisionPrecision = 20

type numKind int

const (
	notNumber numKind = iota
	isInt
	isDecimal
	isFloat
)

func numeric(v any) numKind {
	switch v.(type) {
	case int:
		return isInt
	case decimal.Decimal, special:
		return isDecimal
	case float64:
		return isFloat
	}
	return notNumber
}

// special is a numeric value that is not a decimal: NaN, Infinity or
// -Infinity, which PostgreSQL's numeric holds (never a float64). It
// computes and compares as PostgreSQL's numeric does: NaN with anything is
// NaN, Infinity - Infinity and Infinity * 0 are NaN, a finite number over
// Infinity is 0; NaN equals NaN and sorts after every other value,
// -Infinity before every other.
type special int8

const (
	negInf special = -1
	posInf special = 1
	nan    special = 2
)

func (s special) String() string {
	switch s {
	case negInf:
		return "-Infinity"
	case posInf:
		return "Infinity"
	}
	return "NaN"
}

// parseSpecial reads numeric's NaN and infinities as PostgreSQL writes
// them.
func parseSpecial(s string) (special, bool) {
	switch s {
	case "NaN":
		return nan, true
	case "Infinity":
		return posInf, true
	case "-Infinity":
		return negInf, true
	}
	return 0, false
}

// sign is -1, 0 or 1 for a number that is not NaN.
func sign(v any) int {
	if s, ok := v.(special); ok {
		return int(s)
	}
	return ToDecimal(v).Sign()
}

// specialArith is op on two numbers of which one at least is special.
func specialArith(op string, a, b any) (any, error) {
	sa, aok := a.(special)
	sb, bok := b.(special)
	if aok && sa == nan || bok && sb == nan {
		return nan, nil
	}
	switch op {
	case "-":
		nb, _ := opNeg(b)
		return specialArith("+", a, nb)
	case "+":
		if aok && bok && sa != sb {
			return nan, nil
		}
		if aok {
			return sa, nil
		}
		return sb, nil
	case "*":
		if sign(a)*sign(b) == 0 {
			return nan, nil
		}
		return special(sign(a) * sign(b)), nil
	case "/":
		if sign(b) == 0 {
			return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
		}
		if aok && bok {
			return nan, nil
		}
		if bok {
			return decimal.Zero, nil
		}
		return special(sign(a) * sign(b)), nil
	case "%":
		if sign(b) == 0 {
			return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
		}
		if aok {
			return nan, nil
		}
		return a, nil
	}
	return nil, typeError(op, a, b)
}

// compareSpecial orders two numbers of which one at least is special.
func compareSpecial(a, b any) int {
	rank := func(v any) int {
		if s, ok := v.(special); ok {
			return int(s) * 2 // -Infinity, then numbers, Infinity, NaN
		}
		return 0
	}
	return cmpOrdered(rank(a), rank(b))
}

// IsSpecial reports whether v is numeric's NaN, Infinity or -Infinity.
func IsSpecial(v any) bool {
	_, ok := v.(special)
	return ok
}

func hasSpecial(a, b any) bool {
	_, aok := a.(special)
	_, bok := b.(special)
	return (aok || bok) && numeric(a) != notNumber && numeric(b) != notNumber
}

// ToDecimal is a finite number as a decimal: an int exactly, a float64 as
// the decimal of its shortest representation.
func ToDecimal(v any) decimal.Decimal {
	switch v := v.(type) {
	case int:
		return decimal.NewFromInt(int64(v))
	case float64:
		d, _ := decimal.NewFromString(strconv.FormatFloat(v, 'f', -1, 64))
		return d
	}
	return v.(decimal.Decimal)
}

func toFloat(v any) float64 {
	if i, ok := v.(int); ok {
		return float64(i)
	}
	return v.(float64)
}

// widest is the type two numbers are combined in.
func widest(a, b any) numKind {
	ka, kb := numeric(a), numeric(b)
	switch {
	case ka == notNumber || kb == notNumber:
		return notNumber
	case ka == isDecimal || kb == isDecimal:
		return isDecimal
	case ka == isFloat || kb == isFloat:
		return isFloat
	}
	return isInt
}

func typeError(op string, a, b any) error {
	return pgerr.New(pgerr.DataException, "operator %s cannot combine %s and %s", op, TypeName(a), TypeName(b))
}

// TypeName names the type of a value, for messages.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case int:
		return "integer"
	case decimal.Decimal, special:
		return "decimal"
	case float64:
		return "float"
	case string:
		return "text"
	case bool:
		return "boolean"
	case time.Time:
		return "time"
	}
	return reflect.TypeOf(v).String()
}

// addInt, subInt and mulInt compute integers exactly: a result that does
// not fit an int is a decimal, as the one-trip SQL computes it in numeric
// (exactSQL). Wrapped, it would be a wrong number that fits the column.
func addInt(a, b int) any {
	if s := a + b; (s > a) == (b > 0) {
		return s
	}
	return decimal.NewFromInt(int64(a)).Add(decimal.NewFromInt(int64(b)))
}

func subInt(a, b int) any {
	if s := a - b; (s < a) == (b > 0) {
		return s
	}
	return decimal.NewFromInt(int64(a)).Sub(decimal.NewFromInt(int64(b)))
}

func mulInt(a, b int) any {
	p := a * b
	if a == 0 || p/a == b && !(a == -1 && b == math.MinInt) {
		return p
	}
	return decimal.NewFromInt(int64(a)).Mul(decimal.NewFromInt(int64(b)))
}

// Add is + of the expression language: numbers in the widest of their
// types, exactly; text joined; nil with nil.
func Add(a, b any) (any, error) {
	if a == nil || b == nil {
		return nil, nil
	}
	if hasSpecial(a, b) {
		return specialArith("+", a, b)
	}
	switch widest(a, b) {
	case isInt:
		return addInt(a.(int), b.(int)), nil
	case isDecimal:
		return ToDecimal(a).Add(ToDecimal(b)), nil
	case isFloat:
		return toFloat(a) + toFloat(b), nil
	}
	if sa, ok := a.(string); ok {
		if sb, ok := b.(string); ok {
			return sa + sb, nil
		}
	}
	return nil, typeError("+", a, b)
}

// Sub is - of the expression language.
func Sub(a, b any) (any, error) {
	if a == nil || b == nil {
		return nil, nil
	}
	if hasSpecial(a, b) {
		return specialArith("-", a, b)
	}
	switch widest(a, b) {
	case isInt:
		return subInt(a.(int), b.(int)), nil
	case isDecimal:
		return ToDecimal(a).Sub(ToDecimal(b)), nil
	case isFloat:
		return toFloat(a) - toFloat(b), nil
	}
	return nil, typeError("-", a, b)
}

func opMul(a, b any) (any, error) {
	if a == nil || b == nil {
		return nil, nil
	}
	if hasSpecial(a, b) {
		return specialArith("*", a, b)
	}
	switch widest(a, b) {
	case isInt:
		return mulInt(a.(int), b.(int)), nil
	case isDecimal:
		return ToDecimal(a).Mul(ToDecimal(b)), nil
	case isFloat:
		return toFloat(a) * toFloat(b), nil
	}
	return nil, typeError("*", a, b)
}

// opDiv divides exactly: integers and decimals give a decimal (7 / 2 is
// 3.5, not 3), floats a float.
func opDiv(a, b any) (any, error) {
	if a == nil || b == nil {
		return nil, nil
	}
	if hasSpecial(a, b) {
		return specialArith("/", a, b)
	}
	k := widest(a, b)
	if k == notNumber {
		return nil, typeError("/", a, b)
	}
	if k == isFloat {
		if toFloat(b) == 0 {
			return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
		}
		return toFloat(a) / toFloat(b), nil
	}
	d := ToDecimal(b)
	if d.IsZero() {
		return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
	}
	q := ToDecimal(a).DivRound(d, divisionPrecision)
	// Trailing zeros of a terminating quotient are noise: 1.00 / 4 is 0.25.
	return trimZeros(q), nil
}

func trimZeros(d decimal.Decimal) decimal.Decimal {
	s := d.String()
	out, _ := decimal.NewFromString(s)
	return out
}

func opMod(a, b any) (any, error) {
	if a == nil || b == nil {
		return nil, nil
	}
	if hasSpecial(a, b) {
		return specialArith("%", a, b)
	}
	switch widest(a, b) {
	case isInt:
		if b.(int) == 0 {
			return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
		}
		return a.(int) % b.(int), nil
	case isDecimal:
		if ToDecimal(b).IsZero() {
			return nil, pgerr.New(pgerr.DivisionByZero, "division by zero")
		}
		return ToDecimal(a).Mod(ToDecimal(b)), nil
	}
	return nil, typeError("%", a, b)
}

func opNeg(a any) (any, error) {
	switch v := a.(type) {
	case nil:
		return nil, nil
	case int:
		if v == math.MinInt {
			return decimal.NewFromInt(int64(v)).Neg(), nil
		}
		return -v, nil
	case decimal.Decimal:
		return v.Neg(), nil
	case float64:
		return -v, nil
	case special:
		if v == nan {
			return nan, nil
		}
		return -v, nil
	}
	return nil, pgerr.New(pgerr.DataException, "operator - cannot apply to %s", TypeName(a))
}

// opNot is NOT as SQL has it: NOT NULL is NULL (a filter "not row.paid"
// counts no row whose paid is NULL).
func opNot(a any) (any, error) {
	switch v := a.(type) {
	case nil:
		return nil, nil
	case bool:
		return !v, nil
	}
	return nil, pgerr.New(pgerr.DataException, "operator not cannot apply to %s", TypeName(a))
}

// Compare orders two non-nil values; ok is false when they are of kinds
// that do not compare.
func Compare(a, b any) (c int, ok bool) {
	if hasSpecial(a, b) {
		return compareSpecial(a, b), true
	}
	switch widest(a, b) {
	case isInt:
		x, y := a.(int), b.(int)
		return cmpOrdered(x, y), true
	case isDecimal:
		return ToDecimal(a).Cmp(ToDecimal(b)), true
	case isFloat:
		return cmpOrdered(toFloat(a), toFloat(b)), true
	}
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return cmpOrdered(x, y), true
		}
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y), true
		}
	case bool:
		if y, ok := b.(bool); ok {
			if x == y {
				return 0, true
			}
			if !x {
				return -1, true
			}
			return 1, true
		}
	}
	return 0, false
}

func cmpOrdered[T int | float64 | string](x, y T) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// Equal is == of the expression language: nil equals nil, numbers equal
// by value whatever their types.
func Equal(a, b any) (any, error) {
	if a == nil || b == nil {
		return a == nil && b == nil, nil
	}
	if c, ok := Compare(a, b); ok {
		return c == 0, nil
	}
	return reflect.DeepEqual(a, b), nil
}

func opNe(a, b any) (any, error) {
	eq, err := Equal(a, b)
	return !eq.(bool), err
}

func ordering(op string, test func(int) bool) func(a, b any) (any, error) {
	return func(a, b any) (any, error) {
		if a == nil || b == nil {
			return false, nil
		}
		c, ok := Compare(a, b)
		if !ok {
			return nil, typeError(op, a, b)
		}
		return test(c), nil
	}
}

var (
	opLt = ordering("<", func(c int) bool { return c < 0 })
	opLe = ordering("<=", func(c int) bool { return c <= 0 })
	opGt = ordering(">", func(c int) bool { return c > 0 })
	opGe = ordering(">=", func(c int) bool { return c >= 0 })
)

// ParseValue turns a column's value in PostgreSQL's text format into its
// expression value. A nil text is NULL.
func ParseValue(kind catalog.Kind, text []byte) (any, error) {
	if text == nil {
		return nil, nil
	}
	s := string(text)
	switch kind {
	case catalog.KindInt:
		n, err := strconv.Atoi(s)
		return n, err
	case catalog.KindDecimal:
		if sp, ok := parseSpecial(s); ok {
			return sp, nil
		}
		return decimal.NewFromString(s)
	case catalog.KindFloat:
		return strconv.ParseFloat(s, 64)
	case catalog.KindBool:
		return s == "t" || s == "true", nil
	case catalog.KindTime:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t, nil
			}
		}
		return nil, fmt.Errorf("cannot read %q as a time", s)
	case catalog.KindJSON:
		var v any
		err := json.Unmarshal(text, &v)
		return v, err
	}
	return s, nil
}

// FormatValue turns an expression value into PostgreSQL's text format; nil
// is NULL.
func FormatValue(v any) []byte {
	switch v := v.(type) {
	case nil:
		return nil
	case int:
		return strconv.AppendInt(nil, int64(v), 10)
	case decimal.Decimal:
		// Keep the value's own scale: 81.00 stays 81.00.
		if exp := v.Exponent(); exp < 0 {
			return []byte(v.StringFixed(-exp))
		}
		return []byte(v.String())
	case float64:
		return strconv.AppendFloat(nil, v, 'g', -1, 64)
	case special:
		return []byte(v.String())
	case bool:
		if v {
			return []byte("t")
		}
		return []byte("f")
	case time.Time:
		return []byte(v.Format("2006-01-02 15:04:05.999999999-07:00"))
	case string:
		return []byte(v)
	case map[string]any, []any:
		b, err := EncodeJSON(v)
		if err != nil {
			return []byte(fmt.Sprint(v))
		}
		return b
	}
	return []byte(fmt.Sprint(v))
}

// EncodeJSON is v as JSON, its decimals exact.
func EncodeJSON(v any) ([]byte, error) { return json.Marshal(jsonable(v)) }

// jsonable turns an expression value into one encoding/json writes
// exactly: a decimal as the number it is (never through a float64), a time
// in RFC 3339.
func jsonable(v any) any {
	switch v := v.(type) {
	case decimal.Decimal:
		return json.Number(FormatValue(v))
	case special:
		return v.String() // JSON has no such number
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = jsonable(x)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = jsonable(x)
		}
		return l
	}
	return v
}
