package rules

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// computeExisting gives the rows that exist already the values of the
// derivations this transaction defined or redefined, and of everything
// downstream of them, in dependency order: one set-based UPDATE per
// derivation (a sidecar to an existing database must start consistent).
func (s *session) computeExisting(ctx context.Context, conn stmt.Conn, snap *catalog.Snapshot, set *compiler.Set) error {
	changed := make(map[string]bool)
	for _, r := range snap.Rules {
		if r.ChangedInTx && r.Enabled && r.Kind.IsDerivation() && s.computed[r.Name] != fingerprint(r) {
			changed[r.Name] = true
		}
	}
	if len(changed) == 0 {
		return nil
	}
	for _, r := range set.Downstream(changed) {
		if set.Rule(r.Name).Accumulates {
			// Its values so far are history, as a copy's are: left as they
			// are, and accumulated from the next change of each row.
			continue
		}
		sql, err := backfillSQL(snap, set, r)
		if untranslatable(err) {
			sql, err = s.emptyBackfill(ctx, conn, snap, set, r, err)
		}
		if err != nil {
			return err
		}
		if sql == "" {
			continue
		}
		if _, err := conn.Simple(ctx, s.hdr+sql); err != nil {
			return err
		}
		if r.ChangedInTx {
			s.computed[r.Name] = fingerprint(r)
		}
	}
	return nil
}

// fingerprint identifies a definition, so that a rules script re-run in
// one transaction does not compute the same rows again.
func fingerprint(r *catalog.Rule) string {
	return strings.Join([]string{string(r.Kind), r.Table, r.Column, r.Expression, r.SourceTable, r.SourceColumn, r.Filter, r.Via}, "\x00")
}

// backfillSQL is the statement that computes a derivation for every row of
// its table (for a copy, every row whose target is empty: values already
// there are history, a price frozen on an order line).
func backfillSQL(snap *catalog.Snapshot, set *compiler.Set, r *catalog.Rule) (string, error) {
	t, value, err := definitionSQL(snap, set, r)
	if err != nil {
		return "", err
	}
	target := sqltext.Ident(r.Column)
	sql := fmt.Sprintf("UPDATE %s t SET %s = %s", sqltext.Table(t), target, value)
	if r.Kind == catalog.Copy {
		sql += " WHERE t." + target + " IS NULL"
	}
	return sql, nil
}

// definitionSQL is a derivation's value as a SQL expression over the row
// t of its table.
func definitionSQL(snap *catalog.Snapshot, set *compiler.Set, r *catalog.Rule) (*catalog.Table, string, error) {
	t := snap.Tables[r.Table]
	if t == nil {
		return nil, "", pgerr.New(pgerr.UndefinedTable, "rule %q: no table %s", r.Name, r.Table)
	}
	if r.Kind == catalog.Formula {
		g := &compiler.Translator{Snap: snap, Table: t, Alias: "t", Rule: r.Name}
		e, err := g.Translate(r.Expression)
		return t, e, err
	}
	fk := set.Relationship(r.Name)
	other := snap.Tables[r.SourceTable]
	if fk == nil || other == nil {
		return nil, "", pgerr.New(pgerr.InvalidObjectDefinition, "rule %q: no relationship to %s", r.Name, r.SourceTable)
	}
	if r.Kind == catalog.Copy {
		return t, fmt.Sprintf("(SELECT p.%s FROM %s p WHERE %s)", sqltext.Ident(r.SourceColumn), sqltext.Table(other), sqltext.KeyMatch(fk, "t", "p")), nil
	}
	where := sqltext.KeyMatch(fk, "c", "t")
	if r.Filter != "" {
		g := &compiler.Translator{Snap: snap, Table: other, Alias: "c", Rule: r.Name}
		f, err := g.Translate(r.Filter)
		if err != nil {
			return nil, "", err
		}
		where += " AND coalesce(" + f + ", false)"
	}
	var agg string
	switch r.Kind {
	case catalog.Sum:
		agg = "coalesce(sum(c." + sqltext.Ident(r.SourceColumn) + "), 0)"
	case catalog.Count:
		agg = "count(*)"
	case catalog.Min:
		agg = "min(c." + sqltext.Ident(r.SourceColumn) + ")"
	case catalog.Max:
		agg = "max(c." + sqltext.Ident(r.SourceColumn) + ")"
	default:
		return nil, "", pgerr.New(pgerr.InternalError, "rule %q: %s is not a derivation", r.Name, r.Kind)
	}
	return t, fmt.Sprintf("(SELECT %s FROM %s c WHERE %s)", agg, sqltext.Table(other), where), nil
}

// emptyBackfill is the statement that computes r when its expression
// cannot be written in SQL (untranslatable, the error given): none for a
// formula on a table without rows, and for an aggregate whose children
// are none, the aggregate without its filter, which gives the same value
// (0, or NULL for min and max). Otherwise the definition fails with
// untranslatable: existing rows would be left uncomputed.
func (s *session) emptyBackfill(ctx context.Context, conn stmt.Conn, snap *catalog.Snapshot, set *compiler.Set, r *catalog.Rule, untranslatable error) (string, error) {
	over := r.Table
	if r.Kind != catalog.Formula {
		over = r.SourceTable
	}
	t := snap.Tables[over]
	if t == nil {
		return "", untranslatable
	}
	rows, err := conn.Query(ctx, "SELECT 1 FROM "+sqltext.Table(t)+" LIMIT 1")
	if err != nil {
		return "", err
	}
	if len(rows) > 0 {
		return "", untranslatable
	}
	if r.Kind == catalog.Formula {
		return "", nil
	}
	unfiltered := *r
	unfiltered.Filter = ""
	return backfillSQL(snap, set, &unfiltered)
}
