package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pgrules/pgrules/pgerr"
)

// Querier runs a query with text parameters and returns its rows as text
// (nil for NULL). The proxy implements it on a client's own upstream
// connection; watch.PgxQuerier adapts a pgx connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...string) ([][][]byte, error)
}

// The catalog is read with four queries, each returning one JSON document,
// so that a load inside a client's transaction costs four round trips
// whatever the size of the schema.
const (
	sessionQuery = `SELECT current_database(), array_to_json(current_schemas(false))::text,
		to_regclass('pgrules.rule') IS NOT NULL, to_regprocedure('pgrules._tables()') IS NOT NULL`

	// pgrules._tables reads the tables with an empty search_path of its
	// own: the types and default expressions it gives name every object
	// outside pg_catalog with its schema, so they mean in any session what
	// they meant when the table was made.
	tablesQuery = `SELECT pgrules._tables()`

	relationshipsQuery = `SELECT coalesce(json_agg(r), '[]')::text FROM pgrules.relationships r`

	rulesQuery = `SELECT coalesce(json_agg(json_build_object(
		'name', name, 'schema', table_schema, 'table', table_name, 'kind', kind, 'column', target_column,
		'expression', expression, 'source_schema', source_schema, 'source_table', source_table,
		'source_column', source_column, 'filter', filter, 'via', via, 'message', message, 'timing', timing,
		'verbs', verbs, 'enabled', enabled, 'seq', seq,
		'changed', txid = pg_current_xact_id_if_assigned()) ORDER BY seq), '[]')::text
		FROM pgrules.rule`

	// guardsQuery reads the guard triggers (pgrules._sync_guards makes
	// them): their arguments are the version, the key's md5 and the table
	// a child's guard refers to, each ended by a zero byte. It runs in
	// one statement with rulesQuery, so that both see one snapshot.
	guardsQuery = `SELECT coalesce(json_agg(json_build_object('oid', t.tgrelid::int8, 'schema', n.nspname, 'name', c.relname,
		'args', encode(t.tgargs, 'escape'))), '[]')::text
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname = 'pgrules_guard'`

	// PostgreSQL checks the privileges of every table a statement names
	// before running it, so the key is read only once the role is known
	// to be allowed to (a client's transaction, where a definition has
	// the catalog read again, is not).
	keyAllowedQuery = `SELECT has_table_privilege('pgrules.guard_key', 'SELECT')`
	keyQuery        = `SELECT key FROM pgrules.guard_key`
)

// ErrNoSchema is wrapped by Load's error when the database has no pgrules
// schema, and so no rules.
var ErrNoSchema = errors.New("the pgrules schema is not installed")

// Load reads the catalog of the database q is connected to, as q's
// transaction sees it.
func Load(ctx context.Context, q Querier) (*Snapshot, error) {
	rows, err := q.Query(ctx, sessionQuery)
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	snap := &Snapshot{Database: string(rows[0][0]), Tables: make(map[string]*Table)}
	if err := json.Unmarshal(rows[0][1], &snap.SearchPath); err != nil {
		return nil, fmt.Errorf("search path: %w", err)
	}
	if string(rows[0][2]) != "t" {
		return nil, pgerr.New(pgerr.ObjectNotInPrereqState, "database %s: %w (pgrules install installs it)", snap.Database, ErrNoSchema)
	}
	if string(rows[0][3]) != "t" {
		return nil, pgerr.New(pgerr.ObjectNotInPrereqState, "database %s: the pgrules schema is older than this pgrules (pgrules install upgrades it)", snap.Database)
	}
	if err := loadTables(ctx, q, snap); err != nil {
		return nil, err
	}
	if err := loadRelationships(ctx, q, snap); err != nil {
		return nil, err
	}
	if err := loadRules(ctx, q, snap); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, keyAllowedQuery)
	if err != nil || string(rows[0][0]) != "t" {
		return snap, err
	}
	rows, err = q.Query(ctx, keyQuery)
	if err != nil {
		return nil, fmt.Errorf("read the guard key: %w", err)
	}
	if len(rows) == 1 {
		snap.GuardKey = string(rows[0][0])
	}
	return snap, nil
}

func queryJSON(ctx context.Context, q Querier, sql string, v any) error {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("read the catalog: %w", err)
	}
	if err := json.Unmarshal(rows[0][0], v); err != nil {
		return fmt.Errorf("read the catalog: %w", err)
	}
	return nil
}

func loadTables(ctx context.Context, q Querier, snap *Snapshot) error {
	var tables []struct {
		Schema, Name string
		OID          uint32
		PK           []string
		Uniques      []*Unique
		Columns      []struct {
			Name               string
			Num                int16
			Type               string
			OID                uint32
			Enum, NotNull      bool
			Default, Generated bool
			Identity           string
			DefExpr            string
			Scale              *int32
			GenExpr            string
			GenReads           []string
		}
		Before []struct {
			Name string
			Type int
		}
	}
	if err := queryJSON(ctx, q, tablesQuery, &tables); err != nil {
		return err
	}
	for _, t := range tables {
		cols := make([]*Column, len(t.Columns))
		for i, c := range t.Columns {
			kind := KindOf(c.OID)
			if c.Enum {
				kind = KindText
			}
			cols[i] = &Column{Name: c.Name, Num: c.Num, TypeOID: c.OID, Type: c.Type, Kind: kind,
				NotNull: c.NotNull, HasDefault: c.Default, Generated: c.Generated, Default: c.DefExpr}
			cols[i].Generation, cols[i].GenerationReads = c.GenExpr, c.GenReads
			if c.Scale != nil {
				cols[i].Scale, cols[i].HasScale = *c.Scale, true
			}
			if c.Identity != "" {
				cols[i].Identity = c.Identity[0]
			}
		}
		tbl := NewTable(t.Schema, t.Name, cols, t.PK)
		tbl.OID, tbl.Uniques = t.OID, t.Uniques
		for _, g := range t.Before {
			// tgtype's event bits: INSERT 4, DELETE 8, UPDATE 16.
			for bit, verb := range map[int]string{4: "INSERT", 8: "DELETE", 16: "UPDATE"} {
				if g.Type&bit != 0 {
					if tbl.BeforeRow == nil {
						tbl.BeforeRow = make(map[string]string)
					}
					if _, ok := tbl.BeforeRow[verb]; !ok {
						tbl.BeforeRow[verb] = g.Name
					}
				}
			}
		}
		snap.Tables[tbl.QualifiedName()] = tbl
	}
	return nil
}

// KindOf maps a type OID to how rules see its values.
func KindOf(oid uint32) Kind {
	switch oid {
	case 20, 21, 23, 26: // int8, int2, int4, oid
		return KindInt
	case 1700:
		return KindDecimal
	case 700, 701:
		return KindFloat
	case 25, 1043, 1042, 19, 2950: // text, varchar, bpchar, name, uuid
		return KindText
	case 16:
		return KindBool
	case 1082, 1114, 1184:
		return KindTime
	case 114, 3802:
		return KindJSON
	}
	return KindOther
}

func loadRelationships(ctx context.Context, q Querier, snap *Snapshot) error {
	var rels []struct {
		Name          string
		ChildSchema   string   `json:"child_schema"`
		ChildTable    string   `json:"child_table"`
		ChildColumns  []string `json:"child_columns"`
		ParentSchema  string   `json:"parent_schema"`
		ParentTable   string   `json:"parent_table"`
		ParentColumns []string `json:"parent_columns"`
		Accessor      string
		OnDelete      string `json:"on_delete"`
		OnUpdate      string `json:"on_update"`
	}
	if err := queryJSON(ctx, q, relationshipsQuery, &rels); err != nil {
		return err
	}
	for _, r := range rels {
		fk := &ForeignKey{Name: r.Name, Child: r.ChildSchema + "." + r.ChildTable, Parent: r.ParentSchema + "." + r.ParentTable,
			Columns: r.ChildColumns, ParentColumns: r.ParentColumns, Accessor: r.Accessor}
		if r.OnDelete != "" {
			fk.OnDelete = r.OnDelete[0]
		}
		if r.OnUpdate != "" {
			fk.OnUpdate = r.OnUpdate[0]
		}
		snap.link(fk)
	}
	return nil
}

func loadRules(ctx context.Context, q Querier, snap *Snapshot) error {
	var rules []struct {
		Name, Schema, Table, Kind, Column, Expression string
		SourceSchema                                  string `json:"source_schema"`
		SourceTable                                   string `json:"source_table"`
		SourceColumn                                  string `json:"source_column"`
		Filter, Via, Message, Timing                  string
		Verbs                                         []string
		Enabled, Changed                              bool
		Seq                                           int64
	}
	var guards []struct {
		OID          uint32
		Schema, Name string
		Args         string
	}
	rows, err := q.Query(ctx, "SELECT ("+rulesQuery+"), ("+guardsQuery+")")
	if err != nil {
		return fmt.Errorf("read the catalog: %w", err)
	}
	if err := json.Unmarshal(rows[0][0], &rules); err != nil {
		return fmt.Errorf("read the rules: %w", err)
	}
	if err := json.Unmarshal(rows[0][1], &guards); err != nil {
		return fmt.Errorf("read the guards: %w", err)
	}
	snap.Guards = make(map[string]Guard, len(guards))
	for _, g := range guards {
		args := strings.Split(g.Args, `\000`)
		if len(args) < 3 {
			return fmt.Errorf("read the guards: the guard of %s.%s has arguments %q", g.Schema, g.Name, g.Args)
		}
		snap.Guards[g.Schema+"."+g.Name] = Guard{OID: g.OID, Version: args[0], Of: args[2]}
	}
	for _, r := range rules {
		rule := &Rule{Name: r.Name, Table: r.Schema + "." + r.Table, Kind: RuleKind(r.Kind), Column: r.Column,
			Expression: r.Expression, SourceColumn: r.SourceColumn, Filter: r.Filter, Via: r.Via, Message: r.Message,
			Timing: r.Timing, Verbs: r.Verbs, Enabled: r.Enabled, Seq: r.Seq, ChangedInTx: r.Changed}
		if r.SourceTable != "" {
			rule.SourceTable = r.SourceSchema + "." + r.SourceTable
		}
		snap.Rules = append(snap.Rules, rule)
	}
	return nil
}
