package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
)

// The "events" section: the check-credit order transaction with an audit
// row event and an after-commit notify on orders, through pgrules, against
// the same logic as PL/pgSQL triggers (the audit insert in a trigger, the
// notify with pg_notify); the round trips each statement of the
// transaction costs with the events and without them; and the outbox's
// throughput, posts delivered per second to a local HTTP server.

// eventsSchema is the audit table both sides write.
const eventsSchema = `CREATE TABLE order_audit (id bigserial PRIMARY KEY, order_id integer NOT NULL, verb text NOT NULL, total numeric(14,2));`

// eventsRules are the events pgrules runs.
const eventsRules = `
SELECT pgrules.event('orders', 'row', 'insert("order_audit", {order_id: row.id, verb: verb, total: verb == "delete" ? nil : row.amount_total})', name => 'audit_orders');
SELECT pgrules.event('orders', 'after_commit', 'notify("orders", string(row.id))', name => 'announce_orders');`

// eventsTriggers are the same events as triggers, beside triggers.sql.
const eventsTriggers = `
CREATE FUNCTION audit_orders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO order_audit (order_id, verb) VALUES (OLD.id, 'delete');
    PERFORM pg_notify('orders', OLD.id::text);
    RETURN OLD;
  END IF;
  INSERT INTO order_audit (order_id, verb, total) VALUES (NEW.id, lower(TG_OP), NEW.amount_total);
  PERFORM pg_notify('orders', NEW.id::text);
  RETURN NEW;
END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION audit_orders();`

// outboxEntries is how many posts the throughput run delivers, over
// outboxKeys keys.
const (
	outboxEntries = 20000
	outboxKeys    = 1000
)

type eventsReport struct {
	DurationS int          `json:"duration_s"`
	Cells     []eventsCell `json:"cells"`
	// Trips are the engine's round trips for each statement of one order
	// transaction (BEGIN ... COMMIT), with the events and without.
	Trips []eventTrips `json:"round_trips"`
	// Outbox is the dispatcher's throughput.
	Outbox outboxRun `json:"outbox"`
}

type eventsCell struct {
	Clients  int        `json:"clients"`
	Pgrules  pgbenchRun `json:"pgrules"`
	Triggers pgbenchRun `json:"triggers"`
	// Ratio is pgrules TPS / triggers TPS.
	Ratio float64 `json:"ratio_pgrules_triggers"`
}

type eventTrips struct {
	Statement string `json:"statement"`
	Without   int    `json:"without_events"`
	With      int    `json:"with_events"`
}

type outboxRun struct {
	Entries     int     `json:"entries"`
	Keys        int     `json:"keys"`
	Seconds     float64 `json:"seconds"`
	PostsPerSec float64 `json:"posts_per_s"`
}

func (r *eventsReport) print(w io.Writer) {
	fmt.Fprintf(w, "check-credit order transaction with an audit row event and an after-commit notify on orders; %ds per run\n\n", r.DurationS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tpgrules TPS\ttriggers TPS\tpgrules/triggers\t")
	for _, c := range r.Cells {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t\n", c.Clients, c.Pgrules.TPS, c.Triggers.TPS, c.Ratio)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nround trips to PostgreSQL per statement of one order transaction (target: the events add at most one)\n\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "statement\twithout events\twith events\tadded")
	for _, t := range r.Trips {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", t.Statement, t.Without, t.With, t.With-t.Without)
	}
	tw.Flush()
	o := r.Outbox
	fmt.Fprintf(w, "\noutbox: %d posts over %d keys delivered to a local HTTP server in %.2fs: %.0f posts/s (target: at least 5000)\n",
		o.Entries, o.Keys, o.Seconds, o.PostsPerSec)
}

func runEvents(ctx context.Context, h *harness) (report, error) {
	pg, err := h.postgres(ctx)
	if err != nil {
		return nil, err
	}
	limits := "UPDATE customer SET credit_limit = 999999999999"
	dbs := map[string][]string{
		"events_rules":    {demo.Schema, demo.Data, eventsSchema, limits},
		"events_base":     {demo.Schema, demo.Data, eventsSchema, limits},
		"events_triggers": {demo.Schema, demo.Data, demo.Triggers, eventsSchema, eventsTriggers, limits},
	}
	if err := createDatabases(ctx, pg, dbs); err != nil {
		return nil, err
	}
	port, err := h.pgrules(ctx)
	if err != nil {
		return nil, err
	}
	rulesURL, baseURL := url(port, "events_rules"), url(port, "events_base")
	if err := demo.Exec(ctx, rulesURL, demo.Rules, eventsRules); err != nil {
		return nil, fmt.Errorf("define the rules and events through pgrules: %w", err)
	}
	if err := demo.Exec(ctx, baseURL, demo.Rules); err != nil {
		return nil, fmt.Errorf("define the rules through pgrules: %w", err)
	}
	script := filepath.Join(h.tmp, "events.sql")
	if err := os.WriteFile(script, []byte(creditScript), 0o644); err != nil {
		return nil, err
	}
	rep := &eventsReport{DurationS: seconds(h.opts.duration)}
	for _, clients := range creditClients {
		cell := eventsCell{Clients: clients}
		for _, tg := range []struct {
			name, url string
			out       *pgbenchRun
		}{
			{"pgrules", rulesURL, &cell.Pgrules},
			{"triggers", pg.URL(tempdb.SuperUser, "events_triggers"), &cell.Triggers},
		} {
			res, err := h.pgbench(ctx, "-n", "-f", script, "-T", strconv.Itoa(seconds(h.opts.duration)),
				"-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), tg.url)
			if err != nil {
				return nil, err
			}
			if *tg.out, err = parsePgbench(res, clients); err != nil {
				return nil, err
			}
			h.logf("events %-9s %d clients %8.0f tps", tg.name, clients, tg.out.TPS)
		}
		cell.Ratio = cell.Pgrules.TPS / cell.Triggers.TPS
		rep.Cells = append(rep.Cells, cell)
	}
	without, err := transactionTrips(ctx, baseURL)
	if err != nil {
		return nil, err
	}
	with, err := transactionTrips(ctx, rulesURL)
	if err != nil {
		return nil, err
	}
	for i := range with {
		rep.Trips = append(rep.Trips, eventTrips{Statement: with[i].Statement, Without: without[i].Trips, With: with[i].Trips})
	}
	if rep.Outbox, err = outboxThroughput(ctx, rulesURL, pg.URL(tempdb.SuperUser, "events_rules")); err != nil {
		return nil, err
	}
	h.logf("events outbox %.0f posts/s", rep.Outbox.PostsPerSec)
	return rep, nil
}

// transactionTrips runs one order transaction through pgrules with the
// trace on and reads the engine's round trips for each statement.
func transactionTrips(ctx context.Context, url string) ([]statementTrips, error) {
	return orderTrips(ctx, url, true, []string{
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 1, :qty)",
		"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (:id, 2, 1)",
		"UPDATE lineitem SET quantity = quantity + 1 WHERE order_id = :id AND product_id = 1",
		"UPDATE orders SET paid = true WHERE id = :id",
	})
}

// outboxThroughput records outboxEntries posts to an HTTP server of its
// own in one transaction and times their delivery by pgrules' dispatcher
// of the database (which serves it since url's first session).
func outboxThroughput(ctx context.Context, proxyURL, directURL string) (outboxRun, error) {
	run := outboxRun{Entries: outboxEntries, Keys: outboxKeys}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return run, err
	}
	var got atomic.Int64
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if got.Add(1) == outboxEntries {
			close(done)
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	// A session through pgrules makes sure its dispatcher runs.
	if _, err := execSQL(ctx, proxyURL, "SELECT 1"); err != nil {
		return run, err
	}
	if _, err := execSQL(ctx, directURL, "DELETE FROM pgrules.outbox"); err != nil {
		return run, err
	}
	start := time.Now()
	_, err = execSQL(ctx, directURL, fmt.Sprintf(`BEGIN;
INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload)
  SELECT 'bench', 'after_commit', 'public.orders:' || (i %% %d), 'post', 'http://%s/hook', '{"order":' || i || '}'
  FROM generate_series(1, %d) i;
SELECT pg_notify('pgrules_outbox', '');
COMMIT`, outboxKeys, ln.Addr(), outboxEntries))
	if err != nil {
		return run, err
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return run, fmt.Errorf("the outbox delivered %d of %d posts in 5 minutes", got.Load(), outboxEntries)
	case <-ctx.Done():
		return run, ctx.Err()
	}
	run.Seconds = time.Since(start).Seconds()
	run.PostsPerSec = float64(outboxEntries) / run.Seconds
	return run, nil
}
