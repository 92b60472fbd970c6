package compiler

import (
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// checkDuplicates reports a column derived by two rules (defined behind
// the proxy's back: the SQL functions refuse it).
func (s *Set) checkDuplicates() {
	seen := make(map[ColumnRef]*Rule)
	for _, c := range s.rules {
		if !c.Rule.Enabled || !c.Rule.Kind.IsDerivation() || s.errs[c.Rule.Name] != nil {
			continue
		}
		if first := seen[c.Target]; first != nil {
			s.errs[c.Rule.Name] = ruleError(c.Rule, pgerr.InvalidObjectDefinition, "column %s is already derived by rule %q", c.Target, first.Rule.Name)
			continue
		}
		seen[c.Target] = c
	}
}

// orderDerivations sorts the derivations so that each comes after every
// derivation whose target it reads, and reports cycles.
func (s *Set) orderDerivations() {
	writer := make(map[ColumnRef]*Rule)
	var ders []*Rule
	for _, c := range s.rules {
		if c.Rule.Enabled && c.Rule.Kind.IsDerivation() && s.errs[c.Rule.Name] == nil {
			writer[c.Target] = c
			ders = append(ders, c)
		}
	}
	s.checkGenerated(writer)
	const (
		unvisited = iota
		visiting
		done
	)
	state := make(map[*Rule]int)
	var stack []*Rule
	var visit func(c *Rule)
	visit = func(c *Rule) {
		switch state[c] {
		case done:
			return
		case visiting:
			i := slices.Index(stack, c)
			cycle := make([]string, 0, len(stack)-i+1)
			for _, x := range stack[i:] {
				cycle = append(cycle, x.Rule.Name)
			}
			cycle = append(cycle, c.Rule.Name)
			for _, x := range stack[i:] {
				if s.errs[x.Rule.Name] == nil {
					s.errs[x.Rule.Name] = ruleError(x.Rule, pgerr.InvalidObjectDefinition, "the derivations form a cycle: %s", strings.Join(cycle, " → "))
				}
			}
			return
		}
		state[c] = visiting
		stack = append(stack, c)
		for _, r := range c.Reads {
			w := writer[r]
			if w == c && c.Rule.Kind == catalog.Formula {
				c.Accumulates = true
			} else if w != nil && w != c {
				visit(w)
			}
		}
		stack = stack[:len(stack)-1]
		state[c] = done
		s.order = append(s.order, c)
	}
	for _, c := range ders {
		visit(c)
	}
	s.order = slices.DeleteFunc(s.order, func(c *Rule) bool { return s.errs[c.Rule.Name] != nil })
}

// Downstream returns the named derivations and every derivation that
// depends on them, directly or not, in execution order.
func (s *Set) Downstream(names map[string]bool) []*catalog.Rule {
	affected := make(map[ColumnRef]bool)
	var out []*catalog.Rule
	for _, c := range s.order {
		hit := names[c.Rule.Name]
		for _, r := range c.Reads {
			hit = hit || affected[r]
		}
		if hit {
			affected[c.Target] = true
			out = append(out, c.Rule)
		}
	}
	return out
}
