package rules

import (
	"maps"
	"slices"

	"github.com/pgrules/pgrules/catalog"
)

// A table that references itself holds a tree: an insert may bring a row
// and its parent in one statement (PostgreSQL checks the foreign key at
// the statement's end), or a row that is its own parent. The parent is not
// in the table when the rows are derived, so loading it finds nothing; the
// row reads the statement's row instead, and the rows are derived parents
// first, so that a copy or a formula reads the parent's derived values too.
// A row that is its own ancestor reads copies of its ancestors, as many
// levels deep as a derivation reads, taken when the cycle closes, so that
// the rows' maps never form a cycle (an event's payload walks them). A change of a parent's column after the
// insert reaches the children through the cascade, as for any update.

// selfKeys are the foreign keys of the table to itself that its
// derivations read through; nil for most tables.
func selfKeys(tr *tableRules) []*catalog.ForeignKey {
	var out []*catalog.ForeignKey
	for _, p := range tr.derivePaths.paths {
		if fk := p[0]; fk.Parent == tr.t.QualifiedName() && !slices.Contains(out, fk) {
			out = append(out, fk)
		}
	}
	return out
}

// statementParents links each inserted row whose parent through a foreign
// key of the table to itself is another row of the statement to that row,
// and returns the changes in the order to derive them: parents first.
func statementParents(tr *tableRules, changes []*change) []*change {
	fks := selfKeys(tr)
	if len(fks) == 0 {
		return changes
	}
	// parents are each row's parents in the statement, by the foreign key
	// that leads to them.
	type link struct {
		fk     *catalog.ForeignKey
		parent *change
	}
	parents := make(map[*change][]link)
	for _, fk := range fks {
		idx := tr.columnIndexes(fk.ParentColumns)
		byKey := make(map[string]*change, len(changes))
		for _, ch := range changes {
			if ch.verb == verbInsert && ch.new != nil {
				if k := keyOf(ch.new, idx); k != "" {
					byKey[k] = ch
				}
			}
		}
		for _, ch := range changes {
			if ch.verb != verbInsert || ch.new == nil {
				continue
			}
			if m, _ := ch.new.vals[fk.Accessor].(map[string]any); m != nil {
				continue
			}
			key := parentKey(ch.new.vals, fk, tr.t)
			if key == nil {
				continue
			}
			if p := byKey[string(joinKey(key))]; p != nil {
				parents[ch] = append(parents[ch], link{fk, p})
			}
		}
	}
	if len(parents) == 0 {
		return changes
	}
	// Parents first; a cycle is entered at its first row in the
	// statement's order.
	order := make([]*change, 0, len(changes))
	state := make(map[*change]int) // 1 visiting, 2 done
	var visit func(ch *change)
	visit = func(ch *change) {
		if state[ch] != 0 {
			return
		}
		state[ch] = 1
		for _, l := range parents[ch] {
			visit(l.parent)
		}
		state[ch] = 2
		order = append(order, ch)
	}
	for _, ch := range changes {
		visit(ch)
	}
	// Link each row to its parents' maps, in that order; a parent whose
	// link would close a cycle is read as a snapshot.
	depth := 0
	for _, p := range tr.derivePaths.paths {
		depth = max(depth, len(p))
	}
	linked := make(map[*change][]*change)
	var reaches func(from, to *change) bool
	reaches = func(from, to *change) bool {
		if from == to {
			return true
		}
		for _, p := range linked[from] {
			if reaches(p, to) {
				return true
			}
		}
		return false
	}
	for _, ch := range order {
		for _, l := range parents[ch] {
			p := l.parent
			ch.new.vals[l.fk.Accessor] = p.new.vals
			if reaches(p, ch) {
				// Unrolled as deep as a derivation reads.
				ch.new.vals[l.fk.Accessor] = unroll(p.new.vals, fks, depth)
				continue
			}
			linked[ch] = append(linked[ch], p)
		}
	}
	return order
}

// unroll copies the row m and, through the foreign keys, its parents, to
// depth levels: a tree of maps, whatever cycle m's links run in.
func unroll(m map[string]any, fks []*catalog.ForeignKey, depth int) map[string]any {
	c := maps.Clone(m)
	for _, fk := range fks {
		p, _ := m[fk.Accessor].(map[string]any)
		if p == nil || depth <= 1 {
			delete(c, fk.Accessor)
			continue
		}
		c[fk.Accessor] = unroll(p, fks, depth-1)
	}
	return c
}
