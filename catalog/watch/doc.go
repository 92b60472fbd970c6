// Package watch keeps the catalog of a database current over pgrules' own
// pgx connection: a Watcher LISTENs for the notifications every change of
// a rule sends at commit, and loads a new catalog.Snapshot after each
// burst of them. PgxQuerier adapts a pgx connection to catalog.Querier,
// for the watcher and for the commands that load a catalog once.
//
// It knows the catalog and pgx, nothing of rules, the proxy or the wire.
package watch
