package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
)

// The "credit" section: the check-credit order transaction (triggers.sql's
// workload) through pgrules running rules.sql, through pgrules with the
// guard triggers dropped (what the guard costs), directly on PostgreSQL
// with the logic as PL/pgSQL triggers, and directly with no logic at all,
// in one run; then the round trips pgrules makes for each statement of the
// transaction (the engine reports them in its trace), and one UPDATE of
// 1, 100 and 10,000 lines of an order: its time and round trips.
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

type creditCellSpec struct {
	mode    string
	clients int
}

// creditCells are the cells of the credit table: each pgbench protocol at
// each client count.
func creditCells() []creditCellSpec {
	var out []creditCellSpec
	for _, m := range proxyModes {
		for _, c := range creditClients {
			out = append(out, creditCellSpec{m, c})
		}
	}
	return out
}

// dropGuards removes the guard of every table: the benchmark's baseline
// of pgrules without it.
const dropGuards = `DO $$
DECLARE
  t regclass;
BEGIN
  FOR t IN SELECT tgrelid::regclass FROM pg_trigger WHERE tgname = 'pgrules_guard' LOOP
    EXECUTE format('DROP TRIGGER pgrules_guard ON %s', t);
  END LOOP;
END $$`

type creditReport struct {
	DurationS int          `json:"duration_s"`
	Repeat    int          `json:"repeat"`
	Cells     []creditCell `json:"cells"`
	// Trips are the engine's round trips to PostgreSQL for each statement
	// of one order transaction.
	Trips []statementTrips `json:"round_trips"`
	// Scaling is one UPDATE of an order's lines, by the number of lines.
	Scaling []scalingRun `json:"update_scaling"`
}

type creditCell struct {
	Mode    string `json:"mode"` // pgbench's -M
	Clients int    `json:"clients"`
	// Pgrules, Triggers, Bouncer (the triggers through PgBouncer) and None
	// are the runs of median TPS among Runs.
	Pgrules  pgbenchRun              `json:"pgrules"`
	NoGuard  pgbenchRun              `json:"pgrules_without_guard"`
	Triggers pgbenchRun              `json:"triggers"`
	Bouncer  pgbenchRun              `json:"triggers_via_pgbouncer"`
	None     pgbenchRun              `json:"none"`
	Runs     map[string][]pgbenchRun `json:"runs"`
	// RatioTriggers is pgrules TPS / triggers TPS, the target (at least
	// 0.9 at 8 clients); RatioBouncer is pgrules TPS / the triggers' through
	// PgBouncer, which pay the same relay hop (the gate at 1 client);
	// RatioNone is what the logic costs.
	RatioTriggers float64 `json:"ratio_pgrules_triggers"`
	RatioBouncer  float64 `json:"ratio_pgrules_triggers_via_pgbouncer"`
	RatioNone     float64 `json:"ratio_pgrules_none"`
	// RatioGuard is pgrules TPS / pgrules TPS without the guard: what the
	// guard keeps of the speed (at most a few percent off).
	RatioGuard float64 `json:"ratio_guard"`
}

type statementTrips struct {
	Statement string `json:"statement"`
	Trips     int    `json:"round_trips"`
}

type scalingRun struct {
	Lines int     `json:"lines"`
	MS    float64 `json:"ms"`
	Trips int     `json:"round_trips"`
}

func (r *creditReport) print(w io.Writer) {
	fmt.Fprintf(w, "check-credit order transaction (insert an order, two lines, update a line, pay 3 times in 4); %ds per run, targets interleaved; median of %d run(s)\n\n", r.DurationS, r.Repeat)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tclients\tpgrules TPS\twithout guard TPS\ttriggers TPS\tvia PgBouncer TPS\tno logic TPS\tpgrules/triggers\tpgrules/via PgBouncer\tpgrules/no logic\tguarded/unguarded\t")
	for _, c := range r.Cells {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", c.Mode, c.Clients, c.Pgrules.TPS, c.NoGuard.TPS, c.Triggers.TPS, c.Bouncer.TPS, c.None.TPS, c.RatioTriggers, c.RatioBouncer, c.RatioNone, c.RatioGuard)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nround trips from pgrules to PostgreSQL per statement of the transaction:\n")
	for _, t := range r.Trips {
		fmt.Fprintf(w, "  %2d  %s\n", t.Trips, t.Statement)
	}
	fmt.Fprintf(w, "\nUPDATE lineitem SET quantity = quantity + 1 WHERE order_id = :id, by the order's lines (median of %d executions):\n", scalingRepeat)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "lines\tms\tround trips\t")
	for _, s := range r.Scaling {
		fmt.Fprintf(tw, "%d\t%.1f\t%d\t\n", s.Lines, s.MS, s.Trips)
	}
	tw.Flush()
}

func runCredit(ctx context.Context, h *harness) (report, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	limits := "UPDATE customer SET credit_limit = 999999999999" // the workload measures speed, not refusals
	dbs := map[string][]string{
		"credit_rules":    {demo.Schema, demo.Data, limits},
		"credit_noguard":  {demo.Schema, demo.Data, limits},
		"credit_triggers": {demo.Schema, demo.Data, demo.Triggers, limits},
		"credit_bouncer":  {demo.Schema, demo.Data, demo.Triggers, limits},
		"credit_none":     {demo.Schema, demo.Data, limits},
	}
	if err := createDatabases(ctx, pg, dbs); err != nil {
		return nil, err
	}
	bouncer, err := h.pgbouncer(ctx)
	if err != nil {
		return nil, err
	}
	port, err := h.pgrules(ctx)
	if err != nil {
		return nil, err
	}
	rulesURL := url(port, "credit_rules")
	noGuardURL := url(port, "credit_noguard")
	for _, u := range []string{rulesURL, noGuardURL} {
		if err := demo.Exec(ctx, u, demo.Rules); err != nil {
			return nil, fmt.Errorf("define the rules through pgrules: %w", err)
		}
	}
	// Without its guard triggers the database leaves the engine's
	// statements unchecked, and the proxy (reloading at the DDL) sends no
	// header: the difference is all the guard costs.
	if err := demo.Exec(ctx, pg.URL(tempdb.SuperUser, "credit_noguard"), dropGuards); err != nil {
		return nil, fmt.Errorf("drop the guards: %w", err)
	}
	script := filepath.Join(h.tmp, "credit.sql")
	if err := os.WriteFile(script, []byte(creditScript), 0o644); err != nil {
		return nil, err
	}
	rep := &creditReport{DurationS: seconds(h.opts.duration), Repeat: h.opts.repeat}
	targets := []struct {
		name, url string
		out       func(*creditCell) *pgbenchRun
	}{
		{"pgrules", rulesURL, func(c *creditCell) *pgbenchRun { return &c.Pgrules }},
		{"unguarded", noGuardURL, func(c *creditCell) *pgbenchRun { return &c.NoGuard }},
		{"triggers", pg.URL(tempdb.SuperUser, "credit_triggers"), func(c *creditCell) *pgbenchRun { return &c.Triggers }},
		{"bouncer", url(bouncer, "credit_bouncer"), func(c *creditCell) *pgbenchRun { return &c.Bouncer }},
		{"no logic", pg.URL(tempdb.SuperUser, "credit_none"), func(c *creditCell) *pgbenchRun { return &c.None }},
	}
	turn := 0
	for _, cl := range creditCells() {
		mode, clients := cl.mode, cl.clients
		cell := creditCell{Mode: mode, Clients: clients, Runs: make(map[string][]pgbenchRun)}
		for rep := 1; rep <= h.opts.repeat; rep++ {
			// Rotated, as in the proxy section.
			for i := range targets {
				tg := targets[(i+turn)%len(targets)]
				threads := min(clients, 2)
				res, err := h.pgbench(ctx, "-n", "-M", mode, "-f", script, "-T", strconv.Itoa(seconds(h.opts.duration)),
					"-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), tg.url)
				if err != nil {
					return nil, err
				}
				run, err := parsePgbench(res, clients)
				if err != nil {
					return nil, err
				}
				cell.Runs[tg.name] = append(cell.Runs[tg.name], run)
				h.logf("credit %-9s %-8s %d clients run %d/%d %8.0f tps", tg.name, mode, clients, rep, h.opts.repeat, run.TPS)
			}
			turn++
		}
		for _, tg := range targets {
			*tg.out(&cell) = medianRun(cell.Runs[tg.name])
		}
		cell.RatioTriggers = cell.Pgrules.TPS / cell.Triggers.TPS
		cell.RatioBouncer = cell.Pgrules.TPS / cell.Bouncer.TPS
		cell.RatioNone = cell.Pgrules.TPS / cell.None.TPS
		cell.RatioGuard = cell.Pgrules.TPS / cell.NoGuard.TPS
		rep.Cells = append(rep.Cells, cell)
	}
	if rep.Trips, err = creditTrips(ctx, rulesURL); err != nil {
		return nil, err
	}
	if rep.Scaling, err = updateScaling(ctx, rulesURL); err != nil {
		return nil, err
	}
	return rep, nil
}

// createDatabases makes each database afresh, with its scripts run in it.
func createDatabases(ctx context.Context, pg *tempdb.Cluster, dbs map[string][]string) error {
	admin := pg.URL(tempdb.SuperUser, "postgres")
	for db, scripts := range dbs {
		for _, sql := range []string{"DROP DATABASE IF EXISTS " + db + " WITH (FORCE)", "CREATE DATABASE " + db} {
			if _, err := execSQL(ctx, admin, sql); err != nil {
				return err
			}
		}
		if err := demo.Exec(ctx, pg.URL(tempdb.SuperUser, db), scripts...); err != nil {
			return err
		}
	}
	return nil
}

// traced is a connection through pgrules with the logic trace on; trips
// returns the round trips the engine reported for the last statement.
type traced struct {
	conn  *pgconn.PgConn
	trips int
	// commitTrips are those of the last commit the engine ran.
	commitTrips int
}

var (
	reTrips       = regexp.MustCompile(`^(\d+) round trip\(s\) to the server$`)
	reCommitTrips = regexp.MustCompile(`^(\d+) round trip\(s\) to the server at commit$`)
)

func dialTraced(ctx context.Context, url string) (*traced, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	t := &traced{}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if m := reTrips.FindStringSubmatch(n.Message); m != nil {
			t.trips, _ = strconv.Atoi(m[1])
		}
		if m := reCommitTrips.FindStringSubmatch(n.Message); m != nil {
			t.commitTrips, _ = strconv.Atoi(m[1])
		}
	}
	if t.conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		return nil, err
	}
	if _, err := t.conn.Exec(ctx, "SET pgrules.trace = on").ReadAll(); err != nil {
		t.conn.Close(ctx)
		return nil, err
	}
	return t, nil
}

func (t *traced) exec(ctx context.Context, sql string) ([]*pgconn.Result, error) {
	t.trips, t.commitTrips = 0, 0
	return t.conn.Exec(ctx, sql).ReadAll()
}

// creditTrips runs the order transaction's statements once, each in
// autocommit, and reads the engine's round trips for each.
func creditTrips(ctx context.Context, url string) ([]statementTrips, error) {
	return orderTrips(ctx, url, false, []string{
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 1, :qty)",
		"UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = :id AND product_id = 1",
		"UPDATE orders SET paid = true WHERE id = :id",
	})
}

// orderTrips inserts an order, then runs statements on it (":id" is the
// order, ":qty" a quantity), through pgrules with the trace on, and reads
// the engine's round trips for each; in one transaction when tx is set,
// whose COMMIT's round trips (the COMMIT itself included) come last. The
// figures are those of a second order: the first also reads what a
// session reads once (its search_path, its statements' parameter types).
func orderTrips(ctx context.Context, url string, tx bool, statements []string) ([]statementTrips, error) {
	t, err := dialTraced(ctx, url)
	if err != nil {
		return nil, err
	}
	defer t.conn.Close(ctx)
	var out []statementTrips
	for range 2 {
		if out, err = t.order(ctx, tx, statements); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// order runs orderTrips's statements once.
func (t *traced) order(ctx context.Context, tx bool, statements []string) ([]statementTrips, error) {
	if tx {
		if _, err := t.exec(ctx, "BEGIN"); err != nil {
			return nil, err
		}
	}
	res, err := t.exec(ctx, "INSERT INTO orders (customer_id) VALUES (1) RETURNING id")
	if err != nil {
		return nil, err
	}
	out := []statementTrips{{"INSERT INTO orders (customer_id) VALUES (:cust) RETURNING id", t.trips}}
	id := string(res[0].Rows[0][0])
	for _, st := range statements {
		sql := strings.NewReplacer(":id", id, ":qty", "2").Replace(st)
		if _, err := t.exec(ctx, sql); err != nil {
			return nil, err
		}
		out = append(out, statementTrips{st, t.trips})
	}
	if !tx {
		return out, nil
	}
	if _, err := t.exec(ctx, "COMMIT"); err != nil {
		return nil, err
	}
	commit := t.commitTrips
	if commit == 0 {
		commit = 1 // a COMMIT the engine did not see is one round trip
	}
	return append(out, statementTrips{"COMMIT", commit}), nil
}

// scalingRepeat is how many times updateScaling runs each UPDATE.
const scalingRepeat = 5

// updateScaling times one UPDATE of every line of an order of n lines,
// through pgrules (the median of scalingRepeat executions), and reads
// its round trips.
func updateScaling(ctx context.Context, url string) ([]scalingRun, error) {
	t, err := dialTraced(ctx, url)
	if err != nil {
		return nil, err
	}
	defer t.conn.Close(ctx)
	var out []scalingRun
	for _, n := range []int{1, 100, 10000} {
		res, err := t.exec(ctx, "INSERT INTO orders (customer_id) VALUES (2) RETURNING id")
		if err != nil {
			return nil, err
		}
		id := string(res[0].Rows[0][0])
		if _, err := t.exec(ctx, fmt.Sprintf("INSERT INTO lineitem (order_id, product_id, quantity) SELECT %s, 1 + i %% 3, 1 FROM generate_series(1, %d) i", id, n)); err != nil {
			return nil, err
		}
		// The first execution also prepares the engine's statements
		// and learns the text's shape; the median of several is the
		// statement's own cost, and a stray checkpoint does not stand
		// for it. Every execution must take the same round trips.
		run := scalingRun{Lines: n}
		var ms []float64
		for i := 0; i < scalingRepeat; i++ {
			start := time.Now()
			if _, err := t.exec(ctx, "UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = "+id); err != nil {
				return nil, err
			}
			ms = append(ms, float64(time.Since(start).Microseconds())/1000)
			if i > 0 && t.trips != run.Trips {
				return nil, fmt.Errorf("UPDATE of %d lines took %d round trips, then %d", n, run.Trips, t.trips)
			}
			run.Trips = t.trips
		}
		run.MS = median(ms)
		out = append(out, run)
	}
	return out, nil
}
