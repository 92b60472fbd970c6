package rules

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
)

// A client's write on a table with rules is not sent as it is. It is
// analysed once per statement text (the result is cached with the plan)
// into a writeStmt: a query that materialises the statement's row changes
// without writing anything, and what the engine's own write needs of the
// client's statement (its RETURNING list, ON CONFLICT DO NOTHING). It is
// built from what sqlparse reads of the statement (a
// sqlparse.ModifyTable): the pieces of the client's statement that the
// engine reuses (expressions, FROM lists, the WHERE clause, a WITH clause)
// come as SQL deparsed from PostgreSQL's own parse tree, so they mean
// exactly what they meant.

type verb string

const (
	verbInsert verb = "insert"
	verbUpdate verb = "update"
	verbDelete verb = "delete"
)

// writeStmt is one client write on a table with rules.
type writeStmt struct {
	verb  verb
	table *catalog.Table
	// alias is the name the client's statement gives the table, quoted:
	// its alias, or the table's own name.
	alias string
	// materialize selects, without writing:
	//   insert: each row to insert, one column per insertCols entry;
	//   update: the row's ctid, the whole row as it is, and the new value
	//           of each setCols entry, locked;
	//   delete: the row's ctid and the whole row as it is, locked.
	materialize string
	insertCols  []*catalog.Column
	setCols     []*catalog.Column
	// returning is the client's RETURNING list as SQL, with * spelled as
	// the table's alias; empty without RETURNING. nReturning is the
	// number of columns it gives. With from, they are the part of the
	// list the write returns (returning.go).
	returning  string
	nReturning int
	from       *returnedFrom
	// doNothing is set for INSERT ... ON CONFLICT ... DO NOTHING; conflict
	// is the clause as SQL.
	doNothing  bool
	conflict   string
	overriding string // "OVERRIDING SYSTEM VALUE" or "OVERRIDING USER VALUE"
	// upsert is INSERT ... ON CONFLICT (...) DO UPDATE.
	upsert *upsert
	// joined is set for an UPDATE with FROM or a DELETE with USING;
	// setsKey for an update that sets a column of a key (then its rows are
	// locked FOR UPDATE).
	joined, setsKey bool
	// literals are the constants of an INSERT's VALUES, which materialize
	// takes as parameters after the client's (marked by literalMark);
	// literalsOnly is set when nothing else in it varies with the values
	// (then it is worth preparing).
	literals     [][]byte
	literalsOnly bool
	// literalAt is where each of literals stands in the text the tree was
	// parsed from (its node's location), which lets a text of the same
	// shape reuse w with its own values (see shape).
	literalAt []int32
	// oneTrip keeps the statement that runs w in one round trip, built
	// at its first use; the copies derive makes of w share it.
	oneTrip *atomic.Pointer[builtSQL]
}

// builtSQL is a statement's text for nParams client parameters.
type builtSQL struct {
	nParams int
	sql     string
}

// oneTripSQL returns w's one-trip statement for nParams client
// parameters, built by build at first (each time for the writes the
// engine makes itself, which have no oneTrip).
func (w *writeStmt) oneTripSQL(nParams int, build func(nParams int) string) string {
	if w.oneTrip == nil {
		return build(nParams)
	}
	if b := w.oneTrip.Load(); b != nil && b.nParams == nParams {
		return b.sql
	}
	sql := build(nParams)
	w.oneTrip.Store(&builtSQL{nParams: nParams, sql: sql})
	return sql
}

// params are the client's parameters p as the statements built from w
// take them: stable, and so prepared, also when w's only values are the
// literals it passes as parameters.
func (w *writeStmt) params(p clientParams) clientParams {
	p.stable = p.stable || w.literalsOnly
	return p
}

// literalMark stands for the k-th literal's parameter until its number is
// known (materializeSQL): a NUL, which no SQL text can hold.
func literalMark(k int) string { return "\x00" + strconv.Itoa(k) + "\x00" }

// markLiterals turns the parameters sqlparse writes for an UPDATE's or a
// DELETE's constants in sql into literalMarks.
func markLiterals(sql string, n int) string {
	for k := n; k >= 1; k-- {
		sql = strings.ReplaceAll(sql, sqlparse.LiteralParam(k), literalMark(k))
	}
	return sql
}

// literalsOf keeps the constants of m that the statements built from it
// take as parameters.
func (w *writeStmt) literalsOf(m *sqlparse.ModifyTable) {
	w.literalsOnly = m.LiteralsOnly
	for _, l := range m.Literals {
		w.literals = append(w.literals, []byte(l.Value))
		w.literalAt = append(w.literalAt, int32(l.Offset))
	}
}

// materializeSQL is the materialising query with its literals numbered
// after the client's n parameters.
func (w *writeStmt) materializeSQL(n int) string {
	if len(w.literals) == 0 {
		return w.materialize
	}
	var b strings.Builder
	parts := strings.Split(w.materialize, "\x00")
	for i, p := range parts {
		if i%2 == 1 {
			k, _ := strconv.Atoi(p)
			b.WriteString("$" + strconv.Itoa(n+k))
			continue
		}
		b.WriteString(p)
	}
	return b.String()
}

// upsert is what the engine needs of ON CONFLICT ... DO UPDATE SET ...
// WHERE ...: the engine looks for the conflicting rows itself, locked,
// inserts the others and updates these.
type upsert struct {
	// arbiter is the conflict target resolved to key columns (conflict.go).
	arbiter
	setCols []*catalog.Column
	// values are the SET expressions, where, the WHERE condition ("" for
	// none), as SQL over the table's alias and excluded.
	values []string
	where  string
}

func analyseUpsert(t *catalog.Table, oc *sqlparse.OnConflict) (*upsert, error) {
	a, err := conflictArbiter(t, oc.Infer)
	if err != nil {
		return nil, err
	}
	u := &upsert{arbiter: *a}
	set, err := assignments(t, oc.Set)
	if err != nil {
		return nil, err
	}
	if len(set.subselects) > 0 {
		return nil, compiler.WriteNotSupported(t, "ON CONFLICT DO UPDATE SET (...) = (SELECT ...) is not supported; assign each column")
	}
	u.setCols, u.values, u.where = set.cols, set.values, oc.Where
	return u, nil
}

// analyse turns a parsed INSERT, UPDATE or DELETE on table t into a
// writeStmt.
func analyse(snap *catalog.Snapshot, t *catalog.Table, tree *sqlparse.Tree) (*writeStmt, error) {
	m, err := tree.ModifyTable()
	if err != nil {
		return nil, err
	}
	if m.CurrentOf {
		return nil, compiler.WriteNotSupported(t, "WHERE CURRENT OF is not supported; name the row by its key in the WHERE clause")
	}
	w := &writeStmt{table: t, alias: sqltext.Ident(m.Relation.RefName()), joined: m.Joined, oneTrip: new(atomic.Pointer[builtSQL])}
	w.literalsOf(m)
	switch m.Operation {
	case sqlparse.Insert:
		err = w.analyseInsert(m)
	case sqlparse.Update:
		err = w.analyseUpdate(m)
	default:
		err = w.analyseDelete(m)
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (w *writeStmt) analyseInsert(m *sqlparse.ModifyTable) error {
	t := w.table
	w.verb, w.overriding = verbInsert, m.Overriding
	if oc := m.OnConflict; oc != nil && oc.DoUpdate {
		u, err := analyseUpsert(t, oc)
		if err != nil {
			return err
		}
		w.upsert = u
	} else if oc != nil {
		w.doNothing, w.conflict = true, oc.SQL
	}
	// The columns the statement gives values for, in its order.
	var given []*catalog.Column
	if len(m.Columns) == 0 {
		given = append(given, t.Columns...)
	}
	for _, tc := range m.Columns {
		c, err := targetColumn(t, tc)
		if err != nil {
			return err
		}
		given = append(given, c)
	}
	for _, c := range t.Columns {
		if !c.Generated {
			w.insertCols = append(w.insertCols, c)
		}
	}
	given, err := sourceColumns(given, len(m.Columns) > 0, m)
	if err != nil {
		return err
	}
	pos := make(map[string]int) // column → position among given
	for i, c := range given {
		pos[c.Name] = i
	}
	// Each column's value: source column i, or the column's default.
	outer := make([]string, len(w.insertCols))
	for j, c := range w.insertCols {
		if i, ok := pos[c.Name]; ok {
			outer[j] = fmt.Sprintf("pgrules_s.c%d", i+1)
		} else {
			outer[j] = defaultSQL(c)
		}
	}
	source, err := insertSource(m, given)
	if err != nil {
		return err
	}
	w.materialize = fmt.Sprintf("%sSELECT %s FROM %s", m.With, strings.Join(outer, ", "), source)
	return w.returningOf(m.Returning)
}

// insertSource is the FROM item of an INSERT's materialising query: its
// rows, in columns c1, c2, ... filling the columns given, each cast to its
// column's type.
func insertSource(m *sqlparse.ModifyTable, given []*catalog.Column) (string, error) {
	names := make([]string, len(given))
	for i := range given {
		names[i] = fmt.Sprintf("c%d", i+1)
	}
	switch {
	case m.DefaultValues:
		return "(SELECT) pgrules_s", nil
	case len(m.Values) == 0:
		casts := make([]string, len(given))
		for i, c := range given {
			casts[i] = fmt.Sprintf("CAST(pgrules_q.c%d AS %s) AS c%d", i+1, sqltext.ValueType(c), i+1)
		}
		return fmt.Sprintf("(SELECT %s FROM (%s) pgrules_q(%s)) pgrules_s", strings.Join(casts, ", "), m.Select, strings.Join(names, ", ")), nil
	}
	// VALUES lists: each item cast to its column's type where it stands,
	// as INSERT resolves it, DEFAULT replaced by the default.
	rows := make([]string, len(m.Values))
	for r, row := range m.Values {
		vals := make([]string, len(row))
		for i, v := range row {
			c := given[i]
			switch {
			case v.Default:
				vals[i] = defaultSQL(c)
			case c.Generated:
				e := pgerr.New(pgerr.GeneratedAlways, "cannot insert a non-DEFAULT value into column %q", c.Name)
				e.Detail = fmt.Sprintf("Column %q is a generated column.", c.Name)
				return "", e
			case v.Literal > 0:
				// A literal becomes a parameter, so that the query is the
				// same for every row's values and is prepared.
				vals[i] = fmt.Sprintf("CAST(%s AS %s)", literalMark(v.Literal), sqltext.ValueType(c))
			default:
				vals[i] = fmt.Sprintf("CAST((%s) AS %s)", v.SQL, sqltext.ValueType(c))
			}
		}
		rows[r] = "(" + strings.Join(vals, ", ") + ")"
	}
	return "(VALUES " + strings.Join(rows, ", ") + ") pgrules_s(" + strings.Join(names, ", ") + ")", nil
}

// sourceColumns is the columns the rows of an INSERT's source fill, in
// order. Without a column list they are the table's first columns, as many
// as the source gives (PostgreSQL's rule); a list must match the source's
// width exactly. A SELECT list with a * is taken to fill every column
// given, and the server reports a mismatch.
func sourceColumns(given []*catalog.Column, listed bool, m *sqlparse.ModifyTable) ([]*catalog.Column, error) {
	if m.DefaultValues {
		return given, nil
	}
	if m.UnequalValues {
		return nil, pgerr.New(pgerr.SyntaxError, "VALUES lists must all be the same length")
	}
	switch n := m.Width; {
	case n < 0:
		return given, nil
	case n > len(given):
		return nil, pgerr.New(pgerr.SyntaxError, "INSERT has more expressions than target columns")
	case n < len(given) && listed:
		return nil, pgerr.New(pgerr.SyntaxError, "INSERT has more target columns than expressions")
	default:
		return given[:n], nil
	}
}

// defaultSQL is a column's value when the statement gives none.
func defaultSQL(c *catalog.Column) string {
	if c.Default == "" {
		return "CAST(NULL AS " + sqltext.ValueType(c) + ")"
	}
	return "CAST((" + c.Default + ") AS " + sqltext.ValueType(c) + ")"
}

func (w *writeStmt) analyseUpdate(m *sqlparse.ModifyTable) error {
	t := w.table
	w.verb = verbUpdate
	set, err := assignments(t, m.Set)
	if err != nil {
		return err
	}
	w.setCols = set.cols
	lock := "FOR NO KEY UPDATE"
	for _, c := range w.setCols {
		if isKeyColumn(t, c.Name) {
			lock, w.setsKey = "FOR UPDATE", true
		}
	}
	if err := w.returningOf(m.Returning); err != nil {
		return err
	}
	if w.from != nil && len(set.subselects) > 0 {
		return compiler.WriteNotSupported(t, "RETURNING the FROM list's columns from an UPDATE with SET (...) = (SELECT ...) is not supported; return the table's columns")
	}
	w.materialize = markLiterals(m.With+set.materialize(t, w.alias, m.From, lock, w.from.selectList()), len(w.literals))
	return nil
}

func (w *writeStmt) analyseDelete(m *sqlparse.ModifyTable) error {
	w.verb = verbDelete
	if err := w.returningOf(m.Returning); err != nil {
		return err
	}
	w.materialize = markLiterals(fmt.Sprintf("%sSELECT %s.ctid, %s.*%s FROM %s ORDER BY %s FOR UPDATE OF %s",
		m.With, w.alias, w.alias, w.from.selectList(), m.From, keyOrder(w.table, w.alias), w.alias), len(w.literals))
	return nil
}

// keyOrder orders a table's rows by primary key (by ctid without one). The
// rows a statement updates or deletes are locked in that order, as the
// parents are, so that two statements touching the same rows queue one
// behind the other instead of deadlocking, which PostgreSQL, locking in
// scan order, does not promise.
func keyOrder(t *catalog.Table, alias string) string {
	if len(t.PrimaryKey) == 0 {
		return alias + ".ctid"
	}
	cols := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		cols[i] = alias + "." + sqltext.Ident(k)
	}
	return strings.Join(cols, ", ")
}

// isKeyColumn reports whether a column is part of the primary key or of a
// key that a foreign key references: changing it takes the stronger lock.
func isKeyColumn(t *catalog.Table, col string) bool {
	for _, k := range t.PrimaryKey {
		if k == col {
			return true
		}
	}
	for _, fk := range t.Children {
		for _, k := range fk.ParentColumns {
			if k == col {
				return true
			}
		}
	}
	return false
}
