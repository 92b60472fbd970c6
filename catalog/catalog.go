package catalog

import "strings"

// Snapshot is one database's catalog at one moment. It is never modified
// after Load returns it.
type Snapshot struct {
	Database string
	// Tables by qualified name, "schema.table".
	Tables map[string]*Table
	// Rules in definition order.
	Rules []*Rule
	// SearchPath is the schemas an unqualified name resolves in, in order,
	// as seen by the connection that loaded the snapshot.
	SearchPath []string
	// Guards are the tables that carry pgrules' guard, by qualified name
	// (rules-api.md §7), read in the same statement as Rules so that the
	// versions are those of these rules.
	Guards map[string]Guard
	// GuardKey is the secret the engine's statements present to the
	// guards; empty when the loading role may not read it (a client's
	// connection: the proxy takes it from its own snapshot).
	GuardKey string
}

// Guard is the guard trigger of one table.
type Guard struct {
	OID uint32
	// Version identifies the rules the table's writes run: the engine's
	// statements name it, and the guard refuses another.
	Version string
	// Of is set on a partition or inheritance child of a table with
	// rules: that table. Every write naming the child is refused.
	Of string
}

// Table is an ordinary (or partitioned) table of the database.
type Table struct {
	Schema string
	Name   string
	OID    uint32
	// Columns in attribute-number order; dropped columns are left out.
	Columns []*Column
	// PrimaryKey lists the primary key's columns in key order; empty when
	// the table has none.
	PrimaryKey []string
	// Parents are the foreign keys of this table (this table is the child).
	Parents []*ForeignKey
	// Children are the foreign keys that reference this table.
	Children []*ForeignKey
	// BeforeRow names, by verb (INSERT, UPDATE, DELETE), an enabled
	// BEFORE ROW trigger of the table (the first by name).
	BeforeRow map[string]string
	// Uniques are the table's unique indexes, with its exclusion
	// constraints: what an INSERT's ON CONFLICT can name or infer.
	Uniques []*Unique

	columns map[string]*Column
}

// QualifiedName is "schema.table", the key of Snapshot.Tables.
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// ShortName is a qualified name as messages show it: without the public
// schema.
func ShortName(qualified string) string { return strings.TrimPrefix(qualified, "public.") }

// Column returns the named column, or nil.
func (t *Table) Column(name string) *Column {
	if t.columns == nil {
		return nil
	}
	return t.columns[name]
}

// Column is one column of a table.
type Column struct {
	Name string
	Num  int16
	// TypeOID is the column's type (for a domain, its base type's).
	TypeOID uint32
	// Type is the type as format_type prints it, e.g. "numeric(14,2)".
	Type    string
	Kind    Kind
	NotNull bool
	// HasDefault is true when the column has a DEFAULT (or is an identity
	// or generated column).
	HasDefault bool
	Generated  bool
	// Default is the DEFAULT expression as SQL (for an identity column, the
	// nextval of its sequence); empty when there is none.
	Default string
	// Identity is pg_attribute's attidentity: 'a' always, 'd' by default,
	// 0 for an ordinary column.
	Identity byte
	// Scale is the scale of a numeric(p,s) column (or of a domain over
	// one), when HasScale: the decimals the column keeps of a value.
	Scale    int32
	HasScale bool
	// Generation is a stored generated column's expression, as SQL over
	// the row's columns; GenerationReads are the columns it reads.
	Generation      string
	GenerationReads []string
}

// Kind is how a column's values appear in rule expressions.
type Kind uint8

const (
	KindOther   Kind = iota // passed around as text
	KindInt                 // smallint, integer, bigint, oid
	KindDecimal             // numeric: an exact decimal, never a float
	KindFloat               // real, double precision
	KindText                // text, varchar, char, name, uuid, enums
	KindBool
	KindTime // date, timestamp, timestamptz
	KindJSON // json, jsonb: decoded values
)

var kindNames = [...]string{"other", "int", "decimal", "float", "text", "bool", "time", "json"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// ForeignKey is one foreign-key constraint between two tables.
type ForeignKey struct {
	// Name is the constraint's name; `via` in a rule names it.
	Name string
	// Child and Parent are qualified table names.
	Child, Parent string
	// Columns of the child, and the parent columns they reference, in the
	// constraint's order.
	Columns       []string
	ParentColumns []string
	// Accessor is the name expressions use for the parent seen from the
	// child: row.<Accessor>.<column> (rules-api.md §3).
	Accessor string
	// OnDelete and OnUpdate are pg_constraint's confdeltype/confupdtype:
	// 'a' no action, 'r' restrict, 'c' cascade, 'n' set null, 'd' set default.
	OnDelete, OnUpdate byte
}

// Unique is a unique index of a table, or the index of an exclusion
// constraint.
type Unique struct {
	// Index is the index's name; Constraint the name of the constraint it
	// belongs to (primary key, unique or exclusion), "" for a bare index.
	Index, Constraint string
	// Columns are the indexed columns in index order; Expressions is set
	// when the index has expression columns too (left out of Columns).
	Columns     []string
	Expressions bool
	// Predicate is a partial index's WHERE, as pg_get_expr prints it; ""
	// for a whole index.
	Predicate string
	// Exclusion marks an exclusion constraint's index; Deferrable a
	// constraint that may be deferred. ON CONFLICT takes neither as its
	// arbiter.
	Exclusion, Deferrable bool
	// NullsNotDistinct is an index whose NULLs conflict with one another
	// (PostgreSQL 15's NULLS NOT DISTINCT; pg_index has no such column
	// before, and the catalog query reads it only where it is).
	NullsNotDistinct bool
}

// RuleKind is what a rule does.
type RuleKind string

const (
	Sum              RuleKind = "sum"
	Count            RuleKind = "count"
	Min              RuleKind = "min"
	Max              RuleKind = "max"
	Formula          RuleKind = "formula"
	Copy             RuleKind = "copy"
	Constraint       RuleKind = "constraint"
	CommitConstraint RuleKind = "commit_constraint"
	Event            RuleKind = "event"
)

// IsDerivation reports whether the rule computes a column.
func (k RuleKind) IsDerivation() bool {
	switch k {
	case Sum, Count, Min, Max, Formula, Copy:
		return true
	}
	return false
}

// IsAggregate reports whether the rule derives a parent column from its
// children.
func (k RuleKind) IsAggregate() bool {
	switch k {
	case Sum, Count, Min, Max:
		return true
	}
	return false
}

// Rule is one row of pgrules.rule, as stored. It is not checked: package
// rules compiles it against the Snapshot and reports what is wrong.
type Rule struct {
	Name string
	// Table is the qualified table the rule belongs to: the target's table
	// for a derivation, the checked table for a constraint, the watched
	// table for an event.
	Table string
	Kind  RuleKind
	// Column is the derived column (derivations only).
	Column string
	// Expression is the formula, the constraint's condition or the event's
	// action.
	Expression string
	// Source is the qualified table and column read by an aggregate (the
	// child: "public.lineitem.amount"; for count only the table) or by a
	// copy (the parent: "public.product.price").
	SourceTable  string
	SourceColumn string
	Filter       string
	// Via names the foreign key to use; empty when it was left out.
	Via     string
	Message string
	Timing  string
	Verbs   []string
	Enabled bool
	// Seq orders rules by definition.
	Seq int64
	// ChangedInTx is true when the rule row was written by the transaction
	// that loaded the snapshot (only meaningful for a snapshot loaded on a
	// client's connection).
	ChangedInTx bool
}

// Lookup resolves a table name as Postgres would: a qualified name as is,
// an unqualified one through the search path. It returns nil when no such
// table exists.
func (s *Snapshot) Lookup(name string) *Table {
	if schema, table, ok := strings.Cut(name, "."); ok {
		return s.Tables[schema+"."+table]
	}
	for _, schema := range s.SearchPath {
		if t := s.Tables[schema+"."+name]; t != nil {
			return t
		}
	}
	return nil
}

// RulesOf returns the rules attached to the qualified table, in definition
// order.
func (s *Snapshot) RulesOf(table string) []*Rule {
	var out []*Rule
	for _, r := range s.Rules {
		if r.Table == table {
			out = append(out, r)
		}
	}
	return out
}
