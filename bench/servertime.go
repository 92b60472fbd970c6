package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/pgrules/pgrules/internal/tempdb"
)

// The server's side of the order transaction: what PostgreSQL spends
// planning and executing the statements it receives, per transaction,
// through pgrules (the engine's statements) and with the triggers (the
// client's statements, with the triggers' work inside them). The cluster
// loads pg_stat_statements with tracking off, so that it costs the timed
// runs nothing; this step turns it on for one database at a time, for the
// connections opened after it.

// serverTimeTxs are the transactions of the measured run, after
// serverTimeWarmTxs not measured.
const (
	serverTimeTxs     = 500
	serverTimeWarmTxs = 50
)

// statsSettings are the cluster's settings that load pg_stat_statements
// with nothing tracked.
var statsSettings = map[string]string{
	"shared_preload_libraries":  "'pg_stat_statements'",
	"pg_stat_statements.track":  "none",
	"pg_stat_statements.max":    "1000",
	"pg_stat_statements.save":   "off",
	"track_activity_query_size": "4096",
}

type serverTime struct {
	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	// MSPerTx is the planning and execution time of every statement of
	// the database per transaction.
	MSPerTx    float64           `json:"ms_per_tx"`
	Statements []serverStatement `json:"statements"`
}

type serverStatement struct {
	Query      string  `json:"query"`
	CallsPerTx float64 `json:"calls_per_tx"`
	PlanMS     float64 `json:"mean_plan_ms"`
	ExecMS     float64 `json:"mean_exec_ms"`
	MSPerTx    float64 `json:"ms_per_tx"`
}

// serverTimes measures the server time of the order transaction in
// database db reached through url, for each target, at 1 client.
func (h *harness) serverTimes(ctx context.Context, pg *tempdb.Cluster, script, mode string, targets []serverTarget) ([]serverTime, error) {
	admin := pg.URL(tempdb.SuperUser, "postgres")
	if _, err := execSQL(ctx, admin, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		return nil, err
	}
	var out []serverTime
	for _, t := range targets {
		st, err := h.serverTime(ctx, admin, script, mode, t)
		if err != nil {
			return nil, fmt.Errorf("server time of %s: %w", t.name, err)
		}
		h.logf("orders %-8s server time per transaction  %-18s %.3f ms", mode, t.name, st.MSPerTx)
		out = append(out, st)
	}
	return out, nil
}

type serverTarget struct {
	name, db, url string
}

func (h *harness) serverTime(ctx context.Context, admin, script, mode string, t serverTarget) (serverTime, error) {
	st := serverTime{Target: t.name, Protocol: mode}
	on := fmt.Sprintf("ALTER DATABASE %s SET pg_stat_statements.track = 'top'; ALTER DATABASE %[1]s SET pg_stat_statements.track_planning = on", t.db)
	if _, err := execSQL(ctx, admin, on); err != nil {
		return st, err
	}
	defer func() {
		_, _ = execSQL(context.Background(), admin, fmt.Sprintf("ALTER DATABASE %s RESET pg_stat_statements.track; ALTER DATABASE %[1]s RESET pg_stat_statements.track_planning", t.db))
	}()
	run := func(txs int) error {
		_, err := h.pgbench(ctx, "-n", "-f", script, "-M", mode, "-t", strconv.Itoa(txs), "-c", "1", t.url)
		return err
	}
	if err := run(serverTimeWarmTxs); err != nil {
		return st, err
	}
	if _, err := execSQL(ctx, admin, "SELECT pg_stat_statements_reset()"); err != nil {
		return st, err
	}
	if err := run(serverTimeTxs); err != nil {
		return st, err
	}
	res, err := execSQL(ctx, admin, fmt.Sprintf(`SELECT query, calls, total_plan_time, total_exec_time
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = '%s' AND s.toplevel
ORDER BY total_plan_time + total_exec_time DESC`, t.db))
	if err != nil {
		return st, err
	}
	for _, row := range res[0].Rows {
		calls, _ := strconv.ParseFloat(string(row[1]), 64)
		plan, _ := strconv.ParseFloat(string(row[2]), 64)
		exec, _ := strconv.ParseFloat(string(row[3]), 64)
		if calls == 0 {
			continue
		}
		s := serverStatement{
			Query:      strings.Join(strings.Fields(string(row[0])), " "),
			CallsPerTx: calls / serverTimeTxs,
			PlanMS:     plan / calls,
			ExecMS:     exec / calls,
			MSPerTx:    (plan + exec) / serverTimeTxs,
		}
		st.MSPerTx += s.MSPerTx
		st.Statements = append(st.Statements, s)
	}
	return st, nil
}

// printServerTimes prints each target's time per transaction and its
// statements that cost the most of it.
func printServerTimes(w io.Writer, times []serverTime) {
	if len(times) == 0 {
		return
	}
	fmt.Fprintf(w, "\nPostgreSQL's planning and execution time per transaction (pg_stat_statements, top-level statements, 1 client, %s protocol, %d transactions):\n", times[0].Protocol, serverTimeTxs)
	for _, t := range times {
		fmt.Fprintf(w, "  %s: %.3f ms per transaction\n", t.Target, t.MSPerTx)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "    ms/tx\tcalls/tx\tplan ms\texec ms\t statement")
		for i, s := range t.Statements {
			if i == 12 {
				break
			}
			fmt.Fprintf(tw, "    %.3f\t%.2f\t%.3f\t%.3f\t %s\n", s.MSPerTx, s.CallsPerTx, s.PlanMS, s.ExecMS, clip(s.Query, 160))
		}
		tw.Flush()
	}
}

// clip shortens s to its first n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
