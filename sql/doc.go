// Package sql is the pgrules schema: what pgrules keeps in the upstream
// database itself, embedded in the binary and installed by Install, which
// the proxy runs when it first serves a database and `pgrules install` runs
// by hand.
//
// The schema holds the rule table (pgrules.rule, one row per rule, shared by
// every proxy in front of the database and versioned with its data), the
// functions users define rules with (rules-api.md §2), the views that list
// rules and relationships, pgrules.raise, and the functions the proxy answers
// (explain, verify, rebuild). A statement-level trigger on the rule table
// notifies the channel "pgrules" at commit, so that listening proxies reload.
//
// Migrations (migrations/NNNN_*.sql) create and change tables. Each runs
// once, in order, recorded in pgrules.schema_version, and never changes once
// released: an upgrade keeps the rules. functions.sql holds everything else
// as CREATE OR REPLACE and runs after the migrations whenever it differs from
// the copy the database last got, so fixing a function needs no migration.
// Install does all of it in one transaction under an advisory lock, so
// proxies starting together do not race, and refuses a schema newer than the
// binary.
//
// The definition functions check in SQL what SQL can check — tables, columns,
// the form of their arguments, a column derived twice — so that even a
// direct connection gets clear errors, and they store rows; they do not
// understand expressions. Compiling expressions and choosing the foreign key
// that joins two tables is package rules' job, reading the rows through
// package catalog. The accessor names of foreign keys are computed here, in
// the pgrules.relationships view, and nowhere else.
package sql
