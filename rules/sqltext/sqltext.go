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
