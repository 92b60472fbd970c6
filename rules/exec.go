package rules

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// runWrite runs a client statement that writes a table with rules.
func (s *session) runWrite(ctx context.Context, conn stmt.Conn, c *compiled, p *plan, st stmt.Statement) (*stmt.Result, error) {
	p.analyse(c, st.SQL)
	if p.writeErr != nil {
		return nil, failTx(ctx, conn, asPgError(p.writeErr))
	}
	// Reading the setting is the trace's own cost, not the statement's.
	var traceCost uint64
	if s.traceSet {
		before, _ := conn.Exchanges()
		s.readTrace(ctx, conn)
		after, _ := conn.Exchanges()
		traceCost = after - before
	}
	params, err := s.clientParams(ctx, conn, st)
	if err != nil {
		return nil, err
	}
	r := &runner{ctx: ctx, conn: conn, s: s, set: c.set, snap: c.snap, c: c}
	start := s.exchangesFrom(conn)
	var res *stmt.Result
	if p.cte != nil {
		res, err = s.runCTE(r, c, p.cte, params, st.ResultFormats)
	} else {
		res, err = r.write(p.write, params, st.ResultFormats)
	}
	if err == nil {
		err = r.rowEvents()
	}
	if err != nil {
		return nil, r.failureEvents(err)
	}
	r.tracef("%d round trip(s) to the server", s.exchanged(conn)-start-traceCost)
	return res, nil
}

// analyse analyses the plan's write, sql, once.
func (p *plan) analyse(c *compiled, sql string) {
	p.once.Do(func() {
		parsed := p.tree != nil // from p.src, where the tree's locations are
		p.write, p.cte, p.writeErr = analyseText(c, sql, p.tree)
		p.tree = nil
		if parsed && p.writeErr == nil {
			c.learnShape(p)
		}
	})
}

// analyseText analyses a client's write, parsing it unless its tree is
// given: a write on a table with rules gives its writeStmt; one whose WITH
// writes such a table is returned as such, run CTE by CTE.
func analyseText(c *compiled, sql string, tree *sqlparse.Tree) (*writeStmt, *sqlparse.ModifyingWith, error) {
	if tree == nil {
		var err error
		tree, err = sqlparse.ParseStatement(sql)
		if pgerr.Code(err) != "" {
			return nil, nil, err
		}
		if err != nil {
			return nil, nil, pgerr.New(pgerr.SyntaxError, "%s", err)
		}
	}
	if with := tree.ModifyingWith(); with != nil {
		return nil, with, nil
	}
	t := targetOf(c, tree)
	if t == nil {
		if tree.Explain() {
			return nil, nil, pgerr.New(pgerr.FeatureNotSupported, "EXPLAIN ANALYZE of a write on a table with rules is not supported: it would run the statement without its rules; EXPLAIN without ANALYZE shows its plan")
		}
		return nil, nil, pgerr.New(pgerr.FeatureNotSupported, "pgrules cannot run this statement with its rules")
	}
	w, err := analyse(c.snap, t, tree)
	return w, nil, err
}

// targetOf is the table an INSERT, UPDATE or DELETE writes, when it has
// rules.
func targetOf(c *compiled, tree *sqlparse.Tree) *catalog.Table {
	rel, ok := tree.ResultRelation()
	if !ok {
		return nil
	}
	t := c.lookup(rel)
	if t == nil || !c.set.Involves(t.QualifiedName()) {
		return nil
	}
	return t
}

// clientParams are the statement's parameters with the types the server
// gives them, asked once per statement text and session.
func (s *session) clientParams(ctx context.Context, conn stmt.Conn, st stmt.Statement) (clientParams, error) {
	if len(st.Params) == 0 {
		return clientParams{}, nil
	}
	key := fmt.Sprint(st.SQL, st.ParamOIDs)
	oids, ok := s.paramTypes[key]
	if !ok {
		var err error
		if oids, err = conn.ParamTypes(ctx, st.SQL, st.ParamOIDs); err != nil {
			return clientParams{}, err
		}
		if s.paramTypes == nil || len(s.paramTypes) > 1000 {
			s.paramTypes = make(map[string][]uint32)
		}
		s.paramTypes[key] = oids
	}
	return clientParams{values: st.Params, formats: st.ParamFormats, oids: oids, stable: true}, nil
}

// runCTE runs a statement whose WITH clause writes a table with rules.
// Each data-modifying CTE runs first, in order, as a statement of its own
// (through the engine when its table has rules); its RETURNING rows then
// stand in for it, as a CTE over their values, in what follows. Unlike in
// one PostgreSQL statement, later parts see the rows the earlier ones
// wrote (documented in the README).
func (s *session) runCTE(r *runner, c *compiled, with *sqlparse.ModifyingWith, p clientParams, resultFormats []int16) (*stmt.Result, error) {
	if with.Recursive {
		return nil, r.fail(pgerr.New(pgerr.FeatureNotSupported, "WITH RECURSIVE with a data-modifying statement on a table with rules is not supported; run the recursive query first (into a temporary table) and write from its rows"))
	}
	p = p.expanded()
	var ctes []sqlparse.CTE
	for _, cte := range with.CTEs {
		switch cte.Verb {
		case sqlparse.Insert, sqlparse.Update, sqlparse.Delete:
		case sqlparse.Merge:
			return nil, r.fail(pgerr.New(pgerr.FeatureNotSupported, "MERGE in a WITH clause is not supported with rules"))
		default:
			ctes = append(ctes, cte)
			continue
		}
		sql, err := cte.QuerySQL(ctes)
		if err != nil {
			return nil, r.fail(asPgError(err))
		}
		res, err := s.runStatement(r, c, sql, p, nil)
		if err != nil {
			return nil, err
		}
		if res.Fields == nil {
			continue // without RETURNING nothing can refer to it
		}
		values, err := s.valuesCTE(r, res, len(p.values)+1)
		if err != nil {
			return nil, err
		}
		returned, err := cte.As(values)
		if err != nil {
			return nil, r.fail(parseFailure(err))
		}
		ctes = append(ctes, returned)
		for i := range res.Fields {
			col := make([][]byte, len(res.Rows))
			for j, row := range res.Rows {
				col[j] = row[i]
			}
			p.values = append(p.values, textArray(col))
			p.oids = append(p.oids, 1009)
			if p.formats != nil {
				p.formats = append(p.formats, 0)
			}
		}
	}
	sql, err := with.SQL(ctes)
	if err != nil {
		return nil, r.fail(asPgError(err))
	}
	return s.runStatement(r, c, sql, p, resultFormats)
}

// parseFailure is the error of a parse of SQL the engine wrote: a text too
// deep to parse keeps its StatementTooComplex, anything else is the
// engine's fault.
func parseFailure(err error) *pgerr.Error {
	if pgerr.Code(err) != "" {
		return asPgError(err)
	}
	return pgerr.New(pgerr.InternalError, "parse: %w", err)
}

// expanded spells out a single parameter format for every parameter, so
// that more parameters can follow.
func (p clientParams) expanded() clientParams {
	if len(p.formats) == 1 {
		f := make([]int16, len(p.values))
		for i := range f {
			f[i] = p.formats[0]
		}
		p.formats = f
	}
	return p
}

// runStatement runs one statement of a CTE chain: through the engine when
// it writes a table with rules, as it is otherwise.
func (s *session) runStatement(r *runner, c *compiled, sql string, p clientParams, resultFormats []int16) (*stmt.Result, error) {
	tree, err := sqlparse.ParseStatement(sql)
	if err != nil {
		return nil, r.fail(parseFailure(err))
	}
	if t := targetOf(c, tree); t != nil {
		w, err := analyse(c.snap, t, tree)
		if err != nil {
			return nil, r.fail(asPgError(err))
		}
		return r.write(w, p, resultFormats)
	}
	values, formats, oids := p.with()
	res, err := s.run(r.ctx, r.conn, []stmt.Statement{{SQL: sql, Params: values, ParamFormats: formats, ParamOIDs: oids, ResultFormats: resultFormats}}, []runFlags{p.flag() | verbatim})
	if len(res) == 0 {
		return nil, err
	}
	return res[0], err
}

// valuesCTE is the query that gives a CTE's RETURNING rows back, from
// text arrays starting at parameter first, with the columns' types.
func (s *session) valuesCTE(r *runner, res *stmt.Result, first int) (string, error) {
	var missing [][2]uint32
	for _, f := range res.Fields {
		k := [2]uint32{f.TypeOID, uint32(f.TypeModifier)}
		if _, ok := s.typeNames[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		oids := make([]string, len(missing))
		mods := make([]string, len(missing))
		for i, k := range missing {
			oids[i] = fmt.Sprint(k[0])
			mods[i] = fmt.Sprint(int32(k[1]))
		}
		out, err := r.query("SELECT format_type(t, nullif(m, -1)) FROM unnest($1::text[]::oid[], $2::text[]::int4[]) WITH ORDINALITY AS x(t, m, o) ORDER BY o",
			[][]byte{textArrayOf(oids), textArrayOf(mods)})
		if err != nil {
			return "", err
		}
		if s.typeNames == nil {
			s.typeNames = make(map[[2]uint32]string)
		}
		for i, k := range missing {
			s.typeNames[k] = string(out.Rows[i][0])
		}
	}
	cols := make([]string, len(res.Fields))
	args := make([]string, len(res.Fields))
	names := make([]string, len(res.Fields))
	for i, f := range res.Fields {
		cols[i] = fmt.Sprintf("CAST(v.c%d AS %s) AS %s", i+1, s.typeNames[[2]uint32{f.TypeOID, uint32(f.TypeModifier)}], sqltext.Ident(f.Name))
		args[i] = fmt.Sprintf("$%d::text[]", first+i)
		names[i] = fmt.Sprintf("c%d", i+1)
	}
	return fmt.Sprintf("SELECT %s FROM %s AS v(%s)", strings.Join(cols, ", "), unnestFrom(args...), strings.Join(names, ", ")), nil
}

// setTrace runs a statement that sets, resets or shows pgrules.trace, and
// reads the setting after it.
func (s *session) setTrace(ctx context.Context, conn stmt.Conn, st stmt.Statement) (*stmt.Result, error) {
	res, err := conn.Exec(ctx, st)
	if err != nil {
		return nil, err
	}
	s.traceSet = true
	s.readTrace(ctx, conn)
	return res, nil
}

func (s *session) readTrace(ctx context.Context, conn stmt.Conn) {
	rows, err := conn.Query(ctx, "SELECT current_setting('pgrules.trace', true)")
	if err != nil || len(rows) == 0 {
		return
	}
	switch strings.ToLower(string(rows[0][0])) {
	case "on", "true", "yes", "1":
		s.trace = true
	default:
		s.trace = false
	}
}
