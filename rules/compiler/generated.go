package compiler

import (
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// A stored generated column is computed by PostgreSQL when the row is
// written, after the rules; the engine computes the value a formula reads
// with the column's own expression before the derivations run. A
// derivation's value is known only once the derivations have run, so a
// generated column that a formula reads must not be computed from one.

// checkGenerated refuses a formula that reads a generated column computed
// from a derived column of its table.
func (s *Set) checkGenerated(writer map[ColumnRef]*Rule) {
	for _, c := range s.rules {
		if !c.Rule.Enabled || c.Rule.Kind != catalog.Formula || s.errs[c.Rule.Name] != nil {
			continue
		}
		t := s.snap.Tables[c.Rule.Table]
		for _, ref := range c.Reads {
			col := t.Column(ref.Column)
			if ref.Table != c.Rule.Table || col == nil || !col.Generated {
				continue
			}
			for _, in := range col.GenerationReads {
				if w := writer[ColumnRef{ref.Table, in}]; w != nil {
					s.errs[c.Rule.Name] = ruleError(c.Rule, pgerr.FeatureNotSupported,
						"the formula reads generated column %s, which is computed from %s, derived by rule %q: PostgreSQL computes it only when the row is written, after the rules",
						col.Name, in, w.Rule.Name)
					break
				}
			}
		}
	}
}
