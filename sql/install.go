package sql

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgrules/pgrules/pgerr"
)

// Version is the schema version this binary installs.
const Version = 2

var (
	//go:embed migrations/*.sql
	migrations embed.FS
	//go:embed functions.sql
	functions string
	//go:embed ddl_trigger.sql
	ddlTrigger string
)

// installLock serializes installs by several proxies starting at once.
const installLock = 0x7067_7275_6c65 // "pgrule"

// Install creates or upgrades the pgrules schema in conn's database, in one
// transaction. It returns the version found (0 when there was none) and the
// version now installed. A schema newer than this binary is left alone and
// reported with 55000.
func Install(ctx context.Context, conn *pgx.Conn) (from, to int, err error) {
	return installUpTo(ctx, conn, Version)
}

func installUpTo(ctx context.Context, conn *pgx.Conn, version int) (from, to int, err error) {
	steps, err := migrationFiles()
	if err != nil {
		return 0, 0, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(installLock)); err != nil {
		return 0, 0, err
	}
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('pgrules.schema_version') IS NOT NULL").Scan(&exists); err != nil {
		return 0, 0, err
	}
	if exists {
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgrules.schema_version").Scan(&from); err != nil {
			return 0, 0, err
		}
	} else if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS pgrules"); err != nil {
		return 0, 0, fmt.Errorf("create schema pgrules: %w", err)
	}
	if from > Version {
		return from, from, pgerr.New(pgerr.ObjectNotInPrereqState, "the pgrules schema in this database is version %d, newer than this pgrules (version %d): upgrade pgrules", from, Version)
	}
	for v := from + 1; v <= version; v++ {
		if _, err := tx.Exec(ctx, steps[v]); err != nil {
			return from, v - 1, fmt.Errorf("pgrules schema migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pgrules.schema_version (version) VALUES ($1)", v); err != nil {
			return from, v - 1, err
		}
	}
	if version == Version {
		if _, err := tx.Exec(ctx, functions); err != nil {
			return from, version, fmt.Errorf("pgrules functions: %w", err)
		}
		var super bool
		if err := tx.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
			return from, version, err
		}
		if super {
			if _, err := tx.Exec(ctx, ddlTrigger); err != nil {
				return from, version, fmt.Errorf("pgrules event trigger: %w", err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return from, version, err
	}
	return from, version, nil
}

// migrationFiles maps each version to its script, checking that versions
// run from 1 without a gap up to Version.
func migrationFiles() (map[int]string, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	steps := make(map[int]string)
	for i, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s is out of sequence", e.Name())
		}
		b, err := migrations.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		steps[v] = string(b)
	}
	if len(steps) != Version {
		return nil, fmt.Errorf("%d migrations for schema version %d", len(steps), Version)
	}
	return steps, nil
}
