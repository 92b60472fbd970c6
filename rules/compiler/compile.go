package compiler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/vm"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// ColumnRef names a column of a table ("schema.table").
type ColumnRef struct {
	Table, Column string
}

func (c ColumnRef) String() string { return catalog.ShortName(c.Table) + "." + c.Column }

// Rule is one rule of the catalog, checked against it and compiled.
type Rule struct {
	Rule *catalog.Rule
	// FK is the relationship of an aggregate (child to the parent that
	// holds the target) or a copy (the row to the parent it copies from).
	FK *catalog.ForeignKey
	// Reads are the columns the rule reads: of the row, of its parents
	// (through accessors), and for an aggregate the child's column and
	// filter columns.
	Reads []ColumnRef
	// Target is the derived column (derivations only).
	Target ColumnRef
	// Paths are the chains of foreign keys the rule's expressions follow
	// from their row to a parent row (row.order.customer is one path of
	// two), which the engine loads before evaluating them. OldPaths are
	// those followed from old.
	Paths, OldPaths [][]*catalog.ForeignKey
	// ParentReads are the parent columns read through a path, for the
	// engine to recompute the rule when such a column changes.
	ParentReads []ParentRead
	// Accumulates is set for a formula that reads its own target
	// (rules-api.md §8): row.<target> is the column's value before the
	// change, so the column is history that no query can recompute.
	Accumulates bool

	program *vm.Program // formula, condition or action
	filter  *vm.Program
	message []messagePart
}

// ParentRead is a column of a parent row that an expression reads, and
// the path to that parent.
type ParentRead struct {
	Path   []*catalog.ForeignKey
	Column string
}

func (c *Rule) addPath(path []*catalog.ForeignKey, old bool) {
	paths := &c.Paths
	if old {
		paths = &c.OldPaths
	}
	for _, p := range *paths {
		if slices.Equal(p, path) {
			return
		}
	}
	*paths = append(*paths, path)
}

type messagePart struct {
	text    string
	program *vm.Program
}

// Set is every rule of one snapshot, compiled. It is immutable and shared
// by all sessions of the database; compiled programs are safe to run from
// many goroutines (each with its own vm.VM).
type Set struct {
	snap   *catalog.Snapshot
	rules  []*Rule // in definition order, disabled ones included
	byName map[string]*Rule
	errs   map[string]*pgerr.Error
	// order is every enabled derivation, each after what it reads.
	order    []*Rule
	involved map[string]bool
	guarded  map[string]bool
	// before are the refusals of writes that BEFORE ROW triggers would
	// fire on, by table and verb.
	before map[string]*pgerr.Error
	// readsTime is set when an enabled rule reads a date or time column,
	// which the engine reads in the text DateStyle ISO gives.
	readsTime bool
}

// Compile checks and compiles every rule of snap. Rules that do not compile
// are reported by Errors and RuleError and are not part of the order.
func Compile(snap *catalog.Snapshot) *Set {
	s := &Set{snap: snap, byName: make(map[string]*Rule), errs: make(map[string]*pgerr.Error), involved: make(map[string]bool)}
	for _, r := range snap.Rules {
		c := &Rule{Rule: r}
		s.rules = append(s.rules, c)
		s.byName[r.Name] = c
		if !r.Enabled {
			continue
		}
		if err := s.compile(c); err != nil {
			s.errs[r.Name] = err
		}
	}
	s.checkDuplicates()
	s.orderDerivations()
	s.involveTables()
	s.involveCascades()
	s.beforeTriggers()
	return s
}

// involveTables marks the tables whose writes run through the engine: the
// tables of the enabled rules, those they read, and those whose guard the
// database keeps.
func (s *Set) involveTables() {
	for _, c := range s.rules {
		if !c.Rule.Enabled {
			continue
		}
		s.involved[c.Rule.Table] = true
		for _, r := range c.Reads {
			s.involved[r.Table] = true
			if t := s.snap.Tables[r.Table]; t != nil {
				if col := t.Column(r.Column); col != nil && col.Kind == catalog.KindTime {
					s.readsTime = true
				}
			}
		}
	}
	// A table whose guard the database keeps is written through the
	// engine, whatever its rules: the guard refuses every other write.
	// (The guard is computed in SQL, which may take in a parent that an
	// expression only seems to read.)
	for name, g := range s.snap.Guards {
		if g.Of == "" {
			s.involved[name] = true
		}
	}
}

// involveCascades marks the tables whose deletes PostgreSQL cascades to a
// table with rules (ON DELETE CASCADE, SET NULL, SET DEFAULT), to any
// depth: deleting from them changes rows whose rules must run, so the
// engine runs those deletes. guarded are the tables a TRUNCATE ... CASCADE
// would empty a table with rules through, by any foreign key.
func (s *Set) involveCascades() {
	s.guarded = make(map[string]bool)
	for changed := true; changed; {
		changed = false
		for name, t := range s.snap.Tables {
			for _, fk := range t.Children {
				cascades := fk.OnDelete == 'c' || fk.OnDelete == 'n' || fk.OnDelete == 'd'
				if s.involved[fk.Child] && cascades && !s.involved[name] {
					s.involved[name], changed = true, true
				}
				if (s.involved[fk.Child] || s.guarded[fk.Child]) && !s.guarded[name] {
					s.guarded[name], changed = true, true
				}
			}
		}
	}
}

func ruleError(r *catalog.Rule, code, format string, args ...any) *pgerr.Error {
	e := pgerr.New(code, "rule %q: "+format, append([]any{r.Name}, args...)...)
	e.Schema, e.Table, _ = strings.Cut(r.Table, ".")
	e.Table = strings.TrimPrefix(r.Table, e.Schema+".")
	return e
}

// compile checks one enabled rule against its table and compiles its
// expressions, by kind.
func (s *Set) compile(c *Rule) *pgerr.Error {
	r := c.Rule
	t := s.snap.Tables[r.Table]
	if t == nil {
		return ruleError(r, pgerr.UndefinedTable, "table %s does not exist", r.Table)
	}
	var target *catalog.Column
	if r.Kind.IsDerivation() {
		if target = t.Column(r.Column); target == nil {
			return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.Column, catalog.ShortName(r.Table))
		}
		c.Target = ColumnRef{r.Table, r.Column}
	}
	switch r.Kind {
	case catalog.Formula:
		k, err := s.expression(c, t, "expression", r.Expression, &c.program, false)
		if err != nil {
			return err
		}
		if !assignable(k, target.Kind) {
			return ruleError(r, pgerr.DatatypeMismatch, "the expression gives %s, which column %s (%s) cannot hold", k, r.Column, target.Type)
		}
	case catalog.Constraint, catalog.CommitConstraint:
		k, err := s.expression(c, t, "condition", r.Expression, &c.program, false)
		if err != nil {
			return err
		}
		if k != kBool && k != kAny && k != kNil {
			return ruleError(r, pgerr.DatatypeMismatch, "the condition gives %s, not a boolean", k)
		}
		return s.template(c, t)
	case catalog.Event:
		if _, err := s.expression(c, t, "action", r.Expression, &c.program, true); err != nil {
			return err
		}
	case catalog.Copy:
		return s.compileCopy(c, t, target)
	case catalog.Sum, catalog.Count, catalog.Min, catalog.Max:
		return s.compileAggregate(c, t, target)
	default:
		return ruleError(r, pgerr.InvalidObjectDefinition, "unknown kind %q", r.Kind)
	}
	return nil
}

// compileCopy resolves a copy's parent column and relationship, and checks
// that target holds the column's values.
func (s *Set) compileCopy(c *Rule, t *catalog.Table, target *catalog.Column) *pgerr.Error {
	r := c.Rule
	parent := s.snap.Tables[r.SourceTable]
	if parent == nil {
		return ruleError(r, pgerr.UndefinedTable, "table %s does not exist", r.SourceTable)
	}
	src := parent.Column(r.SourceColumn)
	if src == nil {
		return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.SourceColumn, catalog.ShortName(r.SourceTable))
	}
	fk, err := s.relationship(r, t, parent)
	if err != nil {
		return err
	}
	c.FK = fk
	c.Reads = append(c.Reads, ColumnRef{parent.QualifiedName(), r.SourceColumn})
	for _, col := range fk.Columns {
		c.Reads = append(c.Reads, ColumnRef{t.QualifiedName(), col})
	}
	if !holds(target, src) {
		return ruleError(r, pgerr.DatatypeMismatch, "column %s.%s (%s) cannot be copied into %s (%s) without loss", catalog.ShortName(r.SourceTable), r.SourceColumn, src.Type, r.Column, target.Type)
	}
	return nil
}

// compileAggregate resolves a sum's, count's, minimum's or maximum's child
// table and relationship, checks that target holds what it computes, and
// compiles its filter.
func (s *Set) compileAggregate(c *Rule, t *catalog.Table, target *catalog.Column) *pgerr.Error {
	r := c.Rule
	child := s.snap.Tables[r.SourceTable]
	if child == nil {
		return ruleError(r, pgerr.UndefinedTable, "table %s does not exist", r.SourceTable)
	}
	fk, err := s.relationship(r, child, t)
	if err != nil {
		return err
	}
	c.FK = fk
	for _, col := range fk.Columns {
		c.Reads = append(c.Reads, ColumnRef{child.QualifiedName(), col})
	}
	if r.Kind != catalog.Count {
		if err := s.aggregatedColumn(c, child, target); err != nil {
			return err
		}
	} else if target.Kind != catalog.KindInt && target.Kind != catalog.KindDecimal && target.Kind != catalog.KindFloat {
		return ruleError(r, pgerr.DatatypeMismatch, "a count cannot be stored in %s (%s)", r.Column, target.Type)
	}
	if r.Filter != "" {
		k, err := s.expression(c, child, "filter", r.Filter, &c.filter, false)
		if err != nil {
			return err
		}
		if k != kBool && k != kAny && k != kNil {
			return ruleError(r, pgerr.DatatypeMismatch, "the filter gives %s, not a boolean", k)
		}
	}
	return nil
}

// aggregatedColumn checks the child column a sum, minimum or maximum reads:
// it exists, the aggregate applies to its type, and target holds the
// result without loss.
func (s *Set) aggregatedColumn(c *Rule, child *catalog.Table, target *catalog.Column) *pgerr.Error {
	r := c.Rule
	src := child.Column(r.SourceColumn)
	if src == nil {
		return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.SourceColumn, catalog.ShortName(r.SourceTable))
	}
	c.Reads = append(c.Reads, ColumnRef{child.QualifiedName(), r.SourceColumn})
	numeric := src.Kind == catalog.KindInt || src.Kind == catalog.KindDecimal || src.Kind == catalog.KindFloat
	ordered := numeric || src.Kind == catalog.KindText || src.Kind == catalog.KindTime
	if r.Kind == catalog.Sum && !numeric || !ordered {
		return ruleError(r, pgerr.DatatypeMismatch, "%s of column %s.%s (%s) is not possible", r.Kind, catalog.ShortName(r.SourceTable), r.SourceColumn, src.Type)
	}
	if !holds(target, src) || r.Kind == catalog.Sum && !sumHolds(target, src) {
		return ruleError(r, pgerr.DatatypeMismatch, "the %s of %s.%s (%s) cannot be stored in %s (%s) without loss", r.Kind, catalog.ShortName(r.SourceTable), r.SourceColumn, src.Type, r.Column, target.Type)
	}
	return nil
}

// relationship finds the foreign key from child to parent that the rule
// uses: the one named by via, or the only one there is.
func (s *Set) relationship(r *catalog.Rule, child, parent *catalog.Table) (*catalog.ForeignKey, *pgerr.Error) {
	var candidates []*catalog.ForeignKey
	for _, fk := range child.Parents {
		if fk.Parent == parent.QualifiedName() {
			candidates = append(candidates, fk)
		}
	}
	names := make([]string, len(candidates))
	for i, fk := range candidates {
		names[i] = fk.Name
	}
	if r.Via != "" {
		for _, fk := range candidates {
			if fk.Name == r.Via {
				return fk, nil
			}
		}
		e := ruleError(r, pgerr.InvalidObjectDefinition, "via %q is not a foreign key from %s to %s", r.Via, catalog.ShortName(child.QualifiedName()), catalog.ShortName(parent.QualifiedName()))
		if len(names) > 0 {
			e.Hint = "The foreign keys between them are: " + strings.Join(names, ", ") + "."
		}
		return nil, e
	}
	switch len(candidates) {
	case 1:
		return candidates[0], nil
	case 0:
		return nil, ruleError(r, pgerr.InvalidObjectDefinition, "no foreign key joins %s to %s", catalog.ShortName(child.QualifiedName()), catalog.ShortName(parent.QualifiedName()))
	}
	e := ruleError(r, pgerr.InvalidObjectDefinition, "%s and %s are joined by several foreign keys (%s): name one with via",
		catalog.ShortName(child.QualifiedName()), catalog.ShortName(parent.QualifiedName()), strings.Join(names, ", "))
	e.Hint = fmt.Sprintf("For example: via => '%s'.", names[0])
	return nil, e
}
