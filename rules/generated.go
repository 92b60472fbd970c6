package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// A stored generated column is computed by PostgreSQL when the row is
// written, after the rules. A formula that reads one must see the value
// PostgreSQL will store (rules-api.md §8), not NULL on insert or the
// value before an update: generate computes it with the column's own
// expression, in one query for the statement's rows, before the
// derivations run. Its inputs must not be derived (the compiler refuses
// that): a derivation's value is known only once the derivations have run.

// generatedRead are the generated columns of tr's table that its
// derivations read.
func generatedRead(tr *tableRules) []*catalog.Column {
	var out []*catalog.Column
	for _, d := range tr.derivations {
		for _, ref := range d.Reads {
			if ref.Table != tr.t.QualifiedName() {
				continue
			}
			if c := tr.t.Column(ref.Column); c != nil && c.Generated && c.Generation != "" && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// generate gives the rows whose generated columns a derivation reads the
// values PostgreSQL will store in them: for new rows, and for rows where
// a column such a value is computed from changed.
func (r *runner) generate(tr *tableRules, changes []*change) error {
	if len(tr.generated) == 0 {
		return nil
	}
	var rows []*row
	for _, ch := range changes {
		if ch.new != nil && (ch.old == nil || generationInputChanged(tr, ch)) {
			rows = append(rows, ch.new)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	var arrays, names, casts []string
	var params [][]byte
	for _, c := range tr.t.Columns {
		if c.Generated {
			continue
		}
		vals := make([][]byte, len(rows))
		for i, rw := range rows {
			vals[i] = rw.text[tr.index[c.Name]]
		}
		params = append(params, textArray(vals))
		n := len(params)
		arrays = append(arrays, fmt.Sprintf("$%d::text[]", n))
		names = append(names, fmt.Sprintf("c%d", n))
		casts = append(casts, fmt.Sprintf("CAST(pgrules_u.c%d AS %s) AS %s", n, c.Type, sqltext.Ident(c.Name)))
	}
	exprs := make([]string, len(tr.generated))
	for i, g := range tr.generated {
		exprs[i] = fmt.Sprintf("CAST((%s) AS %s)::text", g.Generation, g.Type)
	}
	sql := fmt.Sprintf("SELECT %s FROM (SELECT pgrules_u.pgrules_i, %s FROM unnest(%s) WITH ORDINALITY AS pgrules_u(%s, pgrules_i)) AS pgrules_g ORDER BY pgrules_g.pgrules_i",
		strings.Join(exprs, ", "), strings.Join(casts, ", "), strings.Join(arrays, ", "), strings.Join(names, ", "))
	res, err := r.batch([]stmt.Statement{{SQL: sql, Params: params}})
	if err != nil {
		return err
	}
	if len(res[0].Rows) != len(rows) {
		return r.fail(pgerr.New(pgerr.InternalError, "pgrules computed %d generated rows of %s for %d", len(res[0].Rows), catalog.ShortName(tr.t.QualifiedName()), len(rows)))
	}
	for i, vals := range res[0].Rows {
		for j, g := range tr.generated {
			v, err := compiler.ParseValue(g.Kind, vals[j])
			if err != nil {
				v = string(vals[j])
			}
			// Only the value rules see: the column is PostgreSQL's to write.
			rows[i].vals[g.Name] = v
		}
	}
	return nil
}

// generationInputChanged reports whether a column that a generated column
// read by tr's derivations is computed from changed in ch.
func generationInputChanged(tr *tableRules, ch *change) bool {
	for _, g := range tr.generated {
		for _, in := range g.GenerationReads {
			i, ok := tr.index[in]
			if ok && !bytes2Equal(ch.old.text[i], ch.new.text[i]) {
				return true
			}
		}
	}
	return false
}
