package compiler

import (
	"github.com/expr-lang/expr/parser"
	"github.com/pgrules/pgrules/pgerr"
)

// maxExprNodes bounds the nodes of a rule's expression (expr.MaxNodes).
const maxExprNodes = 10000

// maxExprBrackets bounds how deep brackets nest in a rule's expression.
const maxExprBrackets = 500

// parseExpr parses a rule's expression after bounding its nesting. The
// expression language's parser recurses once per bracket and per prefix
// operator, on the Go stack, and goes on after reporting too many nodes:
// a million minus signs or brackets (a megabyte of text) overflowed the
// stack, which ends the process, and with it every session. A text with
// more operators than maxExprNodes allows, or brackets nested deeper than
// maxExprBrackets, is refused before parsing with 54001.
func parseExpr(src string) (*parser.Tree, error) {
	if e := exprTooDeep(src); e != nil {
		return nil, e
	}
	return parser.Parse(src)
}

// exprTooDeep scans src as the expression language's lexer does (strings
// in double quotes, single quotes or backquotes, comments) and counts its
// brackets' depth and its operator characters: every operator is a node,
// of at most two characters (the ternary's two are one node, counted
// twice), so a text with more than twice maxExprNodes of them would be
// refused anyway.
func exprTooDeep(src string) *pgerr.Error {
	depth, deepest, ops := 0, 0, 0
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '"', '\'':
			for i++; i < len(src) && src[i] != c; i++ {
				if src[i] == '\\' {
					i++
				}
			}
		case '`':
			for i++; i < len(src) && src[i] != '`'; i++ {
			}
		case '/':
			switch {
			case i+1 < len(src) && src[i+1] == '/':
				for i < len(src) && src[i] != '\n' {
					i++
				}
			case i+1 < len(src) && src[i+1] == '*':
				for i += 2; i+1 < len(src) && (src[i] != '*' || src[i+1] != '/'); i++ {
				}
				i++
			default:
				ops++
			}
		case '(', '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ')', ']', '}':
			depth--
		case '-', '+', '!', '*', '%', '<', '>', '=', '&', '|', '^', '?', ':', '.', '#', '~':
			ops++
		case 'n', 'N':
			// not, a prefix operator spelt as a word
			if i+3 <= len(src) && (src[i:i+3] == "not" || src[i:i+3] == "NOT") && (i == 0 || !isExprWordByte(src[i-1])) {
				ops++
			}
		}
	}
	if deepest > maxExprBrackets || ops > 2*maxExprNodes {
		e := pgerr.New(pgerr.StatementTooComplex, "stack depth limit exceeded: the expression nests brackets %d deep (at most %d) or has %d operators (at most %d)", deepest, maxExprBrackets, ops, 2*maxExprNodes)
		e.Hint = "Write the rule with fewer levels: split it into several formulas, each reading the one before."
		return e
	}
	return nil
}

func isExprWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}
