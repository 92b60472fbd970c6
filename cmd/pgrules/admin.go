package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/catalog/watch"
	"github.com/pgrules/pgrules/rules"
	"github.com/pgrules/pgrules/rules/compiler"
	pgsql "github.com/pgrules/pgrules/sql"
)

// catalogConnector opens the proxy's own connections (the catalog's, the
// outbox's), with the upstream URL's credentials, to the database a client
// chose.
func catalogConnector(upstream, sslmode, application string) func(ctx context.Context, database string) (*pgx.Conn, error) {
	return func(ctx context.Context, database string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(withSSLMode(upstream, sslmode))
		if err != nil {
			return nil, err
		}
		cfg.Database = database
		cfg.RuntimeParams["application_name"] = application
		return pgx.ConnectConfig(ctx, cfg)
	}
}

// withSSLMode sets sslmode in a URL or keyword/value connection string.
func withSSLMode(conn, sslmode string) string {
	if sslmode == "" {
		return conn
	}
	if u, err := url.Parse(conn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("sslmode", sslmode)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " sslmode=" + sslmode
}

func installSchema(ctx context.Context, conn *pgx.Conn) error {
	_, _, err := pgsql.Install(ctx, conn)
	return err
}

// adminFlags are the flags of the commands that work on one database.
type adminFlags struct {
	upstream string
	sslmode  string
	// table is --table, which verify and rebuild take (registered when
	// withTable is set).
	table     string
	withTable bool
}

func (f *adminFlags) connect(ctx context.Context, name, summary string, args []string) (*pgx.Conn, []string, error) {
	fs := newFlagSet(name, summary)
	fs.StringVar(&f.upstream, "upstream", "", "URL of the PostgreSQL database, e.g. postgres://user@127.0.0.1:5432/shop")
	fs.StringVar(&f.sslmode, "upstream-sslmode", "", "sslmode for the connection; overrides the URL's")
	if f.withTable {
		fs.StringVar(&f.table, "table", "", "only this table ('table' or 'schema.table'); the same as naming it after the flags")
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, nil, err
	}
	if f.upstream == "" {
		return nil, nil, errors.New("--upstream (or PGRULES_UPSTREAM) is required")
	}
	conn, err := pgx.Connect(ctx, withSSLMode(f.upstream, f.sslmode))
	if err != nil {
		return nil, nil, err
	}
	return conn, fs.Args(), nil
}

func install(ctx context.Context, args []string, out io.Writer) error {
	var f adminFlags
	conn, _, err := f.connect(ctx, "install", "Installs or upgrades the pgrules schema in the database of --upstream. Rules already defined are kept.", args)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	from, to, err := pgsql.Install(ctx, conn)
	if err != nil {
		return err
	}
	switch {
	case from == 0:
		fmt.Fprintf(out, "installed the pgrules schema, version %d\n", to)
	case from == to:
		fmt.Fprintf(out, "the pgrules schema is up to date (version %d)\n", to)
	default:
		fmt.Fprintf(out, "upgraded the pgrules schema from version %d to %d\n", from, to)
	}
	return nil
}

func explain(ctx context.Context, args []string, out io.Writer) error {
	var f adminFlags
	conn, rest, err := f.connect(ctx, "explain", "Shows the rules of a table in the order they run, what each reads, and what depends on it.\nUsage: pgrules explain --upstream URL <table>", args)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if len(rest) != 1 {
		return errors.New("name one table: pgrules explain --upstream URL <table>")
	}
	snap, err := catalog.Load(ctx, watch.PgxQuerier(conn))
	if err != nil {
		return err
	}
	t := snap.Lookup(rest[0])
	if t == nil {
		return fmt.Errorf("no table %q in database %s", rest[0], snap.Database)
	}
	set := compiler.Compile(snap)
	for _, e := range set.Errors() {
		fmt.Fprintf(out, "broken: %s\n", e.Message)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "#\trule\tkind\ttarget\treads\tdepends on\tused by")
	for _, e := range set.Explain(t.QualifiedName()) {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.Rule, e.Kind, e.Target,
			strings.Join(e.Reads, ", "), strings.Join(e.DependsOn, ", "), strings.Join(e.UsedBy, ", "))
	}
	return w.Flush()
}

// maintain runs verify or rebuild (rebuild in one transaction).
func maintain(ctx context.Context, args []string, out io.Writer, rebuild bool) error {
	f := adminFlags{withTable: true}
	name, summary := "verify", "Recomputes every derived column from scratch (set-based SQL) and lists the rows that drift.\nUsage: pgrules verify --upstream URL [--table T | T]"
	if rebuild {
		name, summary = "rebuild", "Sets every derived column to its definition, in dependency order, and says how many rows each rule corrected.\nUsage: pgrules rebuild --upstream URL [--table T | T]"
	}
	conn, rest, err := f.connect(ctx, name, summary, args)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if f.table != "" {
		rest = append(rest, f.table)
	}
	if len(rest) > 1 {
		return fmt.Errorf("name at most one table: pgrules %s --upstream URL [--table T]", name)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	q := watch.PgxQuerier(conn)
	snap, err := catalog.Load(ctx, q)
	if err != nil {
		return err
	}
	table := ""
	if len(rest) == 1 {
		t := snap.Lookup(rest[0])
		if t == nil {
			return fmt.Errorf("no table %q in database %s", rest[0], snap.Database)
		}
		table = t.QualifiedName()
	}
	set := compiler.Compile(snap)
	if !rebuild {
		drift, err := rules.Verify(ctx, q, snap, set, table)
		if err != nil {
			return err
		}
		for _, d := range drift {
			fmt.Fprintln(out, d)
		}
		if len(drift) > 0 {
			return fmt.Errorf("%d rows drift from their rules (pgrules rebuild corrects them)", len(drift))
		}
		fmt.Fprintln(out, "no drift")
		return nil
	}
	fixed, err := rules.Rebuild(ctx, q, snap, set, table)
	if err != nil {
		return err
	}
	for _, r := range fixed {
		fmt.Fprintf(out, "%s: %d rows corrected\n", r.Rule, r.Rows)
	}
	return tx.Commit(ctx)
}
