package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/catalog/watch"
	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
	"github.com/pgrules/pgrules/rules/compiler"
	pgsql "github.com/pgrules/pgrules/sql"
	"github.com/shopspring/decimal"
)

// The "rules" section: the compiler and the evaluator, on the check-credit
// catalog read from a real database.

type rulesReport struct {
	CompileRules       int     `json:"compile_rules"`
	CompileMS          float64 `json:"compile_ms"`
	FormulaNsPerOp     float64 `json:"formula_ns_per_op"`
	FormulaAllocs      int64   `json:"formula_allocs_per_op"`
	ConstraintNsPerOp  float64 `json:"constraint_ns_per_op"`
	ConstraintAllocs   int64   `json:"constraint_allocs_per_op"`
	CatalogTables      int     `json:"catalog_tables"`
	CatalogRules       int     `json:"catalog_rules"`
	CatalogLoadMS      float64 `json:"catalog_load_ms"`
	CatalogLoadQueries int     `json:"catalog_load_queries"`
}

func (r *rulesReport) print(w io.Writer) {
	fmt.Fprintf(w, "compile %d rules (constraints with a parent path and a message template): %.1f ms\n", r.CompileRules, r.CompileMS)
	fmt.Fprintf(w, "evaluate formula row.quantity * row.unit_price (decimal): %.0f ns/op, %d allocs/op\n", r.FormulaNsPerOp, r.FormulaAllocs)
	fmt.Fprintf(w, "evaluate constraint row.balance <= row.credit_limit:       %.0f ns/op, %d allocs/op\n", r.ConstraintNsPerOp, r.ConstraintAllocs)
	fmt.Fprintf(w, "catalog load, %d tables and %d rules: %.1f ms (median), %d queries\n", r.CatalogTables, r.CatalogRules, r.CatalogLoadMS, r.CatalogLoadQueries)
}

// countingQuerier counts the queries of a catalog load.
type countingQuerier struct {
	catalog.Querier
	n int
}

func (q *countingQuerier) Query(ctx context.Context, sql string, args ...string) ([][][]byte, error) {
	q.n++
	return q.Querier.Query(ctx, sql, args...)
}

func runRules(ctx context.Context, h *harness) (report, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	admin := pg.URL(tempdb.SuperUser, "postgres")
	rep := &rulesReport{CompileRules: 1000, CatalogTables: 500, CatalogRules: 300}

	// The check-credit catalog with its rules, and 1,000 more to compile.
	credit, err := benchDatabase(ctx, admin, pg, "rulesbench", demo.Schema)
	if err != nil {
		return nil, err
	}
	defer credit.Close(ctx)
	if _, err := credit.Exec(ctx, demo.Rules); err != nil {
		return nil, err
	}
	snap, err := catalog.Load(ctx, watch.PgxQuerier(credit))
	if err != nil {
		return nil, err
	}
	set := compiler.Compile(snap)
	if errs := set.Errors(); len(errs) > 0 {
		return nil, errs[0]
	}
	many := *snap
	many.Rules = slices.Clone(snap.Rules)
	for i := range rep.CompileRules {
		many.Rules = append(many.Rules, &catalog.Rule{Name: fmt.Sprintf("c%d", i), Table: "public.lineitem", Kind: catalog.Constraint, Enabled: true,
			Expression: fmt.Sprintf("row.quantity * row.unit_price <= %d.50 or row.order.customer.credit_limit > 0", i), Message: "line {row.id} is too big"})
	}
	start := time.Now()
	const compiles = 5
	for range compiles {
		compiler.Compile(&many)
	}
	rep.CompileMS = float64(time.Since(start).Microseconds()) / 1000 / compiles

	formula, constraint := set.Rule("lineitem.amount"), set.Rule("credit_limit")
	line := compiler.Env{Row: map[string]any{"quantity": 3, "unit_price": decimal.RequireFromString("25.50")}, Verb: "insert"}
	customer := compiler.Env{Row: map[string]any{"balance": decimal.RequireFromString("81.00"), "credit_limit": decimal.RequireFromString("1000.00")}, Verb: "update"}
	fr := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			formula.Eval(line)
		}
	})
	cr := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			constraint.Holds(customer)
		}
	})
	rep.FormulaNsPerOp, rep.FormulaAllocs = float64(fr.NsPerOp()), fr.AllocsPerOp()
	rep.ConstraintNsPerOp, rep.ConstraintAllocs = float64(cr.NsPerOp()), cr.AllocsPerOp()

	// A schema of 500 tables, each the child of the one before, with rules.
	schema := ""
	for i := range rep.CatalogTables {
		parent := ""
		if i > 0 {
			parent = fmt.Sprintf(", t%d_id int REFERENCES t%d", i-1, i-1)
		}
		schema += fmt.Sprintf("CREATE TABLE t%d (id int PRIMARY KEY, name text, qty int, price numeric(12,2), total numeric(14,2), at timestamptz, doc jsonb%s);\n", i, parent)
	}
	big, err := benchDatabase(ctx, admin, pg, "catalogbench", schema)
	if err != nil {
		return nil, err
	}
	defer big.Close(ctx)
	for i := range rep.CatalogRules {
		if _, err := big.Exec(ctx, fmt.Sprintf("SELECT pgrules.formula('t%d.total', 'row.qty * row.price')", i)); err != nil {
			return nil, err
		}
	}
	var times []time.Duration
	for range 9 {
		q := &countingQuerier{Querier: watch.PgxQuerier(big)}
		start := time.Now()
		if _, err := catalog.Load(ctx, q); err != nil {
			return nil, err
		}
		times = append(times, time.Since(start))
		rep.CatalogLoadQueries = q.n
	}
	slices.Sort(times)
	rep.CatalogLoadMS = float64(times[len(times)/2].Microseconds()) / 1000
	return rep, nil
}

// benchDatabase creates a database with schema and the pgrules schema and
// returns a connection to it.
func benchDatabase(ctx context.Context, admin string, pg *tempdb.Cluster, name, schema string) (*pgx.Conn, error) {
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + name, "CREATE DATABASE " + name} {
		if _, err := execSQL(ctx, admin, sql); err != nil {
			return nil, err
		}
	}
	if _, err := execSQL(ctx, pg.URL(tempdb.SuperUser, name), schema); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, pg.URL(tempdb.SuperUser, name))
	if err != nil {
		return nil, err
	}
	if _, _, err := pgsql.Install(ctx, conn); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}
