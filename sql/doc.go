// Package sql is the pgrules schema: the rule table, the functions users
// define rules with (rules-api.md §2), the views that list rules and
// relationships, and a version table. It is embedded in the binary and
// installed by Install, which the proxy runs when it first serves a
// database and `pgrules install` runs by hand.
//
// Migrations (migrations/NNNN_*.sql) run once each, in order, and never
// change once released: an upgrade keeps the rules. Functions and views
// (functions.sql) are re-created on every install, so fixing one needs no
// migration.
package sql
