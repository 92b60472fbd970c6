package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

// An insert usually costs two round trips: the materialising query, then
// the write with its follow statements (run.go). When everything the
// engine would compute for the new rows before writing them can be
// computed by the server, exactly, the insert is one statement instead:
//
//	WITH pgrules_i AS (INSERT ... SELECT <the rows, derived> RETURNING ...),
//	     <each adjustment's follow, reading the new rows from pgrules_i>
//	SELECT <what the client asked for, each row as stored, the parents' rows>
//
// The rows' copies and formulas are computed in layers over the
// materialising query, one derivation a layer, in the engine's order. The
// parents are not locked first: a single statement's foreign-key checks
// run at its end, when its own updates hold the parents already (the
// deadlock lockParents avoids needs two statements).

// oneTrip is what an insert into a table needs to run in one round trip;
// nil when it cannot.
type oneTrip struct {
	// exprs are the derivations' SQL, in tr.derivations' order; the i-th
	// reads the layer aliased pgrules_l<i>.
	exprs []string
	// ctes are the adjustments' follow statements and their chains, as
	// CTEs; follows selects their rows as text, "<i> <level> <row>" for
	// tr.up[i].
	ctes    []string
	follows string
}

// oneTripFor works out t's oneTrip. The conditions: no early, pre_insert
// or failure events (they need the rows in the engine before the write,
// or what it was writing); every derivation translates exactly (see
// exactSQL); every aggregate the rows feed has a follow statement.
func (s *Set) oneTripFor(tr *tableRules) *oneTrip {
	if len(tr.events[timingEarly])+len(tr.events[timingPreInsert])+len(tr.events[timingFailure]) > 0 {
		return nil
	}
	o := &oneTrip{}
	for i, d := range tr.derivations {
		e, ok := s.derivationSQL(tr, d, fmt.Sprintf("pgrules_l%d", i))
		if !ok {
			return nil
		}
		o.exprs = append(o.exprs, e)
	}
	src := "(SELECT (pgrules_row).* FROM pgrules_i)"
	var follows []string
	for i, a := range tr.up {
		if a.err != nil || a.follow == "" {
			return nil
		}
		prefix := fmt.Sprintf("pgrules_a%d_", i+1)
		chain, with, selects := s.chainParts(a, followSQL(s.snap, tr.t, a, src), prefix)
		if len(chain) != len(a.chain) {
			return nil
		}
		if len(chain) == 0 {
			with = with[:1] // the follow, without the old rows' CTE
		}
		o.ctes = append(o.ctes, with...)
		follows = append(follows, fmt.Sprintf("SELECT '%d ' || l || ' ' || r::text FROM (%s) x(l, r)", i, strings.Join(selects, " UNION ALL ")))
	}
	o.follows = strings.Join(follows, " UNION ALL ")
	return o
}

// derivationSQL is d's value for a new row, in SQL over the row aliased
// alias, when it is exactly what the engine computes; false otherwise.
func (s *Set) derivationSQL(tr *tableRules, d *Compiled, alias string) (string, bool) {
	target := tr.t.Column(d.Rule.Column)
	switch d.Rule.Kind {
	case catalog.Copy:
		parent := s.snap.Tables[d.FK.Parent]
		src := parent.Column(d.Rule.SourceColumn)
		if src == nil || src.Kind != target.Kind || !copyable[target.Kind] {
			return "", false
		}
		return fmt.Sprintf("(SELECT p.%s FROM %s p WHERE %s)", quoteIdent(src.Name), qualified(parent), keyMatch(d.FK, alias, "p")), true
	case catalog.Formula:
		if target.Kind != catalog.KindInt && target.Kind != catalog.KindDecimal {
			return "", false
		}
		tree, err := parser.Parse(d.Rule.Expression)
		if err != nil {
			return "", false
		}
		g := &sqlGen{snap: s.snap, table: tr.t, alias: alias, rule: d.Rule.Name}
		e, ok := g.exactSQL(tree.Node)
		if !ok {
			return "", false
		}
		if target.Kind == catalog.KindInt {
			// As coerce does, before a later formula reads it.
			e = "CAST(" + e + " AS " + target.Type + ")"
		}
		return e, true
	}
	return "", false
}

// copyable are the kinds whose values a copy passes through unchanged in
// the engine, as the server would.
var copyable = map[catalog.Kind]bool{catalog.KindInt: true, catalog.KindDecimal: true, catalog.KindText: true, catalog.KindBool: true}

// exactSQL translates the part of the expression language whose SQL gives
// what the engine's evaluation gives, value for value: numbers (integer
// and decimal columns of the row and its parents, literals), +, -, *,
// unary minus and ??. Integers are computed as numeric, since the engine's
// do not overflow at 32 bits. Division, comparisons, conditions and text
// are left to the engine: their NULLs or scales differ in SQL.
func (g *sqlGen) exactSQL(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.NilNode:
		return "NULL", true
	case *ast.IntegerNode:
		return "CAST(" + strconv.Itoa(n.Value) + " AS numeric)", true
	case *ast.FloatNode:
		x, err := g.node(n)
		return x, err == nil
	case *ast.UnaryNode:
		if n.Operator != "-" && n.Operator != "+" {
			return "", false
		}
		x, ok := g.exactSQL(n.Node)
		if !ok {
			return "", false
		}
		return "(" + n.Operator + x + ")", true
	case *ast.BinaryNode:
		op := n.Operator
		if op != "+" && op != "-" && op != "*" && op != "??" {
			return "", false
		}
		l, ok := g.exactSQL(n.Left)
		if !ok {
			return "", false
		}
		r, ok := g.exactSQL(n.Right)
		if !ok {
			return "", false
		}
		if op == "??" {
			return "coalesce(" + l + ", " + r + ")", true
		}
		return "(" + l + " " + op + " " + r + ")", true
	case *ast.MemberNode:
		c := g.memberColumn(n)
		if c == nil || c.Generated || c.Kind != catalog.KindInt && c.Kind != catalog.KindDecimal {
			return "", false
		}
		x, err := g.member(n)
		if err != nil {
			return "", false
		}
		return "CAST(" + x + " AS numeric)", true
	}
	return "", false
}

// memberColumn is the column row.x or row.parent[.parent...].x names, nil
// when it names none.
func (g *sqlGen) memberColumn(n *ast.MemberNode) *catalog.Column {
	var path []string
	var cur ast.Node = n
	for {
		m, ok := cur.(*ast.MemberNode)
		if !ok {
			break
		}
		prop, ok := m.Property.(*ast.StringNode)
		if !ok || m.Method || m.Optional {
			return nil
		}
		path = append([]string{prop.Value}, path...)
		cur = m.Node
	}
	if id, ok := cur.(*ast.IdentifierNode); !ok || id.Value != "row" {
		return nil
	}
	t := g.table
	for _, name := range path[:len(path)-1] {
		fk := parentByAccessor(t, name)
		if fk == nil {
			return nil
		}
		t = g.snap.Tables[fk.Parent]
	}
	return t.Column(path[len(path)-1])
}

// insertInOneTrip reports whether the insert w can run in one round trip.
func (r *runner) insertInOneTrip(tr *tableRules, w *writeStmt) bool {
	return tr.oneTrip != nil && w.verb == verbInsert && w.upsert == nil && w.conflict == "" &&
		!r.noFollow && len(r.deleting) == 0
}

// insertOneTrip runs the insert w in one statement (see oneTrip) and
// returns what the client gets for it.
// top is set for the client's own statement.
func (r *runner) insertOneTrip(tr *tableRules, w *writeStmt, p clientParams, resultFormats []int16, top bool) (*stmt.Result, error) {
	t, o := w.table, tr.oneTrip
	names := make([]string, len(w.insertCols))
	for i, c := range w.insertCols {
		names[i] = quoteIdent(c.Name)
	}
	// The first layer is the materialised rows with a new row's sums and
	// counts (0) and min and max (NULL); each derivation adds one.
	layer := func(i int, value func(c *catalog.Column) string, from string) string {
		cols := make([]string, len(w.insertCols))
		for j, c := range w.insertCols {
			cols[j] = names[j]
			if v := value(c); v != "" {
				cols[j] = v + " AS " + names[j]
			}
		}
		return fmt.Sprintf("(SELECT %s FROM %s) AS pgrules_l%d", strings.Join(cols, ", "), from, i)
	}
	src := layer(0, func(c *catalog.Column) string {
		switch d := tr.derived[c.Name]; {
		case d == nil:
			return ""
		case d.Rule.Kind == catalog.Sum || d.Rule.Kind == catalog.Count:
			return "CAST(0 AS " + c.Type + ")"
		case d.Rule.Kind == catalog.Min || d.Rule.Kind == catalog.Max:
			return "CAST(NULL AS " + c.Type + ")"
		}
		return ""
	}, "("+w.materializeSQL(len(p.values))+") AS pgrules_m("+strings.Join(names, ", ")+")")
	for i, d := range tr.derivations {
		src = layer(i+1, func(c *catalog.Column) string {
			if c.Name == d.Rule.Column {
				return o.exprs[i]
			}
			return ""
		}, src)
	}
	returning := w.alias + ".ctid AS pgrules_ctid, " + w.alias + " AS pgrules_row"
	if w.returning != "" {
		returning = w.returning + ", " + returning
	}
	with := append([]string{fmt.Sprintf("pgrules_i AS (INSERT INTO %s AS %s (%s) %s SELECT %s FROM %s RETURNING %s)",
		qualified(t), w.alias, strings.Join(names, ", "), w.overriding, strings.Join(names, ", "), src, returning)}, o.ctes...)
	follows := "NULL::text[]"
	if o.follows != "" {
		follows = "CASE WHEN row_number() OVER () = 1 THEN (SELECT array_agg(f) FROM (" + o.follows + ") x(f)) END"
	}
	sql := "WITH " + strings.Join(with, ",\n") + "\nSELECT pgrules_i.*, (pgrules_i.pgrules_row).*, " + follows + " FROM pgrules_i"

	k, n := w.nReturning, len(t.Columns)
	mp := p
	mp.stable = p.stable || w.literalsOnly
	res, err := r.clientStatement(sql, mp, resultFormatsFor(resultFormats, k, n+3), w.literals...)
	if err != nil {
		return nil, err
	}
	out := &stmt.Result{Tag: tagOf(verbInsert, len(res.Rows))}
	if w.returning != "" {
		out.Fields = res.Fields[:k]
		out.Rows = make([][][]byte, len(res.Rows))
	}
	written := make([]*change, len(res.Rows))
	for i, vals := range res.Rows {
		if w.returning != "" {
			out.Rows[i] = vals[:k]
		}
		written[i] = &change{verb: verbInsert, new: newRow(t, vals[k], vals[k+2:k+2+n])}
	}
	// The trace tells the derivations' values as the rows were stored.
	r.tracef("%d row(s)", len(written))
	for _, ch := range written {
		for _, d := range tr.derivations {
			r.tracef("%s %s = %s", d.Rule.Kind, d.Target, traceValue(ch.new.vals[d.Rule.Column]))
		}
	}
	if top {
		r.failing.changes = written
	}
	if len(res.Rows) > 0 && len(tr.up) > 0 {
		if err := r.takeOneTripFollows(tr, res.Rows[0][k+2+n]); err != nil {
			return nil, err
		}
	}
	if err := r.afterWrite(tr, written); err != nil {
		return nil, err
	}
	return out, nil
}

// takeOneTripFollows keeps the parents' changes of an insert in one trip,
// as takeFollow does a follow statement's: f is their text array.
func (r *runner) takeOneTripFollows(tr *tableRules, f []byte) error {
	bad := func(err error) error {
		return r.fail(pgerr.New(pgerr.InternalError, "pgrules read a malformed adjusted row: %w", err))
	}
	rows := make([][][][]byte, len(tr.up))
	if f != nil {
		items, err := parseTextArray(f)
		if err != nil {
			return bad(err)
		}
		for _, item := range items {
			a, rest, _ := strings.Cut(string(item), " ")
			level, row, ok := strings.Cut(rest, " ")
			i, err := strconv.Atoi(a)
			if err != nil || !ok || i < 0 || i >= len(rows) {
				return bad(fmt.Errorf("%q", item))
			}
			rows[i] = append(rows[i], [][]byte{[]byte(level), []byte(row)})
		}
	}
	if r.followed == nil {
		r.followed = make(map[*adjustment]followedChanges)
	}
	for i, a := range tr.up {
		if err := r.takeLevels(a, rows[i]); err != nil {
			return err
		}
		r.s.markLocked(a, r.followed[a].changes)
	}
	return nil
}
