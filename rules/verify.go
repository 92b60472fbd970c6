package rules

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
)

// Drift is a row whose derived value differs from its definition
// recomputed from scratch.
type Drift struct {
	Rule     string `json:"rule"`
	Table    string `json:"table"`
	Key      string `json:"key"`
	Stored   string `json:"stored"`
	Computed string `json:"computed"`
}

// guardDrift is the Rule of a Drift that reports a write made with the
// guard lifted.
const guardDrift = "pgrules.guard"

func (d Drift) String() string {
	if d.Rule == guardDrift {
		return fmt.Sprintf("%s: %s: %s", d.Rule, d.Table, d.Stored)
	}
	return fmt.Sprintf("%s: %s %s: stored %s, computed %s", d.Rule, d.Table, d.Key, d.Stored, d.Computed)
}

// maxDrift bounds the rows reported per rule.
const maxDrift = 1000

// verifiable are the derivations verify and rebuild recompute: copies and
// accumulating formulas are left out, their values are history by
// definition (a price frozen on an order line may differ from today's; a
// stock kept by what ships started from a value no query knows).
func verifiable(set *compiler.Set, table string) []*compiler.Rule {
	var out []*compiler.Rule
	for _, c := range set.Derivations() {
		if c.Rule.Kind != catalog.Copy && !c.Accumulates && (table == "" || c.Rule.Table == table) {
			out = append(out, c)
		}
	}
	return out
}

// keyText renders the row's primary key (its ctid without one).
func keyText(t *catalog.Table) string {
	if len(t.PrimaryKey) == 0 {
		return "t.ctid::text"
	}
	parts := make([]string, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		parts[i] = "t." + sqltext.Ident(k) + "::text"
	}
	return "concat_ws(',', " + strings.Join(parts, ", ") + ")"
}

// unguardedQuery lists the writes made with the guard lifted
// (rules-api.md §7) that no rebuild has put right since.
const unguardedQuery = `SELECT u.table_name, format('%s by %s at %s, with pgrules.guard = off', u.operation, u.role, u.at)
	FROM pgrules.unguarded u WHERE $1 = '' OR u.table_oid = to_regclass($1)::oid ORDER BY u.id`

// Verify recomputes every derived column of table (every table when it is
// empty) with set-based SQL and returns the rows that drift, in rule order,
// after the writes made with the guard lifted, which the rules may not
// have seen.
func Verify(ctx context.Context, q catalog.Querier, snap *catalog.Snapshot, set *compiler.Set, table string) ([]Drift, error) {
	var out []Drift
	rows, err := q.Query(ctx, unguardedQuery, regclassText(snap, table))
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		out = append(out, Drift{Rule: guardDrift, Table: string(r[0]), Stored: string(r[1])})
	}
	for _, c := range verifiable(set, table) {
		t, value, err := definitionSQL(snap, set, c.Rule)
		if untranslatable(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		col := t.Column(c.Rule.Column)
		target := "t." + sqltext.Ident(c.Rule.Column)
		// The definition is cast to the column's type, so that it is
		// rounded as the stored value was.
		computed := fmt.Sprintf("(%s)::%s", value, col.Type)
		rows, err := q.Query(ctx, fmt.Sprintf("SELECT %s, %s::text, %s::text FROM %s t WHERE %s IS DISTINCT FROM %s LIMIT %d",
			keyText(t), target, computed, sqltext.Table(t), target, computed, maxDrift))
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out = append(out, Drift{Rule: c.Rule.Name, Table: t.QualifiedName(), Key: string(r[0]), Stored: nullText(r[1]), Computed: nullText(r[2])})
		}
	}
	return out, nil
}

// untranslatable reports whether err says a definition cannot be written
// in SQL (string(), events' functions): verify and rebuild leave such a
// derivation out, as the engine alone computes it.
func untranslatable(err error) bool {
	return err != nil && asPgError(err).Code == pgerr.FeatureNotSupported
}

func nullText(b []byte) string {
	if b == nil {
		return "NULL"
	}
	return string(b)
}

// Rebuilt is how many rows a rebuild corrected for one rule.
type Rebuilt struct {
	Rule string `json:"rule"`
	Rows int    `json:"rows"`
}

// Rebuild sets every derived column of table (every table when it is
// empty) to its definition, in dependency order, and everything downstream
// of them, and returns how many rows each rule corrected.
func Rebuild(ctx context.Context, q catalog.Querier, snap *catalog.Snapshot, set *compiler.Set, table string) ([]Rebuilt, error) {
	// The guard lets the engine's statements through: they carry its
	// header, with the key this snapshot was loaded with.
	hdr := guardHeader(snap, snap.GuardKey)
	names := make(map[string]bool)
	for _, c := range verifiable(set, table) {
		names[c.Rule.Name] = true
	}
	var out []Rebuilt
	for _, r := range set.Downstream(names) {
		if r.Kind == catalog.Copy || set.Rule(r.Name).Accumulates {
			continue
		}
		t, value, err := definitionSQL(snap, set, r)
		if untranslatable(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		target := "t." + sqltext.Ident(r.Column)
		computed := fmt.Sprintf("(%s)::%s", value, t.Column(r.Column).Type)
		rows, err := q.Query(ctx, fmt.Sprintf("%sUPDATE %s t SET %s = %s WHERE %s IS DISTINCT FROM %s RETURNING 1",
			hdr, sqltext.Table(t), sqltext.Ident(r.Column), computed, target, computed))
		if err != nil {
			return nil, err
		}
		out = append(out, Rebuilt{Rule: r.Name, Rows: len(rows)})
	}
	if _, err := q.Query(ctx, "SELECT pgrules._rebuilt($1)", regclassText(snap, table)); err != nil {
		return nil, err
	}
	return out, nil
}

// regclassText is a qualified table name as regclass reads it ("" for
// none).
func regclassText(snap *catalog.Snapshot, table string) string {
	if t := snap.Tables[table]; t != nil {
		return sqltext.Table(t)
	}
	return table
}
