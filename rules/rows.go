package rules

import (
	"bytes"
	"fmt"
	"math"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/shopspring/decimal"
)

// row is one row of a table as the engine handles it: the text Postgres
// gave for each column (what is written back for a column no rule
// changed, byte for byte), and the values expressions see.
type row struct {
	ctid []byte
	text [][]byte // by position in the table's columns
	// vals holds each column's value by name, and each loaded parent row
	// under its accessor (nil when the foreign key is NULL).
	vals map[string]any
}

// newRow reads a row from its columns' text. A value that does not read
// as its kind (a timestamp of 'infinity') is kept as text.
func newRow(t *catalog.Table, ctid []byte, text [][]byte) *row {
	r := &row{ctid: ctid, text: text, vals: make(map[string]any, len(t.Columns))}
	for i, c := range t.Columns {
		v, err := compiler.ParseValue(c.Kind, text[i])
		if err != nil {
			v = string(text[i])
		}
		r.vals[c.Name] = v
	}
	return r
}

// clone copies a row's values (not its parents) for a change to them.
func (r *row) clone(t *catalog.Table) *row {
	c := &row{ctid: r.ctid, text: append([][]byte(nil), r.text...), vals: make(map[string]any, len(r.vals))}
	for _, col := range t.Columns {
		c.vals[col.Name] = r.vals[col.Name]
	}
	return c
}

// set gives column i of the row a value computed by a rule, converted to
// what the column holds.
func (r *row) set(t *catalog.Table, i int, v any) {
	c := t.Columns[i]
	v = coerce(c, v)
	r.vals[c.Name] = v
	r.text[i] = compiler.FormatValue(v)
}

// coerce converts a rule's value to what the column stores, as an
// assignment in PostgreSQL would: a decimal stored in an integer column is
// rounded half away from zero, a float half to even, and a numeric(p,s)
// column keeps s decimals, rounded half away from zero. Every rule that
// reads the column afterwards reads that value, as it would read it from
// the table (rules-api.md §8).
func coerce(c *catalog.Column, v any) any {
	switch c.Kind {
	case catalog.KindInt:
		// A value outside an int's range stays the number it is, for the
		// server to refuse as out of range when it is written.
		switch x := v.(type) {
		case decimal.Decimal:
			r := x.Round(0)
			if i := r.BigInt(); i.IsInt64() {
				return int(i.Int64())
			}
			return r
		case float64:
			r := math.RoundToEven(x)
			if r >= math.MinInt64 && r < math.MaxInt64 {
				return int(r)
			}
			if !math.IsNaN(r) && !math.IsInf(r, 0) {
				return compiler.ToDecimal(r)
			}
		}
	case catalog.KindDecimal:
		switch v.(type) {
		case int, float64:
			v = compiler.ToDecimal(v)
		}
		if d, ok := v.(decimal.Decimal); ok && c.HasScale {
			return d.Round(c.Scale)
		}
	}
	return v
}

// sameValue reports whether two values of a column are equal, as the
// engine decides whether a rule's input changed.
func sameValue(a, b any) bool {
	eq, err := compiler.Equal(a, b)
	return err == nil && eq.(bool)
}

// keyOf is the text of the given columns of a row, joined, or "" when one
// is NULL (a NULL foreign key has no parent).
func keyOf(r *row, idx []int) string {
	var b strings.Builder
	for i, j := range idx {
		if r.text[j] == nil {
			return ""
		}
		if i > 0 {
			b.WriteByte(0)
		}
		b.Write(r.text[j])
	}
	return b.String()
}

// columnIndexes maps column names to positions.
func (tr *tableRules) columnIndexes(names []string) []int {
	out := make([]int, len(names))
	for i, n := range names {
		out[i] = tr.index[n]
	}
	return out
}

// textArray is a PostgreSQL array literal of text values: what the
// engine's statements take their rows in, one array per column, read back
// with unnest and cast to the column's type.
func textArray(vals [][]byte) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		if v == nil {
			b.WriteString("NULL")
			continue
		}
		b.WriteByte('"')
		for _, c := range v {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.Bytes()
}

var comma = []byte{','}

// parseTextArray reads a one-dimensional text[] as PostgreSQL prints it;
// a NULL element is nil.
func parseTextArray(b []byte) ([][]byte, error) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, fmt.Errorf("not an array: %q", b)
	}
	// One copy of the whole holds the unquoted elements, and the count of
	// commas bounds the elements: two allocations for the usual array.
	b = append([]byte(nil), b[1:len(b)-1]...)
	out := make([][]byte, 0, bytes.Count(b, comma)+1)
	for len(b) > 0 {
		var elem []byte
		if b[0] == '"' {
			i := 1
			elem = []byte{}
			for ; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' && i+1 < len(b) {
					i++
				}
				elem = append(elem, b[i])
			}
			if i >= len(b) {
				return nil, fmt.Errorf("unterminated element in an array")
			}
			b = b[i+1:]
		} else {
			i := bytes.IndexByte(b, ',')
			if i < 0 {
				i = len(b)
			}
			if string(b[:i]) != "NULL" {
				elem = b[:i:i]
			}
			b = b[i:]
		}
		out = append(out, elem)
		if len(b) > 0 {
			if b[0] != ',' {
				return nil, fmt.Errorf("malformed array")
			}
			b = b[1:]
		}
	}
	return out, nil
}

// textArrayOf is textArray of strings.
func textArrayOf(vals []string) []byte {
	bs := make([][]byte, len(vals))
	for i, v := range vals {
		bs[i] = []byte(v)
	}
	return textArray(bs)
}
