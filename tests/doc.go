// Package tests holds pgrules' end-to-end tests: real clients (psql, pgx,
// lib/pq, pgbench, psycopg2, node-postgres) talking to a real PostgreSQL
// through an in-process proxy, differential transparency, and faults.
//
// TestMain starts one throwaway PostgreSQL for the package (see
// internal/tempdb), or uses PGRULES_TEST_DATABASE_URL when it is set; each
// test gets a fresh database. Tests that must control the server itself
// (restarting it, its pg_hba.conf) start a private cluster.
package tests
