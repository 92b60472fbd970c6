// Package sqlparse tells what a statement text does, as far as pgrules
// needs to know: its statements, which tables each one writes (including
// through data-modifying CTEs and EXPLAIN ANALYZE), and whether it
// controls the transaction or changes the schema.
//
// It uses PostgreSQL's own parser (pg_query_go), so what it sees is what
// the server will run. Parsing costs tens of microseconds; callers cache
// results by text and parse only statements that can write. Shape, which
// does not parse, tells texts apart that differ only in their constants,
// so that callers can cache by shape what holds for every value.
package sqlparse
