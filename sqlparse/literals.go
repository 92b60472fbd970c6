package sqlparse

import (
	"strconv"
	"strings"
)

// Literal is a constant of a statement text, as Shape finds it.
type Literal struct {
	// Offset is where the constant starts in the text, the location the
	// parser gives its node.
	Offset int
	// Value is what the constant stands for: a string's contents without
	// its quotes, a number as written, true or false.
	Value string
}

// Shape returns sql with each constant (a number, a quoted string, TRUE or
// FALSE) replaced by a mark of its kind, and the constants in order: two
// texts of the same shape differ only in the values of their constants,
// and PostgreSQL parses them into the same tree with other values. The
// kinds are those the parser tells apart: an integer that fits in 32 bits,
// one that fits in 64, another number, a string, a boolean.
//
// It tokenizes as PostgreSQL's scanner does (standard_conforming_strings,
// nested block comments, identifiers, $n parameters), and reports false
// for what it does not read: dollar quotes, E'...', B'...', X'...' and U&'...'
// strings, strings continued on the next line, other forms of numbers.
// It reads a text once and allocates only what it returns.
func Shape(sql string) (string, []Literal, bool) {
	var (
		b    strings.Builder
		lits []Literal
		from int // sql[from:i] is still to be copied to b
	)
	mark := func(start, end int, kind byte, value string) {
		if b.Cap() == 0 {
			b.Grow(len(sql))
		}
		b.WriteString(sql[from:start])
		b.WriteByte(0)
		b.WriteByte(kind)
		from = end
		lits = append(lits, Literal{Offset: start, Value: value})
	}
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = len(sql)
			} else {
				i += j + 1
			}
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			i += commentLength(sql[i:])
		case c == '"':
			j := quotedEnd(sql, i, '"')
			if j < 0 {
				return "", nil, false
			}
			i = j
		case c == '\'':
			if i > 0 && sql[i-1] == '&' {
				return "", nil, false // U&'...'
			}
			j := quotedEnd(sql, i, '\'')
			if j < 0 {
				return "", nil, false
			}
			if k := skipSpace(sql, j); k < len(sql) && sql[k] == '\'' {
				return "", nil, false // a string continued
			}
			mark(i, j, 's', strings.ReplaceAll(sql[i+1:j-1], "''", "'"))
			i = j
		case c == '$':
			j := i + 1
			for j < len(sql) && isDigit(sql[j]) {
				j++
			}
			if j == i+1 {
				return "", nil, false // a dollar quote
			}
			i = j
		case isDigit(c) || c == '.' && i+1 < len(sql) && isDigit(sql[i+1]):
			j, integer := numberEnd(sql, i)
			if j < len(sql) && isIdentByte(sql[j]) {
				return "", nil, false // 0x1F, 1_000, 5abc
			}
			kind := byte('n')
			if integer {
				// The parser's types of a constant: integer, bigint or
				// numeric, by its value.
				if _, err := strconv.ParseInt(sql[i:j], 10, 32); err == nil {
					kind = 'i'
				} else if _, err := strconv.ParseInt(sql[i:j], 10, 64); err == nil {
					kind = 'l'
				}
			}
			mark(i, j, kind, sql[i:j])
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(sql) && (isIdentByte(sql[j]) || sql[j] == '$') {
				j++
			}
			if j < len(sql) && sql[j] == '\'' {
				return "", nil, false // E'...', B'...', X'...', N'...'
			}
			if w := sql[i:j]; strings.EqualFold(w, "true") || strings.EqualFold(w, "false") {
				mark(i, j, 'b', strings.ToLower(w))
			}
			i = j
		default:
			i++
		}
	}
	if lits == nil {
		return sql, nil, true
	}
	b.WriteString(sql[from:])
	return b.String(), lits, true
}

// quotedEnd returns the offset just past the quoted string or identifier
// that starts at sql[i], in which a doubled quote stands for itself, or -1
// when it does not end.
func quotedEnd(sql string, i int, q byte) int {
	for j := i + 1; j < len(sql); j++ {
		if sql[j] == q {
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1
		}
	}
	return -1
}

// numberEnd returns the offset just past the number that starts at sql[i]
// (digits, a fraction, an exponent) and whether it is an integer.
func numberEnd(sql string, i int) (int, bool) {
	j := i
	for j < len(sql) && isDigit(sql[j]) {
		j++
	}
	integer := true
	if j < len(sql) && sql[j] == '.' && !strings.HasPrefix(sql[j:], "..") {
		integer = false
		j++
		for j < len(sql) && isDigit(sql[j]) {
			j++
		}
	}
	if j < len(sql) && (sql[j] == 'e' || sql[j] == 'E') {
		k := j + 1
		if k < len(sql) && (sql[k] == '+' || sql[k] == '-') {
			k++
		}
		if k < len(sql) && isDigit(sql[k]) {
			integer = false
			for j = k; j < len(sql) && isDigit(sql[j]); j++ {
			}
		}
	}
	return j, integer
}

func skipSpace(sql string, i int) int {
	for i < len(sql) && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' || sql[i] == '\f') {
		i++
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isIdentStart and isIdentByte are PostgreSQL's ident_start and
// ident_cont, less the dollar sign: bytes of a multi-byte character count
// as letters.
func isIdentStart(c byte) bool { return isWordByte(c) || c >= 0x80 }

func isIdentByte(c byte) bool { return isIdentStart(c) || isDigit(c) }
