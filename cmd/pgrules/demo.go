package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/tempdb"
	"github.com/rs/zerolog"
)

func runDemo(ctx context.Context, args []string) error {
	var f serveFlags
	fs := newFlagSet("demo", "Starts a throwaway PostgreSQL in a temporary directory, loads the check-credit\nscenario into database \"demo\", runs the proxy in front of it and defines the\nscenario's rules through it, until Ctrl-C, which stops both and removes the directory.")
	f.register(fs, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := f.logger()
	if err != nil {
		return err
	}
	log.Info().Msg("starting a throwaway PostgreSQL")
	cluster, err := tempdb.Start(tempdb.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := cluster.Destroy(); err != nil {
			log.Warn().Err(err).Msg("removing the throwaway PostgreSQL")
		}
	}()
	if err := loadDemo(ctx, cluster); err != nil {
		return err
	}
	f.upstream = cluster.URL(tempdb.SuperUser, "postgres")
	f.outbox.runAs = cluster.URL("pgrules_dispatch", "postgres")
	cfg, err := f.proxyConfig(log)
	if err != nil {
		return err
	}
	// The receiver of the demo's webhook prints what the outbox delivers.
	hooks, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	receiver := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("\nwebhook received: POST %s %s\n", r.URL.Path, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go receiver.Serve(hooks)
	defer receiver.Close()
	webhook := "http://" + hooks.Addr().String() + "/order-paid"
	// post() reaches no loopback address unless allowed: the demo allows
	// its own receiver, and only it.
	f.outbox.allow = append(f.outbox.allow, hooks.Addr().String())
	return runProxy(ctx, cfg, &f, 5*time.Second, func(addr net.Addr) {
		// The rules are defined through the proxy, as a user would in
		// psql, once it serves (this runs before it does).
		go defineDemo(ctx, log, cluster, addr, webhook)
	})
}

// loadDemo creates database "demo" with the check-credit scenario and the
// roles of SECURITY.md.
func loadDemo(ctx context.Context, cluster *tempdb.Cluster) error {
	if err := demo.Exec(ctx, cluster.URL(tempdb.SuperUser, "postgres"), "CREATE DATABASE demo"); err != nil {
		return err
	}
	if err := demo.Load(ctx, cluster.URL(tempdb.SuperUser, "demo")); err != nil {
		return err
	}
	// The roles of SECURITY.md: the tables belong to demo_owner, clients
	// write them as demo_app, and the dispatcher runs entries as
	// pgrules_dispatch, which has no rights of its own.
	return demo.Exec(ctx, cluster.URL(tempdb.SuperUser, "demo"), demoRoles)
}

// defineDemo defines the scenario's rules and events through the proxy
// serving on addr, gives the tables to the demo's roles and tells the
// user what to try.
func defineDemo(ctx context.Context, log zerolog.Logger, cluster *tempdb.Cluster, addr net.Addr, webhook string) {
	proxyURL := fmt.Sprintf("postgres://%s@127.0.0.1:%s/demo?sslmode=disable", tempdb.SuperUser, portOf(addr))
	if err := demo.Exec(ctx, proxyURL, demo.Rules, strings.ReplaceAll(demo.Events, "{{webhook}}", webhook)); err != nil {
		log.Error().Err(err).Msg("defining the check-credit rules and the demo's events")
		return
	}
	if err := demo.Exec(ctx, cluster.URL(tempdb.SuperUser, "demo"), demoGrants); err != nil {
		log.Error().Err(err).Msg("granting the demo's roles")
		return
	}
	fmt.Printf(`
pgrules demo is running: PostgreSQL %s (data in %s), pgrules on %s.
The check-credit scenario (customer, orders, lineitem, product) is in database "demo",
with its rules (rules.sql) defined through pgrules: SELECT * FROM pgrules.rules;

Connect as the application's role, which may write the tables and nothing else:

    psql "postgres://demo_app@127.0.0.1:%s/demo?sslmode=disable"

and try, for instance:

    SET pgrules.trace = on;
    BEGIN;
    INSERT INTO orders (customer_id) VALUES (1) RETURNING id, code;
    INSERT INTO lineitem (order_id, product_id, quantity) VALUES (currval('orders_id_seq'), 2, 3) RETURNING *;
    COMMIT;
    SELECT name, balance, unpaid_order_count FROM customer;
    SELECT * FROM order_audit;
    INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 100);   -- over the credit limit
    INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 2, 5000);  -- vetoed: 22023
    INSERT INTO orders (customer_id) VALUES (1);                                -- no lines: refused at commit
    UPDATE orders SET paid = true WHERE id = 1;                                 -- the webhook prints here

The outbox is the engine's alone; its owner (postgres) reads it:

    psql "postgres://postgres@127.0.0.1:%[4]s/demo?sslmode=disable" -c "SELECT id, kind, target, role, state FROM pgrules.outbox"

The events are in events.sql: SELECT name, timing, expression FROM pgrules.rules WHERE kind = 'event';

Press Ctrl-C to stop both and remove the data.

`, "on port "+fmt.Sprint(cluster.Port), cluster.Dir, addr, portOf(addr))
}

// demoRoles is the role setup of SECURITY.md for the demo's database.
const demoRoles = `
CREATE ROLE demo_owner NOLOGIN;
CREATE ROLE demo_app LOGIN;
CREATE ROLE pgrules_dispatch LOGIN NOINHERIT;
GRANT demo_app TO pgrules_dispatch;
`

// demoGrants gives the demo's tables and sequences, those of the events
// included, to demo_owner, and demo_app what it needs to write them.
const demoGrants = `
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND (c.relkind IN ('r', 'p') OR c.relkind = 'S' AND NOT EXISTS (
             SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))) LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO demo_owner', r.rel);
  END LOOP;
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO demo_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO demo_app;
`
