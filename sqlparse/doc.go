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
//
// ParseTree and Deparse are the only ways into pg_query's C code (a test
// holds every other package to it). That code recurses once per level of
// the tree on the C stack of the calling thread and checks nothing, so a
// deep enough statement kills the process. Measured with glibc's default
// 8 MiB thread stacks: parsing a left-deep chain of operators (a + b +
// ..., casts, IS, JOINs) crashed at about 23,800 levels, about 350 bytes
// each; deparsing one at about 4,400 levels (8,900 nested messages), about
// 1.9 KB each; a quarter of that with 2 MiB stacks. Parentheses, unary
// operators, CASE and subqueries consume the grammar's own stack instead,
// which fails cleanly ("memory exhausted"); the protobuf decoding of a
// parse tree refuses more than 10,000 nested messages. So:
//
//   - ParseTree refuses a text whose NestingBound exceeds MaxNesting
//     (1,000 with 8 MiB stacks, 23 times below the crash) without calling
//     the parser; a tree within it nests at most about 8,000 messages;
//   - Deparse refuses a tree nested more than MaxDeparseDepth messages
//     deep (2,500, 3.5 times below the crash).
//
// Both limits shrink in proportion with smaller thread stacks (the soft
// RLIMIT_STACK, or 2 MiB when it is unlimited). The refusal is a
// *pgerr.Error with StatementTooComplex (54001), what PostgreSQL answers
// a statement too deep for its own stack. Callers must refuse such a
// statement, not relay it: the server, with its own limits, might run a
// write pgrules has not analysed.
package sqlparse
