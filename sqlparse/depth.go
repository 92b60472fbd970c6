package sqlparse

// NestingBound returns an upper bound of how deep the parse tree of sql
// nests, in levels of expressions, brackets and queries, without parsing
// it. PostgreSQL's grammar builds a chain of binary operators (a + b + c),
// casts and IS tests left-deep, one level per operator, and chains of
// JOINs and of UNIONs the same way above the operands they join; each
// bracket, CASE and subquery adds levels on top of what it holds; a
// comma, AND, OR, WHEN, THEN or ELSE starts a new operand of a flat list,
// so wide statements (many rows, long IN lists, AND chains) stay shallow.
// The bound of several statements is that of the deepest.
//
// It reads the text once, as PostgreSQL's scanner does (quoted strings and
// identifiers, dollar quotes, nested block comments), and stops counting
// once the bound exceeds limit, returning a value above limit.
func NestingBound(sql string, limit int) int {
	n := nesting{stack: []nestFrame{{}}}
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			i += commentLength(sql[i:])
		case c == '\'':
			i = skipQuoted(sql, i, '\'', false)
		case c == '"':
			i = skipQuoted(sql, i, '"', false)
		case c == '$':
			i = dollarEnd(sql, i)
		case c == '(' || c == '[':
			n.stack = append(n.stack, nestFrame{})
			i++
		case c == ')' || c == ']':
			if len(n.stack) > 1 { // else unbalanced: the parser refuses it
				n.closeFrame()
			}
			i++
		case c == ';' && len(n.stack) == 1:
			// The next statement's tree is another.
			n.best = max(n.best, n.stack[0].depth())
			n.stack[0] = nestFrame{}
			i++
		case c == ',' || c == ';':
			f := &n.stack[len(n.stack)-1]
			f.longest, f.chain = max(f.longest, f.chain), 0
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(sql) && (isIdentByte(sql[j]) || sql[j] == '$') {
				j++
			}
			word := sql[i:j]
			if j < len(sql) && sql[j] == '\'' && isStringPrefix(word) {
				// E'...', B'...', X'...', N'...' (U&'...' is read as U,
				// the operator character & and a string).
				i = skipQuoted(sql, j, '\'', lower(word[0]) == 'e')
				continue
			}
			i = j
			n.word(word)
		case isDigit(c) || c == '.':
			i++
			for i < len(sql) && (isIdentByte(sql[i]) || sql[i] == '.') {
				i++
			}
		default:
			// Operator characters, each counted: the scanner splits
			// runs such as +- into several operators.
			n.stack[len(n.stack)-1].chain++
			i++
		}
		if f := &n.stack[len(n.stack)-1]; len(n.stack) > limit || f.chain > limit || f.spine > limit {
			return limit + 1
		}
	}
	for len(n.stack) > 1 {
		n.closeFrame()
	}
	return max(n.best, n.stack[0].depth())
}

// nesting is NestingBound's state: a frame for each bracket or CASE open
// at the point read, the outermost first.
type nesting struct {
	stack []nestFrame
	best  int // of the statements before the last
}

// nestFrame counts what one bracket or CASE holds.
type nestFrame struct {
	chain    int  // operators in the current operand
	spine    int  // set operations and joins, each a level above its operands
	longest  int  // the longest operand's chain
	boolean  bool // AND or OR made this level a flat list
	child    int  // the deepest bracket within
	caseExpr bool // opened by CASE, closed by END
}

// depth is how deep the tree of what the frame has read nests.
func (f *nestFrame) depth() int {
	d := f.spine + max(f.chain, f.longest) + f.child + 1
	if f.boolean {
		d += 2 // an OR of ANDs
	}
	return d
}

// closeFrame ends the innermost frame; its depth is a bracket of the
// frame around it.
func (n *nesting) closeFrame() {
	d := n.stack[len(n.stack)-1].depth()
	n.stack = n.stack[:len(n.stack)-1]
	top := &n.stack[len(n.stack)-1]
	top.child = max(top.child, d)
}

// word counts a word: a keyword that adds a level, starts an operand or
// opens or closes a CASE.
func (n *nesting) word(w string) {
	f := &n.stack[len(n.stack)-1]
	switch keyword(w) {
	case kwList:
		f.longest, f.chain = max(f.longest, f.chain), 0
	case kwBool:
		f.longest, f.chain = max(f.longest, f.chain), 0
		f.boolean = true
	case kwOperator:
		f.chain++
	case kwSpine:
		f.longest, f.chain = max(f.longest, f.chain), 0
		f.spine++
	case kwCase:
		n.stack = append(n.stack, nestFrame{caseExpr: true})
	case kwEnd:
		if f.caseExpr {
			n.closeFrame()
		}
	}
}

type kwKind uint8

const (
	kwOther kwKind = iota
	kwList
	kwBool
	kwOperator
	kwSpine
	kwCase
	kwEnd
)

// keyword classifies the words that change how deep a tree nests; every
// other word (a name, a clause's keyword) adds nothing.
func keyword(w string) kwKind {
	if len(w) < 2 || len(w) > 9 {
		return kwOther
	}
	var buf [9]byte
	for i := 0; i < len(w); i++ {
		buf[i] = w[i]
		if buf[i] >= 'a' && buf[i] <= 'z' {
			buf[i] -= 'a' - 'A'
		}
	}
	switch string(buf[:len(w)]) {
	case "AND", "OR":
		return kwBool
	case "WHEN", "THEN", "ELSE":
		return kwList
	case "NOT", "IS", "ISNULL", "NOTNULL", "LIKE", "ILIKE", "SIMILAR", "BETWEEN", "IN",
		"COLLATE", "AT", "OVERLAPS", "OPERATOR", "ESCAPE":
		return kwOperator
	case "JOIN", "UNION", "INTERSECT", "EXCEPT":
		return kwSpine
	case "CASE":
		return kwCase
	case "END":
		return kwEnd
	}
	return kwOther
}

func isStringPrefix(w string) bool {
	if len(w) != 1 {
		return false
	}
	switch lower(w[0]) {
	case 'e', 'b', 'x', 'n':
		return true
	}
	return false
}

// quotedEnd returns the offset after the quoted string or identifier that
// starts at sql[i], a doubled quote standing for one; backslash escapes
// only in E'...' strings, as with standard_conforming_strings on.
func skipQuoted(sql string, i int, q byte, backslash bool) int {
	for i++; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if backslash {
				i++
			}
		case q:
			if i+1 < len(sql) && sql[i+1] == q {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(sql)
}

// dollarEnd returns the offset after the dollar-quoted string that starts
// at sql[i], or after the $ when it starts none (a parameter $1).
func dollarEnd(sql string, i int) int {
	j := i + 1
	if j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
		return j
	}
	for j < len(sql) && isIdentByte(sql[j]) {
		j++
	}
	if j >= len(sql) || sql[j] != '$' {
		return i + 1
	}
	tag := sql[i : j+1]
	for k := j + 1; k+len(tag) <= len(sql); k++ {
		if sql[k] == '$' && sql[k:k+len(tag)] == tag {
			return k + len(tag)
		}
	}
	return len(sql)
}
