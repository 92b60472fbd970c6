package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/rules/compiler"
	"github.com/pgrules/pgrules/rules/sqltext"
	"github.com/pgrules/pgrules/stmt"
)

// The client's RETURNING rows come from the write, but the rules that run
// after it may write the same rows again in the same statement: a child's
// formula reads the column the update changed and the row's own sum
// follows the child, or a row of a tree is the parent of another row the
// statement writes. The client gets the rows as the statement leaves them
// (rules-api.md §5): the rows written again are read once more at the end,
// with the client's RETURNING list, parameters and result formats, in one
// round trip that only such a statement pays. The rows are found by
// primary key; a table without one whose rows are written again under a
// RETURNING list is refused (0A000) rather than answered with rows as they
// were.

// rewritten follows the rows of the client's statement while its logic
// runs. All fields are the runner's goroutine's.
type rewritten struct {
	w       *writeStmt
	p       clientParams
	formats []int16 // the client's result formats
	// depth is the runner's depth at the client's write: rows written
	// deeper are written again.
	depth int
	// out and rows are set when the write returned rows: out.Rows[i] is
	// rows[i] as written; cols are the columns of out the write's own
	// RETURNING gives, in order (nil: all of them).
	out  *stmt.Result
	rows []*row
	cols []int
	// at finds a row of out by primary key, made when first needed.
	at map[string]int
	// again are the rows of out written again; blind is set when a row of
	// a table without a primary key was.
	again map[int]bool
	blind bool
}

// returnedRows keeps what the client's write returned (out, its rows as
// written) until the statement ends; w is the client's statement.
func (r *runner) returnedRows(w *writeStmt, out *stmt.Result, written []*change) {
	rw := r.rewritten
	if rw == nil || rw.w != w || w.returning == "" || w.verb == verbDelete || len(written) == 0 || len(out.Rows) != len(written) {
		return
	}
	rw.out = out
	rw.rows = make([]*row, len(written))
	for i, ch := range written {
		rw.rows[i] = ch.new
	}
	if ret := r.returned; ret != nil && ret.w == w {
		rw.formats = ret.formats
		for i, src := range ret.plan {
			if src.write {
				rw.cols = append(rw.cols, i)
			}
		}
	}
}

// noteRewrite marks the client's rows among changes written below its
// write.
func (r *runner) noteRewrite(tr *tableRules, changes []*change) {
	rw := r.rewritten
	if rw == nil || rw.out == nil || r.depth <= rw.depth || tr.t != rw.w.table {
		return
	}
	t := tr.t
	if len(t.PrimaryKey) == 0 {
		rw.blind = true
		return
	}
	idx := tr.columnIndexes(t.PrimaryKey)
	if rw.at == nil {
		rw.at = make(map[string]int, len(rw.rows))
		rw.again = make(map[int]bool)
		for i, rr := range rw.rows {
			rw.at[keyOf(rr, idx)] = i
		}
	}
	for _, ch := range changes {
		if ch.new == nil {
			continue
		}
		if i, ok := rw.at[keyOf(ch.new, idx)]; ok {
			rw.again[i] = true
		}
	}
}

// readAgain reads the client's RETURNING list again over its rows that
// were written again, and puts the values in the client's result.
func (r *runner) readAgain() error {
	rw := r.rewritten
	r.rewritten = nil
	if rw == nil || !rw.blind && len(rw.again) == 0 {
		return nil
	}
	w, t := rw.w, rw.w.table
	if rw.blind {
		e := compiler.WriteNotSupported(t, "a RETURNING list, when its rules write rows of %s again in the same statement and the table has no primary key to find them by", catalog.ShortName(t.QualifiedName()))
		e.Hint = "Give the table a primary key, or read the rows in a query after the statement."
		return r.fail(e)
	}
	tr := r.set.table(t.QualifiedName())
	idx := tr.columnIndexes(t.PrimaryKey)
	order := make([]int, 0, len(rw.again))
	for i := range rw.again {
		order = append(order, i)
	}
	slices.Sort(order)
	n := len(rw.p.values)
	arrays := make([][]byte, len(idx))
	keys, casts, names := make([]string, len(idx)), make([]string, len(idx)), make([]string, len(idx))
	for k, j := range idx {
		vals := make([][]byte, len(order))
		for m, i := range order {
			vals[m] = rw.rows[i].text[j]
		}
		arrays[k] = textArray(vals)
		c := t.Columns[j]
		keys[k] = w.alias + "." + sqltext.Ident(c.Name)
		names[k] = fmt.Sprintf("k%d", k+1)
		casts[k] = fmt.Sprintf("CAST(k%d AS %s)", k+1, c.Type)
	}
	args := make([]string, len(arrays))
	for k := range arrays {
		args[k] = fmt.Sprintf("$%d::text[]", n+k+1)
	}
	sql := fmt.Sprintf("SELECT %s, %s FROM %s AS %s WHERE (%s) IN (SELECT %s FROM %s AS pgrules_k(%s))",
		w.returning, strings.Join(keys, ", "), sqltext.Table(t), w.alias,
		strings.Join(keys, ", "), strings.Join(casts, ", "), unnestFrom(args...), strings.Join(names, ", "))
	values, pformats, oids := rw.p.with(arrays...)
	res, err := r.batch([]stmt.Statement{{SQL: sql, Params: values, ParamFormats: pformats, ParamOIDs: oids,
		ResultFormats: resultFormatsFor(rw.formats, w.nReturning, len(idx))}})
	if err != nil {
		return err
	}
	r.tracef("RETURNING read again over %d row(s) the rules wrote again", len(res[0].Rows))
	nr := w.nReturning
	for _, vals := range res[0].Rows {
		i, ok := rw.at[string(joinKey(vals[nr:]))]
		if !ok {
			return r.fail(pgerr.New(pgerr.InternalError, "pgrules lost track of a row of %s it returns", catalog.ShortName(t.QualifiedName())))
		}
		if rw.cols == nil {
			rw.out.Rows[i] = vals[:nr]
			continue
		}
		line := slices.Clone(rw.out.Rows[i])
		for k, c := range rw.cols {
			line[c] = vals[k]
		}
		rw.out.Rows[i] = line
	}
	return nil
}
