package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
)

// The "orders" section: the check-credit order transaction with little
// contention. In the credit section every order waits for the lock that
// another holds on one of two customers until its COMMIT, which hides
// what a statement costs. Each transaction picks one of ordersCustomers
// customers at random and pays the order, so that the rules (and the
// triggers) adjust the customer too. It runs through pgrules with
// rules.sql, directly with triggers.sql, through PgBouncer (session mode)
// with triggers.sql, and directly with no logic, in pgbench's three
// protocols at 1 and 8 clients; pgrules' and PgBouncer's CPU time per
// transaction beside their TPS; then the engine's round trips for each
// statement as its trace reports them, and, where strace is installed,
// the writes pgrules makes to PostgreSQL's sockets per transaction, with
// the rules and with none (the same transaction only relayed).

// ordersCustomers is how many customers the orders pick from.
const ordersCustomers = 1000

// ordersScript is one order: two lines, a quantity change, and payment.
var ordersScript = fmt.Sprintf(`\set cust random(1, %d)
\set qty random(1, 3)
BEGIN;
INSERT INTO orders (customer_id) VALUES (:cust) RETURNING id \gset
INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 1, :qty);
INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 2, 1);
UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = :id AND product_id = 1;
UPDATE orders SET paid = true WHERE id = :id;
COMMIT;
`, ordersCustomers)

// ordersData adds customers to the scenario's two, with credit limits no
// order comes near: the workload measures speed, not refusals.
var ordersData = fmt.Sprintf(`INSERT INTO customer (name, credit_limit) SELECT 'customer ' || i, 0 FROM generate_series(3, %d) i;
UPDATE customer SET credit_limit = 1000000;
ANALYZE`, ordersCustomers)

// The targets, in the order of tables and JSON; the order they run in
// rotates, as in the proxy section.
const (
	ordersPgrules  = "pgrules"
	ordersTriggers = "triggers"
	ordersBouncer  = "triggers_pgbouncer"
	ordersNone     = "no_logic"
	// ordersUnguarded is pgrules on a database whose guard triggers are
	// dropped: the difference from ordersPgrules is all the guard costs.
	ordersUnguarded = "pgrules_unguarded"
)

var ordersTargets = []string{ordersPgrules, ordersTriggers, ordersBouncer, ordersNone, ordersUnguarded}

// The section's targets: pgrules at least this fraction of the triggers'
// TPS at targetClients, and at 1 client against the triggers through
// PgBouncer (the same relay hop as pgrules: the gate) and directly (the
// aim).
const ordersTargetRatio = 0.9

// ordersGuardRatio is the guard's target: pgrules at least this fraction
// of its TPS without the guard, in every cell.
const ordersGuardRatio = 0.95

// ordersWriteTxs are the transactions of the two strace runs whose
// difference gives the writes per transaction, without the connection's
// start and the first transaction's preparing.
var ordersWriteTxs = [2]int{50, 150}

type ordersReport struct {
	Customers int          `json:"customers"`
	DurationS int          `json:"duration_s"`
	WarmupS   int          `json:"warmup_s"`
	Repeat    int          `json:"repeat"`
	Cells     []ordersCell `json:"cells"`
	Goals     []goal       `json:"goals"`
	// Trips are the engine's round trips for each statement of one order
	// transaction, as its trace reports them.
	Trips []statementTrips `json:"round_trips"`
	// ServerTimes are PostgreSQL's planning and execution time of the
	// transaction through pgrules and with the triggers.
	ServerTimes []serverTime `json:"server_times"`
	// Writes are pgrules' writes to PostgreSQL's sockets per transaction,
	// counted with strace at 1 client on the connections that carry one
	// or more per transaction; WritesSkipped says why not, if not.
	Writes        []ordersWrites `json:"socket_writes,omitempty"`
	WritesSkipped string         `json:"socket_writes_skipped,omitempty"`
}

type ordersCell struct {
	Protocol string                   `json:"protocol"`
	Clients  int                      `json:"clients"`
	Threads  int                      `json:"threads"`
	Results  map[string]*ordersResult `json:"results"` // by ordersTargets

	// RatioTriggers is pgrules TPS / triggers TPS (direct), the target at
	// 8 clients and the aim at 1; RatioBouncer is against the triggers
	// through PgBouncer, the gate at 1 client; RatioNone is what the
	// logic costs through pgrules against none at all, directly.
	RatioTriggers float64 `json:"ratio_pgrules_triggers"`
	RatioBouncer  float64 `json:"ratio_pgrules_triggers_pgbouncer"`
	RatioNone     float64 `json:"ratio_pgrules_no_logic"`
	// RatioGuard is pgrules TPS / pgrules TPS without the guard.
	RatioGuard float64 `json:"ratio_guarded_unguarded"`
}

type ordersResult struct {
	TPS float64 `json:"tps"` // median of the runs
	// CPUMSPerTx is the median of the runs' CPU time of the proxy's
	// process per transaction, for the targets behind a proxy.
	CPUMSPerTx *float64    `json:"proxy_cpu_ms_per_tx,omitempty"`
	Runs       []ordersRun `json:"runs"`
}

type ordersRun struct {
	pgbenchRun
	// ProxyCPUMS is the CPU time of pgrules or PgBouncer during the run.
	ProxyCPUMS *float64 `json:"proxy_cpu_ms,omitempty"`
}

type ordersWrites struct {
	Protocol string `json:"protocol"`
	// Pgrules is through pgrules with the rules, Relayed through pgrules
	// on the database without logic.
	Pgrules float64 `json:"pgrules"`
	Relayed float64 `json:"relayed"`
	// PgrulesCalls and RelayedCalls are the system calls of pgrules'
	// process per transaction, by name.
	PgrulesCalls map[string]float64 `json:"pgrules_calls"`
	RelayedCalls map[string]float64 `json:"relayed_calls"`
}

func runOrders(ctx context.Context, h *harness) (report, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	// The triggers through PgBouncer have a database of their own, so
	// that each target's tables grow only with its own orders.
	dbs := map[string][]string{
		"orders_rules":    {demo.Schema, demo.Data, ordersData},
		"orders_triggers": {demo.Schema, demo.Data, demo.Triggers, ordersData},
		"orders_bouncer":  {demo.Schema, demo.Data, demo.Triggers, ordersData},
		"orders_none":     {demo.Schema, demo.Data, ordersData},
		"orders_noguard":  {demo.Schema, demo.Data, ordersData},
	}
	if err := createDatabases(ctx, pg, dbs); err != nil {
		return nil, err
	}
	bouncer, err := h.pgbouncer(ctx)
	if err != nil {
		return nil, err
	}
	rules, err := h.pgrules(ctx)
	if err != nil {
		return nil, err
	}
	urls := map[string]string{
		ordersPgrules:   url(rules, "orders_rules"),
		ordersTriggers:  pg.URL(tempdb.SuperUser, "orders_triggers"),
		ordersBouncer:   url(bouncer, "orders_bouncer"),
		ordersNone:      pg.URL(tempdb.SuperUser, "orders_none"),
		ordersUnguarded: url(rules, "orders_noguard"),
	}
	for _, t := range []string{ordersPgrules, ordersUnguarded} {
		if err := demo.Exec(ctx, urls[t], demo.Rules); err != nil {
			return nil, fmt.Errorf("define the rules through pgrules: %w", err)
		}
	}
	if err := demo.Exec(ctx, pg.URL(tempdb.SuperUser, "orders_noguard"), dropGuards); err != nil {
		return nil, fmt.Errorf("drop the guards: %w", err)
	}
	script := filepath.Join(h.tmp, "orders.sql")
	if err := os.WriteFile(script, []byte(ordersScript), 0o644); err != nil {
		return nil, err
	}
	rep := &ordersReport{Customers: ordersCustomers, DurationS: seconds(h.opts.duration), WarmupS: seconds(h.opts.warmup), Repeat: h.opts.repeat}
	procs := map[string]*server{ordersPgrules: h.rulesSrv, ordersUnguarded: h.rulesSrv, ordersBouncer: h.bouncerSrv}
	for _, mode := range proxyModes {
		for _, clients := range creditClients {
			cell, err := h.ordersCell(ctx, script, mode, clients, urls, procs, len(rep.Cells))
			if err != nil {
				return nil, err
			}
			rep.Cells = append(rep.Cells, cell)
		}
	}
	rep.Goals = rep.goals()
	if rep.Trips, err = transactionTrips(ctx, urls[ordersPgrules]); err != nil {
		return nil, err
	}
	rep.ServerTimes, err = h.serverTimes(ctx, pg, script, "prepared", []serverTarget{
		{ordersPgrules, "orders_rules", urls[ordersPgrules]},
		{ordersUnguarded, "orders_noguard", urls[ordersUnguarded]},
		{ordersTriggers, "orders_triggers", urls[ordersTriggers]},
	})
	if err != nil {
		return nil, err
	}
	if rep.Writes, err = h.ordersWrites(ctx, script, rules, pg.Port); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A count that fails (strace not installed, or not allowed to
		// trace) costs its table, not the measurements above.
		rep.WritesSkipped = err.Error()
		h.logf("orders: writes to PostgreSQL not counted: %v", err)
	}
	return rep, nil
}

// ordersCell runs every target -repeat times in one mode with clients
// clients, each run after a warm-up. The order of the targets rotates by
// one from run to run and, with turn (the cell's number), from cell to
// cell, so that a steady drift in the machine's load does not always land
// on the same target.
func (h *harness) ordersCell(ctx context.Context, script, mode string, clients int, urls map[string]string, procs map[string]*server, turn int) (ordersCell, error) {
	cell := ordersCell{Protocol: mode, Clients: clients, Threads: min(clients, 2), Results: map[string]*ordersResult{}}
	for _, t := range ordersTargets {
		cell.Results[t] = &ordersResult{}
	}
	for run := 1; run <= h.opts.repeat; run++ {
		for i := range ordersTargets {
			t := ordersTargets[(i+turn+run)%len(ordersTargets)]
			args := func(d time.Duration) []string {
				return []string{"-n", "-f", script, "-M", mode, "-T", strconv.Itoa(seconds(d)),
					"-c", strconv.Itoa(clients), "-j", strconv.Itoa(cell.Threads), urls[t]}
			}
			// The warm-up lets pgrules analyse the statements' shapes and
			// every target fill its caches before it is timed.
			if h.opts.warmup > 0 {
				if _, err := h.pgbenchCPU(ctx, nil, args(h.opts.warmup), clients); err != nil {
					return cell, fmt.Errorf("orders %s, %s, %d clients, warm-up: %w", t, mode, clients, err)
				}
			}
			r, err := h.pgbenchCPU(ctx, procs[t], args(h.opts.duration), clients)
			if err != nil {
				return cell, fmt.Errorf("orders %s, %s, %d clients: %w", t, mode, clients, err)
			}
			cell.Results[t].Runs = append(cell.Results[t].Runs, r)
			h.logf("orders %-8s %d clients run %d/%d  %-18s %7.0f tps%s", mode, clients, run, h.opts.repeat, t, r.TPS, cpuNote(r))
		}
	}
	cell.summarise()
	return cell, nil
}

// ordersWrites counts pgrules' writes to PostgreSQL and its system calls
// per transaction in each mode, with the rules and without logic.
func (h *harness) ordersWrites(ctx context.Context, script string, rules, pgPort int) ([]ordersWrites, error) {
	if _, err := exec.LookPath("strace"); err != nil {
		return nil, errors.New("strace is not installed")
	}
	var out []ordersWrites
	for _, mode := range proxyModes {
		w := ordersWrites{Protocol: mode}
		for _, tg := range []struct {
			db     string
			writes *float64
			calls  *map[string]float64
		}{{"orders_rules", &w.Pgrules, &w.PgrulesCalls}, {"orders_none", &w.Relayed, &w.RelayedCalls}} {
			n, calls, err := h.callsPerTx(ctx, url(rules, tg.db), script, mode, pgPort)
			if err != nil {
				return nil, fmt.Errorf("counting failed: %w", err)
			}
			*tg.writes, *tg.calls = n, calls
		}
		h.logf("orders %-8s writes to PostgreSQL per transaction: %.1f through pgrules, %.1f relayed", mode, w.Pgrules, w.Relayed)
		out = append(out, w)
	}
	return out, nil
}

// pgbenchCPU runs pgbench with args and reads proc's CPU time around it,
// when proc is not nil.
func (h *harness) pgbenchCPU(ctx context.Context, proc *server, args []string, clients int) (ordersRun, error) {
	var r ordersRun
	var before time.Duration
	var err error
	if proc != nil {
		if before, err = proc.cpu(); err != nil {
			return r, err
		}
	}
	out, err := h.pgbench(ctx, args...)
	if err != nil {
		return r, err
	}
	if r.pgbenchRun, err = parsePgbench(out, clients); err != nil {
		return r, err
	}
	if proc != nil {
		after, err := proc.cpu()
		if err != nil {
			return r, err
		}
		ms := float64(after-before) / float64(time.Millisecond)
		r.ProxyCPUMS = &ms
	}
	return r, nil
}

func cpuNote(r ordersRun) string {
	if r.ProxyCPUMS == nil {
		return ""
	}
	return fmt.Sprintf(", proxy CPU %.3f ms/tx", *r.ProxyCPUMS/float64(r.Transactions))
}

// callsPerTx counts pgrules' writes to PostgreSQL (on pgPort), and its
// system calls by name, for the order transaction at 1 client against
// url: the difference between two runs of ordersWriteTxs transactions, so
// that what a connection does once (its start-up, the first preparing)
// cancels out. A run before, not traced, leaves out what pgrules does
// once per database (its first session there starts the catalog's
// watcher and the outbox's dispatcher, each with a connection of its
// own). Only connections with a write per transaction or more count
// among the writes (see countCalls).
func (h *harness) callsPerTx(ctx context.Context, url, script, mode string, pgPort int) (float64, map[string]float64, error) {
	bench := func(txs int) error {
		out, err := h.pgbench(ctx, "-n", "-f", script, "-M", mode, "-t", strconv.Itoa(txs), "-c", "1", url)
		if err != nil {
			return err
		}
		_, err = parsePgbench(out, 1)
		return err
	}
	if err := bench(ordersWriteTxs[0]); err != nil {
		return 0, nil, err
	}
	var counts [2]straceCount
	for i, txs := range ordersWriteTxs {
		c, err := h.straceCalls(ctx, h.rulesSrv, pgPort, txs, func() error { return bench(txs) })
		if err != nil {
			return 0, nil, err
		}
		counts[i] = c
	}
	calls := map[string]float64{}
	for name := range counts[1].calls {
		calls[name] = perTx([2]int{counts[0].calls[name], counts[1].calls[name]}, ordersWriteTxs)
	}
	return perTx([2]int{counts[0].writes, counts[1].writes}, ordersWriteTxs), calls, nil
}

// perTx is what the second of two runs counted more than the first, per
// transaction it ran more.
func perTx(counts, txs [2]int) float64 {
	return float64(counts[1]-counts[0]) / float64(txs[1]-txs[0])
}

func (c *ordersCell) summarise() {
	for _, r := range c.Results {
		var tps, cpu []float64
		for _, run := range r.Runs {
			tps = append(tps, run.TPS)
			if run.ProxyCPUMS != nil && run.Transactions > 0 {
				cpu = append(cpu, *run.ProxyCPUMS/float64(run.Transactions))
			}
		}
		r.TPS = median(tps)
		if len(cpu) > 0 {
			m := median(cpu)
			r.CPUMSPerTx = &m
		}
	}
	p := c.Results[ordersPgrules].TPS
	c.RatioTriggers = p / c.Results[ordersTriggers].TPS
	c.RatioBouncer = p / c.Results[ordersBouncer].TPS
	c.RatioNone = p / c.Results[ordersNone].TPS
	c.RatioGuard = p / c.Results[ordersUnguarded].TPS
}

func (r *ordersReport) goals() []goal {
	type check struct {
		g     goal
		parts []string
	}
	checks := []*check{
		{g: goal{Name: fmt.Sprintf("pgrules >= %.1f x triggers at %d clients, every protocol", ordersTargetRatio, targetClients), Met: true}},
		{g: goal{Name: fmt.Sprintf("gate: pgrules >= %.1f x triggers through PgBouncer at 1 client, every protocol", ordersTargetRatio), Met: true}},
		{g: goal{Name: fmt.Sprintf("aim: pgrules >= %.1f x triggers directly at 1 client, every protocol", ordersTargetRatio), Met: true}},
		{g: goal{Name: fmt.Sprintf("the guard: pgrules >= %.2f x pgrules without its guard, every protocol and client count", ordersGuardRatio), Met: true}},
	}
	add := func(c *check, protocol string, ratio float64) {
		target := ordersTargetRatio
		if c == checks[3] {
			target = ordersGuardRatio
		}
		ok := ratio >= target
		c.g.Met = c.g.Met && ok
		c.parts = append(c.parts, fmt.Sprintf("%s %.2f%s", protocol, ratio, mark(ok)))
	}
	for _, c := range r.Cells {
		add(checks[3], fmt.Sprintf("%s/%d", c.Protocol, c.Clients), c.RatioGuard)
		switch c.Clients {
		case targetClients:
			add(checks[0], c.Protocol, c.RatioTriggers)
		case 1:
			add(checks[1], c.Protocol, c.RatioBouncer)
			add(checks[2], c.Protocol, c.RatioTriggers)
		}
	}
	var out []goal
	for _, c := range checks {
		c.g.Detail = strings.Join(c.parts, ", ")
		out = append(out, c.g)
	}
	return out
}

func (r *ordersReport) print(w io.Writer) {
	fmt.Fprintf(w, "check-credit order transaction with little contention (one of %d customers at random; insert an order, two lines, update a line, pay the order);\n", r.Customers)
	fmt.Fprintf(w, "%ds per run after a %ds warm-up, targets interleaved; median of %d run(s); CPU = the proxy process's CPU time per transaction\n\n", r.DurationS, r.WarmupS, r.Repeat)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tclients\tpgrules TPS\tCPU ms/tx\twithout guard TPS\ttriggers TPS\tvia PgBouncer TPS\tCPU ms/tx\tno logic TPS\tpgrules/triggers\tpgrules/via PgBouncer\tpgrules/no logic\tguarded/unguarded\t")
	for _, c := range r.Cells {
		res := c.Results
		fmt.Fprintf(tw, "%-8s\t%d\t%.0f\t%s\t%.0f\t%.0f\t%.0f\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%.3f\t\n", c.Protocol, c.Clients,
			res[ordersPgrules].TPS, optMS(res[ordersPgrules].CPUMSPerTx), res[ordersUnguarded].TPS, res[ordersTriggers].TPS,
			res[ordersBouncer].TPS, optMS(res[ordersBouncer].CPUMSPerTx), res[ordersNone].TPS,
			c.RatioTriggers, c.RatioBouncer, c.RatioNone, c.RatioGuard)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, g := range r.Goals {
		verdict := "MET"
		if !g.Met {
			verdict = "NOT MET"
		}
		fmt.Fprintf(w, "target: %s: %s (%s)\n", g.Name, verdict, g.Detail)
	}
	total := 0
	fmt.Fprintf(w, "\nround trips from pgrules to PostgreSQL per statement of one transaction in the simple protocol, as the engine's trace reports them:\n")
	for _, t := range r.Trips {
		fmt.Fprintf(w, "  %2d  %s\n", t.Trips, t.Statement)
		total += t.Trips
	}
	fmt.Fprintf(w, "  %2d  in all\n", total)
	printServerTimes(w, r.ServerTimes)
	if cost, share, ok := r.guardServerCost(); ok {
		fmt.Fprintf(w, "  the guard: %.3f ms of PostgreSQL's time per transaction (%.1f%% of pgrules')\n", cost, share)
	}
	if r.WritesSkipped != "" {
		fmt.Fprintf(w, "\nwrites to PostgreSQL's sockets per transaction: not counted: %s\n", r.WritesSkipped)
		return
	}
	fmt.Fprintf(w, "\nwrites by pgrules to PostgreSQL's sockets per transaction (strace, 1 client, %d transactions less %d):\n", ordersWriteTxs[1], ordersWriteTxs[0])
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\twith the rules\tno logic (relayed)\t")
	for _, x := range r.Writes {
		fmt.Fprintf(tw, "%-8s\t%.1f\t%.1f\t\n", x.Protocol, x.Pgrules, x.Relayed)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nsystem calls of the pgrules process per transaction, with the rules / relayed (the same strace runs; every thread):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "protocol\t")
	for _, name := range printedCalls {
		fmt.Fprintf(tw, "%s\t", name)
	}
	fmt.Fprintln(tw)
	for _, x := range r.Writes {
		fmt.Fprintf(tw, "%-8s\t", x.Protocol)
		for _, name := range printedCalls {
			fmt.Fprintf(tw, "%.1f / %.1f\t", x.PgrulesCalls[name], x.RelayedCalls[name])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// printedCalls are the columns of the system calls' table: Go's network
// poller reads until a read would block (read), then waits (epoll_pwait);
// a goroutine woken on another thread costs a futex, and a thread that
// spins for work before it sleeps a nanosleep.
var printedCalls = []string{"write", "read", "epoll_pwait", "futex", "nanosleep"}

// guardServerCost is what the guard adds to PostgreSQL's time per
// transaction, and its share of the time with the guard.
func (r *ordersReport) guardServerCost() (cost, share float64, ok bool) {
	var with, without *serverTime
	for i := range r.ServerTimes {
		switch r.ServerTimes[i].Target {
		case ordersPgrules:
			with = &r.ServerTimes[i]
		case ordersUnguarded:
			without = &r.ServerTimes[i]
		}
	}
	if with == nil || without == nil || with.MSPerTx == 0 {
		return 0, 0, false
	}
	cost = with.MSPerTx - without.MSPerTx
	return cost, 100 * cost / with.MSPerTx, true
}

func optMS(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *v)
}
