package sqltext

import (
	"strings"

	"github.com/pgrules/pgrules/catalog"
)

// Ident is s as a quoted identifier.
func Ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Literal is s as a string literal that reads the same whatever the
// session's standard_conforming_strings (as PostgreSQL's quote_literal
// writes it): with it off, a backslash in '...' escapes the next
// character, so a string with a backslash is written E'...', where
// backslashes are escapes under either setting.
func Literal(s string) string {
	q := strings.ReplaceAll(s, `'`, `''`)
	if !strings.Contains(s, `\`) {
		return `'` + q + `'`
	}
	return `E'` + strings.ReplaceAll(q, `\`, `\\`) + `'`
}

// Table is t's schema-qualified name, quoted.
func Table(t *catalog.Table) string { return Ident(t.Schema) + "." + Ident(t.Name) }

// KeyMatch is the join condition of a foreign key between a child alias
// and a parent alias.
func KeyMatch(fk *catalog.ForeignKey, child, parent string) string {
	conds := make([]string, len(fk.Columns))
	for i, c := range fk.Columns {
		conds[i] = child + "." + Ident(c) + " = " + parent + "." + Ident(fk.ParentColumns[i])
	}
	return strings.Join(conds, " AND ")
}

// lengthTypes are the types whose explicit cast to a length cuts or pads
// a value that does not fit (varchar(3), char(2), bit(8), varbit(4)), and
// the type without a length each is cast to instead.
var lengthTypes = []struct{ prefix, unbounded string }{
	{"character varying(", "character varying"},
	{"character(", "bpchar"},
	{"bit varying(", "bit varying"},
	{"bit(", "bit varying"},
}

// ValueType is the type the engine casts a value to before an INSERT or
// UPDATE assigns it to column c: c's type, but for a character or bit
// string type (or an array of one) without its length. An explicit cast
// to varchar(3) or char(2) cuts a longer string, and one to bit(8) pads
// or cuts a bit string, where the assignment of an INSERT or an UPDATE
// refuses the value (22001, 22026): with the length left to the write's
// own assignment, what PostgreSQL refuses is refused, with its error.
func ValueType(c *catalog.Column) string {
	t, array := strings.CutSuffix(c.Type, "[]")
	for _, l := range lengthTypes {
		if strings.HasPrefix(t, l.prefix) && strings.HasSuffix(t, ")") {
			if array {
				return l.unbounded + "[]"
			}
			return l.unbounded
		}
	}
	return c.Type
}
