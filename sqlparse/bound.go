package sqlparse

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/pgerr"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The C parser and deparser recurse once per level of the tree, on the
// C stack of the thread that calls them, which nothing checks: a tree too
// deep for that stack kills the process. With the 8 MiB thread stacks
// glibc gives by default, parsing a left-deep chain of operators crashed
// at about 23,800 levels (about 350 bytes per level) and deparsing one at
// about 4,400 levels (about 1.9 KB per level, two messages each); with
// 2 MiB stacks at a quarter of that. The limits below are the fractions
// of those that leave a wide margin, scaled down for smaller stacks.
const (
	// parseNestingAt8MiB bounds NestingBound of a text to parse: 23 times
	// below the crash.
	parseNestingAt8MiB = 1000
	// deparseDepthAt8MiB bounds the nesting of messages in a tree to
	// deparse: 3.5 times below the crash.
	deparseDepthAt8MiB = 2500
)

var (
	// MaxNesting is the deepest NestingBound a text may have to be
	// parsed.
	MaxNesting = scaled(parseNestingAt8MiB)
	// MaxDeparseDepth is the deepest nesting of messages a tree may have
	// to be deparsed.
	MaxDeparseDepth = scaled(deparseDepthAt8MiB)
)

func scaled(at8MiB int) int {
	return max(1, int(uint64(at8MiB)*min(threadStackBytes(), 8<<20)/(8<<20)))
}

// tooComplex is what a statement beyond the limits gets, as PostgreSQL
// answers one too deep for its own stack.
func tooComplex(what string, limit int) *pgerr.Error {
	e := pgerr.New(pgerr.StatementTooComplex, "stack depth limit exceeded: the %s nests more than %d levels deep, more than pgrules analyses", what, limit)
	e.Hint = "Nest expressions less deeply: group long chains of operators such as a + b + c in balanced parentheses, use sum() or array functions, or split the statement."
	return e
}

// parseTree parses sql with PostgreSQL's parser, after checking that its
// tree cannot nest deeper than the parser can safely go. Every parse of
// pgrules goes through it. A text beyond the limit gets a
// StatementTooComplex error, a syntax error the parser's *parser.Error; a
// text that is not UTF-8 fails to decode. (Within the limit a tree stays
// far below the 10,000 nested messages protobuf decodes.)
func parseTree(sql string) (*pg_query.ParseResult, error) {
	if NestingBound(sql, MaxNesting) > MaxNesting {
		return nil, tooComplex("statement", MaxNesting)
	}
	return pg_query.Parse(sql)
}

// parseTreeVersion is the version pg_query stamps on the trees it parses;
// trees built for deparsing carry it too.
var parseTreeVersion = func() int32 {
	tree, err := pg_query.Parse("SELECT 1")
	if err != nil {
		panic(err)
	}
	return tree.Version
}()

// deparse returns the SQL text of a statement's tree, after checking that
// it does not nest deeper than the deparser can safely go. Every deparse
// of pgrules goes through it. Errors are *pgerr.Error.
func deparse(n *pg_query.Node) (string, error) {
	w := treeWalk{limit: MaxDeparseDepth}
	if w.depth(n.ProtoReflect(), 0) > MaxDeparseDepth {
		return "", tooComplex("statement pgrules runs for it", MaxDeparseDepth)
	}
	if w.paramZero {
		// The parser takes $0, the deparser writes it as ?, which does
		// not parse: PostgreSQL's own answer instead.
		return "", pgerr.New(pgerr.UndefinedParameter, "there is no parameter $0")
	}
	s, err := pg_query.Deparse(&pg_query.ParseResult{Version: parseTreeVersion, Stmts: []*pg_query.RawStmt{{Stmt: n}}})
	if err != nil {
		return "", pgerr.New(pgerr.InternalError, "pgrules could not turn a statement's tree back into SQL: %w", err)
	}
	return s, nil
}

// messageDepth is how deep messages nest in m, counting m, or a value
// above limit once it is known to exceed it.
func messageDepth(m protoreflect.Message, limit int) int {
	w := treeWalk{limit: limit}
	return w.depth(m, 0)
}

// treeWalk measures a tree before it is deparsed.
type treeWalk struct {
	limit int
	// paramZero is set when the tree holds a parameter $0.
	paramZero bool
}

// depth is how deep messages nest in m, which is at level, counting m; a
// value above limit once it is known to exceed it.
func (w *treeWalk) depth(m protoreflect.Message, level int) int {
	if level >= w.limit {
		return w.limit + 1
	}
	if p, ok := m.Interface().(*pg_query.ParamRef); ok && p.Number <= 0 {
		w.paramZero = true
	}
	deepest := level + 1
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && deepest <= w.limit; i++ {
				deepest = max(deepest, w.depth(l.Get(i).Message(), level+1))
			}
		case fd.IsMap():
			// The parse tree has no maps.
		case fd.Message() != nil:
			deepest = max(deepest, w.depth(v.Message(), level+1))
		}
		return deepest <= w.limit
	})
	return deepest
}
