package rules

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/shopspring/decimal"
)

// ColumnRef names a column of a table ("schema.table").
type ColumnRef struct {
	Table, Column string
}

func (c ColumnRef) String() string { return shortName(c.Table) + "." + c.Column }

// shortName drops the public schema for display.
func shortName(table string) string { return strings.TrimPrefix(table, "public.") }

// Compiled is one rule, checked against the catalog.
type Compiled struct {
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

func (c *Compiled) addPath(path []*catalog.ForeignKey, old bool) {
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
	rules  []*Compiled // in definition order, disabled ones included
	byName map[string]*Compiled
	errs   map[string]*pgerr.Error
	// order is every enabled derivation, each after what it reads.
	order    []*Compiled
	involved map[string]bool
	guarded  map[string]bool
	// tables are the rules the engine runs per table (tables.go).
	tables map[string]*tableRules
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
	s := &Set{snap: snap, byName: make(map[string]*Compiled), errs: make(map[string]*pgerr.Error), involved: make(map[string]bool)}
	for _, r := range snap.Rules {
		c := &Compiled{Rule: r}
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
	s.buildTables()
	for _, c := range s.rules {
		if !c.Rule.Enabled {
			continue
		}
		s.involved[c.Rule.Table] = true
		for _, r := range c.Reads {
			s.involved[r.Table] = true
			if t := snap.Tables[r.Table]; t != nil {
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
	for name, g := range snap.Guards {
		if g.Of == "" {
			s.involved[name] = true
		}
	}
	s.involveCascades()
	s.beforeTriggers()
	return s
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

// Guards reports whether a TRUNCATE of table would empty a table with
// rules, itself or through TRUNCATE ... CASCADE.
func (s *Set) Guards(table string) bool { return s.Involves(table) || s.guarded[table] }

func ruleError(r *catalog.Rule, code, format string, args ...any) *pgerr.Error {
	e := pgerr.New(code, "rule %q: "+format, append([]any{r.Name}, args...)...)
	e.Schema, e.Table, _ = strings.Cut(r.Table, ".")
	e.Table = strings.TrimPrefix(r.Table, e.Schema+".")
	return e
}

func (s *Set) compile(c *Compiled) *pgerr.Error {
	r := c.Rule
	t := s.snap.Tables[r.Table]
	if t == nil {
		return ruleError(r, pgerr.UndefinedTable, "table %s does not exist", r.Table)
	}
	var target *catalog.Column
	if r.Kind.IsDerivation() {
		if target = t.Column(r.Column); target == nil {
			return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.Column, shortName(r.Table))
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
		if err := s.template(c, t); err != nil {
			return err
		}
	case catalog.Event:
		if _, err := s.expression(c, t, "action", r.Expression, &c.program, true); err != nil {
			return err
		}
	case catalog.Copy:
		parent := s.snap.Tables[r.SourceTable]
		if parent == nil {
			return ruleError(r, pgerr.UndefinedTable, "table %s does not exist", r.SourceTable)
		}
		src := parent.Column(r.SourceColumn)
		if src == nil {
			return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.SourceColumn, shortName(r.SourceTable))
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
			return ruleError(r, pgerr.DatatypeMismatch, "column %s.%s (%s) cannot be copied into %s (%s) without loss", shortName(r.SourceTable), r.SourceColumn, src.Type, r.Column, target.Type)
		}
	case catalog.Sum, catalog.Count, catalog.Min, catalog.Max:
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
			src := child.Column(r.SourceColumn)
			if src == nil {
				return ruleError(r, pgerr.UndefinedColumn, "column %q of table %s does not exist", r.SourceColumn, shortName(r.SourceTable))
			}
			c.Reads = append(c.Reads, ColumnRef{child.QualifiedName(), r.SourceColumn})
			numeric := src.Kind == catalog.KindInt || src.Kind == catalog.KindDecimal || src.Kind == catalog.KindFloat
			ordered := numeric || src.Kind == catalog.KindText || src.Kind == catalog.KindTime
			if r.Kind == catalog.Sum && !numeric || !ordered {
				return ruleError(r, pgerr.DatatypeMismatch, "%s of column %s.%s (%s) is not possible", r.Kind, shortName(r.SourceTable), r.SourceColumn, src.Type)
			}
			if !holds(target, src) || r.Kind == catalog.Sum && !sumHolds(target, src) {
				return ruleError(r, pgerr.DatatypeMismatch, "the %s of %s.%s (%s) cannot be stored in %s (%s) without loss", r.Kind, shortName(r.SourceTable), r.SourceColumn, src.Type, r.Column, target.Type)
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
	default:
		return ruleError(r, pgerr.InvalidObjectDefinition, "unknown kind %q", r.Kind)
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
		e := ruleError(r, pgerr.InvalidObjectDefinition, "via %q is not a foreign key from %s to %s", r.Via, shortName(child.QualifiedName()), shortName(parent.QualifiedName()))
		if len(names) > 0 {
			e.Hint = "The foreign keys between them are: " + strings.Join(names, ", ") + "."
		}
		return nil, e
	}
	switch len(candidates) {
	case 1:
		return candidates[0], nil
	case 0:
		return nil, ruleError(r, pgerr.InvalidObjectDefinition, "no foreign key joins %s to %s", shortName(child.QualifiedName()), shortName(parent.QualifiedName()))
	}
	e := ruleError(r, pgerr.InvalidObjectDefinition, "%s and %s are joined by several foreign keys (%s): name one with via",
		shortName(child.QualifiedName()), shortName(parent.QualifiedName()), strings.Join(names, ", "))
	e.Hint = fmt.Sprintf("For example: via => '%s'.", names[0])
	return nil, e
}

// checkDuplicates reports a column derived by two rules (defined behind
// the proxy's back: the SQL functions refuse it).
func (s *Set) checkDuplicates() {
	seen := make(map[ColumnRef]*Compiled)
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
	writer := make(map[ColumnRef]*Compiled)
	var ders []*Compiled
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
	state := make(map[*Compiled]int)
	var stack []*Compiled
	var visit func(c *Compiled)
	visit = func(c *Compiled) {
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
	s.order = slices.DeleteFunc(s.order, func(c *Compiled) bool { return s.errs[c.Rule.Name] != nil })
}

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
	pos := make(map[*Compiled]int)
	for i, c := range s.order {
		pos[c] = i
	}
	var mine []*Compiled
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

// template compiles a constraint's message: text with {expression} parts.
func (s *Set) template(c *Compiled, t *catalog.Table) *pgerr.Error {
	msg := c.Rule.Message
	for msg != "" {
		open := strings.IndexByte(msg, '{')
		if open < 0 {
			c.message = append(c.message, messagePart{text: msg})
			break
		}
		end := strings.IndexByte(msg[open:], '}')
		if end < 0 {
			return ruleError(c.Rule, pgerr.InvalidObjectDefinition, "the message has a { without its }")
		}
		if open > 0 {
			c.message = append(c.message, messagePart{text: msg[:open]})
		}
		var p *vm.Program
		if _, err := s.expression(c, t, "message", msg[open+1:open+end], &p, false); err != nil {
			return err
		}
		c.message = append(c.message, messagePart{program: p})
		msg = msg[open+end+1:]
	}
	return nil
}

// operatorFuncs replace expr's operators (see values.go).
var operatorFuncs = map[string]string{
	"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod",
	"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge",
}

var exprFunctions = []expr.Option{
	expr.Function("_add", func(p ...any) (any, error) { return opAdd(p[0], p[1]) }),
	expr.Function("_sub", func(p ...any) (any, error) { return opSub(p[0], p[1]) }),
	expr.Function("_mul", func(p ...any) (any, error) { return opMul(p[0], p[1]) }),
	expr.Function("_div", func(p ...any) (any, error) { return opDiv(p[0], p[1]) }),
	expr.Function("_mod", func(p ...any) (any, error) { return opMod(p[0], p[1]) }),
	expr.Function("_neg", func(p ...any) (any, error) { return opNeg(p[0]) }),
	expr.Function("_not", func(p ...any) (any, error) { return opNot(p[0]) }),
	expr.Function("_eq", func(p ...any) (any, error) { return opEq(p[0], p[1]) }),
	expr.Function("_ne", func(p ...any) (any, error) { return opNe(p[0], p[1]) }),
	expr.Function("_lt", func(p ...any) (any, error) { return opLt(p[0], p[1]) }),
	expr.Function("_le", func(p ...any) (any, error) { return opLe(p[0], p[1]) }),
	expr.Function("_gt", func(p ...any) (any, error) { return opGt(p[0], p[1]) }),
	expr.Function("_ge", func(p ...any) (any, error) { return opGe(p[0], p[1]) }),
}

// actionFuncs are the functions of event actions (rules-api.md §4), with
// their arity and the timings that allow them (events.go runs them). A
// failure event runs in a failed transaction, so it can only replace the
// error and record what the outbox sends after the rollback; an
// after_commit event cannot veto a transaction that has committed.
var actionFuncs = map[string]struct {
	min, max int
	timings  []string
}{
	"set":    {2, 2, []string{"early", "pre_insert"}},
	"reject": {1, 2, []string{"early", "pre_insert", "row", "commit", "failure"}},
	"insert": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"update": {3, 3, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"delete": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"notify": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit", "failure"}},
	"sql":    {1, 100, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"post":   {2, 2, []string{"after_commit", "failure"}},
}

// actionsVar is the variable through which an action's function calls
// reach the evaluation they belong to: the compiler passes it as their
// first argument (actionPatcher), since a compiled program is shared.
const actionsVar = "pgrules_actions"

// expression parses, checks and compiles one expression of a rule against
// the row of table t: names, types, and the columns it reads.
func (s *Set) expression(c *Compiled, t *catalog.Table, part, src string, out **vm.Program, action bool) (kind, *pgerr.Error) {
	tree, err := parser.Parse(src)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "syntax error in the %s at %d:%d: %s", part, fe.Line, fe.Column+1, fe.Message)
		}
		return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "syntax error in the %s: %s", part, err)
	}
	ck := &checker{set: s, c: c, table: t, part: part, src: src, action: action}
	k := ck.check(tree.Node)
	if ck.err != nil {
		return kAny, ck.err
	}
	opts := append([]expr.Option{
		expr.Env(map[string]any{"row": map[string]any{}, "old": map[string]any{}, "verb": "", "error": map[string]any{}}),
		expr.Patch(&operatorPatcher{}),
		expr.AllowUndefinedVariables(),
		expr.MaxNodes(10000),
	}, exprFunctions...)
	if action {
		opts = append(opts, expr.Patch(actionPatcher{}))
		for name := range actionFuncs {
			opts = append(opts, expr.Function(name, func(p ...any) (any, error) {
				a, ok := p[0].(*actions)
				if !ok {
					return nil, pgerr.New(pgerr.InternalError, "%s called outside an event", name)
				}
				return a.call(name, p[1:])
			}))
		}
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "the %s does not compile: %s", part, err)
	}
	*out = p
	return k, nil
}

// actionPatcher gives each call of an action function the evaluation's
// actions as its first argument.
type actionPatcher struct{}

func (actionPatcher) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.CallNode); ok {
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			if _, ok := actionFuncs[id.Value]; ok {
				args := append([]ast.Node{&ast.IdentifierNode{Value: actionsVar}}, n.Arguments...)
				ast.Patch(node, &ast.CallNode{Callee: n.Callee, Arguments: args})
			}
		}
	}
}

// operatorPatcher rewrites operators into calls of the value functions,
// decimal literals into exact decimals, and member access into optional
// access.
type operatorPatcher struct{}

func (operatorPatcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		if f, ok := operatorFuncs[n.Operator]; ok {
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: f}, Arguments: []ast.Node{n.Left, n.Right}})
		}
	case *ast.UnaryNode:
		switch n.Operator {
		case "-":
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "_neg"}, Arguments: []ast.Node{n.Node}})
		case "not", "!":
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "_not"}, Arguments: []ast.Node{n.Node}})
		}
	case *ast.FloatNode:
		ast.Patch(node, &ast.ConstantNode{Value: decimal.NewFromFloat(n.Value)})
	case *ast.MemberNode:
		// A parent through a NULL foreign key is nil, and so is each of
		// its columns (rules-api.md §3), as if written row.dept?.rate.
		if !n.Optional && !n.Method {
			n.Optional = true
			ast.Patch(node, &ast.ChainNode{Node: n})
		}
	}
}

// beforeTriggers records, for each table with rules and verb, the BEFORE
// ROW trigger that refuses its writes (beforeTriggerError).
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

// beforeTriggerError refuses a write on t when a BEFORE ROW trigger would
// fire on a row the engine writes for it: such a trigger may change a row
// after the rules computed it, or skip it, and the rules would not see the
// row as stored.
func (s *Set) beforeTriggerError(t *catalog.Table, verb string) *pgerr.Error {
	e := s.before[t.QualifiedName()+" "+verb]
	if e == nil {
		return nil
	}
	c := *e // shared by every session
	return &c
}

// findBeforeTrigger looks for the trigger beforeTriggerError refuses a
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
// trigger would make inexact; the others see each row as stored
// (runner.rederive) and give a skipped row no logic. The engine deletes
// the children of the rows a delete cascades to before it deletes them, so
// a skipped row would have lost its children.
func (s *Set) ownBeforeTriggerError(t *catalog.Table, verb, name string) *pgerr.Error {
	if verb == "DELETE" && s.cascadesTo(t) {
		e := notSupported(t, "BEFORE ROW trigger %q on %s may skip a row whose dependent rows pgrules deletes or updates first (ON DELETE CASCADE, SET NULL, SET DEFAULT)", name, shortName(t.QualifiedName()))
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
			e := notSupported(w, "BEFORE ROW trigger %q on %s may change or skip an update pgrules makes to the parents of the table's own rows (foreign key %s)", name, shortName(t.QualifiedName()), fk.Name)
			e.Hint = "Make it an AFTER trigger, or write what it does as rules or events."
			return e
		}
	}
	return nil
}

func readsTable(c *Compiled, table string) bool {
	for _, r := range c.Reads {
		if r.Table == table {
			return true
		}
	}
	return false
}

func beforeTriggerRefusal(t, on *catalog.Table, trigger string) *pgerr.Error {
	e := notSupported(t, "BEFORE ROW trigger %q on %s may change or skip rows after the rules computed them", trigger, shortName(on.QualifiedName()))
	e.Hint = "Make it an AFTER trigger, or write what it does as rules or events (early and pre_insert events change a row before it is written)."
	return e
}
