package compiler

import (
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// beforeTriggers records, for each table with rules and verb, the BEFORE
// ROW trigger that refuses its writes (BeforeTriggerError).
func (s *Set) beforeTriggers() {
	s.before = make(map[string]*pgerr.Error)
	for name := range s.involved {
		t := s.snap.Tables[name]
		if t == nil {
			continue
		}
		for _, verb := range []string{"INSERT", "UPDATE", "DELETE"} {
			if e := s.findBeforeTrigger(t, t, verb, map[string]bool{}); e != nil {
				s.before[name+" "+verb] = e
			}
		}
	}
}

// BeforeTriggerError refuses a write on t when a BEFORE ROW trigger would
// fire on a row the engine writes for it: such a trigger may change a row
// after the rules computed it, or skip it, and the rules would not see the
// row as stored.
func (s *Set) BeforeTriggerError(t *catalog.Table, verb string) *pgerr.Error {
	e := s.before[t.QualifiedName()+" "+verb]
	if e == nil {
		return nil
	}
	c := *e // shared by every session
	return &c
}

// findBeforeTrigger looks for the trigger BeforeTriggerError refuses a
// write on w for, when the engine writes t with verb: on t for the verb; on
// the rows with rules a delete cascades to, which the engine deletes or
// updates first; or an UPDATE trigger on a table whose sums, counts,
// minimums, maximums or formulas read t (directly or further on), which
// the engine updates. done holds the tables and verbs already looked at.
func (s *Set) findBeforeTrigger(w, t *catalog.Table, verb string, done map[string]bool) *pgerr.Error {
	if done[t.QualifiedName()+" "+verb] {
		return nil
	}
	done[t.QualifiedName()+" "+verb] = true
	if e := s.selfParentTrigger(w, t); e != nil {
		return e
	}
	if name, ok := t.BeforeRow[verb]; ok {
		if t != w {
			return beforeTriggerRefusal(w, t, name)
		}
		if e := s.ownBeforeTriggerError(t, verb, name); e != nil {
			return e
		}
	}
	if verb == "DELETE" {
		for _, fk := range t.Children {
			child := s.snap.Tables[fk.Child]
			cascade := map[byte]string{'c': "DELETE", 'n': "UPDATE", 'd': "UPDATE"}[fk.OnDelete]
			if child == nil || cascade == "" || !s.involved[fk.Child] {
				continue
			}
			if e := s.findBeforeTrigger(w, child, cascade, done); e != nil {
				return e
			}
		}
	}
	seen := map[string]bool{t.QualifiedName(): true}
	for queue := []string{t.QualifiedName()}; len(queue) > 0; queue = queue[1:] {
		for _, c := range s.rules {
			// A copy is taken when its row is written, not when its
			// parent changes.
			if !c.Rule.Enabled || !c.Rule.Kind.IsDerivation() || c.Rule.Kind == catalog.Copy || seen[c.Rule.Table] || !readsTable(c, queue[0]) {
				continue
			}
			seen[c.Rule.Table] = true
			queue = append(queue, c.Rule.Table)
			if u := s.snap.Tables[c.Rule.Table]; u != nil && u.BeforeRow["UPDATE"] != "" {
				return beforeTriggerRefusal(w, u, u.BeforeRow["UPDATE"])
			}
		}
	}
	return nil
}

// ownBeforeTriggerError refuses the writes on t that its own BEFORE ROW
// trigger would make inexact; for the others the engine reads each row as
// stored (rules/before.go) and gives a skipped row no logic. The engine deletes
// the children of the rows a delete cascades to before it deletes them, so
// a skipped row would have lost its children.
func (s *Set) ownBeforeTriggerError(t *catalog.Table, verb, name string) *pgerr.Error {
	if verb == "DELETE" && s.CascadesTo(t) {
		e := WriteNotSupported(t, "BEFORE ROW trigger %q on %s may skip a row whose dependent rows pgrules deletes or updates first (ON DELETE CASCADE, SET NULL, SET DEFAULT)", name, catalog.ShortName(t.QualifiedName()))
		e.Hint = "Make it an AFTER trigger, or write what it does as rules or events."
		return e
	}
	return nil
}

// selfParentTrigger refuses a write on w that reaches a table with rules
// referencing itself and having a BEFORE UPDATE trigger: the engine
// updates its rows as the parents of its own rows, computed before the
// trigger may change or skip them, and the search for the tables the
// engine updates (findBeforeTrigger) starts past the table itself.
func (s *Set) selfParentTrigger(w, t *catalog.Table) *pgerr.Error {
	name := t.BeforeRow["UPDATE"]
	if name == "" || !s.involved[t.QualifiedName()] {
		return nil
	}
	for _, fk := range t.Parents {
		if fk.Parent == t.QualifiedName() {
			e := WriteNotSupported(w, "BEFORE ROW trigger %q on %s may change or skip an update pgrules makes to the parents of the table's own rows (foreign key %s)", name, catalog.ShortName(t.QualifiedName()), fk.Name)
			e.Hint = "Make it an AFTER trigger, or write what it does as rules or events."
			return e
		}
	}
	return nil
}

func readsTable(c *Rule, table string) bool {
	for _, r := range c.Reads {
		if r.Table == table {
			return true
		}
	}
	return false
}

func beforeTriggerRefusal(t, on *catalog.Table, trigger string) *pgerr.Error {
	e := WriteNotSupported(t, "BEFORE ROW trigger %q on %s may change or skip rows after the rules computed them", trigger, catalog.ShortName(on.QualifiedName()))
	e.Hint = "Make it an AFTER trigger, or write what it does as rules or events (early and pre_insert events change a row before it is written)."
	return e
}

// CascadesTo reports whether deleting rows of t deletes or changes rows
// of a table whose rules must run (ON DELETE CASCADE, SET NULL, SET
// DEFAULT): the engine runs those first.
func (s *Set) CascadesTo(t *catalog.Table) bool {
	for _, fk := range t.Children {
		if (fk.OnDelete == 'c' || fk.OnDelete == 'n' || fk.OnDelete == 'd') && s.Involves(fk.Child) {
			return true
		}
	}
	return false
}

// WriteNotSupported is the error for a form of write the engine does not run:
// refused, never let past its rules.
func WriteNotSupported(t *catalog.Table, format string, args ...any) *pgerr.Error {
	e := pgerr.New(pgerr.FeatureNotSupported, "%s on table %s, which has rules: "+format,
		append([]any{"this write", catalog.ShortName(t.QualifiedName())}, args...)...)
	e.Schema, e.Table = t.Schema, t.Name
	e.Hint = "pgrules runs the rules of INSERT (VALUES, SELECT, ON CONFLICT), UPDATE (with FROM) and DELETE (with USING), with RETURNING; the README lists the forms it refuses and what to write instead."
	return e
}
