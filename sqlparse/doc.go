// Package sqlparse tells what a statement text does, as far as pgrules
// needs to know: its statements, which tables each one writes (including
// through data-modifying CTEs and EXPLAIN ANALYZE), and whether it
// controls the transaction or changes the schema (sqlparse.go). For a
// statement the engine runs itself it says what it writes in the engine's
// terms (modify.go): an INSERT, UPDATE or DELETE as a ModifyTable (its
// table, columns, VALUES rows as constants or SQL, SET list, FROM list
// and WHERE, RETURNING items, ON CONFLICT's target and action), a
// statement whose WITH writes as its CTEs, to be run one by one, a COPY as
// its columns, to be sent to another table (tree.go). The pieces the
// engine reuses are SQL deparsed from the statement's own tree, so they
// mean exactly what they meant; its constants can be made parameters
// (params.go), so that the engine's statements are the same for every
// value. It knows nothing of the catalog or of rules: names are as the
// statement writes them, for the caller to resolve.
//
// It uses PostgreSQL's own parser (pg_query_go), so what it sees is what
// the server will run. Parsing costs tens of microseconds; callers cache
// results by text and parse only statements that can write. Shape, which
// does not parse, tells texts apart that differ only in their constants,
// so that callers can cache by shape what holds for every value.
//
// No other package imports pg_query_go (a test holds the module to it):
// its trees stay here, and parseTree and deparse (bound.go) are the only
// ways into its C code. That code recurses once per level of the tree on
// the C stack of the calling thread and checks nothing, so a deep enough
// statement kills the process. Measured with glibc's default
// 8 MiB thread stacks: parsing a left-deep chain of operators (a + b +
// ..., casts, IS, JOINs) crashed at about 23,800 levels, about 350 bytes
// each; deparsing one at about 4,400 levels (8,900 nested messages), about
// 1.9 KB each; a quarter of that with 2 MiB stacks. Parentheses, unary
// operators, CASE and subqueries consume the grammar's own stack instead,
// which fails cleanly ("memory exhausted"); the protobuf decoding of a
// parse tree refuses more than 10,000 nested messages. So:
//
//   - parseTree refuses a text whose NestingBound exceeds MaxNesting
//     (1,000 with 8 MiB stacks, 23 times below the crash) without calling
//     the parser; a tree within it nests at most about 8,000 messages;
//   - deparse refuses a tree nested more than MaxDeparseDepth messages
//     deep (2,500, 3.5 times below the crash).
//
// Both limits shrink in proportion with smaller thread stacks (the soft
// RLIMIT_STACK, or 2 MiB when it is unlimited). The refusal is a
// *pgerr.Error with StatementTooComplex (54001), what PostgreSQL answers
// a statement too deep for its own stack. Callers must refuse such a
// statement, not relay it: the server, with its own limits, might run a
// write pgrules has not analysed.
package sqlparse
