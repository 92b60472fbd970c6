package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
)

// runSet is a compiled Set with what the engine works out from it once,
// before it runs a write: the rules of each table, with the SQL of their
// statements. Like the Set, it is immutable and shared by every session of
// the database.
type runSet struct {
	*compiler.Set
	tables map[string]*tableRules
}

func newRunSet(set *compiler.Set) *runSet {
	s := &runSet{Set: set}
	s.buildTables()
	return s
}

// tableRules is what the engine runs for the rows of one table, worked out
// once per compiled Set (newRunSet): the table's own derivations in the
// order they run, the aggregates its rows feed, its constraints, the
// formulas of other tables that read its columns, and the SQL of its
// parent adjustments.
type tableRules struct {
	t     *catalog.Table
	index map[string]int // column name → position in t.Columns
	// derivations are the copies and formulas of the table, each after
	// what it reads.
	derivations []*compiler.Rule
	// derived maps each derived column of the table to its rule.
	derived map[string]*compiler.Rule
	// parentFormulas is set when a formula of the table reads a parent.
	parentFormulas bool
	// up are the aggregates this table's rows feed, grouped by the
	// foreign key to the parent that holds them.
	up []*adjustment
	// constraints and commitConstraints check the table's rows.
	constraints, commitConstraints []*compiler.Rule
	// down are the formulas of child tables that read this table's
	// columns through a path ending here.
	down []*cascade
	// The parent rows that evaluating the table's rules needs: for its
	// derivations, for the filters of the aggregates it feeds, and for its
	// constraints (commit constraints included).
	derivePaths, filterPaths, checkPaths pathSet
	// events are the table's enabled events by timing, in definition
	// order; eventPaths the parents their actions read.
	events     map[string][]*compiler.Rule
	eventPaths pathSet
	// oneTrip is set when an insert can run in one round trip.
	oneTrip *oneTrip
	// generated are the stored generated columns the derivations read
	// (generated.go).
	generated []*catalog.Column
}

// pathSet are the paths of foreign keys to load for a new row, and those
// for the row before the change.
type pathSet struct {
	paths, old [][]*catalog.ForeignKey
}

// adjustment is the parent side of the aggregates that one foreign key
// carries: the parent table and the statement that adjusts its rows.
type adjustment struct {
	fk     *catalog.ForeignKey
	parent *catalog.Table
	aggs   []*compiler.Rule
	// sql adjusts the parents named by the key arrays by the deltas, and
	// locks them first; held does the same for parents the transaction
	// has locked already. err is why they could not be made (a min or max
	// whose filter cannot be written in SQL), reported when a write needs
	// them.
	sql, held string
	err       error
	// For sums and counts alone (additive), one and many are lighter
	// statements that only add the deltas and return each row as it is
	// (the row as it was is the row less the delta): one for a single
	// parent, whose UPDATE takes its lock itself, many for parents the
	// transaction holds already.
	additive  bool
	one, many string
	// follow is the light adjustment that runs in the write's own round
	// trip, after it: it reads the written rows back from the child by
	// primary key ($1 on, one text array per key column) and takes the
	// contributions of the rows as they were from the engine (the parent
	// keys, then per aggregate the value to subtract). Empty when the
	// child has no primary key or a filter does not translate to SQL.
	follow string
	// chained is follow with the parent's own sums and counts (chain, of
	// the parent's adjustments) adjusted in the same statement, from the
	// parent rows as the follow left them; its rows come as text arrays
	// tagged with their level (0 for follow's, i+1 for chain[i]'s).
	// Empty when the parent's logic needs the engine between the levels.
	chained string
	chain   []*adjustment
}

// cascade is a formula of a child table reading columns of this table
// through path (from the child to this table).
type cascade struct {
	child   *catalog.Table
	path    []*catalog.ForeignKey
	columns []string // the columns of this table it reads
	formula *compiler.Rule
}

// buildTables works out the rules of each table from the compiled rules.
func (s *runSet) buildTables() {
	s.tables = make(map[string]*tableRules)
	get := func(name string) *tableRules {
		tr := s.tables[name]
		if tr == nil {
			t := s.Snapshot().Tables[name]
			if t == nil {
				return nil
			}
			tr = &tableRules{t: t, index: make(map[string]int, len(t.Columns)), derived: make(map[string]*compiler.Rule)}
			for i, c := range t.Columns {
				tr.index[c.Name] = i
			}
			s.tables[name] = tr
		}
		return tr
	}
	for _, c := range s.Derivations() {
		tr := get(c.Rule.Table)
		if tr == nil {
			continue
		}
		tr.derived[c.Rule.Column] = c
		switch c.Rule.Kind {
		case catalog.Copy:
			tr.derivations = append(tr.derivations, c)
			tr.derivePaths.add([][]*catalog.ForeignKey{{c.FK}}, nil)
		case catalog.Formula:
			tr.derivations = append(tr.derivations, c)
			tr.derivePaths.add(c.Paths, c.OldPaths)
			tr.parentFormulas = tr.parentFormulas || len(c.Paths) > 0 || len(c.OldPaths) > 0
			for _, pr := range c.ParentReads {
				top := get(pr.Path[len(pr.Path)-1].Parent)
				if top == nil {
					continue
				}
				top.addCascade(tr.t, pr, c)
			}
		default: // aggregates
			child := get(c.Rule.SourceTable)
			if child == nil {
				continue
			}
			child.addAggregate(s, c)
			// A filter is evaluated on the child's new and old rows.
			child.filterPaths.add(c.Paths, c.Paths)
		}
	}
	for _, c := range s.Rules() {
		if !c.Rule.Enabled || s.RuleError(c.Rule.Name) != nil {
			continue
		}
		switch c.Rule.Kind {
		case catalog.Constraint, catalog.CommitConstraint:
			tr := get(c.Rule.Table)
			if tr == nil {
				continue
			}
			if c.Rule.Kind == catalog.Constraint {
				tr.constraints = append(tr.constraints, c)
			} else {
				tr.commitConstraints = append(tr.commitConstraints, c)
			}
			tr.checkPaths.add(c.Paths, c.OldPaths)
		case catalog.Event:
			tr := get(c.Rule.Table)
			if tr == nil {
				continue
			}
			if tr.events == nil {
				tr.events = make(map[string][]*compiler.Rule)
			}
			tr.events[c.Rule.Timing] = append(tr.events[c.Rule.Timing], c)
			tr.eventPaths.add(c.Paths, c.OldPaths)
		}
	}
	defer s.finishTables()
	for _, tr := range s.tables {
		for _, a := range tr.up {
			a.sql, a.err = adjustSQL(s.Snapshot(), tr.t, a, true)
			if a.err == nil {
				a.held, _ = adjustSQL(s.Snapshot(), tr.t, a, false)
			}
			a.additive = true
			for _, c := range a.aggs {
				a.additive = a.additive && (c.Rule.Kind == catalog.Sum || c.Rule.Kind == catalog.Count)
			}
			if a.additive {
				a.one, a.many = additiveSQL(a, true), additiveSQL(a, false)
				a.follow = followSQL(s.Snapshot(), tr.t, a, "", "")
				for _, c := range a.aggs {
					if len(c.Paths) > 0 {
						a.follow = "" // the old rows' filters need their parents first
					}
				}
			}
		}
	}
}

// finishTables works out what needs every table's adjustments: the chained
// follows and the writes in one trip.
func (s *runSet) finishTables() {
	for _, tr := range s.tables {
		for _, a := range tr.up {
			// A parent that another foreign key of the table also adjusts
			// is not chained: its changes along both keys are merged
			// before its logic runs (mergeChanges), and a chained level
			// stands only for the changes of its own follow. Nor is a
			// table's parent in the table itself: the chain would hold
			// the table's own adjustments, whose follows the engine keeps
			// by adjustment, and one level's would stand for another's.
			if a.follow != "" && !tr.sharesParent(a) && a.parent != tr.t {
				a.chain, a.chained = s.chainSQL(a)
			}
		}
	}
	for _, tr := range s.tables {
		tr.oneTrip = s.oneTripFor(tr)
		tr.generated = generatedRead(tr)
	}
}

// sharesParent reports whether another adjustment of tr adjusts a's
// parent table.
func (tr *tableRules) sharesParent(a *adjustment) bool {
	for _, b := range tr.up {
		if b != a && b.parent == a.parent {
			return true
		}
	}
	return false
}

func (ps *pathSet) add(paths, old [][]*catalog.ForeignKey) {
	add := func(to *[][]*catalog.ForeignKey, p []*catalog.ForeignKey) {
		for i := 1; i <= len(p); i++ {
			prefix := p[:i]
			if !slices.ContainsFunc(*to, func(q []*catalog.ForeignKey) bool { return slices.Equal(q, prefix) }) {
				*to = append(*to, slices.Clip(prefix))
			}
		}
	}
	for _, p := range paths {
		add(&ps.paths, p)
	}
	for _, p := range old {
		add(&ps.old, p)
	}
	// Shorter paths load first: a longer one starts from their rows.
	for _, ps := range []*[][]*catalog.ForeignKey{&ps.paths, &ps.old} {
		slices.SortStableFunc(*ps, func(a, b []*catalog.ForeignKey) int { return len(a) - len(b) })
	}
}

func (tr *tableRules) addAggregate(s *runSet, c *compiler.Rule) {
	for _, a := range tr.up {
		if a.fk == c.FK {
			a.aggs = append(a.aggs, c)
			return
		}
	}
	tr.up = append(tr.up, &adjustment{fk: c.FK, parent: s.Snapshot().Tables[c.FK.Parent], aggs: []*compiler.Rule{c}})
}

func (tr *tableRules) addCascade(child *catalog.Table, pr compiler.ParentRead, f *compiler.Rule) {
	for _, cs := range tr.down {
		if cs.formula == f && slices.Equal(cs.path, pr.Path) {
			if !slices.Contains(cs.columns, pr.Column) {
				cs.columns = append(cs.columns, pr.Column)
			}
			return
		}
	}
	tr.down = append(tr.down, &cascade{child: child, path: pr.Path, columns: []string{pr.Column}, formula: f})
}

// table returns the rules of a table, or nil when it has none.
func (s *runSet) table(name string) *tableRules { return s.tables[name] }

// additiveSQL is the light adjustment of sums and counts: for one parent
// with scalar parameters (its key, then each delta), for many with text
// arrays of them.
func additiveSQL(a *adjustment, one bool) string {
	p := a.parent
	n := len(a.fk.ParentColumns)
	var where, args, cols, sets []string
	for i, k := range a.fk.ParentColumns {
		typ := p.Column(k).Type
		if one {
			where = append(where, fmt.Sprintf("p.%s = CAST($%d AS %s)", sqltext.Ident(k), i+1, typ))
		} else {
			where = append(where, fmt.Sprintf("p.%s = CAST(d.k%d AS %s)", sqltext.Ident(k), i+1, typ))
			args = append(args, fmt.Sprintf("$%d::text[]", i+1))
			cols = append(cols, fmt.Sprintf("k%d", i+1))
		}
	}
	for i, c := range a.aggs {
		target := sqltext.Ident(c.Rule.Column)
		v := fmt.Sprintf("$%d", n+i+1)
		if !one {
			v = fmt.Sprintf("d.a%d", i+1)
			args = append(args, fmt.Sprintf("$%d::text[]", n+i+1))
			cols = append(cols, fmt.Sprintf("a%d", i+1))
		}
		sets = append(sets, fmt.Sprintf("%s = coalesce(p.%s, 0) + CAST(%s AS numeric)", target, target, v))
	}
	from := ""
	if !one {
		from = fmt.Sprintf(" FROM %s AS d(%s)", unnestFrom(args...), strings.Join(cols, ", "))
	}
	return fmt.Sprintf("UPDATE %s AS p SET %s%s WHERE %s RETURNING p.ctid, p.*", sqltext.Table(p), strings.Join(sets, ", "), from, strings.Join(where, " AND "))
}

// followSQL is an adjustment's follow statement (see adjustment.follow).
// It returns each parent as it is, after the deltas it got. With src, a
// relation of child rows as written (see onetrip.go), it adds their
// contributions instead, less those of the rows of oldSrc (the same rows
// before an update) when given, and takes no parameters.
func followSQL(snap *catalog.Snapshot, child *catalog.Table, a *adjustment, src, oldSrc string) string {
	if len(child.PrimaryKey) == 0 {
		return ""
	}
	p := a.parent
	var pk, pkIn, pkArgs, pkCols []string
	for i, k := range child.PrimaryKey {
		pk = append(pk, "c."+sqltext.Ident(k))
		pkIn = append(pkIn, fmt.Sprintf("CAST(w.k%d AS %s)", i+1, child.Column(k).Type))
		pkArgs = append(pkArgs, fmt.Sprintf("$%d::text[]", i+1))
		pkCols = append(pkCols, fmt.Sprintf("k%d", i+1))
	}
	n := len(child.PrimaryKey)
	var newCols, oldCols, oldArgs, oldNames, keyNames, sums, sets, where, having []string
	for i, k := range a.fk.Columns {
		typ := p.Column(a.fk.ParentColumns[i]).Type
		newCols = append(newCols, fmt.Sprintf("CAST(c.%s AS %s)", sqltext.Ident(k), typ))
		oldCols = append(oldCols, fmt.Sprintf("CAST(o.k%d AS %s)", i+1, typ))
		oldArgs = append(oldArgs, fmt.Sprintf("$%d::text[]", n+len(oldArgs)+1))
		oldNames = append(oldNames, fmt.Sprintf("k%d", i+1))
		keyNames = append(keyNames, fmt.Sprintf("k%d", i+1))
		where = append(where, fmt.Sprintf("p.%s = d.k%d", sqltext.Ident(a.fk.ParentColumns[i]), i+1))
	}
	for i, c := range a.aggs {
		v := "1"
		if c.Rule.Kind == catalog.Sum {
			v = "coalesce(c." + sqltext.Ident(c.Rule.SourceColumn) + ", 0)"
		}
		if c.Rule.Filter != "" {
			g := &compiler.Translator{Snap: snap, Table: child, Alias: "c", Rule: c.Rule.Name}
			f, err := g.Translate(c.Rule.Filter)
			if err != nil {
				return ""
			}
			v = "CASE WHEN coalesce(" + f + ", false) THEN " + v + " ELSE 0 END"
		}
		newCols = append(newCols, "CAST("+v+" AS numeric)")
		oldCols = append(oldCols, fmt.Sprintf("-CAST(o.a%d AS numeric)", i+1))
		oldArgs = append(oldArgs, fmt.Sprintf("$%d::text[]", n+len(oldArgs)+1))
		oldNames = append(oldNames, fmt.Sprintf("a%d", i+1))
		keyNames = append(keyNames, fmt.Sprintf("a%d", i+1))
		sums = append(sums, fmt.Sprintf("sum(x.a%d) AS a%d", i+1, i+1))
		having = append(having, fmt.Sprintf("sum(x.a%d) <> 0", i+1))
		sets = append(sets, fmt.Sprintf("%s = coalesce(p.%s, 0) + d.a%d", sqltext.Ident(c.Rule.Column), sqltext.Ident(c.Rule.Column), i+1))
	}
	keys := strings.Join(keyNames[:len(a.fk.Columns)], ", ")
	deltas := make([]string, len(a.aggs))
	for i := range a.aggs {
		deltas[i] = fmt.Sprintf("d.a%d", i+1)
	}
	rows := fmt.Sprintf(`SELECT %s FROM %s c WHERE (%s) IN (SELECT %s FROM %s AS w(%s))
  UNION ALL SELECT %s FROM %s AS o(%s)`,
		strings.Join(newCols, ", "), sqltext.Table(child), strings.Join(pk, ", "), strings.Join(pkIn, ", "), unnestFrom(pkArgs...), strings.Join(pkCols, ", "),
		strings.Join(oldCols, ", "), unnestFrom(oldArgs...), strings.Join(oldNames, ", "))
	if src != "" {
		rows = fmt.Sprintf("SELECT %s FROM %s c", strings.Join(newCols, ", "), src)
	}
	if oldSrc != "" {
		negated := slices.Clone(newCols)
		for i := len(a.fk.Columns); i < len(negated); i++ {
			negated[i] = "-" + negated[i]
		}
		rows += fmt.Sprintf("\n  UNION ALL SELECT %s FROM %s c", strings.Join(negated, ", "), oldSrc)
	}
	return fmt.Sprintf(`UPDATE %s AS p SET %s FROM (SELECT %s, %s FROM (
  %s) x(%s)
 GROUP BY %s HAVING %s) d WHERE %s RETURNING %s, p.ctid, p.*`,
		sqltext.Table(p), strings.Join(sets, ", "), keys, strings.Join(sums, ", "),
		rows, strings.Join(keyNames, ", "),
		keys, strings.Join(having, " OR "), strings.Join(where, " AND "), strings.Join(deltas, ", "))
}

// chainSQL builds a follow statement that also adjusts the parent's own
// parents (see adjustment.chained). It chains each adjustment b of the
// parent that is additive and whose filters translate to SQL, when no
// derivation of the parent reads what a changes.
func (s *runSet) chainSQL(a *adjustment) ([]*adjustment, string) {
	chain, with, selects := s.chainParts(a, a.follow, "")
	if len(chain) == 0 {
		return nil, ""
	}
	return chain, "WITH " + strings.Join(with, ",\n") + "\n" + strings.Join(selects, "\nUNION ALL ")
}

// chainParts are the CTEs and the selects of chainSQL, from the follow
// statement given, with their names prefixed: the selects return the
// follow's rows (level 0) and those of each level of the chain, as text
// arrays tagged with the level. Without a chain, the first CTE is the
// follow and the only select returns its rows.
func (s *runSet) chainParts(a *adjustment, follow, prefix string) (chain []*adjustment, with, selects []string) {
	p := a.parent
	targets := make(map[string]int) // a's target columns → their delta
	for i, c := range a.aggs {
		targets[c.Rule.Column] = i + 1
	}
	with = append(with, fmt.Sprintf("%su0(%s, pgrules_ctid, %s) AS (%s)", prefix, strings.Join(deltaNames(len(a.aggs)), ", "), strings.Join(columnIdents(p), ", "), follow))
	old := make([]string, len(p.Columns))
	for i, c := range p.Columns {
		if j := targets[c.Name]; j > 0 {
			old[i] = fmt.Sprintf("%s - pgrules_d%d AS %s", sqltext.Ident(c.Name), j, sqltext.Ident(c.Name))
		} else {
			old[i] = sqltext.Ident(c.Name)
		}
	}
	with = append(with, fmt.Sprintf("%so0 AS (SELECT pgrules_ctid, %s FROM %su0)", prefix, strings.Join(old, ", "), prefix))
	selects = []string{"SELECT 0, " + levelArray(prefix+"u0", len(a.aggs), p) + " FROM " + prefix + "u0"}
	ptr := s.tables[p.QualifiedName()]
	if ptr == nil {
		return nil, with, selects
	}
	for _, d := range ptr.derivations {
		for _, ref := range d.Reads {
			if ref.Table == p.QualifiedName() && targets[ref.Column] > 0 {
				return nil, with, selects
			}
		}
	}
	for _, b := range ptr.up {
		gp := b.parent
		// A grandparent table a second foreign key of the parent also
		// reaches is left to the usual adjustment: one statement applies
		// only one of two updates of a row.
		if !b.additive || b.err != nil || gp == p || gp.QualifiedName() == a.fk.Child || slices.ContainsFunc(chain, func(c *adjustment) bool { return c.parent == gp }) {
			continue
		}
		j := len(chain) + 1
		level, ok := s.chainLevel(p, b, j, prefix)
		if !ok {
			continue
		}
		with = append(with, level...)
		u := fmt.Sprintf("%su%d", prefix, j)
		selects = append(selects, fmt.Sprintf("SELECT %d, %s FROM %s", j, levelArray(u, len(b.aggs), gp), u))
		chain = append(chain, b)
	}
	return chain, with, selects
}

// chainLevel is the CTEs of level j of a chain: the deltas of the
// parent p's rows in the previous level to the sums of b, the grandparent
// rows they lock in key order, and the UPDATE that adjusts them. It
// reports false when a filter of b does not translate to SQL.
func (s *runSet) chainLevel(p *catalog.Table, b *adjustment, j int, prefix string) ([]string, bool) {
	gp := b.parent
	var keys, keyNames, vals, sums, having, sets, lockKeys, joins []string
	for i, k := range b.fk.Columns {
		typ := gp.Column(b.fk.ParentColumns[i]).Type
		keys = append(keys, fmt.Sprintf("CAST(n.%s AS %s) AS k%d", sqltext.Ident(k), typ, i+1))
		keyNames = append(keyNames, fmt.Sprintf("k%d", i+1))
		lockKeys = append(lockKeys, "g."+sqltext.Ident(b.fk.ParentColumns[i]))
		joins = append(joins, fmt.Sprintf("p.%s = l.%s AND l.%s = d.k%d", sqltext.Ident(b.fk.ParentColumns[i]), sqltext.Ident(b.fk.ParentColumns[i]), sqltext.Ident(b.fk.ParentColumns[i]), i+1))
	}
	ok := true
	for i, c := range b.aggs {
		contribution := func(alias string) string {
			v := "1"
			if c.Rule.Kind == catalog.Sum {
				v = "coalesce(" + alias + "." + sqltext.Ident(c.Rule.SourceColumn) + ", 0)"
			}
			if c.Rule.Filter != "" {
				g := &compiler.Translator{Snap: s.Snapshot(), Table: p, Alias: alias, Rule: c.Rule.Name}
				f, err := g.Translate(c.Rule.Filter)
				if err != nil || len(c.Paths) > 0 {
					ok = false
					return ""
				}
				v = "CASE WHEN coalesce(" + f + ", false) THEN " + v + " ELSE 0 END"
			}
			return "CAST(" + v + " AS numeric)"
		}
		vals = append(vals, fmt.Sprintf("%s - %s AS a%d", contribution("n"), contribution("o"), i+1))
		sums = append(sums, fmt.Sprintf("sum(a%d) AS a%d", i+1, i+1))
		having = append(having, fmt.Sprintf("sum(a%d) <> 0", i+1))
		sets = append(sets, fmt.Sprintf("%s = coalesce(p.%s, 0) + d.a%d", sqltext.Ident(c.Rule.Column), sqltext.Ident(c.Rule.Column), i+1))
	}
	if !ok {
		return nil, false
	}
	deltas := make([]string, len(b.aggs))
	for i := range deltas {
		deltas[i] = fmt.Sprintf("d.a%d", i+1)
	}
	return []string{
		fmt.Sprintf("%[1]sd%[2]d AS (SELECT %[3]s, %[4]s FROM (SELECT %[5]s, %[6]s FROM %[1]su0 n JOIN %[1]so0 o ON o.pgrules_ctid = n.pgrules_ctid) x GROUP BY %[3]s HAVING %[7]s)",
			prefix, j, strings.Join(keyNames, ", "), strings.Join(sums, ", "), strings.Join(keys, ", "), strings.Join(vals, ", "), strings.Join(having, " OR ")),
		fmt.Sprintf("%[1]sl%[2]d AS MATERIALIZED (SELECT g.* FROM %[3]s g WHERE (%[4]s) IN (SELECT %[5]s FROM %[1]sd%[2]d) ORDER BY %[4]s FOR NO KEY UPDATE OF g)",
			prefix, j, sqltext.Table(gp), strings.Join(lockKeys, ", "), strings.Join(keyNames, ", ")),
		fmt.Sprintf("%[1]su%[2]d(%[3]s, pgrules_ctid, %[4]s) AS (UPDATE %[5]s AS p SET %[6]s FROM %[1]sd%[2]d d, %[1]sl%[2]d l WHERE %[7]s RETURNING %[8]s, p.ctid, p.*)",
			prefix, j, strings.Join(deltaNames(len(b.aggs)), ", "), strings.Join(columnIdents(gp), ", "), sqltext.Table(gp), strings.Join(sets, ", "),
			strings.Join(joins, " AND "), strings.Join(deltas, ", ")),
	}, true
}

// columnIdents are t's column names as SQL identifiers.
func columnIdents(t *catalog.Table) []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = sqltext.Ident(c.Name)
	}
	return out
}

// deltaNames name the n deltas a level of a chain returns before its row.
func deltaNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pgrules_d%d", i+1)
	}
	return out
}

// levelArray is the text array a chain's select returns for a row of rel:
// its n deltas, its ctid and t's columns.
func levelArray(rel string, n int, t *catalog.Table) string {
	parts := append(deltaNames(n), "pgrules_ctid")
	parts = append(parts, columnIdents(t)...)
	for i := range parts {
		parts[i] = rel + "." + parts[i] + "::text"
	}
	return "ARRAY[" + strings.Join(parts, ", ") + "]"
}

// adjustSQL is the statement that adjusts the parents of one foreign key
// by the deltas of its aggregates, in one round trip: it locks the parent
// rows in key order (so that concurrent writers queue instead of
// deadlocking), applies every delta and returns each row as it was and as
// it is. The parents are joined by key, not by the ctid the lock saw: the
// statement's snapshot predates a lock it waited for, and only the key
// finds the row version a concurrent transaction committed meanwhile
// (which the update then re-reads). Its parameters are the parent keys (one text array per key
// column) and, per aggregate, the delta (sum, count) or the values that
// arrive and leave (min, max), as text arrays.
func adjustSQL(snap *catalog.Snapshot, child *catalog.Table, a *adjustment, lock bool) (string, error) {
	p := a.parent
	n := len(a.fk.ParentColumns)
	var keyIn, keyArgs, keyCols, keyJoin, pJoin, order []string
	for i, k := range a.fk.ParentColumns {
		typ := p.Column(k).Type
		keyArgs = append(keyArgs, fmt.Sprintf("$%d::text[]", i+1))
		keyCols = append(keyCols, fmt.Sprintf("k%d", i+1))
		keyIn = append(keyIn, fmt.Sprintf("CAST(k%d AS %s)", i+1, typ))
		keyJoin = append(keyJoin, fmt.Sprintf("l.%s = CAST(d.k%d AS %s)", sqltext.Ident(k), i+1, typ))
		pJoin = append(pJoin, fmt.Sprintf("p.%s = l.%s", sqltext.Ident(k), sqltext.Ident(k)))
		order = append(order, "p."+sqltext.Ident(k))
	}
	pkey := make([]string, n)
	for i, k := range a.fk.ParentColumns {
		pkey[i] = "p." + sqltext.Ident(k)
	}
	args := slices.Clone(keyArgs)
	cols := slices.Clone(keyCols)
	var sets []string
	for _, c := range a.aggs {
		target := sqltext.Ident(c.Rule.Column)
		i := len(args) + 1
		switch c.Rule.Kind {
		case catalog.Sum, catalog.Count:
			args = append(args, fmt.Sprintf("$%d::text[]", i))
			cols = append(cols, fmt.Sprintf("a%d", i))
			sets = append(sets, fmt.Sprintf("%s = coalesce(p.%s, 0) + CAST(d.a%d AS numeric)", target, target, i))
		case catalog.Min, catalog.Max:
			src := snap.Tables[c.Rule.SourceTable]
			typ := src.Column(c.Rule.SourceColumn).Type
			args = append(args, fmt.Sprintf("$%d::text[]", i), fmt.Sprintf("$%d::text[]", i+1))
			cols = append(cols, fmt.Sprintf("a%d", i), fmt.Sprintf("r%d", i+1))
			where := sqltext.KeyMatch(a.fk, "c", "p")
			if c.Rule.Filter != "" {
				g := &compiler.Translator{Snap: snap, Table: src, Alias: "c", Rule: c.Rule.Name}
				f, err := g.Translate(c.Rule.Filter)
				if err != nil {
					return "", err
				}
				where += " AND coalesce(" + f + ", false)"
			}
			agg, cmp, pick := "min", "<=", "least"
			if c.Rule.Kind == catalog.Max {
				agg, cmp, pick = "max", ">=", "greatest"
			}
			// When a value leaves that is the current extreme, the
			// extreme is looked for again among the children as they are
			// now; otherwise the arriving values are compared with it.
			sets = append(sets, fmt.Sprintf(
				"%s = CASE WHEN d.r%d IS NOT NULL AND p.%s IS NOT NULL AND CAST(d.r%d AS %s) %s p.%s THEN (SELECT %s(c.%s) FROM %s c WHERE %s) ELSE %s(p.%s, CAST(d.a%d AS %s)) END",
				target, i+1, target, i+1, typ, cmp, target, agg, sqltext.Ident(c.Rule.SourceColumn), sqltext.Table(src), where, pick, target, i, typ))
		}
	}
	locking := ""
	if lock {
		locking = " FOR NO KEY UPDATE OF p"
	}
	sql := fmt.Sprintf(`WITH l AS MATERIALIZED (SELECT p.ctid AS pgrules_ctid, p.* FROM %s p WHERE (%s) IN (SELECT %s FROM %s AS k(%s)) ORDER BY %s%s)
UPDATE %s AS p SET %s FROM l, %s AS d(%s) WHERE %s AND %s RETURNING l.*, p.ctid, p.*`,
		sqltext.Table(p), strings.Join(pkey, ", "), strings.Join(keyIn, ", "), unnestFrom(keyArgs...), strings.Join(keyCols, ", "), strings.Join(order, ", "), locking,
		sqltext.Table(p), strings.Join(sets, ", "), unnestFrom(args...), strings.Join(cols, ", "), strings.Join(pJoin, " AND "), strings.Join(keyJoin, " AND "))
	return sql, nil
}

// unnestFrom is unnest(arrays...) for a FROM clause, through
// pgrules._unnest, which the planner expects one element of. unnest's own
// estimate depends on the array: a custom plan sees its length, a generic
// plan assumes ten. The engine's statements are prepared once and run with
// the keys of a statement's rows, mostly a few; with unnest every generic
// plan looked dearer than the custom ones, so the server planned each
// execution anew, which cost more than running it.
func unnestFrom(arrays ...string) string {
	if len(arrays) == 1 {
		return "pgrules._unnest(" + arrays[0] + ")"
	}
	fns := make([]string, len(arrays))
	for i, a := range arrays {
		fns[i] = "pgrules._unnest(" + a + ")"
	}
	return "ROWS FROM (" + strings.Join(fns, ", ") + ")"
}
