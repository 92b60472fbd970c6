package rules

import (
	"context"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// A COPY FROM into a table with rules loads a staging table first, which
// the server fills from the client's data exactly as it would have filled
// the table (the same columns, types, format, options and WHERE clause),
// and then inserts its rows into the table with one INSERT ... SELECT that
// runs the rules set at a time, as any other INSERT does. The staging
// table is a temporary table of the transaction: a COPY that fails leaves
// nothing behind once the failed transaction ends.

// copyStaging is the staging table, in the session's temporary schema.
const copyStaging = "pg_temp.pgrules_copy"

// CopyIn implements stmt.Session.
func (s *session) CopyIn(ctx context.Context, conn stmt.Conn, st stmt.Statement) (*stmt.Copy, error) {
	s.syncTx(conn)
	if strings.HasPrefix(st.SQL, headerPrefix) {
		return nil, failTx(ctx, conn, forgedHeader())
	}
	c, _, err := s.withPath(ctx, conn, s.current(ctx))
	if err != nil {
		return nil, err
	}
	p := s.plan(c, st.SQL)
	cp := p.tree.Copy()
	if !copyRuled(c, p) || cp == nil {
		// Its table has no rules where this session's names resolve.
		return &stmt.Copy{SQL: st.SQL}, nil
	}
	t := c.lookup(p.parts[0].Writes[0])
	cols := cp.Columns
	if len(cols) == 0 {
		// COPY's columns, when it names none: all but the generated ones.
		for _, col := range t.Columns {
			if !col.Generated {
				cols = append(cols, col.Name)
			}
		}
	}
	overriding := ""
	defs := make([]string, len(cols))
	for i, name := range cols {
		col := t.Column(name)
		if col == nil {
			e := pgerr.New(pgerr.UndefinedColumn, "column %q of relation %q does not exist", name, t.Name)
			return nil, failTx(ctx, conn, e)
		}
		if col.Identity == 'a' {
			// COPY stores the values it is given in a GENERATED ALWAYS
			// identity column; an INSERT must be told to.
			overriding = " OVERRIDING SYSTEM VALUE"
		}
		// The catalog's type names are qualified (format_type under an
		// empty search_path): the staging column reads the data as the
		// table's column would.
		defs[i] = sqltext.Ident(name) + " " + col.Type
	}
	list := strings.Join(quoteIdents(cols), ", ")
	if _, err := conn.Exec(ctx, stmt.Statement{SQL: "CREATE TEMP TABLE pgrules_copy (" + strings.Join(defs, ", ") + ")"}); err != nil {
		return nil, err
	}
	relay, err := cp.Into("pg_temp", "pgrules_copy", cols)
	if tooComplex(err) {
		return nil, failTx(ctx, conn, asPgError(err))
	}
	if err != nil {
		return nil, failTx(ctx, conn, pgerr.New(pgerr.InternalError, "pgrules could not write the COPY into its staging table: %w", err))
	}
	insert := "INSERT INTO " + sqltext.Table(t) + " (" + list + ")" + overriding + " SELECT " + list + " FROM " + copyStaging
	return &stmt.Copy{SQL: relay, Finish: func(ctx context.Context, conn stmt.Conn) (*stmt.Result, error) {
		res, err := s.Exec(ctx, conn, stmt.Statement{SQL: insert})
		if err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, stmt.Statement{SQL: "DROP TABLE " + copyStaging}); err != nil {
			return nil, err
		}
		// COPY's tag counts the rows stored, as the INSERT's does.
		n := res.Tag[strings.LastIndexByte(res.Tag, ' ')+1:]
		if _, err := strconv.ParseInt(n, 10, 64); err != nil {
			return nil, pgerr.New(pgerr.InternalError, "pgrules got the tag %q for the rows of a COPY", res.Tag)
		}
		return &stmt.Result{Tag: "COPY " + n}, nil
	}}, nil
}

// copyFrom reports whether p is one COPY ... FROM, which the proxy runs
// with CopyIn when it goes to the engine: the engine cannot run a COPY
// that reads the client's data as one of its own statements.
func copyFrom(p *plan) bool {
	return len(p.parts) == 1 && len(p.parts[0].Writes) == 1 && p.parts[0].Writes[0].Verb == sqlparse.CopyFrom
}

// copyRuled reports whether p is a COPY ... FROM into a table with rules.
func copyRuled(c *compiled, p *plan) bool {
	if !copyFrom(p) {
		return false
	}
	t := c.lookup(p.parts[0].Writes[0])
	return t != nil && c.set != nil && c.set.Involves(t.QualifiedName())
}
