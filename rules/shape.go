package rules

import (
	"slices"
	"strings"

	"github.com/pgrules/pgrules/sqlparse"
)

// A client that inlines its values (psql, the simple protocol, an ORM
// that interpolates) sends a new text for every row it writes. Parsing,
// analysing and deparsing each one took more of the proxy's time than
// anything else it does for such a write. A write whose only values are
// constants that become parameters (writeStmt.literalsOnly) is analysed
// once per shape instead: a text of the same shape (sqlparse.Shape) is the
// same statement with other constants, and gets the analysis with its own.

// shape is a write's analysis as it serves every text of one shape.
type shape struct {
	p *plan // analysed, from the text it was learnt from
	// order gives, for each of p.write.literals, the index of its
	// constant among those Shape finds in a text.
	order []int
	// off and tail cut the statement out of a text of this shape:
	// text[off:len(text)-tail] (the text may end with a semicolon).
	off, tail int
}

// learnShape keeps p's analysis for the other texts of its shape, when
// every constant of its text is one of the write's parameters.
func (c *compiled) learnShape(p *plan) {
	w := p.write
	if w == nil || !w.literalsOnly || len(w.literals) == 0 || len(p.parts) != 1 || p.define || p.trace || p.txControl {
		return
	}
	key, lits, ok := sqlparse.Shape(p.src)
	if !ok || len(lits) != len(w.literals) || len(w.literalAt) != len(w.literals) {
		return
	}
	order := make([]int, len(w.literals))
	used := make([]bool, len(lits))
	for k, at := range w.literalAt {
		// Shape gives the constants in the order of the text.
		i, found := slices.BinarySearchFunc(lits, int(at), func(l sqlparse.Literal, at int) int { return l.Offset - at })
		// The value is compared too: the scanner and the parser read
		// the constant alike, or the shape is not learnt.
		if !found || used[i] || lits[i].Value != string(w.literals[k]) {
			return
		}
		order[k], used[i] = i, true
	}
	part := p.parts[0].SQL
	off := strings.Index(p.src, part)
	if off < 0 {
		return
	}
	c.shapes.store(key, &shape{p: p, order: order, off: off, tail: len(p.src) - off - len(part)})
	if part != p.src {
		// The statement alone, as the proxy runs it after Split.
		if pkey, plits, ok := sqlparse.Shape(part); ok && len(plits) == len(lits) {
			c.shapes.store(pkey, &shape{p: p, order: order})
		}
	}
}

// derive returns the plan of sql from the analysis of a text of its shape,
// or nil when there is none.
func (c *compiled) derive(sql string) *plan {
	if c.shapes.empty() || sqlparse.ContainsFold(sql, "pgrules.") {
		return nil
	}
	key, lits, ok := sqlparse.Shape(sql)
	if !ok || lits == nil {
		return nil
	}
	sh, ok := c.shapes.load(key)
	if !ok {
		return nil
	}
	w := *sh.p.write
	w.literals = make([][]byte, len(sh.order))
	for k, i := range sh.order {
		w.literals[k] = []byte(lits[i].Value)
	}
	w.literalAt = nil
	part := sh.p.parts[0]
	part.SQL = sql[sh.off : len(sql)-sh.tail]
	p := &plan{intercept: true, parts: []sqlparse.Statement{part}, src: sql, write: &w}
	p.once.Do(func() {}) // analysed already
	return p
}
