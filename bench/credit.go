package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
)

// The "credit" section: the check-credit order transaction (triggers.sql's
// workload) directly on PostgreSQL with the logic as PL/pgSQL triggers,
// and with no logic at all. pgrules running rules.sql joins the table with
// the rules engine (issue 4); until then pgrules refuses these writes.

// creditScript is one order: two lines, a quantity change, and payment
// three times out of four.
const creditScript = `\set cust random(1, 2)
\set qty random(1, 3)
\set pay random(0, 3)
BEGIN;
INSERT INTO orders (customer_id) VALUES (:cust) RETURNING id \gset
INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 1, :qty);
INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 2, 1);
UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = :id AND product_id = 1;
\if :pay
UPDATE orders SET paid = true WHERE id = :id;
\endif
COMMIT;
`

var creditClients = []int{1, 8}

type creditReport struct {
	DurationS int          `json:"duration_s"`
	Cells     []creditCell `json:"cells"`
	Pgrules   string       `json:"pgrules"`
}

type creditCell struct {
	Clients  int        `json:"clients"`
	Triggers pgbenchRun `json:"triggers"`
	None     pgbenchRun `json:"none"`
	// Ratio is triggers TPS / no-logic TPS: what the logic costs.
	Ratio float64 `json:"ratio_triggers_none"`
}

func (r *creditReport) print(w io.Writer) {
	fmt.Fprintf(w, "check-credit order transaction (insert an order, two lines, update a line, pay 3 times in 4); %ds per run\n\n", r.DurationS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\ttriggers TPS\tno logic TPS\ttriggers/no logic\t")
	for _, c := range r.Cells {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t\n", c.Clients, c.Triggers.TPS, c.None.TPS, c.Ratio)
	}
	tw.Flush()
	fmt.Fprintf(w, "\npgrules with rules.sql: %s\n", r.Pgrules)
}

func runCredit(ctx context.Context, h *harness) (report, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	admin := pg.URL(tempdb.SuperUser, "postgres")
	limits := "UPDATE customer SET credit_limit = 999999999999" // the workload measures speed, not refusals
	dbs := map[string][]string{
		"credit_triggers": {demo.Schema, demo.Data, demo.Triggers, limits},
		"credit_none":     {demo.Schema, demo.Data, limits},
	}
	for db, scripts := range dbs {
		for _, sql := range []string{"DROP DATABASE IF EXISTS " + db, "CREATE DATABASE " + db} {
			if _, err := execSQL(ctx, admin, sql); err != nil {
				return nil, err
			}
		}
		if err := demo.Exec(ctx, pg.URL(tempdb.SuperUser, db), scripts...); err != nil {
			return nil, err
		}
	}
	script := filepath.Join(h.tmp, "credit.sql")
	if err := os.WriteFile(script, []byte(creditScript), 0o644); err != nil {
		return nil, err
	}
	rep := &creditReport{DurationS: seconds(h.opts.duration),
		Pgrules: "not measured: the rules engine (issue 4) is not built yet, and pgrules refuses writes to tables with rules"}
	for _, clients := range creditClients {
		cell := creditCell{Clients: clients}
		for db, out := range map[string]*pgbenchRun{"credit_triggers": &cell.Triggers, "credit_none": &cell.None} {
			threads := min(clients, 2)
			res, err := h.pgbench(ctx, "-n", "-f", script, "-T", strconv.Itoa(seconds(h.opts.duration)),
				"-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), pg.URL(tempdb.SuperUser, db))
			if err != nil {
				return nil, err
			}
			if *out, err = parsePgbench(res, clients); err != nil {
				return nil, err
			}
			h.logf("credit %-16s %d clients %8.0f tps", db, clients, out.TPS)
		}
		cell.Ratio = cell.Triggers.TPS / cell.None.TPS
		rep.Cells = append(rep.Cells, cell)
	}
	return rep, nil
}
