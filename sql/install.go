package sql

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/pgerr"
)

// Version is the schema version this binary installs: its number of
// migrations.
const Version = 5

var (
	//go:embed migrations/*.sql
	migrationFS embed.FS
	//go:embed functions.sql
	functions string
	//go:embed ddl_trigger.sql
	ddlTrigger string
)

// installLock is the advisory lock that serializes Install across proxies
// starting at once: "pgrule" in ASCII. The definition functions take
// another ("pgrules"), so rules can be defined while a proxy starts.
const installLock int64 = 0x7067_7275_6c65

// functionsStamp identifies this binary's functions.sql. Install records
// it in the database (as what pgrules._functions_stamp() returns) and runs
// functions.sql only when the recorded one differs: re-creating the views
// and the rule table's trigger takes locks that would queue the catalog
// loads of every proxy behind any open transaction that has read the
// rules, each time a proxy starts.
var functionsStamp = fmt.Sprintf("version %d, functions.sql sha256 %x", Version, sha256.Sum256([]byte(functions)))

// Install creates or upgrades the pgrules schema in conn's database, in
// one transaction, and returns the version found (0 when there was none)
// and the version now installed. Migrations missing from the database run
// once each, in order; functions.sql then runs if it changed. Installing
// again is a no-op, and concurrent installs wait for each other. A schema
// newer than this binary is reported with SQLSTATE 55000 and left alone.
//
// conn must not be in a transaction.
func Install(ctx context.Context, conn *pgx.Conn) (from, to int, err error) {
	return installUpTo(ctx, conn, Version)
}

// installUpTo is Install stopping at version, without functions.sql unless
// version is Version: the upgrade test makes old schemas with it.
func installUpTo(ctx context.Context, conn *pgx.Conn, version int) (from, to int, err error) {
	steps, err := migrations()
	if err != nil {
		return 0, 0, err
	}
	if conn.PgConn().TxStatus() != 'I' {
		// BEGIN would only warn, and our COMMIT would end the caller's
		// transaction.
		return 0, 0, errors.New("install the pgrules schema: the connection is in a transaction")
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", installLock); err != nil {
		return 0, 0, fmt.Errorf("install the pgrules schema: %w", err)
	}
	if from, err = installed(ctx, tx); err != nil {
		return 0, 0, err
	}
	if from > Version {
		return from, from, pgerr.New(pgerr.ObjectNotInPrereqState,
			"the pgrules schema of this database is version %d, newer than this pgrules (version %d): upgrade pgrules", from, Version)
	}
	if from == 0 {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS pgrules"); err != nil {
			return 0, 0, fmt.Errorf("create schema pgrules: %w", err)
		}
	}
	for v := from + 1; v <= version; v++ {
		if _, err := tx.Exec(ctx, steps[v-1]); err != nil {
			return from, from, fmt.Errorf("pgrules schema migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pgrules.schema_version (version) VALUES ($1)", v); err != nil {
			return from, from, fmt.Errorf("pgrules schema migration %d: %w", v, err)
		}
	}
	if version == Version {
		if err := installFunctions(ctx, tx); err != nil {
			return from, from, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return from, from, fmt.Errorf("install the pgrules schema: %w", err)
	}
	return from, max(from, version), nil
}

// installed returns the schema version of the database, 0 when it has none.
func installed(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('pgrules.schema_version') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read the pgrules schema version: %w", err)
	}
	var version int
	if exists {
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgrules.schema_version").Scan(&version); err != nil {
			return 0, fmt.Errorf("read the pgrules schema version: %w", err)
		}
	}
	return version, nil
}

// installFunctions runs functions.sql unless the database has this very
// one already, and ddl_trigger.sql when it is new or missing and the role
// may create event triggers (only a superuser may).
func installFunctions(ctx context.Context, tx pgx.Tx) error {
	var stamped, super, hasTrigger bool
	err := tx.QueryRow(ctx, `SELECT to_regprocedure('pgrules._functions_stamp()') IS NOT NULL,
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
		EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgrules_ddl')`).Scan(&stamped, &super, &hasTrigger)
	if err != nil {
		return fmt.Errorf("install the pgrules functions: %w", err)
	}
	var stamp string
	if stamped {
		if err := tx.QueryRow(ctx, "SELECT pgrules._functions_stamp()").Scan(&stamp); err != nil {
			return fmt.Errorf("install the pgrules functions: %w", err)
		}
	}
	changed := stamp != functionsStamp
	if changed {
		if _, err := tx.Exec(ctx, functions); err != nil {
			return fmt.Errorf("install the pgrules functions: %w", err)
		}
		// The stamp holds only digits, letters, spaces and commas.
		if _, err := tx.Exec(ctx, `CREATE OR REPLACE FUNCTION pgrules._functions_stamp() RETURNS text
			LANGUAGE sql IMMUTABLE AS $$ SELECT '`+functionsStamp+`'::text $$`); err != nil {
			return fmt.Errorf("install the pgrules functions: %w", err)
		}
	}
	if super && (changed || !hasTrigger) {
		if _, err := tx.Exec(ctx, ddlTrigger); err != nil {
			return fmt.Errorf("install the pgrules event trigger: %w", err)
		}
	}
	return nil
}

// migrations returns the migration scripts in order, checking that they
// are numbered from 1 without a gap up to Version.
func migrations() ([]string, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	steps := make([]string, 0, len(entries))
	for i, e := range entries { // ReadDir sorts by name
		n, _, _ := strings.Cut(e.Name(), "_")
		if v, err := strconv.Atoi(n); err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s is out of sequence", e.Name())
		}
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		steps = append(steps, string(b))
	}
	if len(steps) != Version {
		return nil, fmt.Errorf("%d migrations for schema version %d", len(steps), Version)
	}
	return steps, nil
}
