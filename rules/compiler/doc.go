// Package compiler turns the rule rows of a catalog snapshot into a Set:
// every rule checked against the tables it reads and compiled, ready for
// the engine (package rules) to run on writes.
//
// Compile resolves each rule's table, columns and relationship (the
// foreign key of an aggregate or a copy, compile.go), parses its
// expressions with expr and type-checks them against the row they run on
// (check.go), records the columns each rule reads and the parent paths it
// follows, orders the derivations so that each comes after what it reads
// and reports cycles and double derivations (order.go), and works out which
// tables a write must go through the engine for, and which of their writes
// BEFORE ROW triggers would make inexact (before.go). A rule that does not
// compile is reported with the SQLSTATE of rules-api.md §6 and left out of
// the order; the others still run. Explain lists a table's rules in the
// order they run (explain.go).
//
// A Set is immutable and shared by every session of its database; its
// compiled programs are safe to run from many goroutines. Rule.Eval,
// Holds, Counts and Message evaluate a rule on an Env; Rule.Act runs an
// event's action, its function calls carried out by the engine's Actions.
// Values are exact (values.go): numeric is a decimal, never a float64;
// ParseValue and FormatValue read and write PostgreSQL's text format.
// Translator writes an expression as SQL (sqlgen.go), for the set-based
// statements that compute, verify and adjust derived columns, and for the
// writes the engine makes in one statement.
//
// The compiler knows the catalog's data and nothing of connections: it
// does not import stmt, pgx, the proxy or the engine, and runs no SQL.
// The SQL it writes is text, quoted with package sqltext, which the engine
// shares.
package compiler
