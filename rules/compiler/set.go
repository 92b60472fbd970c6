package compiler

import (
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// Snapshot is the catalog snapshot the set was compiled from.
func (s *Set) Snapshot() *catalog.Snapshot { return s.snap }

// Rules are every rule of the snapshot, compiled, in definition order,
// disabled and broken ones included. The slice is shared: callers read it.
func (s *Set) Rules() []*Rule { return s.rules }

// Derivations are the enabled derivations that compiled, each after every
// derivation whose target it reads: the order the engine computes them
// in. The slice is shared: callers read it.
func (s *Set) Derivations() []*Rule { return s.order }

// Rule returns the named rule, compiled, or nil.
func (s *Set) Rule(name string) *Rule { return s.byName[name] }

// ReadsTime reports whether an enabled rule reads a date or time column,
// which the engine reads in the text DateStyle ISO gives.
func (s *Set) ReadsTime() bool { return s.readsTime }

// Errors returns the compile errors, in rule order.
func (s *Set) Errors() []*pgerr.Error {
	var out []*pgerr.Error
	for _, c := range s.rules {
		if e := s.errs[c.Rule.Name]; e != nil {
			out = append(out, e)
		}
	}
	return out
}

// RuleError returns the named rule's compile error, or nil.
func (s *Set) RuleError(name string) *pgerr.Error { return s.errs[name] }

// Broken returns the errors of the rules a write to table would run: those
// attached to it and those that read it.
func (s *Set) Broken(table string) []*pgerr.Error {
	var out []*pgerr.Error
	for _, c := range s.rules {
		e := s.errs[c.Rule.Name]
		if e == nil {
			continue
		}
		if c.Rule.Table == table || c.Rule.SourceTable == table {
			out = append(out, e)
		}
	}
	return out
}

// Involves reports whether a write to table concerns a rule: the table has
// rules, or a rule reads it.
func (s *Set) Involves(table string) bool {
	return s.involved[table] || len(s.Broken(table)) > 0
}

// Relationship returns the foreign key an aggregate or a copy uses.
func (s *Set) Relationship(name string) *catalog.ForeignKey {
	if c := s.byName[name]; c != nil {
		return c.FK
	}
	return nil
}

// Guards reports whether a TRUNCATE of table would empty a table with
// rules, itself or through TRUNCATE ... CASCADE.
func (s *Set) Guards(table string) bool { return s.Involves(table) || s.guarded[table] }
