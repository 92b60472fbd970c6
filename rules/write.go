package rules

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A client's write on a table with rules is not sent as it is. It is
// analysed once per statement text (the result is cached with the plan)
// into a writeStmt: a query that materialises the statement's row changes
// without writing anything, and what the engine's own write needs of the
// client's statement (its RETURNING list, ON CONFLICT DO NOTHING). The
// pieces of the client's statement that the engine reuses (expressions,
// FROM lists, the WHERE clause, a WITH clause) are deparsed from
// PostgreSQL's own parse tree, so they mean exactly what they meant.

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

// literalText is the text of a constant: what PostgreSQL reads the
// literal as, before its type is resolved.
func literalText(n *pg_query.Node) ([]byte, bool) {
	c := n.GetAConst()
	if c == nil || c.Isnull {
		return nil, false
	}
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return []byte(strconv.FormatInt(int64(v.Ival.Ival), 10)), true
	case *pg_query.A_Const_Fval:
		return []byte(v.Fval.Fval), true
	case *pg_query.A_Const_Sval:
		return []byte(v.Sval.Sval), true
	case *pg_query.A_Const_Boolval:
		return []byte(strconv.FormatBool(v.Boolval.Boolval)), true
	}
	return nil, false
}

// literalMark stands for the k-th literal's parameter until its number is
// known (materializeSQL): a NUL, which no SQL text can hold.
func literalMark(k int) string { return "\x00" + strconv.Itoa(k) + "\x00" }

// literalBase numbers the parameters literalParams puts in a tree, until
// markLiterals turns them into literalMarks in the deparsed text: ten
// digits, above any parameter a client can send.
const literalBase = 2_000_000_000

// literalParams makes the constants of an UPDATE or a DELETE parameters,
// so that its statements are the same whatever the values, and prepared:
// numbers and booleans in its SET values (targets, nil for a delete) and
// its WHERE clause, with the types PostgreSQL gives such constants
// (integer, bigint or numeric, boolean), and any constant that is a whole
// SET value (the column's type makes its type). It returns their texts and
// locations, in order, and whether nothing else in the statement varies
// with the values. Other string constants, subqueries (where a constant
// can be a position, as in ORDER BY 1), SET (a, b) = (...), and a
// statement that is not plain (FROM, USING or WITH) leave the statement as
// it is.
func literalParams(targets []*pg_query.Node, where *pg_query.Node, plain bool) ([][]byte, []int32, bool) {
	if !plain {
		return nil, nil, false
	}
	bare := make(map[*pg_query.Node]bool)
	var roots []*pg_query.Node
	for _, item := range targets {
		v := item.GetResTarget().GetVal()
		if v.GetMultiAssignRef() != nil {
			return nil, nil, false // each column's copy of the row would count its constants
		}
		if v.GetAConst() != nil {
			bare[v] = true
		}
		roots = append(roots, v)
	}
	if where != nil {
		roots = append(roots, where)
	}
	// Constants under a type name (its modifiers) stay: they must be
	// constants. Everything else is looked at twice: first whether it can
	// be done, then to do it.
	ok := true
	var check func(n *pg_query.Node) bool
	check = func(n *pg_query.Node) bool {
		switch {
		case n.GetSubLink() != nil:
			ok = false
		case n.GetTypeCast() != nil:
			walkNodes(n.GetTypeCast().Arg, check)
			return false
		}
		return checkLiteral(bare, &ok)(n) && ok
	}
	for _, r := range roots {
		walkNodes(r, check)
	}
	if !ok {
		return nil, nil, false
	}
	var (
		texts [][]byte
		at    []int32
	)
	var replace func(n *pg_query.Node) bool
	replace = func(n *pg_query.Node) bool {
		if tc := n.GetTypeCast(); tc != nil {
			walkNodes(tc.Arg, replace)
			return false
		}
		c := n.GetAConst()
		if c == nil || c.Isnull {
			return true
		}
		text, typ := constantType(c)
		texts, at = append(texts, text), append(at, c.Location)
		param := &pg_query.Node{Node: &pg_query.Node_ParamRef{ParamRef: &pg_query.ParamRef{Number: int32(literalBase + len(texts))}}}
		if bare[n] || typ == "" {
			n.Node = param.Node
		} else {
			n.Node = &pg_query.Node_TypeCast{TypeCast: &pg_query.TypeCast{Arg: param, Location: -1,
				TypeName: &pg_query.TypeName{Names: []*pg_query.Node{pg_query.MakeStrNode("pg_catalog"), pg_query.MakeStrNode(typ)}, Typemod: -1, Location: -1}}}
		}
		return false
	}
	for _, r := range roots {
		walkNodes(r, replace)
	}
	return texts, at, true
}

// checkLiteral clears *ok at a constant literalParams cannot make a
// parameter: a string that is not a whole SET value.
func checkLiteral(bare map[*pg_query.Node]bool, ok *bool) func(*pg_query.Node) bool {
	return func(n *pg_query.Node) bool {
		if c := n.GetAConst(); c != nil && !c.Isnull && !bare[n] {
			if _, typ := constantType(c); typ == "" {
				*ok = false
			}
		}
		return *ok
	}
}

// constantType is a constant's text and the type PostgreSQL gives it: int4
// for an integer, int8 or numeric for a larger one, numeric for a decimal,
// bool; "" for a string, whose type comes from where it stands.
func constantType(c *pg_query.A_Const) ([]byte, string) {
	switch v := c.Val.(type) {
	case *pg_query.A_Const_Ival:
		return []byte(strconv.FormatInt(int64(v.Ival.Ival), 10)), "int4"
	case *pg_query.A_Const_Fval:
		if _, err := strconv.ParseInt(v.Fval.Fval, 10, 64); err == nil {
			return []byte(v.Fval.Fval), "int8"
		}
		return []byte(v.Fval.Fval), "numeric"
	case *pg_query.A_Const_Boolval:
		return []byte(strconv.FormatBool(v.Boolval.Boolval)), "bool"
	}
	text, _ := literalText(&pg_query.Node{Node: &pg_query.Node_AConst{AConst: c}})
	return text, ""
}

// markLiterals turns the parameters of literalParams in sql into
// literalMarks.
func markLiterals(sql string, n int) string {
	for k := n; k >= 1; k-- {
		sql = strings.ReplaceAll(sql, "$"+strconv.Itoa(literalBase+k), literalMark(k))
	}
	return sql
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

func analyseUpsert(t *catalog.Table, alias string, oc *pg_query.OnConflictClause) (*upsert, error) {
	a, err := conflictArbiter(t, oc.Infer)
	if err != nil {
		return nil, err
	}
	u := &upsert{arbiter: *a}
	set, err := assignments(t, oc.TargetList)
	if err != nil {
		return nil, err
	}
	if len(set.subselects) > 0 {
		return nil, compiler.WriteNotSupported(t, "ON CONFLICT DO UPDATE SET (...) = (SELECT ...) is not supported; assign each column")
	}
	u.setCols, u.values = set.cols, set.values
	if oc.WhereClause != nil {
		e, err := exprSQL(oc.WhereClause)
		if err != nil {
			return nil, err
		}
		u.where = e
	}
	return u, nil
}

func selectNode(sel *pg_query.SelectStmt) *pg_query.Node {
	sel.LimitOption = pg_query.LimitOption_LIMIT_OPTION_DEFAULT
	sel.Op = pg_query.SetOperation_SETOP_NONE
	return &pg_query.Node{Node: &pg_query.Node_SelectStmt{SelectStmt: sel}}
}

// targetsSQL deparses a list of result targets (a RETURNING list).
func targetsSQL(targets []*pg_query.Node) (string, error) {
	s, err := sqlparse.Deparse(selectNode(&pg_query.SelectStmt{TargetList: targets}))
	return strings.TrimPrefix(s, "SELECT "), err
}

// exprSQL deparses one expression.
func exprSQL(n *pg_query.Node) (string, error) {
	return targetsSQL([]*pg_query.Node{pg_query.MakeResTargetNodeWithVal(n, 0)})
}

// fromSQL deparses a FROM list, with the WHERE clause when there is one.
func fromSQL(items []*pg_query.Node, where *pg_query.Node) (string, error) {
	s, err := sqlparse.Deparse(selectNode(&pg_query.SelectStmt{
		TargetList:  []*pg_query.Node{pg_query.MakeResTargetNodeWithVal(pg_query.MakeAConstIntNode(1, 0), 0)},
		FromClause:  items,
		WhereClause: where,
	}))
	return strings.TrimPrefix(s, "SELECT 1 FROM "), err
}

// withSQL deparses a WITH clause, followed by a space; "" for none.
func withSQL(w *pg_query.WithClause) (string, error) {
	if w == nil || len(w.Ctes) == 0 {
		return "", nil
	}
	s, err := sqlparse.Deparse(selectNode(&pg_query.SelectStmt{
		WithClause: w,
		TargetList: []*pg_query.Node{pg_query.MakeResTargetNodeWithVal(pg_query.MakeAConstIntNode(1, 0), 0)},
	}))
	return strings.TrimSuffix(s, "SELECT 1"), err
}

// hasModifyingCTE reports whether a WITH clause holds an INSERT, UPDATE,
// DELETE or MERGE.
func hasModifyingCTE(w *pg_query.WithClause) bool {
	if w == nil {
		return false
	}
	for _, c := range w.Ctes {
		switch c.GetCommonTableExpr().GetCtequery().GetNode().(type) {
		case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
			return true
		}
	}
	return false
}

func relationAlias(rv *pg_query.RangeVar) string {
	if rv.Alias != nil && rv.Alias.Aliasname != "" {
		return sqltext.Ident(rv.Alias.Aliasname)
	}
	return sqltext.Ident(rv.Relname)
}

// walkNodes calls fn on n and on every node below it, depth first; fn
// returns false to skip what is below a node.
func walkNodes(n *pg_query.Node, fn func(*pg_query.Node) bool) {
	if n == nil || !fn(n) {
		return
	}
	walkMessage(n.ProtoReflect(), fn)
}

func walkMessage(m protoreflect.Message, fn func(*pg_query.Node) bool) {
	visit := func(v protoreflect.Message) {
		if node, ok := v.Interface().(*pg_query.Node); ok {
			walkNodes(node, fn)
		} else {
			walkMessage(v, fn)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		} else {
			visit(v.Message())
		}
		return true
	})
}

// analyse turns a parsed INSERT, UPDATE or DELETE on table t into a
// writeStmt.
func analyse(snap *catalog.Snapshot, t *catalog.Table, n *pg_query.Node) (*writeStmt, error) {
	switch n := n.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		return analyseInsert(t, n.InsertStmt)
	case *pg_query.Node_UpdateStmt:
		return analyseUpdate(t, n.UpdateStmt)
	case *pg_query.Node_DeleteStmt:
		return analyseDelete(t, n.DeleteStmt)
	}
	return nil, compiler.WriteNotSupported(t, "only INSERT, UPDATE and DELETE are run with rules")
}

func analyseInsert(t *catalog.Table, ins *pg_query.InsertStmt) (*writeStmt, error) {
	w := &writeStmt{verb: verbInsert, table: t, alias: relationAlias(ins.Relation), oneTrip: new(atomic.Pointer[builtSQL])}
	with, err := withSQL(ins.WithClause)
	if err != nil {
		return nil, err
	}
	switch ins.Override {
	case pg_query.OverridingKind_OVERRIDING_SYSTEM_VALUE:
		w.overriding = "OVERRIDING SYSTEM VALUE"
	case pg_query.OverridingKind_OVERRIDING_USER_VALUE:
		w.overriding = "OVERRIDING USER VALUE"
	}
	if oc := ins.OnConflictClause; oc != nil && oc.Action == pg_query.OnConflictAction_ONCONFLICT_UPDATE {
		u, err := analyseUpsert(t, w.alias, oc)
		if err != nil {
			return nil, err
		}
		w.upsert = u
	} else if oc != nil {
		w.doNothing = true
		w.conflict = "ON CONFLICT DO NOTHING"
		if oc.Infer != nil {
			// The inference clause is deparsed through a statement of its
			// own, the only place the deparser prints it.
			s, err := sqlparse.Deparse(&pg_query.Node{Node: &pg_query.Node_InsertStmt{InsertStmt: &pg_query.InsertStmt{
				Relation: &pg_query.RangeVar{Relname: "t", Inh: true, Relpersistence: "p"}, OnConflictClause: oc,
				SelectStmt: selectNode(&pg_query.SelectStmt{ValuesLists: []*pg_query.Node{pg_query.MakeListNode([]*pg_query.Node{pg_query.MakeAConstIntNode(1, 0)})}}),
			}}})
			if err != nil {
				return nil, err
			}
			_, clause, _ := strings.Cut(s, " ON CONFLICT ")
			w.conflict = "ON CONFLICT " + clause
		}
	}
	// The columns the statement gives values for, in its order.
	var given []*catalog.Column
	if len(ins.Cols) == 0 {
		given = append(given, t.Columns...)
	}
	for _, item := range ins.Cols {
		c, err := targetColumn(t, item.GetResTarget())
		if err != nil {
			return nil, err
		}
		given = append(given, c)
	}
	for _, c := range t.Columns {
		if !c.Generated {
			w.insertCols = append(w.insertCols, c)
		}
	}
	var source string
	sel := ins.GetSelectStmt().GetSelectStmt()
	if given, err = sourceColumns(given, len(ins.Cols) > 0, sel); err != nil {
		return nil, err
	}
	pos := make(map[string]int) // column → position among given
	for i, c := range given {
		pos[c.Name] = i
	}
	// value is the SQL of a column's value: source column i, or the
	// column's default.
	outer := make([]string, len(w.insertCols))
	for j, c := range w.insertCols {
		if i, ok := pos[c.Name]; ok {
			outer[j] = fmt.Sprintf("pgrules_s.c%d", i+1)
		} else {
			outer[j] = defaultSQL(c)
		}
	}
	switch {
	case sel == nil:
		// DEFAULT VALUES
		source = "(SELECT) pgrules_s"
	case len(sel.ValuesLists) > 0 && sel.WithClause == nil && len(sel.SortClause) == 0 && sel.LimitCount == nil && sel.LimitOffset == nil:
		w.literalsOnly = with == ""
		// VALUES lists: each item cast to its column's type where it
		// stands, as INSERT resolves it, DEFAULT replaced by the default.
		var rows []string
		for _, l := range sel.ValuesLists {
			items := l.GetList().Items
			vals := make([]string, len(items))
			for i, item := range items {
				c := given[i]
				if item.GetSetToDefault() != nil {
					vals[i] = defaultSQL(c)
					continue
				}
				if c.Generated {
					e := pgerr.New(pgerr.GeneratedAlways, "cannot insert a non-DEFAULT value into column %q", c.Name)
					e.Detail = fmt.Sprintf("Column %q is a generated column.", c.Name)
					return nil, e
				}
				if lit, ok := literalText(item); ok {
					// A literal becomes a parameter, so that the query is
					// the same for every row's values and is prepared.
					w.literals = append(w.literals, lit)
					w.literalAt = append(w.literalAt, item.GetAConst().GetLocation())
					vals[i] = fmt.Sprintf("CAST(%s AS %s)", literalMark(len(w.literals)), c.Type)
					continue
				}
				if item.GetParamRef() == nil {
					w.literalsOnly = false
				}
				s, err := exprSQL(item)
				if err != nil {
					return nil, err
				}
				vals[i] = fmt.Sprintf("CAST((%s) AS %s)", s, c.Type)
			}
			rows = append(rows, "("+strings.Join(vals, ", ")+")")
		}
		names := make([]string, len(given))
		for i := range given {
			names[i] = fmt.Sprintf("c%d", i+1)
		}
		source = "(VALUES " + strings.Join(rows, ", ") + ") pgrules_s(" + strings.Join(names, ", ") + ")"
	default:
		s, err := sqlparse.Deparse(ins.SelectStmt)
		if err != nil {
			return nil, err
		}
		casts := make([]string, len(given))
		for i, c := range given {
			casts[i] = fmt.Sprintf("CAST(pgrules_q.c%d AS %s) AS c%d", i+1, c.Type, i+1)
		}
		names := make([]string, len(given))
		for i := range given {
			names[i] = fmt.Sprintf("c%d", i+1)
		}
		source = fmt.Sprintf("(SELECT %s FROM (%s) pgrules_q(%s)) pgrules_s", strings.Join(casts, ", "), s, strings.Join(names, ", "))
	}
	w.materialize = fmt.Sprintf("%sSELECT %s FROM %s", with, strings.Join(outer, ", "), source)
	return w, w.returningOf(ins.ReturningList)
}

// sourceColumns is the columns the rows of an INSERT's source fill, in
// order. Without a column list they are the table's first columns, as many
// as the source gives (PostgreSQL's rule); a list must match the source's
// width exactly. The width is read from the tree; a SELECT list with a *
// is taken to fill every column given, and the server reports a mismatch.
func sourceColumns(given []*catalog.Column, listed bool, sel *pg_query.SelectStmt) ([]*catalog.Column, error) {
	if sel == nil {
		return given, nil
	}
	if lists := sel.ValuesLists; len(lists) > 0 {
		for _, l := range lists[1:] {
			if len(l.GetList().Items) != len(lists[0].GetList().Items) {
				return nil, pgerr.New(pgerr.SyntaxError, "VALUES lists must all be the same length")
			}
		}
	}
	n, ok := selectWidth(sel)
	switch {
	case !ok:
		return given, nil
	case n > len(given):
		return nil, pgerr.New(pgerr.SyntaxError, "INSERT has more expressions than target columns")
	case n < len(given) && listed:
		return nil, pgerr.New(pgerr.SyntaxError, "INSERT has more target columns than expressions")
	}
	return given[:n], nil
}

// defaultSQL is a column's value when the statement gives none.
func defaultSQL(c *catalog.Column) string {
	if c.Default == "" {
		return "CAST(NULL AS " + c.Type + ")"
	}
	return "CAST((" + c.Default + ") AS " + c.Type + ")"
}

func analyseUpdate(t *catalog.Table, up *pg_query.UpdateStmt) (*writeStmt, error) {
	w := &writeStmt{verb: verbUpdate, table: t, alias: relationAlias(up.Relation), oneTrip: new(atomic.Pointer[builtSQL])}
	with, err := withSQL(up.WithClause)
	if err != nil {
		return nil, err
	}
	if up.WhereClause.GetCurrentOfExpr() != nil {
		return nil, compiler.WriteNotSupported(t, "WHERE CURRENT OF is not supported; name the row by its key in the WHERE clause")
	}
	w.literals, w.literalAt, w.literalsOnly = literalParams(up.TargetList, up.WhereClause, up.WithClause == nil && len(up.FromClause) == 0)
	var set setList
	if set, err = assignments(t, up.TargetList); err != nil {
		return nil, err
	}
	w.setCols = set.cols
	from, err := fromSQL(append([]*pg_query.Node{{Node: &pg_query.Node_RangeVar{RangeVar: up.Relation}}}, up.FromClause...), up.WhereClause)
	if err != nil {
		return nil, err
	}
	lock := "FOR NO KEY UPDATE"
	for _, c := range w.setCols {
		if isKeyColumn(t, c.Name) {
			lock, w.setsKey = "FOR UPDATE", true
		}
	}
	w.joined = len(up.FromClause) > 0
	if err := w.returningOf(up.ReturningList); err != nil {
		return nil, err
	}
	if w.from != nil && len(set.subselects) > 0 {
		return nil, compiler.WriteNotSupported(t, "RETURNING the FROM list's columns from an UPDATE with SET (...) = (SELECT ...) is not supported; return the table's columns")
	}
	w.materialize = markLiterals(with+set.materialize(t, w.alias, from, lock, w.from.selectList()), len(w.literals))
	return w, nil
}

func analyseDelete(t *catalog.Table, del *pg_query.DeleteStmt) (*writeStmt, error) {
	w := &writeStmt{verb: verbDelete, table: t, alias: relationAlias(del.Relation), joined: len(del.UsingClause) > 0, oneTrip: new(atomic.Pointer[builtSQL])}
	with, err := withSQL(del.WithClause)
	if err != nil {
		return nil, err
	}
	if del.WhereClause.GetCurrentOfExpr() != nil {
		return nil, compiler.WriteNotSupported(t, "WHERE CURRENT OF is not supported; name the row by its key in the WHERE clause")
	}
	w.literals, w.literalAt, w.literalsOnly = literalParams(nil, del.WhereClause, del.WithClause == nil && len(del.UsingClause) == 0)
	from, err := fromSQL(append([]*pg_query.Node{{Node: &pg_query.Node_RangeVar{RangeVar: del.Relation}}}, del.UsingClause...), del.WhereClause)
	if err != nil {
		return nil, err
	}
	if err := w.returningOf(del.ReturningList); err != nil {
		return nil, err
	}
	w.materialize = markLiterals(fmt.Sprintf("%sSELECT %s.ctid, %s.*%s FROM %s ORDER BY %s FOR UPDATE OF %s",
		with, w.alias, w.alias, w.from.selectList(), from, keyOrder(t, w.alias), w.alias), len(w.literals))
	return w, nil
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
