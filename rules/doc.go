// Package rules is the engine: it runs the compiled rules of a database
// on writes.
//
// Package compiler (rules/compiler) turns a catalog snapshot's rule rows
// into an immutable Set; the engine works out once from each Set what it
// runs per table (tables.go: a runSet) and shares both with every session
// of the database.
//
// The engine (engine.go) is the proxy's stmt.Rules: it decides which
// statements it wants from their text, analyses a write once per text
// (write.go, from what sqlparse reads of the statement; its SET list in
// assign.go, an ON CONFLICT's arbiter in conflict.go, a RETURNING that
// names a FROM list in returning.go), and
// runs it on the client's own connection, inside the
// client's transaction (run.go, a file a step): materialise the row changes, derive,
// write, adjust parents, check, cascade — a round trip per level of the
// rules, not per row; an insert whose derivations translate exactly to
// SQL is one statement and one round trip (onetrip.go). A table's own
// BEFORE ROW trigger may change or skip a written row: before.go takes
// the rows as stored, derives again what the trigger changed and writes
// it back. events.go runs the events at their timings, with
// the action functions, vetoes and the outbox entries of after_commit and
// failure events (which package outbox delivers). tx.go follows the
// transaction: its commit work (commit events, commit constraints,
// after_commit events), savepoints, the parent rows already locked. RunTx
// runs a statement of the outbox in a transaction of its own, with the
// rules. exec.go holds the entry of a write, data-modifying CTEs and the
// trace setting. path.go resolves unqualified names as the session's
// search_path and temporary tables do, not the catalog connection's.
// Definitions made through the proxy are compiled in the defining
// transaction (engine.go); verify.go and backfill.go recompute
// derived columns with set-based SQL (the compiler's Translator writes
// their expressions, and those of the inserts of onetrip.go).
//
// The package never reads a parse tree: package sqlparse says what a
// statement writes, in the engine's terms, and writes its pieces as SQL.
// It never touches the wire: it reaches PostgreSQL through stmt.Conn,
// and reads the catalog through package catalog (kept current by
// catalog/watch); its own connections (the catalog's, and the one that
// records the entries of failure events after their transaction) come
// from EngineConfig.Connect.
package rules
