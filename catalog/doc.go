// Package catalog is what pgrules knows about one database: its tables,
// columns and types, primary keys, foreign keys (with the accessor names
// that rule expressions use for them) and the rule rows of the pgrules
// schema, read into an immutable Snapshot.
//
// A Snapshot is read-only data: it is built once by Load and then shared
// by every session of that database without locks. A change (rules
// redefined, DDL) produces a new Snapshot; nobody edits an old one.
//
// catalog reads Postgres through the small Querier interface, so the same
// loader runs on the proxy's own connection (committed state, for the
// watcher of package catalog/watch) and on a client's upstream connection
// inside its transaction (to check a definition against what that
// transaction sees). It holds no connection and imports no driver, so that
// the compiler can read its data without knowing connections. It knows
// nothing of the wire protocol or of expr: compiling rules is package
// rules/compiler's job.
package catalog
