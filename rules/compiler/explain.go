package compiler

import (
	"slices"
	"sort"

	"github.com/pgrules/pgrules/catalog"
)

// ExplainEntry is one line of `pgrules explain`.
type ExplainEntry struct {
	Position  int      `json:"position"`
	Rule      string   `json:"rule"`
	Kind      string   `json:"kind"`
	Target    string   `json:"target,omitempty"`
	Reads     []string `json:"reads"`
	DependsOn []string `json:"depends_on"`
	UsedBy    []string `json:"used_by"`
}

// kindRank is the order in which a row's logic runs.
var kindRank = map[catalog.RuleKind]int{
	catalog.Copy: 1, catalog.Formula: 2, catalog.Sum: 3, catalog.Count: 3, catalog.Min: 3, catalog.Max: 3,
	catalog.Constraint: 4, catalog.CommitConstraint: 5, catalog.Event: 6,
}

// Explain lists the rules of table in execution order.
func (s *Set) Explain(table string) []ExplainEntry {
	pos := make(map[*Rule]int)
	for i, c := range s.order {
		pos[c] = i
	}
	var mine []*Rule
	for _, c := range s.rules {
		if c.Rule.Table == table {
			mine = append(mine, c)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool {
		a, b := mine[i], mine[j]
		if kindRank[a.Rule.Kind] != kindRank[b.Rule.Kind] {
			return kindRank[a.Rule.Kind] < kindRank[b.Rule.Kind]
		}
		return pos[a] < pos[b]
	})
	out := make([]ExplainEntry, len(mine))
	for i, c := range mine {
		e := ExplainEntry{Position: i + 1, Rule: c.Rule.Name, Kind: string(c.Rule.Kind), Reads: []string{}, DependsOn: []string{}, UsedBy: []string{}}
		if c.Rule.Kind.IsDerivation() {
			e.Target = c.Target.String()
		}
		for _, r := range c.Reads {
			e.Reads = append(e.Reads, r.String())
			for _, o := range s.rules {
				if o != c && o.Rule.Kind.IsDerivation() && o.Target == r && !slices.Contains(e.DependsOn, o.Rule.Name) {
					e.DependsOn = append(e.DependsOn, o.Rule.Name)
				}
			}
		}
		if c.Rule.Kind.IsDerivation() {
			for _, o := range s.rules {
				if o != c && slices.Contains(o.Reads, c.Target) {
					e.UsedBy = append(e.UsedBy, o.Rule.Name)
				}
			}
		}
		if !c.Rule.Enabled {
			e.Kind += " (disabled)"
		}
		out[i] = e
	}
	return out
}

// ExplainAll is Explain of every table with rules, by qualified name.
func (s *Set) ExplainAll() map[string][]ExplainEntry {
	out := make(map[string][]ExplainEntry)
	for _, c := range s.rules {
		if _, ok := out[c.Rule.Table]; !ok {
			out[c.Rule.Table] = s.Explain(c.Rule.Table)
		}
	}
	return out
}
